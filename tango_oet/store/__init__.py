"""The durable record of one device: procedures, their output and events, ids, the queue."""

from tango_oet.store.store import Store, StoreError

__all__ = ["Store", "StoreError"]
