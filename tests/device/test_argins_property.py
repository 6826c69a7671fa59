"""Whatever a client sends, the device answers with a typed rejection or does what was asked,
and a rejection creates nothing (INTERFACE v2 "Safe by default"): property-based, through the
real device, with random JSON, wrong types, deep nesting, NUL characters, lone surrogates,
invalid UTF-8, huge strings and ids out of range."""

from __future__ import annotations

import json
from typing import Any

import pytest
import tango
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.device.conftest import StartDevice
from tests.device.harness import Scheduler

pytestmark = pytest.mark.tango

SETTINGS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
KEYS = ["id", "function", "args", "kwargs", "force", "abort", "script", "source", "init",
        "git", "keep", "max_age_days", "root", "x"]  # fmt: skip
TEXT = st.text(
    alphabet=st.characters(codec=None, exclude_categories=[]), max_size=40
) | st.sampled_from(["\x00", "a\x00b", "\udcff", "é€日本", "x" * 100_000, "embedded://x", "../.."])
SCALARS = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | TEXT
JSON = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(KEYS) | TEXT, inner, max_size=4)
    ),
    max_leaves=12,
)


def _wire(value: Any) -> bytes:
    """As a UTF-8 client sends it; what JSON or UTF-8 cannot say goes out as raw bytes."""
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=True)
    except (TypeError, ValueError, RecursionError):
        text = repr(value)
    return text.encode("utf-8", "surrogatepass")


ARGINS = (
    JSON.map(_wire)
    | st.binary(max_size=64)  # not UTF-8, not JSON
    | st.just(b"[" * 5000 + b"]" * 5000)  # deep nesting
    | st.just(json.dumps({"id": 1, "args": [[[[[[[[[[[[]]]]]]]]]]]] * 8}).encode())
)


@pytest.fixture
def oet(start_device: StartDevice) -> Scheduler:
    # Deny by default: nothing can be prepared, so every Prepare must be refused.
    return start_device()


def _assert_typed_rejection_or_success(oet: Scheduler, command: str, argin: Any) -> None:
    try:
        oet.proxy.command_inout(command, argin)
    except tango.DevFailed as exc:
        reason = exc.args[0].reason
        assert reason.startswith("OET_"), (command, argin[:200], reason, exc.args[0].desc)
    assert oet.proxy.read_attribute("procedures").value == "[]"
    names = [n for n in oet.proxy.get_attribute_list() if n.startswith("procedure")]
    assert all(not n.startswith(("procedure0", "procedure-")) for n in names)


@pytest.mark.parametrize("command", ["Prepare", "Start", "Stop", "CollectGarbage", "ListScripts"])
def test_every_string_argin_gets_a_typed_answer_and_creates_nothing(
    oet: Scheduler, command: str
) -> None:
    attributes = sorted(oet.proxy.get_attribute_list())

    @SETTINGS
    @given(argin=ARGINS)
    def check(argin: bytes) -> None:
        _assert_typed_rejection_or_success(oet, command, argin)

    check()
    assert sorted(oet.proxy.get_attribute_list()) == attributes


@pytest.mark.parametrize("command", ["Pause", "Resume", "Describe"])
def test_every_id_gets_a_typed_answer(oet: Scheduler, command: str) -> None:
    @SETTINGS
    @given(procedure_id=st.integers(-(2**31), 2**31 - 1))
    def check(procedure_id: int) -> None:
        with pytest.raises(tango.DevFailed) as info:
            oet.proxy.command_inout(command, procedure_id)
        assert info.value.args[0].reason in ("OET_InvalidRequest", "OET_UnknownProcedure")

    check()


@pytest.mark.parametrize(
    ("command", "request_obj", "field"),
    [
        ("Prepare", {"script": "file:///tmp/a\x00b.py"}, "script"),
        ("Prepare", {"script": "embedded://x", "source": "x", "init": {"args": ["\x00"]}}, "init"),
        ("Start", {"id": 1, "function": "ma\x00in"}, "function"),
        ("ListScripts", {"root": "/tmp\x00"}, "root"),
    ],
)
def test_a_nul_character_is_refused_naming_the_field(
    oet: Scheduler, command: str, request_obj: dict[str, Any], field: str
) -> None:
    with pytest.raises(tango.DevFailed) as info:
        oet.proxy.command_inout(command, json.dumps(request_obj))
    assert info.value.args[0].reason == "OET_InvalidRequest"
    assert field in info.value.args[0].desc and "NUL" in info.value.args[0].desc
