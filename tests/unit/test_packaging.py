"""The package says its version once, and the chart and the installed metadata agree with it."""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path

import tango_oet

ROOT = Path(__file__).resolve().parents[2]


def test_the_version_is_written_once_and_everything_agrees() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert not re.search(r'^version\s*=\s*"', pyproject, re.M), "version written in pyproject"
    assert importlib.metadata.version("tango-oet") == tango_oet.__version__
    chart = (ROOT / "charts" / "tango-oet" / "Chart.yaml").read_text()
    assert re.search(rf'^appVersion:\s*"?{re.escape(tango_oet.__version__)}"?$', chart, re.M)


def test_the_license_is_shipped() -> None:
    assert (ROOT / "LICENSE").read_text().startswith("BSD 3-Clause License")
    meta = importlib.metadata.metadata("tango-oet")
    assert meta["License-Expression"] == "BSD-3-Clause"
