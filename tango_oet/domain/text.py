"""UTF-8 on the wire: every DevString in and out carries UTF-8 bytes (INTERFACE "Safe by default").

pytango maps a DevString to `str` through Latin-1 both ways: each byte of an argin becomes one
character (U+0000..U+00FF), and a `str` going out must be Latin-1 (anything else fails the read,
the push or the command). So the device turns each argin back into its bytes and decodes them as
UTF-8 (`from_wire`), and hands every string it sends to pytango as its UTF-8 bytes (`to_wire`),
which pytango passes through unchanged. A plain pytango client does the mirror image
(`s.encode("latin-1").decode("utf-8")`); C++ and Java clients see UTF-8 as such.

Lone surrogates (a `str` can hold them, UTF-8 cannot) become U+FFFD on the way out (`clean`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from tango_oet.domain.errors import InvalidRequest

_SURROGATE = re.compile("[\ud800-\udfff]")
REPLACEMENT = "\ufffd"


def from_wire(argin: str | bytes, what: str = "request") -> str:
    """The text a client sent: the argin's bytes decoded as UTF-8; InvalidRequest if they are not.

    pytango gives the bytes as Latin-1 text. A `str` that Latin-1 cannot hold did not come
    through pytango (an in-process caller): it is text already and is returned as it is.
    """
    if isinstance(argin, bytes):
        raw = argin
    else:
        if argin.isascii():
            return argin  # the common case: ASCII is the same in every one of these encodings
        try:
            raw = argin.encode("latin-1")
        except UnicodeEncodeError:
            return argin
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidRequest(
            what, f"is not valid UTF-8: byte {exc.start} (0x{raw[exc.start]:02x}): {exc.reason}"
        ) from None


def clean(text: str) -> str:
    """`text` with every lone surrogate replaced by U+FFFD, so that it can be encoded as UTF-8."""
    if text.isascii():
        return text
    return _SURROGATE.sub(REPLACEMENT, text)


def to_wire(text: str) -> bytes:
    """What pytango must be given for `text` to reach a client as UTF-8."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return clean(text).encode("utf-8")


def lines_to_wire(lines: Iterable[str]) -> list[bytes]:
    return [to_wire(line) for line in lines]


def find_surrogate(text: str) -> int | None:
    """The index of the first lone surrogate in `text`, or None."""
    if text.isascii():
        return None
    match = _SURROGATE.search(text)
    return None if match is None else match.start()


def from_tango(value: str) -> str:
    """A DevString as a pytango client reads it (its bytes as Latin-1), as the text it is.

    The client-side mirror of `from_wire`. A value that is not UTF-8 once turned back into
    bytes (an older server that sent Latin-1, or text pytango already decoded) is kept as it is.
    """
    if value.isascii():
        return value
    try:
        return value.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return value
