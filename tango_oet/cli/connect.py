"""Which device a command talks to and its client; TANGO_HOST defaults as in `tango-oet up`."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import tango

from tango_oet.client import Scheduler
from tango_oet.client.scheduler import DEFAULT_DEVICE
from tango_oet.device.quickstart import DEFAULT_TANGO_HOST

DEVICE_ENV = "OET_DEVICE"


def default_device() -> str:
    return os.environ.get(DEVICE_ENV) or DEFAULT_DEVICE


@contextmanager
def default_tango_host() -> Iterator[str]:
    """Within the block TANGO_HOST is set: as configured (environment or tangorc), else the
    quick start's 127.0.0.1:10000, so `tango-oet up` in one shell and `tango-oet list` in
    another work without any export. The environment is restored afterwards."""
    configured = tango.ApiUtil.get_env_var("TANGO_HOST")
    if configured:
        yield str(configured)
        return
    os.environ["TANGO_HOST"] = DEFAULT_TANGO_HOST
    try:
        yield DEFAULT_TANGO_HOST
    finally:
        os.environ.pop("TANGO_HOST", None)


def connect(device: str, timeout_s: float) -> Scheduler:
    return Scheduler(device, timeout_ms=max(1, int(timeout_s * 1000)))
