"""The tango-oet Helm chart: lint, rendering, values, and the shell the pods run.

Rendering uses a real helm 3.8.1 (see conftest.py). The chart deploys one StatefulSet (with its
own ConfigMap, headless Service and PodDisruptionBudget) per server instance, so the tests check
that one instance's change leaves every other instance's pod template byte-identical. The pod
scripts are executed with /bin/sh against the rendered ConfigMap contents and stand-in
`OETScheduler` / `tango-oet` executables, so the exact server/CLI argument vectors are checked,
not just the template text.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.chart.conftest import (
    CHART,
    INSTANCE_LABEL,
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
STS1 = f"{FULLNAME}-1"  # the objects of instance "1"
STS2 = f"{FULLNAME}-2"
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


def test_helm_lint_passes_with_several_instances_and_only_global_tango_host(
    helm: Helm, tmp_path: Path
) -> None:
    values = tmp_path / "values.json"
    values.write_text(json.dumps(TWO_SUBARRAYS))
    done = helm.run(
        "lint",
        CHART,
        "--strict",
        "--values",
        values,
        "--set-string",
        f"global.tango_host={TANGO_HOST}",
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_renders_configmap_headless_service_statefulset_pdb_and_test_pod(
    default_render: Rendered,
) -> None:
    assert sorted(default_render.kinds) == [
        "ConfigMap", "Pod", "PodDisruptionBudget", "Service", "StatefulSet",
    ]  # fmt: skip
    test_pod = default_render.one("Pod")
    assert test_pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert 'tango-oet probe --device "oet/scheduler/1" --ready' in script_of(
        test_pod["spec"]["containers"][0]["command"] + test_pod["spec"]["containers"][0]["args"]
    )


def test_notes_tell_how_to_reach_each_device(helm: Helm) -> None:
    notes = helm.notes(TWO_SUBARRAYS)
    assert f"TANGO_HOST={TANGO_HOST}" in notes
    assert f"{STS1}-0  ->  OETScheduler/1  ->  oet/scheduler/1" in notes
    assert f"{STS2}-0  ->  OETScheduler/2  ->  oet/scheduler/2" in notes
    assert f"<pod>.<statefulset>.{NAMESPACE}.svc.cluster.local:45450" in notes
    assert f"logs {STS1}-0 -c server" in notes
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


GLOBAL_HOST = "databaseds-tango-base.ska-tango.svc.cluster.local:10000"


def tango_hosts(rendered: Rendered) -> set[str]:
    """TANGO_HOST of every container the chart renders (servers, init containers, test pod)."""
    found = set()
    for manifest in rendered.manifests:
        if manifest["kind"] == "StatefulSet":
            pod = manifest["spec"]["template"]["spec"]
        elif manifest["kind"] == "Pod":
            pod = manifest["spec"]
        else:
            continue
        for container in pod.get("initContainers", []) + pod["containers"]:
            found.add(env_of(container)["TANGO_HOST"])
    return found


@pytest.mark.parametrize("chart_tango_host", [TANGO_HOST, None], ids=["overrides", "alone"])
def test_global_tango_host_is_honoured_as_in_ska_charts(
    helm: Helm, chart_tango_host: str | None
) -> None:
    # An SKA umbrella chart sets global.tango_host for every subchart; it wins over tangoHost.
    rendered = helm.template(
        TWO_SUBARRAYS, tango_host=chart_tango_host, sets=[f"global.tango_host={GLOBAL_HOST}"]
    )
    assert tango_hosts(rendered) == {GLOBAL_HOST}
    assert f"TANGO_HOST={GLOBAL_HOST}" in helm.notes(
        {**TWO_SUBARRAYS, "global": {"tango_host": GLOBAL_HOST}}
    )


def test_empty_global_tango_host_leaves_tango_host(helm: Helm) -> None:
    rendered = helm.template(TWO_SUBARRAYS, sets=["global.tango_host="])
    assert tango_hosts(rendered) == {TANGO_HOST}


def test_malformed_global_tango_host_is_rejected(helm: Helm) -> None:
    done = helm.template_result(sets=["global.tango_host=no-port"])
    assert done.returncode != 0
    assert "tango_host" in done.stderr


# --- StatefulSet, Service, environment -------------------------------------------------------


def test_each_instance_has_its_own_statefulset_service_configmap_and_pdb(helm: Helm) -> None:
    rendered = helm.template(TWO_SUBARRAYS)
    for kind in ("StatefulSet", "Service", "ConfigMap", "PodDisruptionBudget"):
        names = sorted(m["metadata"]["name"] for m in rendered.manifests if m["kind"] == kind)
        assert names == [STS1, STS2], kind
    pod_labels = {}
    for slug, name in (("1", STS1), ("2", STS2)):
        mine = rendered.instance(slug)
        assert sorted(mine.kinds) == [
            "ConfigMap", "PodDisruptionBudget", "Service", "StatefulSet",
        ]  # fmt: skip
        sts, service = mine.statefulset, mine.one("Service")
        assert sts["metadata"]["name"] == name
        assert sts["spec"]["replicas"] == 1  # a Tango server instance runs once
        assert sts["spec"]["serviceName"] == service["metadata"]["name"] == name
        assert service["spec"]["clusterIP"] == "None"
        assert service["spec"]["publishNotReadyAddresses"] is True
        selector = sts["spec"]["selector"]["matchLabels"]
        assert service["spec"]["selector"] == selector
        assert mine.one("PodDisruptionBudget")["spec"]["selector"]["matchLabels"] == selector
        assert selector[INSTANCE_LABEL] == slug
        labels = sts["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= labels.items()
        assert mine.pod_spec["volumes"][0]["configMap"]["name"] == name
        pod_labels[slug] = labels
        assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == {
            "tango": 45450,
            "zmq-event": 45451,
            "zmq-heartbeat": 45452,
        }
    # No StatefulSet, Service or budget selects the other instance's pod.
    selector1 = rendered.instance("1").statefulset["spec"]["selector"]["matchLabels"]
    assert not selector1.items() <= pod_labels["2"].items()


def test_instance_names_become_dns_labels(helm: Helm) -> None:
    values = {"instances": [{"name": "Subarray_1.A", "devices": [{"name": "oet/scheduler/1"}]}]}
    rendered = helm.template(values)
    sts = rendered.instance("subarray-1-a").statefulset
    assert sts["metadata"]["name"] == f"{FULLNAME}-subarray-1-a"
    assert sts["spec"]["template"]["metadata"]["labels"][INSTANCE_LABEL] == "subarray-1-a"
    # The Tango instance keeps its own name.
    assert set(rendered.devices["servers"]["OETScheduler"]) == {"Subarray_1.A"}


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
    assert set(default_render.config_data) == {"devices.json"}


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
    assert f'tango-oet register {CONFIG_DIR}/devices.json --instance "1"' in script


def test_values_override_properties_and_add_an_instance(helm: Helm) -> None:
    rendered = helm.template(TWO_SUBARRAYS)
    for instance, device in (("1", "oet/scheduler/1"), ("2", "oet/scheduler/2")):
        mine = rendered.instance(instance)
        # Each instance's ConfigMap holds its own definition only.
        assert set(mine.devices["servers"]["OETScheduler"]) == {instance}
        props = device_props(mine, instance, device)
        assert props["PoolSize"] == ["4"]
        assert props["HistoryLength"] == ["1000000"]  # not "1e+06"
        assert props["StopTermSeconds"] == ["2.5"]
        assert props["AllowEmbedded"] == ["true"]  # as the values say (default false)
        assert props["GitAllowList"] == ["https://gitlab.com/ska-telescope/*"]
        assert props["ScriptRoots"] == ["/scripts", "/opt/oet/scripts"]
        assert props["DataDirectory"] == [DATA_DIR]
    assert "MaxRunning" not in device_props(rendered.instance("1"), "1", "oet/scheduler/1")
    assert device_props(rendered.instance("2"), "2", "oet/scheduler/2")["MaxRunning"] == ["1"]


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


def raw_documents(helm: Helm, values: dict[str, Any]) -> dict[tuple[str, str], str]:
    """The YAML text helm renders for each object, by (kind, name), exactly as applied."""
    done = helm.template_result(values)
    assert done.returncode == 0, done.stderr
    documents = {}
    for text in done.stdout.split("\n---\n"):
        [manifest] = helm.to_json(text)
        documents[(manifest["kind"], manifest["metadata"]["name"])] = text
    return documents


def with_instance_2(change: dict[str, Any]) -> dict[str, Any]:
    """TWO_SUBARRAYS with properties of instance 2's device changed (a deep copy)."""
    changed: dict[str, Any] = json.loads(json.dumps(TWO_SUBARRAYS))
    changed["instances"][1]["devices"][0]["properties"].update(change)
    return changed


