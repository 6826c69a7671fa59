"""The one place where domain errors become Tango `DevFailed` exceptions.

Every `OETError` carries a stable `reason` (e.g. `OET_InvalidRequest`) and a message naming the
offending field or value; clients match on the reason, people read the message.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import tango

from tango_oet.domain.errors import OETError
from tango_oet.domain.text import clean


@contextmanager
def tango_errors(origin: str) -> Iterator[None]:
    """Run a command body; re-raise any domain error as DevFailed(reason, message, origin)."""
    try:
        yield
    except OETError as exc:
        # pytango sends the description as UTF-8, which a lone surrogate would break.
        tango.Except.throw_exception(exc.reason, clean(exc.message), origin)
