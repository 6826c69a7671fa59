"""The Taranta dashboard resources/dashboards/oet-scheduler.wj against the Tango interface.

The file is a Taranta dashboard export (top-level name/version/widget/variables/environment;
each widget has type, x, y, width, height, inputs, id, canvas, order). Every attribute and
command it references must exist in INTERFACE.md (version 1), listed below, and every
predefined command argument must be a valid argin for its command.

Every check runs on the shipped file (the container image's paths) and on the copy that
`tango-oet up` writes for the quick start (quickstart.localise_dashboard: the example script's
path as the quick start's ScriptRoots holds it, the next procedure ids), so both defaults work.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tango_oet.device import quickstart

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "resources" / "dashboards" / "oet-scheduler.wj"
DEVICE = "oet/scheduler/1"

# INTERFACE.md, "Commands": name -> (argin type, argout type)
COMMANDS = {
    "Prepare": ("DevString", "DevLong"),
    "Start": ("DevString", "DevVoid"),
    "Stop": ("DevString", "DevVoid"),
    "Pause": ("DevLong", "DevVoid"),
    "Resume": ("DevLong", "DevVoid"),
    "Describe": ("DevLong", "DevString"),
}
# INTERFACE.md, "Device" and "Attributes" (Taranta stores attribute names in lower case;
# Tango names are case-insensitive). procedure<ID>State / procedure<ID>Summary are dynamic.
STATIC_ATTRIBUTES = {"state", "status", "procedures", "lastevent", "output"}
DYNAMIC_ATTRIBUTE = re.compile(r"procedure[1-9][0-9]*(state|summary)")
# Attributes Taranta's TIMELINE accepts: DevState and DevEnum only.
TIMELINE_ATTRIBUTE = re.compile(r"state|procedure[1-9][0-9]*state")

# The widget types used, with the inputs Taranta needs to bind them.
WIDGET_INPUTS = {
    "LABEL": {"text"},
    "DEVICE_STATUS": {"device"},
    "ATTRIBUTE_DISPLAY": {"attribute", "jsonCollapsed", "showEnumLabels"},
    "ATTRIBUTE_LOGGER": {"attribute", "linesDisplayed"},
    "TIMELINE": {"attributes", "timeWindow"},
    "COMMAND": {"command", "commandArgs", "displayOutput", "requireConfirmation"},
}

PREPARE_KEYS = {"script", "git", "create_env", "source", "init"}
START_KEYS = {"id", "function", "args", "kwargs", "force"}
STOP_KEYS = {"id", "abort"}

Widget = dict[str, Any]


QUICK_START_FIRST_ID = 7  # e.g. six procedures in the quick start's durable history already
QUICK_START_SCRIPT = REPO / "resources" / "scripts" / "hello_world.py"


@pytest.fixture(scope="module", params=["shipped", "quick start"])
def dashboard(request: pytest.FixtureRequest) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    if request.param == "shipped":
        return loaded
    assert quickstart.shipped_dashboard() == DASHBOARD
    local = quickstart.localise_dashboard(loaded, DEVICE, QUICK_START_SCRIPT, QUICK_START_FIRST_ID)
    local["quick start"] = True  # for the checks below (not in the file `up` writes)
    assert loaded != local
    return local


def first_id(dashboard: dict[str, Any]) -> int:
    """The procedure id the presets and the first Timeline lane name."""
    return QUICK_START_FIRST_ID if dashboard.get("quick start") else 1


def walk(widgets: list[Widget]) -> Iterator[Widget]:
    for widget in widgets:
        yield widget
        yield from walk(widget.get("innerWidgets", []))


def refs(node: Any, key: str) -> Iterator[dict[str, Any]]:
    """Every {"device": ..., key: ...} object inside a widget's inputs (set ones only)."""
    if isinstance(node, dict):
        if "device" in node and key in node and node[key] is not None:
            yield node
        for value in node.values():
            yield from refs(value, key)
    elif isinstance(node, list):
        for item in node:
            yield from refs(item, key)


def widgets_of(dashboard: dict[str, Any], kind: str) -> list[Widget]:
    return [w for w in walk(dashboard["widget"]) if w["type"] == kind]