@pytest.mark.parametrize(
    "change",
    [{"PoolSize": 8}, {"MaxRunning": 3, "ScriptRoots": ["/elsewhere"]}],
    ids=["pool-size", "two-properties"],
)
def test_a_change_to_instance_2_leaves_instance_1_byte_identical(
    helm: Helm, change: dict[str, Any]
) -> None:
    before = raw_documents(helm, TWO_SUBARRAYS)
    after = raw_documents(helm, with_instance_2(change))
    assert before.keys() == after.keys()
    # Instance 1: StatefulSet (its pod template, checksum included) and ConfigMap unchanged,
    # byte for byte, so `helm upgrade` leaves its pod (and its running procedures) alone.
    for kind in ("StatefulSet", "ConfigMap", "Service", "PodDisruptionBudget"):
        assert after[(kind, STS1)] == before[(kind, STS1)], kind
    # Instance 2 is re-registered and restarted: its checksum follows its definition.
    sts2 = {
        when: helm.to_json(docs[("StatefulSet", STS2)])[0]["spec"]["template"]
        for when, docs in (("before", before), ("after", after))
    }
    checksums = {w: t["metadata"]["annotations"]["checksum/config"] for w, t in sts2.items()}
    assert checksums["before"] != checksums["after"]
    assert after[("ConfigMap", STS2)] != before[("ConfigMap", STS2)]


