"""Device properties of OETScheduler and their mapping onto the engine's ServiceConfig.

Kept free of `tango` so the mapping (defaults, validation, units) is testable on its own; the
device declares one `device_property` per entry of PROPERTY_DEFAULTS.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tango_oet.execution.environment import DEFAULT_WORKER_ENVIRONMENT
from tango_oet.execution.limits import WorkerLimits
from tango_oet.execution.supervisor import StopDeadlines
from tango_oet.service.config import ServiceConfig, default_data_dir

#: name -> (python type, default). Every default works out of the box, and the script policy
#: is deny by default (INTERFACE.md, "Safe by default"): with none of the first three set,
#: every Prepare is refused with OET_ScriptNotAllowed naming the property to set.
PROPERTY_DEFAULTS: dict[str, tuple[type, Any]] = {
    "ScriptRoots": (list, []),  # allowed directories for file:// scripts; empty = none
    "GitAllowList": (list, []),  # fnmatch patterns of allowed repository URLs; empty = none
    "AllowEmbedded": (bool, False),
    "PoolSize": (int, 2),  # idle workers kept warm
    "MaxRunning": (int, 0),  # 0 = unlimited
    "HistoryLength": (int, 100),
    "DataDirectory": (str, ""),  # "" = $XDG_DATA_HOME/tango-oet
    "StopCooperativeSeconds": (float, 0.02),
    "StopTermSeconds": (float, 2.0),
    "StopKillSeconds": (float, 5.0),
    "AbortScript": (str, ""),  # "" = Stop with abort is refused
    "StartMethod": (str, "forkserver"),  # or "spawn"
    "OutputLinesKept": (int, 1000),
    # Limits, 0 = none (INTERFACE v2 "Safe by default").
    "MaxLive": (int, 0),  # procedures holding a process; Prepare beyond: OET_CapacityExceeded
    "MaxScriptBytes": (int, 0),
    "WorkerMemoryMB": (int, 0),  # a worker's address space
    "WorkerCpuSeconds": (int, 0),
    "MaxResultBytes": (int, 0),  # a call's result or an event payload, as JSON
    "WorkerUser": (str, ""),  # account scripts run as when the server runs as root
    # What scripts see of the environment: names, PREFIX*, NAME=VALUE (INTERFACE v2).
    "WorkerEnvironment": (list, list(DEFAULT_WORKER_ENVIRONMENT)),
}


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        value = [value]
    items: Sequence[Any] = value if value is not None else []
    return [str(v).strip() for v in items if str(v).strip()]


def config_from_properties(props: Mapping[str, Any]) -> ServiceConfig:
    """Build the ServiceConfig; raises ValueError naming the property that is wrong."""

    def get(name: str) -> Any:
        value = props.get(name)
        return PROPERTY_DEFAULTS[name][1] if value is None else value

    data_dir = str(get("DataDirectory")).strip()
    abort = str(get("AbortScript")).strip()
    try:
        deadlines = StopDeadlines(
            cooperative_s=float(get("StopCooperativeSeconds")),
            term_s=float(get("StopTermSeconds")),
            kill_s=float(get("StopKillSeconds")),
        )
    except ValueError as exc:
        raise ValueError(f"Stop*Seconds properties: {exc}") from exc
    if abort and not Path(abort).is_absolute():
        raise ValueError(f"AbortScript must be an absolute path, got {abort!r}")
    roots = tuple(Path(r).expanduser() for r in _strings(get("ScriptRoots")))
    relative = [str(r) for r in roots if not r.is_absolute()]
    if relative:
        raise ValueError(f"ScriptRoots must be absolute paths, got {relative}")
    try:
        return ServiceConfig(
            pool_size=int(get("PoolSize")),
            max_running=int(get("MaxRunning")),
            history_length=int(get("HistoryLength")),
            script_roots=roots,
            allow_embedded=bool(get("AllowEmbedded")),
            git_allow=tuple(_strings(get("GitAllowList"))),
            data_dir=Path(data_dir).expanduser() if data_dir else default_data_dir(),
            deadlines=deadlines,
            start_method=str(get("StartMethod")).strip(),
            abort_script=Path(abort) if abort else None,
            output_lines_kept=int(get("OutputLinesKept")),
            worker_environment=tuple(_strings(get("WorkerEnvironment"))),
            max_live=int(get("MaxLive")),
            max_script_bytes=int(get("MaxScriptBytes")),
            worker_limits=WorkerLimits(
                int(get("WorkerMemoryMB")),
                int(get("WorkerCpuSeconds")),
                int(get("MaxResultBytes")),
                str(get("WorkerUser")).strip(),
            ),
        )
    except ValueError as exc:
        # ServiceConfig names the field in snake_case; say which property that is.
        raise ValueError(f"invalid device property: {exc}") from exc