def command_widget(dashboard: dict[str, Any], name: str) -> Widget:
    [widget] = [
        w for w in widgets_of(dashboard, "COMMAND") if w["inputs"]["command"]["command"] == name
    ]
    return widget


def presets(dashboard: dict[str, Any], name: str) -> list[str]:
    args = command_widget(dashboard, name)["inputs"]["commandArgs"]
    assert args, f"{name} has no predefined arguments"
    assert [a["isDefault"] for a in args].count(True) == 1, f"{name}: exactly one default preset"
    assert all(a["name"] for a in args)
    return [a["value"] for a in args]


# --- file structure ----------------------------------------------------------------------------


def test_is_a_taranta_dashboard_export(dashboard: dict[str, Any]) -> None:
    assert {"name", "version", "widget", "variables", "environment"} <= dashboard.keys()
    assert dashboard.keys() - {"quick start"} <= json.loads(DASHBOARD.read_text()).keys()
    assert DEVICE in dashboard["name"]
    assert isinstance(dashboard["widget"], list) and dashboard["widget"]
    assert dashboard["variables"] == []


def test_every_widget_is_complete_and_uniquely_identified(dashboard: dict[str, Any]) -> None:
    widgets = list(walk(dashboard["widget"]))
    ids = [w["id"] for w in widgets]
    assert len(ids) == len(set(ids))
    for widget in widgets:
        assert widget["type"] in WIDGET_INPUTS, widget["type"]
        assert WIDGET_INPUTS[widget["type"]] <= widget["inputs"].keys(), widget["type"]
        assert isinstance(widget["id"], str)
        for key in ("x", "y", "width", "height"):
            assert isinstance(widget[key], int | float) and widget[key] >= 0, (widget["id"], key)
        assert widget["width"] > 0 and widget["height"] > 0
        assert widget["canvas"] == "0" and widget["valid"] == 1


def test_widgets_do_not_overlap(dashboard: dict[str, Any]) -> None:
    boxes = [(w["id"], w["x"], w["y"], w["x"] + w["width"], w["y"] + w["height"])
             for w in dashboard["widget"]]  # fmt: skip
    for i, (a, ax0, ay0, ax1, ay1) in enumerate(boxes):
        for b, bx0, by0, bx1, by1 in boxes[i + 1 :]:
            assert ax1 <= bx0 or bx1 <= ax0 or ay1 <= by0 or by1 <= ay0, f"{a} overlaps {b}"


# --- references to the interface ---------------------------------------------------------------


def test_every_attribute_exists_in_the_interface(dashboard: dict[str, Any]) -> None:
    found = [r for w in walk(dashboard["widget"]) for r in refs(w["inputs"], "attribute")]
    assert found
    for ref in found:
        assert ref["device"] == DEVICE
        name = ref["attribute"]
        assert name == name.lower(), name
        assert name in STATIC_ATTRIBUTES or DYNAMIC_ATTRIBUTE.fullmatch(name), name


def test_every_command_exists_with_its_interface_types(dashboard: dict[str, Any]) -> None:
    found = [r for w in walk(dashboard["widget"]) for r in refs(w["inputs"], "command")]
    assert {r["command"] for r in found} == set(COMMANDS)
    for ref in found:
        assert ref["device"] == DEVICE
        assert (ref["acceptedType"], ref["outtype"]) == COMMANDS[ref["command"]], ref["command"]
    for widget in widgets_of(dashboard, "DEVICE_STATUS"):
        assert widget["inputs"]["device"] == DEVICE


def test_shows_state_procedures_events_and_output(dashboard: dict[str, Any]) -> None:
    [status] = widgets_of(dashboard, "DEVICE_STATUS")
    assert status["inputs"]["showStateString"] is True
    readers = widgets_of(dashboard, "ATTRIBUTE_DISPLAY") + widgets_of(dashboard, "ATTRIBUTE_LOGGER")
    displayed = {w["inputs"]["attribute"]["attribute"] for w in readers}
    assert {"procedures", "lastevent", "output", "status"} <= displayed