def test_adding_an_instance_leaves_the_others_byte_identical(helm: Helm) -> None:
    one = {**TWO_SUBARRAYS, "instances": TWO_SUBARRAYS["instances"][:1]}
    before = raw_documents(helm, one)
    after = raw_documents(helm, TWO_SUBARRAYS)
    assert after[("StatefulSet", STS1)] == before[("StatefulSet", STS1)]
    assert ("StatefulSet", STS2) in after


def test_the_checksum_is_that_of_the_instances_own_configmap(helm: Helm) -> None:
    rendered = helm.template(TWO_SUBARRAYS)
    for slug in ("1", "2"):
        mine = rendered.instance(slug)
        annotations = mine.statefulset["spec"]["template"]["metadata"]["annotations"]
        devices_json = mine.config_data["devices.json"].rstrip("\n")
        digest = hashlib.sha256(devices_json.encode()).hexdigest()
        assert annotations["checksum/config"] == digest


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
        (
            {"instances": [{"name": "Sub_1", "devices": [{"name": "a/b/1"}]},
                           {"name": "sub.1", "devices": [{"name": "a/b/2"}]}]},
            'both give the object name suffix "sub-1"',
        ),
        (
            {"instances": [{"name": "a" * 40, "devices": [{"name": "a/b/1"}]}]},
            "is longer than 52 characters",
        ),
        ({"instances": [{"name": "1-", "devices": [{"name": "a/b/1"}]}]}, "name"),
        ({"podDisruptionBudget": {"enabled": True, "maxUnavailable": -1}}, "maxUnavailable"),
    ],
    ids=[
        "duplicate-instance", "duplicate-device", "data-directory-per-device", "pool-size-0",
        "start-method", "data-directory-chart-wide", "misspelt-property", "no-instance",
        "bad-device-name", "same-object-names", "name-too-long", "name-ends-with-dash",
        "negative-max-unavailable",
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


def test_every_instance_keeps_its_data_directory_on_its_own_pvc(helm: Helm) -> None:
    rendered = helm.template(TWO_SUBARRAYS)
    for slug, device in (("1", "oet/scheduler/1"), ("2", "oet/scheduler/2")):
        mine = rendered.instance(slug)
        [claim] = mine.statefulset["spec"]["volumeClaimTemplates"]
        assert claim["metadata"]["name"] == "data"  # PVC data-<statefulset>-0
        assert claim["metadata"]["labels"][INSTANCE_LABEL] == slug
        mounts = {m["name"]: m["mountPath"] for m in mine.server["volumeMounts"]}
        # DataDirectory (where the durable store keeps history/*.sqlite3) is the PVC mount.
        assert device_props(mine, slug, device)["DataDirectory"] == [mounts["data"]]
        assert "data" not in {v["name"] for v in mine.pod_spec["volumes"]}
        assert env_of(mine.server)["UV_CACHE_DIR"] == f"{DATA_DIR}/cache/uv"


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


def test_probes_are_tcp_checks_of_the_fixed_corba_port(helm: Helm) -> None:
    rendered = helm.template(TWO_SUBARRAYS, sets=["ports.tango=20000"])
    for slug in ("1", "2"):
        server = rendered.instance(slug).server
        [tango_port] = [p for p in server["ports"] if p["name"] == "tango"]
        assert tango_port["containerPort"] == 20000
        script = script_of(server["command"] + server["args"])
        assert '-ORBendPoint "giop:tcp::20000"' in script  # the server listens there
        for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
            probe = server[kind]
            # The kubelet connects; nothing (no Python interpreter) runs in the container.
            assert "exec" not in probe and "httpGet" not in probe, kind
            assert probe["tcpSocket"] == {"port": "tango"}, kind


def test_no_container_probe_execs_anything(default_render: Rendered) -> None:
    for container in default_render.pod_spec["containers"]:
        for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
            assert "exec" not in container.get(kind, {}), (container["name"], kind)


def test_probes_can_be_disabled(helm: Helm) -> None:
    server = helm.template(sets=["probes.liveness.enabled=false"]).server
    assert "livenessProbe" not in server
    assert "readinessProbe" in server


def test_probe_timings_follow_values(helm: Helm) -> None:
    sets = ["probes.startup.periodSeconds=7", "probes.startup.failureThreshold=60"]
    probe = helm.template(sets=sets).server["startupProbe"]
    assert (probe["periodSeconds"], probe["failureThreshold"]) == (7, 60)


# --- disruption budgets ----------------------------------------------------------------------


def test_each_instance_has_a_disruption_budget_of_max_unavailable_1(helm: Helm) -> None:
    rendered = helm.template(TWO_SUBARRAYS)
    for slug in ("1", "2"):
        pdb = rendered.instance(slug).one("PodDisruptionBudget")
        assert pdb["apiVersion"] == "policy/v1"
        assert pdb["spec"]["maxUnavailable"] == 1
        assert "minAvailable" not in pdb["spec"]


def test_min_available_from_values_replaces_max_unavailable(helm: Helm) -> None:
    pdb = helm.template(sets=["podDisruptionBudget.minAvailable=1"]).one("PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1
    assert "maxUnavailable" not in pdb["spec"]


def test_disruption_budgets_can_be_disabled(helm: Helm) -> None:
    rendered = helm.template(TWO_SUBARRAYS, sets=["podDisruptionBudget.enabled=false"])
    assert "PodDisruptionBudget" not in rendered.kinds


# --- the shell the pods run ------------------------------------------------------------------


@pytest.fixture
def two_subarrays(helm: Helm) -> Rendered:
    return helm.template(TWO_SUBARRAYS)


@pytest.fixture
def instance_2(two_subarrays: Rendered) -> Rendered:
    return two_subarrays.instance("2")


STUBS = {
    "OETScheduler": "STUB_EXIT_SERVER",
    "tango-oet": "STUB_EXIT_CLI",
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
def pod_shell(instance_2: Rendered, tmp_path: Path) -> PodShell:
    return PodShell(instance_2, tmp_path)


def test_server_starts_its_instance_and_publishes_its_pod_dns_name(
    instance_2: Rendered, pod_shell: PodShell
) -> None:
    command = instance_2.server["command"]
    assert command[:2] == ["/usr/bin/tini", "--"]
    script = script_of(command + instance_2.server["args"])
    status, calls = pod_shell.run(script, pod=f"{STS2}-0")
    assert status == 0
    publish = f"{STS2}-0.{STS2}.{NAMESPACE}.svc.cluster.local:45450"
    assert calls == [["OETScheduler", "2", "-ORBendPoint", "giop:tcp::45450",
                      "-ORBendPointPublish", f"giop:tcp:{publish}"]]  # fmt: skip


def test_server_exit_status_is_the_containers(instance_2: Rendered, pod_shell: PodShell) -> None:
    script = script_of(instance_2.server["command"] + instance_2.server["args"])
    status, _ = pod_shell.run(script, pod=f"{STS2}-0", exits={"OETScheduler": 4})
    assert status == 4


def test_init_container_registers_its_instance(instance_2: Rendered, pod_shell: PodShell) -> None:
    script = script_of(instance_2.register["command"] + instance_2.register["args"])
    status, calls = pod_shell.run(script, pod=f"{STS2}-0")
    assert status == 0
    devices_json = f"{pod_shell.config_dir}/devices.json"
    assert calls == [["tango-oet", "register", devices_json, "--instance", "2"]]
    devices = json.loads((pod_shell.config_dir / "devices.json").read_text())
    assert set(devices["servers"]["OETScheduler"]) == {"2"}
    status, _ = pod_shell.run(script, pod=f"{STS2}-0", exits={"tango-oet": 1})
    assert status == 1  # a failed registration fails the init container: the server waits
