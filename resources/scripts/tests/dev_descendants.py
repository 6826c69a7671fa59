"""Device-test script: starts descendants of a chosen kind, publishes their pids, then waits.

`main(kind)` with kind "child" (a plain `sleep` child), "setsid" (a child in its own session),
"daemon" (double-forked: setsid, fork again, the first child exits, the grandchild execs
`sleep`), or "all" (each of them). Then it waits the way `wait` says: "checkpoint" (honours
Stop/Pause), "busy" (never checks), "ignore_term" (SIGTERM ignored, never checks).
The pids come out as a user event `descendants` so a test can check each one is gone later.
"""

import os
import signal
import subprocess
import time

from tango_oet.scripting import checkpoint, publish

_children: list["subprocess.Popen[bytes]"] = []


def _sleep_child(new_session: bool) -> int:
    child = subprocess.Popen(["sleep", "300"], start_new_session=new_session)
    _children.append(child)  # kept referenced: the script does not reap it on purpose
    return child.pid


def _daemon() -> int:
    read_end, write_end = os.pipe()
    first = os.fork()
    if first == 0:  # only async-signal-safe calls until exec: the worker has threads
        os.setsid()
        if os.fork() == 0:
            os.close(read_end)
            os.write(write_end, str(os.getpid()).encode())
            os.close(write_end)
            os.execvp("sleep", ["sleep", "300"])
        os._exit(0)
    os.close(write_end)
    os.waitpid(first, 0)  # the intermediate exits at once: the daemon is orphaned
    with os.fdopen(read_end, "rb") as pipe:
        return int(pipe.read())


def start(kind: str) -> list[int]:
    kinds = ["child", "setsid", "daemon"] if kind == "all" else [kind]
    pids = []
    for k in kinds:
        if k == "daemon":
            pids.append(_daemon())
        else:
            pids.append(_sleep_child(new_session=k == "setsid"))
    publish("descendants", pids=pids, worker=os.getpid())
    return pids


def main(kind: str = "all", wait: str = "checkpoint") -> None:
    start(kind)
    if wait == "ignore_term":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    n = 0
    while True:
        if wait == "checkpoint":
            checkpoint()  # Stop and Pause take effect here
            time.sleep(0.005)  # an idle script, not a busy one: keeps the test machine free
        n += 1
