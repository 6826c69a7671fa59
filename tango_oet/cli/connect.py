"""Which device a command talks to and its client; TANGO_HOST defaults as in `tango-oet up`;
a device in FAULT as an error of the commands that read it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import tango

from tango_oet.client import Scheduler
from tango_oet.client.errors import ClientError
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


class DeviceFault(ClientError):
    """The device is FAULT (its engine is broken or its history cannot be written): what it
    reports may be missing things, and nothing new will happen; the message names its Status."""

    def __init__(self, device: str, status: str) -> None:
        self.device = device
        self.status = " ".join(status.split())
        super().__init__(f"{device} is FAULT: {self.status}")  # the words of `probe`


def fault_of(oet: Scheduler) -> DeviceFault | None:
    """A DeviceFault if the device is FAULT, else None (State and Status read once each)."""
    if oet.state() != "FAULT":
        return None
    return DeviceFault(oet.name, oet.status())
