"""Benchmark tango_oet.environments (cold build, warm reuse, cached resolve) against venv + pip.

Run: .venv/bin/python benchmarks/bench_environments.py [--repeat N]
Everything is local and offline: a bare git repository and a wheelhouse made in a temp dir.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout: tango_oet and the test fixtures

from tango_oet.domain.scripts import GitRef, GitScript  # noqa: E402
from tango_oet.environments import EnvironmentManager, no_progress  # noqa: E402
from tests.environments.repos import make_repos, make_wheelhouse  # noqa: E402

NEVER = threading.Event()


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def median_of(repeat: int, fn: Callable[[int], object]) -> float:
    return statistics.median(timed(lambda i=i: fn(i)) for i in range(repeat))  # type: ignore[misc]


def fmt(seconds: float) -> str:
    return f"{seconds * 1000:9.1f} ms" if seconds < 1 else f"{seconds:9.2f} s "


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3, help="cold builds per installer")
    parser.add_argument("--warm", type=int, default=50, help="warm calls measured")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="oet-bench-") as tmp:
        base = Path(tmp)
        repos = make_repos(base / "repos")
        wheels = make_wheelhouse(base / "wheels")
        project = repos.project
        commit = project.commits["project"]
        by_commit = GitScript("scripts/obs.py", GitRef(project.url, commit=commit), True)
        by_branch = GitScript("scripts/obs.py", GitRef(project.url, branch="main"), True)

        def manager(data: Path, installer: str = "auto") -> EnvironmentManager:
            return EnvironmentManager(
                data, installer=installer, find_links=[str(wheels)], no_index=True
            )

        rows: list[tuple[str, float]] = []

        def cold(installer: str) -> tuple[float, float]:
            clone_times, build_times = [], []
            for i in range(args.repeat):
                m = manager(base / f"cold-{installer}-{i}", installer)
                t0 = time.perf_counter()
                source = m.resolve(by_commit, no_progress, NEVER)
                t1 = time.perf_counter()
                m.ensure_environment(source, no_progress, NEVER)
                t2 = time.perf_counter()
                clone_times.append(t1 - t0)
                build_times.append(t2 - t1)
                m.close()
            return statistics.median(clone_times), statistics.median(build_times)

        clone_s, uv_build = cold("uv")
        rows.append(("resolve, cold (git fetch of one commit)", clone_s))
        rows.append(("ensure_environment, cold build (uv)", uv_build))
        _, pip_build = cold("pip")
        rows.append(("ensure_environment, cold build (installer=pip)", pip_build))

        # Baseline: what a plain `python -m venv` + `pip install <project>` costs.
        def venv_pip(i: int) -> None:
            venv = base / f"baseline-{i}"
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
            subprocess.run(
                [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
                 "--disable-pip-version-check", "--no-index", "--find-links", str(wheels),
                 str(project.work)],
                check=True,
            )  # fmt: skip

        baseline = median_of(args.repeat, venv_pip)
        rows.append(("baseline: python -m venv + pip install", baseline))

        warm = manager(base / "warm")
        source = warm.resolve(by_commit, no_progress, NEVER)
        warm.ensure_environment(source, no_progress, NEVER)
        reuse = median_of(args.warm, lambda i: warm.ensure_environment(source, no_progress, NEVER))
        rows.append(("ensure_environment, warm (existing env)", reuse))
        cached = median_of(args.warm, lambda i: warm.resolve(by_commit, no_progress, NEVER))
        rows.append(("resolve, cached commit", cached))
        branch = median_of(10, lambda i: warm.resolve(by_branch, no_progress, NEVER))
        rows.append(("resolve, branch (git ls-remote + cached clone)", branch))
        warm.close()
        restarted = manager(base / "warm")
        restart = timed(
            lambda: restarted.ensure_environment(
                restarted.resolve(by_commit, no_progress, NEVER), no_progress, NEVER
            )
        )
        rows.append(("restart: new manager, resolve + ensure (reuse)", restart))
        restarted.close()

    width = max(len(name) for name, _ in rows)
    print(f"{'operation'.ljust(width)}  {'median':>12}")
    print(f"{'-' * width}  {'-' * 12}")
    for name, seconds in rows:
        print(f"{name.ljust(width)}  {fmt(seconds):>12}")
    print()
    print("speed-up against python -m venv + pip install of the same project:")
    print(f"  cold build, uv:            {baseline / uv_build:8.1f}x")
    print(f"  cold build, installer=pip: {baseline / pip_build:8.1f}x")
    print(f"  warm reuse:                {baseline / reuse:8.0f}x")
    python = sys.version.split()[0]
    print(f"(median of {args.repeat} cold builds, {args.warm} warm calls; python {python})")


if __name__ == "__main__":
    main()
