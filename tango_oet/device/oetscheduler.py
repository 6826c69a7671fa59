"""OETScheduler: the Tango face of the ScriptExecutionService (see INTERFACE.md).

Thin by design: each command parses its argin with the domain parsers, calls the service and
returns at once; domain errors become DevFailed in one place (`tango_errors`). Everything a
client sees change is pushed by ONE publisher thread (`EventPublisher`) from the service's
events, under the device's serialization monitor (serial model BY_DEVICE, the default), so
pushes, dynamic attribute creation/removal, reads and commands never interleave. See
docs/device.md for why this and not NO_SYNC.
"""

# Tango names commands and attributes in CamelCase/camelCase (INTERFACE.md): not PEP 8.
# ruff: noqa: N802

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar, cast

import tango
from tango import AttrWriteType, DevState
from tango.server import Device, attribute, command, device_property

from tango_oet.device.attributes import PROCEDURE_ATTRIBUTES, parse_attribute_name
from tango_oet.device.errors import tango_errors
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
from tango_oet.domain.errors import ServiceUnavailable
from tango_oet.domain.requests import (
    parse_gc_request,
    parse_id,
    parse_prepare,
    parse_start,
    parse_stop,
)
from tango_oet.service import ScriptExecutionService, ServiceConfig, make_service
from tango_oet.service.events import ProcedureAdded, ServiceEvent, ServiceStatusChanged

log = logging.getLogger(__name__)

OUTPUT_MAX_LINES = 10000  # max_dim_x of `output`
PUBLISH_WAIT_S = 2.0  # Prepare waits at most this long for its attributes to exist
SPARE_IDS = 2  # procedure ids whose attributes are created ahead of their Prepare
# cppTango pushes an interface-change event ~50 ms after each add/remove_attribute from its
# DevIntrThread, which then needs the device monitor; an add made under the monitor while that
# push is pending was seen to stall the device for the monitor's 3 s timeout. Deferred
# (spare) creations therefore wait until that push is surely out.
STRUCTURAL_SPACING_S = 0.1

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
    """`tango.server.command` seen by the type checker as keeping the method's signature."""
    return cast(Callable[[_F], _F], command(**kwargs))


