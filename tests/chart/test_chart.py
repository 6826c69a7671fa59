"""The tango-oet Helm chart: lint, rendering, values, and the shell the pods run.

Rendering uses a real helm 3.8.1 (see conftest.py). The pod scripts are executed with /bin/sh
against the rendered ConfigMap contents and stand-in `OETScheduler` / `tango-oet` executables,
so the instance lookup by pod ordinal and the exact server/CLI argument vectors are checked,
not just the template text.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.chart.conftest import (
    CHART,
    NAMESPACE,
    RELEASE,
    REPO,
    TANGO_HOST,
    Helm,
    Manifest,
    Rendered,
)

pytestmark = pytest.mark.chart

FULLNAME = "oet-tango-oet"  # release "oet" + chart "tango-oet"
DATA_DIR = "/var/lib/tango-oet"
CONFIG_DIR = "/etc/tango-oet"

TWO_SUBARRAYS: dict[str, Any] = {
    "instances": [
        {"name": "1", "devices": [{"name": "oet/scheduler/1"}]},
        {
            "name": "2",
            "devices": [{"name": "oet/scheduler/2", "properties": {"MaxRunning": 1}}],
        },
    ],
    "properties": {
        "poolSize": 4,
        "historyLength": 1000000,
        "stopTermSeconds": 2.5,
        "allowEmbedded": True,
        "gitAllowList": ["https://gitlab.com/ska-telescope/*"],
        "scriptRoots": ["/scripts", "/opt/oet/scripts"],
    },
}


def env_of(container: Manifest) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def script_of(command: list[str]) -> str:
    """The script of a `/bin/sh -ec <script>` command vector."""
    assert command[-3:-1] == ["/bin/sh", "-ec"], command
    return command[-1]


def device_props(rendered: Rendered, instance: str, device: str) -> dict[str, list[str]]:
    props: dict[str, list[str]] = rendered.devices["servers"]["OETScheduler"][instance][
        "OETScheduler"
    ][device]["properties"]
    return props


# --- lint and render -------------------------------------------------------------------------


def test_helm_lint_passes_strictly(helm: Helm) -> None:
    done = helm.run("lint", CHART, "--strict", "--set-string", f"tangoHost={TANGO_HOST}")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 chart(s) failed" in done.stdout


def test_renders_configmap_headless_service_statefulset_and_test_pod(
    default_render: Rendered,
) -> None:
    assert sorted(default_render.kinds) == ["ConfigMap", "Pod", "Service", "StatefulSet"]
    test_pod = default_render.one("Pod")
    assert test_pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert 'tango-oet probe --device "oet/scheduler/1" --ready' in script_of(
        test_pod["spec"]["containers"][0]["command"] + test_pod["spec"]["containers"][0]["args"]
    )


def test_notes_tell_how_to_reach_each_device(helm: Helm) -> None:
    notes = helm.notes(TWO_SUBARRAYS)
    assert f"TANGO_HOST={TANGO_HOST}" in notes
    assert f"{FULLNAME}-0  ->  OETScheduler/1  ->  oet/scheduler/1" in notes
    assert f"{FULLNAME}-1  ->  OETScheduler/2  ->  oet/scheduler/2" in notes
    assert f"<pod>.{FULLNAME}.{NAMESPACE}.svc.cluster.local:45450" in notes
    assert "DeviceProxy('oet/scheduler/1')" in notes
    assert f"helm test {RELEASE}" in notes
    assert "ScriptRoots:   /scripts, /opt/oet/scripts\n" in notes
    assert "GitAllowList:  https://gitlab.com/ska-telescope/*\n" in notes
    assert "AllowEmbedded: true\n" in notes


def test_notes_state_the_default_script_policy(helm: Helm) -> None:
    notes = helm.notes()
    assert "ScriptRoots:   /usr/share/tango-oet/scripts\n" in notes
    assert "GitAllowList:  none (every git script is refused)\n" in notes
    assert "AllowEmbedded: false (embedded:// scripts are refused)\n" in notes


def test_missing_tango_host_fails_with_a_clear_message(helm: Helm) -> None:
    done = helm.template_result(tango_host=None)
    assert done.returncode != 0
    assert "tangoHost is required" in done.stderr
    assert "host:port of an existing Tango database" in done.stderr


def test_malformed_tango_host_is_rejected_by_the_schema(helm: Helm) -> None:
    done = helm.template_result(tango_host="databaseds-without-port")
    assert done.returncode != 0
    assert "tangoHost" in done.stderr


# --- StatefulSet, Service, environment -------------------------------------------------------


def test_statefulset_has_one_replica_per_instance_behind_the_headless_service(
    default_render: Rendered,
) -> None:
    sts = default_render.statefulset
    service = default_render.one("Service")
    assert sts["metadata"]["name"] == FULLNAME
    assert sts["spec"]["replicas"] == 1
    assert sts["spec"]["serviceName"] == service["metadata"]["name"] == FULLNAME
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["publishNotReadyAddresses"] is True
    assert service["spec"]["selector"] == sts["spec"]["selector"]["matchLabels"]
    labels = sts["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == {
        "tango": 45450,
        "zmq-event": 45451,
        "zmq-heartbeat": 45452,
    }


def test_tango_host_reaches_server_and_init_container(default_render: Rendered) -> None:
    for container in (default_render.server, default_render.register):
        env = env_of(container)
        assert env["TANGO_HOST"] == TANGO_HOST
        assert env["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    server_env = env_of(default_render.server)
    assert server_env["TANGO_ZMQ_EVENT_PORT"] == "45451"
    assert server_env["TANGO_ZMQ_HEARTBEAT_PORT"] == "45452"


def test_pods_run_as_non_root_without_privileges(default_render: Rendered) -> None:
    pod = default_render.pod_spec
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["automountServiceAccountToken"] is False
    for container in pod["initContainers"] + pod["containers"]:
        ctx = container["securityContext"]
        assert ctx["allowPrivilegeEscalation"] is False
        assert ctx["capabilities"]["drop"] == ["ALL"]
        assert ctx["readOnlyRootFilesystem"] is True
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        assert "/tmp" in mounts  # writable scratch space despite the read-only root


# --- device definitions ----------------------------------------------------------------------


def test_default_devices_json_is_the_repository_definition_with_an_explicit_policy(
    default_render: Rendered,
) -> None:
    rendered = default_render.devices
    props = rendered["servers"]["OETScheduler"]["1"]["OETScheduler"]["oet/scheduler/1"]
    assert props["properties"].pop("DataDirectory") == [DATA_DIR]
    # The chart sets the script policy explicitly: the image's example scripts, no git
    # ([] = unset, the device's deny-by-default), no embedded scripts (unlike the quick start).
    policy = {k: props["properties"].pop(k) for k in ("ScriptRoots", "GitAllowList")}
    assert policy == {"ScriptRoots": ["/usr/share/tango-oet/scripts"], "GitAllowList": []}
    assert props["properties"].pop("AllowEmbedded") == ["false"]
    expected = json.loads((REPO / "devices" / "oet-scheduler.json").read_text())
    expected_props = expected["servers"]["OETScheduler"]["1"]["OETScheduler"]["oet/scheduler/1"]
    assert expected_props["properties"].pop("AllowEmbedded") == ["true"]
    assert rendered == expected
    assert default_render.config_data["instance-0"] == "1"
    assert default_render.config_data["device-0"] == "oet/scheduler/1"


def test_the_image_holds_the_default_script_root() -> None:
    # The chart's default ScriptRoots is where the Dockerfile puts the example scripts.
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "COPY resources/scripts/ /usr/share/tango-oet/scripts/" in dockerfile


def test_devices_json_is_mounted_where_the_init_container_reads_it(
    default_render: Rendered,
) -> None:
    volumes = {v["name"]: v for v in default_render.pod_spec["volumes"]}
    config_volume = volumes["config"]["configMap"]["name"]
    assert config_volume == default_render.one("ConfigMap")["metadata"]["name"]
    for container in (default_render.register, default_render.server):
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        assert mounts["config"] == CONFIG_DIR
    script = script_of(default_render.register["command"] + default_render.register["args"])
    assert f"tango-oet register {CONFIG_DIR}/devices.json --instance" in script


def test_values_override_properties_and_add_an_instance(helm: Helm) -> None:
    rendered = helm.template(TWO_SUBARRAYS)
    assert rendered.statefulset["spec"]["replicas"] == 2
    assert set(rendered.devices["servers"]["OETScheduler"]) == {"1", "2"}
    for instance, device in (("1", "oet/scheduler/1"), ("2", "oet/scheduler/2")):
        props = device_props(rendered, instance, device)
        assert props["PoolSize"] == ["4"]
        assert props["HistoryLength"] == ["1000000"]  # not "1e+06"
        assert props["StopTermSeconds"] == ["2.5"]
        assert props["AllowEmbedded"] == ["true"]  # as the values say (default false)
        assert props["GitAllowList"] == ["https://gitlab.com/ska-telescope/*"]
        assert props["ScriptRoots"] == ["/scripts", "/opt/oet/scripts"]
        assert props["DataDirectory"] == [DATA_DIR]
    assert "MaxRunning" not in device_props(rendered, "1", "oet/scheduler/1")
    assert device_props(rendered, "2", "oet/scheduler/2")["MaxRunning"] == ["1"]
    data = rendered.config_data
    assert (data["instance-1"], data["device-1"]) == ("2", "oet/scheduler/2")


def test_device_properties_override_chart_wide_ones_case_insensitively(helm: Helm) -> None:
    values = {
        "instances": [
            {"name": "1", "devices": [{"name": "oet/scheduler/1", "properties": {"poolsize": 8}}]}
        ]
    }
    props = device_props(helm.template(values), "1", "oet/scheduler/1")
    assert props["poolsize"] == ["8"]
    assert "PoolSize" not in props  # Tango property names are case-insensitive: one value only


def test_devices_json_changes_roll_the_pods(helm: Helm, default_render: Rendered) -> None:
    annotation = "checksum/config"
    before = default_render.statefulset["spec"]["template"]["metadata"]["annotations"]
    after = helm.template(sets=["properties.poolSize=3"]).statefulset["spec"]["template"]
    assert before[annotation] != after["metadata"]["annotations"][annotation]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"instances": [{"name": "1", "devices": [{"name": "a/b/1"}]},
                           {"name": "1", "devices": [{"name": "a/b/2"}]}]},
            'instance name "1" is listed twice',
        ),
        (
            {"instances": [{"name": "1", "devices": [{"name": "a/b/1"}]},
                           {"name": "2", "devices": [{"name": "A/B/1"}]}]},
            'device "A/B/1" is listed twice',
        ),
        (
            {"instances": [{"name": "1", "devices": [
                {"name": "a/b/1", "properties": {"DataDirectory": "/elsewhere"}}]}]},
            "DataDirectory is set by the chart",
        ),
        ({"properties": {"poolSize": 0}}, "properties.poolSize"),
        ({"properties": {"startMethod": "fork"}}, "properties.startMethod"),
        ({"properties": {"dataDirectory": "/x"}}, "dataDirectory is not allowed"),
        ({"properties": {"poolsize": 4}}, "poolsize is not allowed"),
        ({"instances": []}, "instances"),
        ({"instances": [{"name": "1", "devices": [{"name": "not-a-device"}]}]}, "name"),
    ],
    ids=[
        "duplicate-instance", "duplicate-device", "data-directory-per-device", "pool-size-0",
        "start-method", "data-directory-chart-wide", "misspelt-property", "no-instance",
        "bad-device-name",
    ],
)  # fmt: skip
def test_invalid_values_fail_rendering(helm: Helm, values: dict[str, Any], message: str) -> None:
    done = helm.template_result(values)
    assert done.returncode != 0
    assert message in done.stderr


# --- persistence -----------------------------------------------------------------------------


def test_pvc_template_is_mounted_at_the_data_directory(default_render: Rendered) -> None:
    [claim] = default_render.statefulset["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "data"
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "5Gi"
    assert "storageClassName" not in claim["spec"]
    mounts = {m["name"]: m["mountPath"] for m in default_render.server["volumeMounts"]}
    data_dir = device_props(default_render, "1", "oet/scheduler/1")["DataDirectory"]
    assert data_dir == [mounts["data"]] == [DATA_DIR]
    assert default_render.server["workingDir"] == DATA_DIR
    assert "data" not in {v["name"] for v in default_render.pod_spec["volumes"]}


def test_persistence_settings_follow_values(helm: Helm) -> None:
    rendered = helm.template(
        {"persistence": {"mountPath": "/data/oet", "size": "20Gi", "storageClass": "fast"}}
    )
    [claim] = rendered.statefulset["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["storageClassName"] == "fast"
    assert claim["spec"]["resources"]["requests"]["storage"] == "20Gi"
    assert device_props(rendered, "1", "oet/scheduler/1")["DataDirectory"] == ["/data/oet"]
    mounts = {m["name"]: m["mountPath"] for m in rendered.server["volumeMounts"]}
    assert mounts["data"] == "/data/oet"


def test_without_persistence_the_data_directory_is_an_empty_dir(helm: Helm) -> None:
    rendered = helm.template(sets=["persistence.enabled=false"])
    assert "volumeClaimTemplates" not in rendered.statefulset["spec"]
    volumes = {v["name"]: v for v in rendered.pod_spec["volumes"]}
    assert volumes["data"] == {"name": "data", "emptyDir": {}}


# --- probes ----------------------------------------------------------------------------------


def test_probes_are_exec_probes_running_tango_oet_probe(default_render: Rendered) -> None:
    server = default_render.server
    for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
        probe = server[kind]
        assert set(probe) & {"tcpSocket", "httpGet", "grpc"} == set(), kind
        script = script_of(probe["exec"]["command"])
        assert 'tango-oet probe --device "${device}"' in script, kind
        assert ("--ready" in script) == (kind == "readinessProbe"), kind


def test_probes_can_be_disabled(helm: Helm) -> None:
    server = helm.template(sets=["probes.liveness.enabled=false"]).server
    assert "livenessProbe" not in server
    assert "readinessProbe" in server


# --- the shell the pods run ------------------------------------------------------------------


@pytest.fixture
def two_subarrays(helm: Helm) -> Rendered:
    return helm.template(TWO_SUBARRAYS)


STUBS = {
    "OETScheduler": "STUB_EXIT_SERVER",
    "tango-oet": "STUB_EXIT_CLI",
    "python": "STUB_EXIT_PYTHON",
}


class PodShell:
    """Runs a container script as Kubernetes would, with stand-in executables.

    Each stub records its program name and arguments (one call per record) and exits with the
    status given for it in `run(..., exits={program: status})`.
    """

    def __init__(self, rendered: Rendered, tmp_path: Path) -> None:
        self.config_dir = tmp_path / "config"
        self.config_dir.mkdir()
        for key, content in rendered.config_data.items():  # a ConfigMap volume: one file per key
            (self.config_dir / key).write_text(content)
        self.bin = tmp_path / "bin"
        self.bin.mkdir()
        self.calls = tmp_path / "calls"
        for name, exit_var in STUBS.items():
            stub = self.bin / name
            stub.write_text(
                "#!/bin/sh\n"
                'printf "%s\\n" "${0##*/}" "$@" "--end--" >> "$STUB_CALLS"\n'
                f'exit "${{{exit_var}:-0}}"\n'
            )
            stub.chmod(0o755)

    def run(
        self, script: str, pod: str, exits: dict[str, int] | None = None
    ) -> tuple[int, list[list[str]]]:
        script = script.replace(CONFIG_DIR, str(self.config_dir))
        env = {
            "PATH": f"{self.bin}{os.pathsep}{os.environ['PATH']}",
            "POD_NAME": pod,
            "TANGO_HOST": TANGO_HOST,
            "STUB_CALLS": str(self.calls),
        }
        env.update({STUBS[name]: str(status) for name, status in (exits or {}).items()})
        self.calls.unlink(missing_ok=True)
        done = subprocess.run(
            ["/bin/sh", "-ec", script], env=env, capture_output=True, text=True, timeout=30,
            check=False,
        )  # fmt: skip
        calls: list[list[str]] = []
        if self.calls.exists():
            current: list[str] = []
            for line in self.calls.read_text().splitlines():
                if line == "--end--":
                    calls.append(current)
                    current = []
                else:
                    current.append(line)
        return done.returncode, calls


@pytest.fixture
def pod_shell(two_subarrays: Rendered, tmp_path: Path) -> PodShell:
    return PodShell(two_subarrays, tmp_path)


def probe_script(rendered: Rendered, kind: str) -> str:
    return script_of(rendered.server[kind]["exec"]["command"])


def test_server_starts_its_instance_and_publishes_its_pod_dns_name(
    two_subarrays: Rendered, pod_shell: PodShell
) -> None:
    command = two_subarrays.server["command"]
    assert command[:2] == ["/usr/bin/tini", "--"]
    script = script_of(command + two_subarrays.server["args"])
    status, calls = pod_shell.run(script, pod=f"{FULLNAME}-1")
    assert status == 0
    publish = f"{FULLNAME}-1.{FULLNAME}.{NAMESPACE}.svc.cluster.local:45450"
    assert calls == [["OETScheduler", "2", "-ORBendPoint", "giop:tcp::45450",
                      "-ORBendPointPublish", f"giop:tcp:{publish}"]]  # fmt: skip


def test_server_exit_status_is_the_containers(two_subarrays: Rendered, pod_shell: PodShell) -> None:
    script = script_of(two_subarrays.server["command"] + two_subarrays.server["args"])
    status, _ = pod_shell.run(script, pod=f"{FULLNAME}-0", exits={"OETScheduler": 4})
    assert status == 4


def test_init_container_registers_the_instance_of_its_pod(
    two_subarrays: Rendered, pod_shell: PodShell
) -> None:
    script = script_of(two_subarrays.register["command"] + two_subarrays.register["args"])
    for ordinal, instance in ((0, "1"), (1, "2")):
        status, calls = pod_shell.run(script, pod=f"{FULLNAME}-{ordinal}")
        assert status == 0
        devices_json = f"{pod_shell.config_dir}/devices.json"
        assert calls == [["tango-oet", "register", devices_json, "--instance", instance]]
    devices = json.loads((pod_shell.config_dir / "devices.json").read_text())
    assert set(devices["servers"]["OETScheduler"]) == {"1", "2"}
    status, _ = pod_shell.run(script, pod=f"{FULLNAME}-0", exits={"tango-oet": 1})
    assert status == 1  # a failed registration fails the init container: the server waits


def test_readiness_probe_requires_the_pods_device_to_be_ready(
    two_subarrays: Rendered, pod_shell: PodShell
) -> None:
    script = probe_script(two_subarrays, "readinessProbe")
    status, calls = pod_shell.run(script, pod=f"{FULLNAME}-1")
    assert status == 0
    assert calls == [["tango-oet", "probe", "--device", "oet/scheduler/2", "--ready"]]
    status, _ = pod_shell.run(script, pod=f"{FULLNAME}-1", exits={"tango-oet": 3})
    assert status == 3


@pytest.mark.parametrize("kind", ["startupProbe", "livenessProbe"])
def test_startup_and_liveness_probes_pass_when_the_device_answers(
    two_subarrays: Rendered, pod_shell: PodShell, kind: str
) -> None:
    status, calls = pod_shell.run(probe_script(two_subarrays, kind), pod=f"{FULLNAME}-0")
    assert status == 0
    assert calls == [["tango-oet", "probe", "--device", "oet/scheduler/1"]]


def test_startup_probe_fails_when_the_device_does_not_answer(
    two_subarrays: Rendered, pod_shell: PodShell
) -> None:
    script = probe_script(two_subarrays, "startupProbe")
    status, _ = pod_shell.run(script, pod=f"{FULLNAME}-0", exits={"tango-oet": 1})
    assert status == 1


def test_liveness_fails_when_the_device_fails_and_the_database_answers(
    two_subarrays: Rendered, pod_shell: PodShell
) -> None:
    script = probe_script(two_subarrays, "livenessProbe")
    status, calls = pod_shell.run(script, pod=f"{FULLNAME}-1", exits={"tango-oet": 1})
    assert status == 1
    assert calls == [
        ["tango-oet", "probe", "--device", "oet/scheduler/2"],
        ["python", "-c", "import tango; tango.Database()"],
    ]


def test_liveness_does_not_restart_the_server_while_the_database_is_down(
    two_subarrays: Rendered, pod_shell: PodShell
) -> None:
    script = probe_script(two_subarrays, "livenessProbe")
    status, _ = pod_shell.run(script, pod=f"{FULLNAME}-1", exits={"tango-oet": 1, "python": 1})
    assert status == 0


def test_a_pod_without_an_instance_fails_before_running_anything(
    two_subarrays: Rendered, pod_shell: PodShell
) -> None:
    script = script_of(two_subarrays.server["command"] + two_subarrays.server["args"])
    status, calls = pod_shell.run(script, pod=f"{FULLNAME}-7")
    assert status != 0
    assert calls == []
