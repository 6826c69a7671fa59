"""`Scheduler`: a typed client of one OETScheduler device (a thin layer over `tango.DeviceProxy`).

    from tango_oet.client import Scheduler
    oet = Scheduler("oet/scheduler/1")            # or a full TRL: tango://host:port/oet/…
    proc = oet.prepare("/scripts/hello_world.py", init_args=["Moon"])
    proc.start("main", 2, force=True)
    print(proc.wait_final(timeout=60).result)

Plain blocking objects (no asyncio), so the same code works in scripts, tests and itango.
Every DevFailed surfaces as a typed exception from tango_oet.client.errors.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import tango

from tango_oet.client.errors import DeviceError, translated
from tango_oet.client.events import EventStream
from tango_oet.client.procedure import Procedure
from tango_oet.client.requests import GitLike, ScriptLike, prepare_request
from tango_oet.client.summary import Summary
from tango_oet.domain.text import from_tango

DEFAULT_DEVICE = "oet/scheduler/1"
DEFAULT_TIMEOUT_MS = 10_000  # Prepare may wait up to 2 s for its attributes to be published


class Scheduler:
    """One OETScheduler device. `device` is a name, a full TRL or an existing DeviceProxy."""

    def __init__(
        self,
        device: str | tango.DeviceProxy = DEFAULT_DEVICE,
        timeout_ms: int = DEFAULT_TIMEOUT_MS,
    ) -> None:
        if isinstance(device, str):
            self._name = device
            with translated(device):
                self._proxy = tango.DeviceProxy(device)
        else:
            self._proxy = device
            self._name = str(device.dev_name())
        with translated(self._name):
            self._proxy.set_timeout_millis(int(timeout_ms))

    @property
    def name(self) -> str:
        """The device as given (name or TRL)."""
        return self._name

    @property
    def proxy(self) -> tango.DeviceProxy:
        """The underlying DeviceProxy, for anything this class does not wrap."""
        return self._proxy

    def command(self, name: str, argin: Any = None) -> Any:
        """Run a device command; DevFailed becomes a typed DeviceError."""
        with translated(self._name):
            if argin is None:
                return self._proxy.command_inout(name)
            return self._proxy.command_inout(name, argin)

    # ---- the device --------------------------------------------------------------------------
    def state(self) -> str:
        """The device State (ON, RUNNING, FAULT, INIT …)."""
        with translated(self._name):
            return str(self._proxy.state())

    def status(self) -> str:
        with translated(self._name):
            return from_tango(str(self._proxy.status()))

    # ---- procedures --------------------------------------------------------------------------
    def prepare(
        self,
        script: ScriptLike,
        *,
        init_args: Sequence[Any] = (),
        init_kwargs: Mapping[str, Any] | None = None,
        git: GitLike | None = None,
        create_env: bool = False,
        source: str | None = None,
    ) -> Procedure:
        """Create a procedure and return its handle at once (loading continues on the server).

        `script` is a URI (`file://`, `git://`, `embedded://`), or a path (sent as the
        file:// URI of its absolute path), or with `git` a path inside the repository, or
        with `source` the name of an embedded script.
        """
        request = prepare_request(
            script,
            init_args=init_args,
            init_kwargs=init_kwargs,
            git=git,
            create_env=create_env,
            source=source,
        )
        procedure_id = self.command("Prepare", json.dumps(request))
        return Procedure(self, int(procedure_id))

    def procedure(self, procedure_id: int) -> Procedure:
        """The handle of an existing procedure; raises UnknownProcedure if it is not there."""
        handle = Procedure(self, procedure_id)
        handle.summary()
        return handle

    def procedures(self) -> list[Summary]:
        """Summaries of every procedure in the history, oldest first."""
        with translated(self._name):
            text = self._proxy.read_attribute("procedures").value
        return [Summary.from_json(obj) for obj in json.loads(text or "[]")]

    def list_scripts(self, root: str | None = None) -> list[dict[str, Any]]:
        """Every script under the device's ScriptRoots (or under `root`, one of them), each
        `{"uri", "doc", "functions"}` as its source describes it; nothing of it is executed."""
        request = {} if root is None else {"root": root}
        entries: list[dict[str, Any]] = json.loads(self.command("ListScripts", json.dumps(request)))
        return entries

    def events(self, *, output: bool = True) -> EventStream:
        """Live events of every procedure, until the stream is closed."""
        return EventStream(self._proxy, None, output=output, device=self._name)

    # ---- Python ------------------------------------------------------------------------------
    def __repr__(self) -> str:
        try:
            state = self.state()
            count = len(self.procedures())
            return f"<Scheduler {self._name} {state}, {count} procedure(s)>"
        except DeviceError as exc:
            return f"<Scheduler {self._name} unreachable: {exc.reason}>"
