"""Resource limits of a worker process (INTERFACE v2 `WorkerMemoryMB`, `WorkerCpuSeconds`,
`MaxResultBytes`).

Applied by the worker itself before it loads a script, with `setrlimit`: the address space
(an allocation beyond it raises MemoryError in the script) and the CPU time (at the limit the
worker raises CpuTimeExceeded in the script, one second later the kernel kills it). Standard
library only: the worker imports it.
"""

from __future__ import annotations

import os
import pwd
import resource
import signal
import types
from dataclasses import dataclass


class CpuTimeExceeded(BaseException):
    """The script used the worker's CPU time limit (WorkerCpuSeconds). Not an Exception: a
    script's `except Exception` must not swallow it."""


class ResultTooLarge(BaseException):
    """A call's result or an event's payload is larger than MaxResultBytes (as JSON). Not an
    Exception: it fails the call even in a script that catches `Exception`."""


@dataclass(frozen=True)
class WorkerLimits:
    """0 = no limit. `max_result_bytes` bounds a result or event payload, as JSON. `user`: the
    account scripts run as (WorkerUser), taken on only by a worker started as root."""

    memory_mb: int = 0
    cpu_seconds: int = 0
    max_result_bytes: int = 0
    user: str = ""

    def __post_init__(self) -> None:
        if min(self.memory_mb, self.cpu_seconds, self.max_result_bytes) < 0:
            raise ValueError(f"worker limits must be >= 0 (0 = none), got {self}")
        if self.user:
            try:
                pwd.getpwnam(self.user)
            except KeyError:
                raise ValueError(f"WorkerUser {self.user!r}: no such account") from None

    @property
    def any(self) -> bool:
        return bool(self.memory_mb or self.cpu_seconds or self.max_result_bytes or self.user)

    def become_user(self) -> None:
        """Run as `user` from now on (groups, gid, uid, HOME); only as root, else a no-op.

        Irrevocable: a script cannot take root back. Raises KeyError for an unknown account.
        """
        if not self.user or os.geteuid() != 0:
            return
        account = pwd.getpwnam(self.user)
        os.setgroups(os.getgrouplist(account.pw_name, account.pw_gid))
        os.setgid(account.pw_gid)
        os.setuid(account.pw_uid)
        os.environ["HOME"] = account.pw_dir

    def apply(self) -> None:
        """Limit this process (the worker); a limit the system caps lower stays as it is."""
        if self.memory_mb:
            _lower(resource.RLIMIT_AS, self.memory_mb << 20)
        if self.cpu_seconds:
            used = resource.getrusage(resource.RUSAGE_SELF)
            spent = int(used.ru_utime + used.ru_stime)  # the worker's start counts too: small
            signal.signal(signal.SIGXCPU, _on_sigxcpu)
            _lower(resource.RLIMIT_CPU, spent + self.cpu_seconds, hard_extra=1)


def _lower(which: int, soft: int, hard_extra: int = 0) -> None:
    _, hard = resource.getrlimit(which)
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    new_hard = soft + hard_extra
    if hard != resource.RLIM_INFINITY:
        new_hard = min(new_hard, hard)
    resource.setrlimit(which, (soft, new_hard))


def _on_sigxcpu(signum: int, frame: types.FrameType | None) -> None:
    raise CpuTimeExceeded("the worker's CPU time limit (WorkerCpuSeconds) is used up")