def _attribute(**kwargs: Any) -> Callable[[_F], _F]:
    """`tango.server.attribute` likewise (tango ships no type stubs)."""
    return cast(Callable[[_F], _F], attribute(**kwargs))


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

    # ---- lifecycle -------------------------------------------------------------------------
    def init_device(self) -> None:
        super().init_device()
        self._service: ScriptExecutionService | None = None
        self._token: int | None = None
        self._model = DeviceModel()
        self._created: set[int] = set()  # procedures whose dynamic attributes exist
        self._events_primed = False
        self._last_structural_change = 0.0
        self._prime_failures = 0
        self._publisher = EventPublisher(self, name=f"oet-publisher:{self.get_name()}")
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
            service = self.create_service(config)
        except Exception as exc:  # a bad property or an engine that cannot start: FAULT
            log.exception("cannot create the script execution service")
            self._execute(self._model.set_state(DeviceState.FAULT, 0, f"{exc}"))
            return
        self._service = service
        self._token = service.subscribe(self._publisher.submit)
        self._publisher.start()
        try:
            service.open()
        except Exception as exc:  # the engine's threads could not start
            log.exception("cannot open the script execution service")
            self._execute(self._model.set_state(DeviceState.FAULT, 0, f"{exc}"))

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
        for procedure_id in sorted(self._created):
            self._remove_procedure_attributes(procedure_id)
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
        # Return only once procedure<ID>State exists, so the caller can subscribe to it at
        # once; the publisher creates it, and needs the monitor this command holds.
        if self._publisher.is_alive():
            with tango.AutoTangoAllowThreads(self):
                self._model.wait_added(procedure_id, PUBLISH_WAIT_S)
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
        attr.set_value(value)

    def _add_procedure_attributes(self, procedure_id: int) -> None:
        if procedure_id in self._created:
            return
        if not self._events_primed:
            log.warning("event channel not open: no attributes for procedure %d", procedure_id)
            return
        for spec in PROCEDURE_ATTRIBUTES:
            name = spec.name(procedure_id)
            self.add_attribute(spec.build(procedure_id), self._read_procedure_attribute)
            self._last_structural_change = time.monotonic()
            self.set_change_event(name, True, False)
            if spec.archive:
                self.set_archive_event(name, True, False)
        self._created.add(procedure_id)

    def _remove_procedure_attributes(self, procedure_id: int) -> None:
        if procedure_id not in self._created:
            return
        self._created.discard(procedure_id)
        for spec in PROCEDURE_ATTRIBUTES:
            name = spec.name(procedure_id)
            try:
                self.remove_attribute(name, free_it=True, clean_db=True)
                self._last_structural_change = time.monotonic()
            except tango.DevFailed:
                log.exception("cannot remove attribute %s", name)
            # pytango keeps a bound read wrapper per dynamic attribute on the instance.
            for key in [k for k in vars(self) if k.startswith(f"__wrapped_read_{name}_")]:
                delattr(self, key)

    def _prime_event_channel(self) -> bool:
        """Make sure the ZMQ event socket exists before the first dynamic attribute change.

        cppTango 10.3 pushes a device-interface-change event 50 ms after add/remove_attribute
        and crashes (SIGSEGV) if no client ever subscribed to an event of this server: the
        publisher socket is only created by the first ZmqEventSubscriptionChange. So subscribe
        to our own interface-change event once, via the admin device, before the first change.
        """
        if self._events_primed:
            return True
        try:
            admin = tango.DeviceProxy(tango.Util.instance().get_dserver_device().get_name())
            admin.command_inout(
                "ZmqEventSubscriptionChange", [self.get_name(), "", "subscribe", "intr_change"]
            )
        except tango.DevFailed as exc:
            self._prime_failures += 1
            if self._prime_failures == 1:  # then quietly retried after every batch
                log.error("cannot open the event channel (per-procedure attributes wait): %s", exc)
            return False
        self._events_primed = True
        return True

    # ---- publishing (publisher thread) -----------------------------------------------------
    def publish_batch(self, events: list[ServiceEvent]) -> None:
        if not self._events_primed and any(isinstance(e, ProcedureAdded) for e in events):
            self._prime_event_channel()  # before taking the monitor (see its docstring)
        with tango.AutoTangoMonitor(self):
            self._execute(self._model.apply(events))

    def on_quiet(self) -> bool:
        """Create the attributes of the next procedure id ahead of its Prepare; one per call.

        `add_attribute` costs two database round trips per attribute (cppTango reads the
        device and class attribute properties), ~3-10 ms per procedure: too slow for the
        Prepare path, so it happens here while nothing else is going on.
        """
        if self._service is None:
            return False
        if tango.Util.instance().is_svr_starting():
            return True  # the admin device (needed to open the event channel) is not up yet
        if not self._prime_event_channel():
            return False
        if time.monotonic() - self._last_structural_change < STRUCTURAL_SPACING_S:
            return True  # retried on the next quiet period
        with tango.AutoTangoMonitor(self):
            missing = [i for i in self._model.next_ids(SPARE_IDS) if i not in self._created]
            if not missing:
                return False
            self._add_procedure_attributes(missing[0])
            return len(missing) > 1 and missing[0] in self._created

    def on_idle(self) -> None:
        service = self._service
        if service is None:
            return
        healthy, message = service.health()
        if not healthy:
            status = ServiceStatusChanged(service.running_count(), False, message)
            with tango.AutoTangoMonitor(self):
                self._execute(self._model.apply([status]))

    def _push(self, push: Push) -> None:
        """Push change (and archive) events, only to listeners: nobody listening, no cost."""
        change = self.is_there_subscriber(push.attribute, _CHANGE)
        archive = push.archive and self.is_there_subscriber(push.attribute, _ARCHIVE)
        if not (change or archive):
            return
        value = push.resolve()
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
                    case AddProcedure(procedure_id=pid):
                        self._add_procedure_attributes(pid)
                    case RemoveProcedure(procedure_id=pid):
                        self._remove_procedure_attributes(pid)
                    case Push(attribute=name):
                        parsed = parse_attribute_name(name)
                        if parsed is None or parsed[0] in self._created:
                            self._push(op)
                    case SetState(state=state, status=status):
                        dev_state = _DEV_STATE[state]
                        self.set_state(dev_state)
                        self.set_status(status)
                        self._push(Push("State", dev_state, archive=True))
                        self._push(Push("Status", status))
            except tango.DevFailed:  # one failed push must not lose the rest of the batch
                log.exception("cannot execute %r", op)
