"""The durable record of one device: procedures, their output and events, ids, the queue."""

from tango_oet.store.errors import StoreClosed, StoreCorrupt, StoreError, StoreInUse
from tango_oet.store.options import StoreOptions
from tango_oet.store.records import (
    IdKind,
    InterruptedProcedure,
    QueueItemRecord,
    QueueRecord,
    Recovery,
    Restored,
    StoredProcedure,
    StoreStats,
)
from tango_oet.store.store import FILE_NAME, Store

__all__ = [
    "FILE_NAME",
    "IdKind",
    "InterruptedProcedure",
    "QueueItemRecord",
    "QueueRecord",
    "Recovery",
    "Restored",
    "Store",
    "StoreClosed",
    "StoreCorrupt",
    "StoreError",
    "StoreInUse",
    "StoreOptions",
    "StoreStats",
    "StoredProcedure",
]
