"""Fixtures for client tests: the device tests' OETScheduler in a DeviceTestContext, as a client.

`start_device` and `no_worker_left` are the device tests' own fixtures (tests/device/conftest.py),
imported so both suites run the device the same way (process=False, one pytest process).
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

import pytest

from tango_oet.client import Scheduler
from tests.device.conftest import StartDevice, no_worker_left, start_device

__all__ = ["no_worker_left", "start_device"]

StartClient = Callable[..., Scheduler]


def trl(oet_proxy: Any) -> str:
    """The full TRL of a test-context device (usable from other processes, Pitfall 6)."""
    host, port, name = oet_proxy.get_dev_host(), oet_proxy.get_dev_port(), oet_proxy.dev_name()
    return f"tango://{host}:{port}/{name}#dbase=no"


@pytest.fixture
def free_port() -> int:
    """A loopback TCP port nothing listens on (bound and released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def start_client(start_device: StartDevice) -> StartClient:
    """Start an OETScheduler (properties as keyword arguments) and return a client of it."""

    def start(**properties: Any) -> Scheduler:
        device = start_device(**properties)
        return Scheduler(trl(device.proxy), timeout_ms=10_000)

    return start
