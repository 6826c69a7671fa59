"""Hello world: the smallest useful observing script, showing the scripting API."""

import logging

from tango_oet.scripting import checkpoint, progress, publish

log = logging.getLogger(__name__)
_target = "world"


def init(target: str = "world") -> None:
    global _target
    _target = target
    log.info("initialised for %s", target)


def main(repeat: int = 1) -> str:
    for i in range(repeat):
        checkpoint()
        print(f"hello {_target} ({i + 1}/{repeat})")
        publish("hello", target=_target, count=i + 1)
        progress(i + 1, repeat, f"greeting {i + 1}")
    return f"said hello {repeat} time(s) to {_target}"
