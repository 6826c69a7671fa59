"""Register devices from dsconfig-style JSON into a Tango database, and probe a device.

The definition format is the one `dsconfig` (and `devices/*.json`) uses::

    {"servers": {"OETScheduler": {"1": {"OETScheduler": {"oet/scheduler/1": {
        "properties": {"PoolSize": ["2"]}}}}}},
     "classes": {"OETScheduler": {"properties": {...}}}}          # optional

`register` is idempotent: a device already registered to the same server and class, or a
property already holding the same value, is left alone, so running it on every start (the
quick start, the Kubernetes init container) costs a few reads and no writes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tango

PROBE_TIMEOUT_MS = 3000


@dataclass(frozen=True)
class DeviceDefinition:
    """One device of a definition file: where it runs and its properties."""

    server: str  # e.g. "OETScheduler"
    instance: str  # e.g. "1"
    device_class: str
    name: str
    properties: dict[str, list[str]]

    @property
    def server_instance(self) -> str:
        return f"{self.server}/{self.instance}"


@dataclass
class Registration:
    """What `register` found and what it changed."""

    devices: list[DeviceDefinition] = field(default_factory=list)
    changes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        names = ", ".join(d.name for d in self.devices) or "no devices"
        done = "; ".join(self.changes) if self.changes else "already up to date"
        return f"{names}: {done}"


def load_definition(source: Path | str | Mapping[str, Any]) -> dict[str, Any]:
    """Read a definition from a JSON file (path) or accept an already parsed mapping."""
    if isinstance(source, Mapping):
        return dict(source)
    path = Path(source)
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: the top level must be a JSON object")
    return data


def _property_values(value: Any, where: str) -> list[str]:
    if isinstance(value, str | int | float | bool):
        value = [value]
    if not isinstance(value, list):
        raise ValueError(f"{where}: a property value must be a list of strings, got {value!r}")
    return ["true" if v is True else "false" if v is False else str(v) for v in value]


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"{where}: must be a JSON object, got {type(value).__name__}")
    return value


def iter_devices(definition: Mapping[str, Any]) -> Iterator[DeviceDefinition]:
    """Every device of a definition, validated; errors name the JSON path at fault."""
    unknown = sorted(set(definition) - {"servers", "classes"})
    if unknown:
        raise ValueError(f"unknown top-level key(s) {unknown}; expected 'servers', 'classes'")
    servers = _object(definition.get("servers", {}), "servers")
    for server, instances in servers.items():
        for instance, classes in _object(instances, f"servers.{server}").items():
            where_i = f"servers.{server}.{instance}"
            for device_class, devices in _object(classes, where_i).items():
                where_c = f"{where_i}.{device_class}"
                for name, body in _object(devices, where_c).items():
                    where = f"{where_c}.{name}"
                    if name.count("/") != 2:
                        raise ValueError(f"{where}: a device name is domain/family/member")
                    body = _object(body, where)
                    extra = sorted(set(body) - {"properties", "attribute_properties"})
                    if extra:
                        raise ValueError(f"{where}: unknown key(s) {extra}")
                    props = _object(body.get("properties", {}), f"{where}.properties")
                    yield DeviceDefinition(
                        server=server,
                        instance=str(instance),
                        device_class=device_class,
                        name=name.lower(),
                        properties={
                            k: _property_values(v, f"{where}.properties.{k}")
                            for k, v in props.items()
                        },
                    )


def register(
    db: tango.Database,
    definition: Path | str | Mapping[str, Any],
    instance: str | None = None,
) -> Registration:
    """Add the devices (of `instance` only, if given) and their properties; idempotent."""
    data = load_definition(definition)
    result = Registration()
    for device in iter_devices(data):
        if instance is not None and device.instance != instance:
            continue
        result.devices.append(device)
        _register_device(db, device, result)
        _put_properties(db, device.name, device.properties, result)
    for device_class, body in _object(data.get("classes", {}), "classes").items():
        props = _object(
            _object(body, f"classes.{device_class}").get("properties", {}),
            f"classes.{device_class}.properties",
        )
        values = {k: _property_values(v, f"classes.{device_class}.{k}") for k, v in props.items()}
        current = db.get_class_property(device_class, list(values))
        changed = {k: v for k, v in values.items() if list(current.get(k, [])) != v}
        if changed:
            db.put_class_property(device_class, changed)
            result.changes.append(f"class {device_class} properties {sorted(changed)}")
    if instance is not None and not result.devices:
        raise ValueError(f"no device of instance {instance!r} in the definition")
    return result


def _register_device(db: tango.Database, device: DeviceDefinition, result: Registration) -> None:
    try:
        info = db.get_device_info(device.name)
        registered = (info.class_name, info.ds_full_name.lower())
    except tango.DevFailed:
        registered = None
    if registered == (device.device_class, device.server_instance.lower()):
        return
    entry = tango.DbDevInfo()
    entry.name = device.name
    entry._class = device.device_class
    entry.server = device.server_instance
    db.add_device(entry)
    result.changes.append(f"added {device.name} to {device.server_instance}")


def _put_properties(
    db: tango.Database, name: str, properties: Mapping[str, Sequence[str]], result: Registration
) -> None:
    if not properties:
        return
    current = db.get_device_property(name, list(properties))
    changed = {k: list(v) for k, v in properties.items() if list(current.get(k, [])) != list(v)}
    # An empty list (e.g. the chart's `gitAllowList: []`) is the property not set, i.e. the
    # device's default; Tango holds no empty property, so a set one is deleted.
    cleared = sorted(k for k, v in changed.items() if not v)
    written = {k: v for k, v in changed.items() if v}
    if written:
        db.put_device_property(name, written)
    if cleared:
        db.delete_device_property(name, cleared)
    if changed:
        result.changes.append(f"{name} properties {sorted(changed)}")


def ensure_property(db: tango.Database, device: str, name: str, values: Sequence[str]) -> bool:
    """Set a device property only if it is not set at all; True if it was written."""
    current = db.get_device_property(device, [name]).get(name, [])
    if list(current):
        return False
    db.put_device_property(device, {name: list(values)})
    return True


def probe(device_name: str, ready: bool = False) -> tuple[bool, str]:
    """Kubernetes-style probe: does the device answer (and is it ready)?

    Liveness (`ready=False`) passes when the device answers and is not FAULT; readiness
    passes when its State is ON or RUNNING. The message says what was seen, in one line.
    """
    try:
        proxy = tango.DeviceProxy(device_name)
        proxy.set_timeout_millis(PROBE_TIMEOUT_MS)
        state = proxy.state()
        status = " ".join(str(proxy.status()).split())
    except tango.DevFailed as exc:
        error = exc.args[0] if exc.args else None
        why = f"{error.reason}: {error.desc}" if error is not None else str(exc)
        return False, f"{device_name} does not answer: {' '.join(why.split())}"
    message = f"{device_name} is {state}: {status}"
    if ready:
        return state in (tango.DevState.ON, tango.DevState.RUNNING), message
    return state != tango.DevState.FAULT, message
