"""OETScheduler: the Tango face of the ScriptExecutionService (see INTERFACE.md).

Thin by design: each command parses its argin with the domain parsers, calls the service and
returns at once; domain errors become DevFailed in one place (`tango_errors`). Everything a
client sees change is pushed by ONE publisher thread (`EventPublisher`) from the service's
events, under the device's serialization monitor (serial model BY_DEVICE, the default), so
pushes, dynamic attribute creation/removal, reads and commands never interleave. The same
thread makes every structural change (per-procedure attributes, `Structure`), one at a time,
each only after cppTango has pushed the previous one's interface-change event
(`InterfaceWatch`): a change made while cppTango's interface thread waits for the monitor
deadlocks for 3.2 s. See docs/device.md.
"""

# Tango names commands and attributes in CamelCase/camelCase (INTERFACE.md): not PEP 8.
# ruff: noqa: N802

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast

import tango
from tango import AttrWriteType, DevState
from tango.server import Device, attribute, command, device_property

from tango_oet.device.attributes import PROCEDURE_ATTRIBUTES, parse_attribute_name
from tango_oet.device.errors import tango_errors
from tango_oet.device.interface import InterfaceWatch
from tango_oet.device.model import (
    AddProcedure,
    DeviceModel,
    DeviceState,
    Op,
    Push,
    RemoveProcedure,
    SetState,
)
from tango_oet.device.properties import PROPERTY_DEFAULTS, config_from_properties
from tango_oet.device.publisher import EventPublisher
from tango_oet.device.structure import Change, Structure
from tango_oet.discovery import ScriptCatalog
from tango_oet.domain.errors import InvalidRequest, ServiceUnavailable
from tango_oet.domain.requests import (
    parse_gc_request,
    parse_id,
    parse_list_scripts,
    parse_prepare,
    parse_start,
    parse_stop,
)
from tango_oet.domain.text import clean, from_wire, lines_to_wire, to_wire
from tango_oet.service import ScriptExecutionService, ServiceConfig, make_service
from tango_oet.service.events import (
    ProcedureAdded,
    ProcedureRemoved,
    ServiceEvent,
    ServiceStatusChanged,
)

log = logging.getLogger(__name__)

OUTPUT_MAX_LINES = 10000  # max_dim_x of `output`
PUBLISH_WAIT_S = 2.0  # Prepare waits at most this long for its attributes to exist
#: Procedure ids whose attributes are created ahead of their Prepare. Each structural change
#: costs one cppTango interface-change cycle (>= 50 ms), so spares keep Prepare fast.
SPARE_IDS = 4
CHANNEL_RETRY_S = 1.0  # the event channel could not be opened: try again after this long

_DEV_STATE = {
    DeviceState.INIT: DevState.INIT,
    DeviceState.ON: DevState.ON,
    DeviceState.RUNNING: DevState.RUNNING,
    DeviceState.FAULT: DevState.FAULT,
}
_CHANGE = tango.EventType.CHANGE_EVENT
_ARCHIVE = tango.EventType.ARCHIVE_EVENT
_STATIC_EVENTS = (
    "State",
    "Status",
    "procedures",
    "lastEvent",
    "lastTransition",
    "output",
    "environments",
)
_STATIC_ARCHIVE = ("State", "lastEvent", "lastTransition")


_F = TypeVar("_F", bound=Callable[..., Any])


def _command(**kwargs: Any) -> Callable[[_F], _F]:
    """`tango.server.command` seen by the type checker as keeping the method's signature.

    Every DevString argin and result is UTF-8 on the wire, here for every command at once:
    the argin is decoded (`from_wire`; not UTF-8: OET_InvalidRequest) before the method sees
    it, and a text result is handed to pytango as its UTF-8 bytes.
    """
    text_in, text_out = kwargs.get("dtype_in") is str, kwargs.get("dtype_out") is str

    def decorate(method: _F) -> _F:
        if not (text_in or text_out):
            return cast(_F, command(**kwargs)(method))

        @functools.wraps(method)
        def utf8(self: OETScheduler, *args: Any) -> Any:
            if text_in:
                with tango_errors(f"OETScheduler.{method.__name__}"):
                    args = tuple(from_wire(a) for a in args)
            result = method(self, *args)
            return to_wire(result) if text_out else result

        return cast(_F, command(**kwargs)(utf8))

    return decorate


