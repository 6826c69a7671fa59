"""Configuration of the ScriptExecutionService (the device maps its properties onto this)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from tango_oet.execution.environment import DEFAULT_WORKER_ENVIRONMENT, check_entries
from tango_oet.execution.limits import WorkerLimits
from tango_oet.execution.supervisor import StopDeadlines


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "tango-oet"


@dataclass(frozen=True)
class ServiceConfig:
    pool_size: int = 2
    max_running: int = 0  # 0 = unlimited
    max_live: int = 0  # procedures holding (or about to hold) a process; 0 = unlimited
    max_script_bytes: int = 0  # 0 = unlimited
    worker_limits: WorkerLimits = field(default_factory=WorkerLimits)
    history_length: int = 100
    script_roots: tuple[Path, ...] = ()  # allowed dirs for file:// scripts; empty = none
    # The engine's own default, for code that builds it directly (benchmarks, engine tests);
    # the device's AllowEmbedded property defaults to false and is always mapped onto this.
    allow_embedded: bool = True
    git_allow: tuple[str, ...] = ()  # fnmatch patterns of repository URLs; empty = no git
    #: What scripts see of the environment (names, PREFIX*, NAME=VALUE); None: everything.
    worker_environment: tuple[str, ...] | None = DEFAULT_WORKER_ENVIRONMENT
    data_dir: Path = field(default_factory=default_data_dir)
    deadlines: StopDeadlines = field(default_factory=StopDeadlines)
    start_method: str = "forkserver"
    abort_script: Path | None = None
    output_lines_kept: int = 1000
    git_find_links: tuple[str, ...] = ()  # extra --find-links for environment builds
    git_no_index: bool = False  # install only from git_find_links (air-gapped sites, tests)
    env_keep: int = 20  # environments/clones kept by garbage collection
    env_max_age_days: float | None = None
    # The device's name: with one, history is durable (a store under data_dir) and every
    # process a worker starts is contained; without (engine tests), both stay in memory.
    instance_name: str = ""
    # How long a command waits for the engine loop's answer before ServiceUnavailable (well
    # inside cppTango's 3 s client timeout).
    command_timeout_s: float = 2.0

    def __post_init__(self) -> None:
        if self.pool_size < 0:
            raise ValueError(f"pool_size must be >= 0, got {self.pool_size}")
        if self.max_live < 0 or self.max_script_bytes < 0:
            raise ValueError("max_live and max_script_bytes must be >= 0 (0 = unlimited)")
        if self.max_running < 0:
            raise ValueError(f"max_running must be >= 0, got {self.max_running}")
        if self.history_length < 1:
            raise ValueError(f"history_length must be >= 1, got {self.history_length}")
        if self.command_timeout_s <= 0:
            raise ValueError(f"command_timeout_s must be > 0, got {self.command_timeout_s}")
        if self.worker_environment is not None:
            check_entries(self.worker_environment)  # ValueError naming the bad entry
        if self.start_method not in ("forkserver", "spawn"):
            raise ValueError(f"start_method must be forkserver or spawn: {self.start_method!r}")