def test_timeline_draws_the_procedure_state_enums(dashboard: dict[str, Any]) -> None:
    [timeline] = widgets_of(dashboard, "TIMELINE")
    lanes = [lane["attribute"] for lane in timeline["inputs"]["attributes"]]
    assert len(lanes) >= 2
    for ref in lanes:
        assert ref["device"] == DEVICE
        assert TIMELINE_ATTRIBUTE.fullmatch(ref["attribute"]), ref["attribute"]
    first = first_id(dashboard)
    assert [ref["attribute"] for ref in lanes] == [
        f"procedure{first + i}state" for i in range(len(lanes))
    ]
    assert [ref["label"] for ref in lanes] == [f"procedure {first + i}" for i in range(len(lanes))]


# --- predefined command arguments ----------------------------------------------------------------


def test_prepare_presets_are_valid_prepare_requests(dashboard: dict[str, Any]) -> None:
    kinds = set()
    for value in presets(dashboard, "Prepare"):
        request = json.loads(value)
        assert request.keys() <= PREPARE_KEYS, request.keys()
        script = request["script"]
        kind = script.split("://", 1)[0]
        kinds.add(kind)
        if kind == "file":
            assert script.startswith("file:///"), script  # absolute path
        elif kind == "embedded":
            assert isinstance(request["source"], str) and "def main" in request["source"]
        else:
            assert kind == "git" and isinstance(request["git"]["repo"], str), script
        init = request.get("init", {"args": [], "kwargs": {}})
        assert isinstance(init.get("args", []), list) and isinstance(init.get("kwargs", {}), dict)
    assert "file" in kinds


def test_file_preset_names_a_script_the_image_ships(dashboard: dict[str, Any]) -> None:
    [path] = [
        json.loads(v)["script"].removeprefix("file://")
        for v in presets(dashboard, "Prepare")
        if json.loads(v)["script"].startswith("file://")
    ]
    if dashboard.get("quick start"):
        # The example script where the quick start's ScriptRoots has it (configure_policy).
        examples = quickstart.example_scripts()
        assert examples is not None and Path(path) == examples / "hello_world.py"
        assert Path(path).is_file()
        default = next(a for a in command_widget(dashboard, "Prepare")["inputs"]["commandArgs"])
        assert default["isDefault"] and json.loads(default["value"])["script"] == f"file://{path}"
        return
    shipped = "/usr/share/tango-oet/scripts/"
    assert path.startswith(shipped)
    assert (REPO / "resources" / "scripts" / path.removeprefix(shipped)).is_file()
    assert f"COPY resources/scripts/ {shipped}" in (REPO / "Dockerfile").read_text()


def test_start_presets_are_valid_start_requests(dashboard: dict[str, Any]) -> None:
    for value in presets(dashboard, "Start"):
        request = json.loads(value)
        assert request.keys() <= START_KEYS, request.keys()
        assert request["id"] == first_id(dashboard)
        assert isinstance(request.get("function", "main"), str)
        assert isinstance(request.get("args", []), list)
        assert isinstance(request.get("kwargs", {}), dict)
        assert isinstance(request.get("force", False), bool)


def test_stop_presets_are_valid_stop_requests_and_need_confirmation(
    dashboard: dict[str, Any],
) -> None:
    aborts = set()
    for value in presets(dashboard, "Stop"):
        request = json.loads(value)
        assert request.keys() <= STOP_KEYS, request.keys()
        assert request["id"] == first_id(dashboard)
        abort = request.get("abort", False)
        assert isinstance(abort, bool), abort
        aborts.add(abort)
    assert aborts == {False, True}
    assert command_widget(dashboard, "Stop")["inputs"]["requireConfirmation"] is True


@pytest.mark.parametrize("name", ["Pause", "Resume", "Describe"])
def test_procedure_id_presets_are_positive_integers(dashboard: dict[str, Any], name: str) -> None:
    for value in presets(dashboard, name):
        assert int(value) == first_id(dashboard)
    for preset in command_widget(dashboard, name)["inputs"]["commandArgs"]:
        assert preset["name"] == f"procedure {first_id(dashboard)}"