def _attribute(**kwargs: Any) -> Callable[[_F], _F]:
    """`tango.server.attribute` likewise (tango ships no type stubs); text is sent as UTF-8."""

    def decorate(read: _F) -> _F:
        @functools.wraps(read)
        def utf8(self: OETScheduler) -> Any:
            return _wire(read(self))

        return cast(_F, attribute(**kwargs)(utf8))

    return decorate


def _wire(value: Any) -> Any:
    """A value as pytango must get it: text (alone or in a list) as its UTF-8 bytes."""
    if isinstance(value, str):
        return to_wire(value)
    if isinstance(value, list | tuple) and value and isinstance(value[0], str):
        return lines_to_wire(value)
    return value


def _prop(name: str, dtype: Any, doc: str) -> Any:
    return device_property(dtype=dtype, default_value=PROPERTY_DEFAULTS[name][1], doc=doc)


class OETScheduler(Device):  # type: ignore[misc]  # tango has no type stubs
    """Prepare, start, stop, pause and resume observing scripts; publish their lifecycle."""

    ScriptRoots = _prop("ScriptRoots", (str,), "Allowed directories of file:// scripts")
    GitAllowList = _prop("GitAllowList", (str,), "fnmatch patterns of allowed git repos")
    AllowEmbedded = _prop("AllowEmbedded", bool, "Accept embedded:// scripts")
    PoolSize = _prop("PoolSize", int, "Idle worker processes kept warm")
    MaxRunning = _prop("MaxRunning", int, "Max procedures RUNNING at once (0 = unlimited)")
    HistoryLength = _prop("HistoryLength", int, "Procedures kept in the history")
    DataDirectory = _prop("DataDirectory", str, "Git caches and environments")
    StopCooperativeSeconds = _prop("StopCooperativeSeconds", float, "Stop: cooperative rung")
    StopTermSeconds = _prop("StopTermSeconds", float, "Stop: SIGTERM rung")
    StopKillSeconds = _prop("StopKillSeconds", float, "Stop: SIGKILL rung")
    AbortScript = _prop("AbortScript", str, "Absolute path of the abort script")
    StartMethod = _prop("StartMethod", str, "Worker start method: forkserver or spawn")
    OutputLinesKept = _prop("OutputLinesKept", int, "Output lines a read of `output` returns")
    MaxLive = _prop("MaxLive", int, "Max procedures holding a process (0 = unlimited)")
    MaxScriptBytes = _prop("MaxScriptBytes", int, "Largest script Prepare accepts (0 = any)")
    WorkerMemoryMB = _prop("WorkerMemoryMB", int, "A worker's address space limit (0 = none)")
    WorkerCpuSeconds = _prop("WorkerCpuSeconds", int, "A worker's CPU time limit (0 = none)")
    MaxResultBytes = _prop("MaxResultBytes", int, "Largest result/event payload, JSON (0 = any)")
    WorkerUser = _prop("WorkerUser", str, "Account scripts run as, when the server is root")
    WorkerEnvironment = _prop(
        "WorkerEnvironment", (str,), "Environment scripts see: NAME, PREFIX* or NAME=VALUE"
    )

    # ---- lifecycle -------------------------------------------------------------------------
    def init_device(self) -> None:
        super().init_device()
        self._service: ScriptExecutionService | None = None
        self._token: int | None = None
        self._model = DeviceModel()
        # Kept across Init: cppTango keeps the dynamic attributes whatever Init does.
        structure: Structure | None = getattr(self, "_structure", None)
        self._structure = structure if structure is not None else Structure()
        self._structure.restart()
        watch: InterfaceWatch | None = getattr(self, "_interface", None)
        self._interface = watch if watch is not None else InterfaceWatch(self.get_name())
        self._channel_failures = 0
        self._warned = False  # Status names attributes that could not be made
        self._publisher = EventPublisher(self, name=f"oet-publisher:{self.get_name()}")
        self._interface.wake = self._publisher.wake
        for name in _STATIC_EVENTS:
            self.set_change_event(name, True, False)
        for name in _STATIC_ARCHIVE:
            self.set_archive_event(name, True, False)
        self._execute(self._model.set_state(DeviceState.INIT, 0, "Reading the properties."))
        try:
            config = config_from_properties(
                {name: getattr(self, name) for name in PROPERTY_DEFAULTS}
            )
            # Named: the history is durable and every worker's descendants are contained.
            config = dataclasses.replace(config, instance_name=self.get_name())
            self._catalog = ScriptCatalog(config.script_roots)
            service = self.create_service(config)
        except Exception as exc:  # a bad property or an engine that cannot start: FAULT
            log.exception("cannot create the script execution service")
            self._execute(self._model.set_state(DeviceState.FAULT, 0, f"{exc}"))
            return
        self._service = service
        self._token = service.subscribe(self._publisher.submit)
        try:
            service.open()
            service.flush_events()
        except Exception as exc:  # the engine's threads could not start
            log.exception("cannot open the script execution service")
            self._execute(self._model.set_state(DeviceState.FAULT, 0, f"{exc}"))
        # The restored history is in the model, so readable, before init_device returns.
        self._publisher.drain()
        self._want()
        if tango.Util.instance().is_svr_starting():
            # No event subscription can exist yet, so no interface thread: the restored
            # procedures' attributes are all made now, before clients can connect.
            while (change := self._structure.next_change()) is not None:
                self._make(change, watched=False)
        self._publisher.start()

    def create_service(self, config: ServiceConfig) -> ScriptExecutionService:
        """The one factory of the engine; tests patch it to inject a different service."""
        return make_service(config)

    def delete_device(self) -> None:
        """Stop every procedure, join every worker, publish the last events, drop attributes."""
        service, self._service = self._service, None
        # Release the monitor while waiting: the publisher needs it to push the final events.
        with tango.AutoTangoAllowThreads(self):
            if service is not None:
                service.shutdown()
                if self._token is not None:
                    service.unsubscribe(self._token)
            self._publisher.stop()
            self._model.release_waiters()
            self._structure.release()
            if tango.Util.instance().is_svr_shutting_down():
                self._interface.close()  # at Init it stays: the attributes stay too
        # The per-procedure attributes stay: Init keeps the history, and at exit they go anyway.
        super().delete_device()

    # ---- commands --------------------------------------------------------------------------
    @_command(
        dtype_in=str,
        dtype_out=tango.DevLong,
        doc_in='JSON: {"script": "file://|git://|embedded://…", "init": {"args", "kwargs"}, …}',
        doc_out="procedure id (> 0); loading and init continue in the background",
    )
    def Prepare(self, request: str) -> int:
        with tango_errors("OETScheduler.Prepare"):
            procedure_id = self._require_service().prepare(parse_prepare(request))
        # Return only once procedure<ID>State and …Summary exist, so the caller can subscribe
        # at once; the publisher creates them, and needs the monitor this command holds.
        if self._publisher.is_alive():
            deadline = time.monotonic() + PUBLISH_WAIT_S
            with tango.AutoTangoAllowThreads(self):
                if self._model.wait_added(procedure_id, PUBLISH_WAIT_S):
                    for kind in ("State", "Summary"):
                        left = max(0.0, deadline - time.monotonic())
                        self._structure.wait_exists(procedure_id, kind, left)
        return procedure_id

    @_command(dtype_in=str, doc_in='JSON: {"id", "function": "main", "args", "kwargs", "force"}')
    def Start(self, request: str) -> None:
        with tango_errors("OETScheduler.Start"):
            self._require_service().start(parse_start(request))

    @_command(dtype_in=str, doc_in='JSON: {"id", "abort": false}')
    def Stop(self, request: str) -> None:
        with tango_errors("OETScheduler.Stop"):
            self._require_service().stop(parse_stop(request))

    @_command(dtype_in=tango.DevLong, doc_in="procedure id")
    def Pause(self, procedure_id: int) -> None:
        with tango_errors("OETScheduler.Pause"):
            self._require_service().pause(parse_id(procedure_id))

    @_command(dtype_in=tango.DevLong, doc_in="procedure id")
    def Resume(self, procedure_id: int) -> None:
        with tango_errors("OETScheduler.Resume"):
            self._require_service().resume(parse_id(procedure_id))

    @_command(dtype_in=tango.DevLong, dtype_out=str, doc_out="JSON summary")
    def Describe(self, procedure_id: int) -> str:
        with tango_errors("OETScheduler.Describe"):
            return self._require_service().describe(parse_id(procedure_id)).to_json_text()

    @_command(dtype_out=str, doc_out="JSON list of all summaries in the history, oldest first")
    def List(self) -> str:
        with tango_errors("OETScheduler.List"):
            summaries = self._require_service().list()
        return "[" + ",".join(s.to_json_text() for s in summaries) + "]"

    @_command(
        dtype_in=str,
        doc_in='JSON: {"keep": N, "max_age_days": D} (both optional; defaults: the properties)',
    )
    def CollectGarbage(self, request: str) -> None:
        """Remove unused clones and environments in the background; see `environments`."""
        with tango_errors("OETScheduler.CollectGarbage"):
            keep, max_age = parse_gc_request(request)
            self._require_service().collect_garbage(keep, max_age)

    @_command(
        dtype_in=str,
        dtype_out=str,
        doc_in='JSON: {} or {"root": "<one of ScriptRoots>"}',
        doc_out='JSON list of {"uri", "doc", "functions"} of each *.py under the roots',
    )
    def ListScripts(self, request: str) -> str:
        """Scripts a Prepare may name, described from their source (`ast`), never imported."""
        with tango_errors("OETScheduler.ListScripts"):
            root = parse_list_scripts(request)
            self._require_service()
            try:
                with tango.AutoTangoAllowThreads(self):  # a big tree takes a while: let others in
                    entries, truncated = self._catalog.list(None if root is None else Path(root))
            except ValueError as exc:
                raise InvalidRequest("root", str(exc)) from None
        if truncated:
            log.warning("ListScripts: only the first %d scripts listed", len(entries))
        return json.dumps(entries, separators=(",", ":"))

    def _require_service(self) -> ScriptExecutionService:
        if self._service is None:
            raise ServiceUnavailable(f"the script execution engine is not running: {self._status}")
        return self._service

    @property
    def _status(self) -> str:
        return self._model.status

    # ---- static attributes -----------------------------------------------------------------
    @_attribute(dtype=str, doc="JSON list of the summaries of all procedures, newest last")
    def procedures(self) -> str:
        return self._model.procedures_json()

    @_attribute(dtype=str, doc='Last user event: JSON {"id","topic","payload","time","seq"}')
    def lastEvent(self) -> str:
        return self._model.last_event()

    @_attribute(dtype=str, doc='Last state change of any procedure: {"id","state","time","seq"}')
    def lastTransition(self) -> str:
        return self._model.last_transition()

    @_attribute(
        dtype=(str,),
        max_dim_x=OUTPUT_MAX_LINES,
        access=AttrWriteType.READ,
        doc='Output lines "<id> <line>": events carry new lines, a read the last N',
    )
    def output(self) -> list[str]:
        service = self._service
        if service is None:
            return []
        return service.recent_output()[-OUTPUT_MAX_LINES:]

    @_attribute(
        dtype=str,
        doc='Disk usage of git clones and environments: JSON {"entries", "total_bytes", "removed"}',
    )
    def environments(self) -> str:
        return self._model.environments()

    # ---- dynamic per-procedure attributes --------------------------------------------------
    def _read_procedure_attribute(self, attr: Any) -> None:
        name = attr.get_name()
        parsed = parse_attribute_name(name)
        value: Any = None
        if parsed is not None:
            procedure_id, kind = parsed
            if kind == "State":
                state = self._model.procedure_state(procedure_id)
                value = None if state is None else int(state)
            else:
                value = self._model.procedure_summary(procedure_id)
        if value is None:
            # A spare: the attributes of the next procedure ids exist before their Prepare.
            # INVALID quality (no value), not an error, so a subscription made now (a
            # dashboard opened before Prepare; TangoGQL treats an error as a failed
            # subscription and falls back to polling) is a real one and sees every state.
            attr.set_value_date_quality(0, time.time(), tango.AttrQuality.ATTR_INVALID)
            return
        attr.set_value(_wire(value))

    # ---- structural changes (publisher thread; at start, init_device) -------------------------
    def _want(self) -> None:
        """Tell the structure which procedures the attributes must follow now."""
        service = self._service
        spares = service.next_ids(SPARE_IDS) if service is not None else []
        self._structure.want(self._model.procedure_ids(), spares)

    def _make(self, change: Change, *, watched: bool = True) -> None:
        """Add or remove one attribute, under the monitor; record what happened.

        `watched`: note the threads the change starts (cppTango's interface thread), so the
        next change waits for them; not while the server starts (no such thread then).
        """
        name = change.name
        spec = next(s for s in PROCEDURE_ATTRIBUTES if s.kind == change.kind)
        with tango.AutoTangoMonitor(self):
            if watched:
                self._interface.begin_change()
            try:
                if change.add:
                    attr = spec.build(change.procedure_id)
                    self.add_attribute(attr, self._read_procedure_attribute)
                    self._configure_events(name, spec.archive)
                else:
                    self.remove_attribute(name, free_it=True, clean_db=True)
                    # pytango keeps a bound read wrapper per dynamic attribute on the instance.
                    for key in [k for k in vars(self) if k.startswith(f"__wrapped_read_{name}_")]:
                        delattr(self, key)
                if watched:
                    self._interface.end_change()
            except tango.DevFailed as exc:
                if watched:
                    self._interface.end_change()
                if self._has_attribute(name) != change.add:
                    log.error("cannot %s %s: %s", "add" if change.add else "remove", name, exc)
                    self._structure.failed(change, str(exc.args[0].desc).strip())
                    return
                # cppTango raises after the change when its interface thread is late.
                log.warning("%s %s, with an error: %s", "+" if change.add else "-", name, exc)
                if change.add:
                    self._configure_events(name, spec.archive)
        self._structure.done(change)

    def _configure_events(self, name: str, archive: bool) -> None:
        self.set_change_event(name, True, False)
        if archive:
            self.set_archive_event(name, True, False)

    def _has_attribute(self, name: str) -> bool:
        try:
            self.get_device_attr().get_attr_by_name(name)
        except tango.DevFailed:
            return False
        return True

    def on_turn(self) -> float | None:
        """One structural change, if one is due and cppTango is ready for it (publisher)."""
        if self._service is None:
            return None
        change = self._structure.next_change()
        if change is None:
            return CHANNEL_RETRY_S if self._structure.pending() else None
        if not self._interface.is_open:
            if tango.Util.instance().is_svr_starting():
                return 0.05  # the admin device that takes subscriptions is not up yet
            try:
                self._interface.open()
            except tango.DevFailed as exc:
                self._channel_failures += 1
                if self._channel_failures == 1:  # then retried quietly
                    log.error("cannot subscribe to the device's interface events: %s", exc)
                return CHANNEL_RETRY_S
        wait = self._interface.wait_s()
        if wait > 0:
            return wait
        self._make(change)
        return self._interface.wait_s()

    # ---- publishing (publisher thread) -----------------------------------------------------
    def publish_batch(self, events: list[ServiceEvent]) -> None:
        with tango.AutoTangoMonitor(self):
            self._execute(self._model.apply(events))
        if any(isinstance(e, ProcedureAdded | ProcedureRemoved) for e in events):
            self._want()

    def on_idle(self) -> None:
        service = self._service
        if service is None:
            return
        healthy, message = service.health()
        failures = self._structure.failures()
        if failures:
            # Said in Status (and retried) until the attributes exist: not a FAULT of the engine.
            listed = "; ".join(f"{name}: {error}" for name, error in sorted(failures.items()))
            message = f"{message}; WARNING: attributes not made yet (retried): {listed}"
        if not healthy or failures or self._warned:
            self._warned = bool(failures)
            status = ServiceStatusChanged(service.running_count(), healthy, message)
            with tango.AutoTangoMonitor(self):
                self._execute(self._model.apply([status]))

    def _push(self, push: Push) -> None:
        """Push change (and archive) events, only to listeners: nobody listening, no cost."""
        change = self.is_there_subscriber(push.attribute, _CHANGE)
        archive = push.archive and self.is_there_subscriber(push.attribute, _ARCHIVE)
        if not (change or archive):
            return
        value = _wire(push.resolve())
        if value is None:
            return
        if change:
            self.push_change_event(push.attribute, value)
        if archive:
            self.push_archive_event(push.attribute, value)

    def _execute(self, ops: list[Op]) -> None:
        for op in ops:
            try:
                match op:
                    case AddProcedure() | RemoveProcedure():
                        pass  # the structure follows the history (`_want`, `on_turn`)
                    case Push(attribute=name):
                        parsed = parse_attribute_name(name)
                        if parsed is None or self._structure.exists(*parsed):
                            self._push(op)
                    case SetState(state=state, status=status):
                        dev_state = _DEV_STATE[state]
                        self.set_state(dev_state)
                        self.set_status(clean(status))  # pytango sends it as UTF-8
                        self._push(Push("State", dev_state, archive=True))
                        self._push(Push("Status", status))
            except Exception:  # one failed push must not lose the rest of the batch
                log.exception("cannot execute %r", op)
