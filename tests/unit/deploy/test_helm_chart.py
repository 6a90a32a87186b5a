"""The Helm chart (deploy/helm/bookcluster/) rendered for the three regions of the repo's
topology.yaml with the values `bookcluster deploy helm-values` generates, by Helm's own
template engine (`helm-python-sdk`: Helm's Go SDK through ctypes, from PyPI), and every
manifest validated offline against the Kubernetes schemas (`kubernetes-validate`).

No Kubernetes cluster runs here: this checks what the chart renders, not a release.
Both packages are dev dependencies; without one the tests that need it skip and say so."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from bookcluster import cli
from bookcluster.deploy import helm, service
from bookcluster.local import redis_server
from bookcluster.local.binaries import Binaries
from bookcluster.topology.load import load_topology
from bookcluster.topology.model import Topology
from bookcluster.topology.secrets import PURPOSES, generate_local

ROOT = Path(__file__).resolve().parents[3]
CHART = ROOT / "deploy" / "helm" / "bookcluster"
TOPOLOGY = ROOT / "topology.yaml"
REGIONS = ("north", "south", "west")
# The oldest Kubernetes the chart names (Chart.yaml kubeVersion) and the newest bundled.
K8S_VERSIONS = ("1.25.0", "latest")
CRDS = {"ScaledObject"}  # KEDA's; not in the Kubernetes schemas
FAKE_BINARIES = Binaries(Path("/x/redis-server"), Path("/x/pg"), "test", "test", Path("/x"),
                         Path("/x/etcd"))


@pytest.fixture(scope="module")
def topology() -> Topology:
    return load_topology(TOPOLOGY)


def render(topology: Topology, region: str, **overrides: Any) -> list[dict[str, Any]]:
    helm_python = pytest.importorskip(
        "helm_python", reason="helm-python-sdk (Helm's renderer, a dev dependency) is not "
        "installed: pip install -e '.[dev]'")
    values = helm.values(topology, region, TOPOLOGY.read_text())
    for key, value in overrides.items():
        values[key] = {**values[key], **value}
    with helm_python.Chart.load(str(CHART)) as chart:
        files = chart.render(values, name=f"bookcluster-{region}", namespace="bookcluster")
    return [doc for text in files.values() for doc in yaml.safe_load_all(text) if doc]


@pytest.fixture(scope="module")
def rendered(topology: Topology) -> dict[str, list[dict[str, Any]]]:
    return {region: render(topology, region) for region in REGIONS}


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return list(doc["spec"]["template"]["spec"]["containers"])


def test_every_manifest_of_every_region_is_valid_kubernetes(
        rendered: dict[str, list[dict[str, Any]]]) -> None:
    kubernetes_validate = pytest.importorskip(
        "kubernetes_validate", reason="kubernetes-validate (a dev dependency) is not installed")
    versions = [kubernetes_validate.utils.latest_version() if v == "latest" else v
                for v in K8S_VERSIONS]
    checked = 0
    for docs in rendered.values():
        for doc in docs:
            assert doc["kind"] not in CRDS, "KEDA is off by default"
            for version in versions:
                kubernetes_validate.validate(doc, version, strict=True)  # raises if invalid
                checked += 1
    assert checked >= 3 * 12 * len(versions)


def test_an_invalid_manifest_is_caught() -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    bad = {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
           "metadata": {"name": "x"}, "spec": {"maxUnavailable": 1, "selectr": {}}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, "1.25.0", strict=True)


def test_each_region_runs_its_nodes_worker_and_every_store_process(
        topology: Topology, rendered: dict[str, list[dict[str, Any]]]) -> None:
    for region, docs in rendered.items():
        builders = service._builders(topology, FAKE_BINARIES, topology.region(region), None)
        expected = {name for name in builders if ".node." not in name and
                    not name.endswith(".worker") and name != "payments.gateway"}
        stateful = of_kind(docs, "StatefulSet")
        assert {containers(s)[0]["args"][1] for s in stateful} == expected
        for s in stateful:
            assert containers(s)[0]["args"][0] == "run"
            spec = s["spec"]["template"]["spec"]
            assert spec["hostNetwork"] is True
            assert spec["nodeSelector"] == {"bookcluster.io/address": "127.0.0.1"}
        [nodes] = [d for d in of_kind(docs, "Deployment") if d["metadata"]["name"].endswith(
            "-node")]
        assert nodes["spec"]["replicas"] == len(topology.region(region).nodes)
        [node] = containers(nodes)
        assert node["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert ["--region", region] == node["args"][4:6]
        [pdb] = of_kind(docs, "PodDisruptionBudget")
        pod_labels = nodes["spec"]["template"]["metadata"]["labels"]
        assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
        [worker] = [d for d in of_kind(docs, "Deployment") if d["metadata"]["name"].endswith(
            "-worker")]
        assert containers(worker)[0]["readinessProbe"]["httpGet"]["path"] == "/readyz"
        [config] = of_kind(docs, "ConfigMap")
        assert config["data"]["topology.yaml"] == TOPOLOGY.read_text()


def test_no_replica_of_another_regions_master_can_be_promoted(tmp_path: Path) -> None:
    """The chart's replicas run the launcher's own configuration (`bookcluster run`):
    Sentinel promotes only a region's replica of its own master."""
    generate_local(tmp_path)
    topology = load_topology(TOPOLOGY, run_dir=tmp_path)
    for region in topology.regions.values():
        for source in region.redis_replicas:
            argv = redis_server.replica_spec(FAKE_BINARIES.redis_server, topology, region,
                                             source).argv
            never = "--replica-priority" in argv and \
                argv[argv.index("--replica-priority") + 1] == "0"
            assert never == (source != region.name), (region.name, source)


def test_secrets_come_from_the_kubernetes_secret_and_images_from_ours(
        rendered: dict[str, list[dict[str, Any]]]) -> None:
    images = set()
    for docs in rendered.values():
        for doc in docs:
            if doc["kind"] not in ("Deployment", "StatefulSet", "Job"):
                continue
            pod = doc["spec"]["template"]["spec"]
            secret_volumes = [v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v]
            assert secret_volumes == ["bookcluster-secrets"]
            for container in pod["containers"]:
                images.add(container["image"])
                env = {e["name"]: e["value"] for e in container["env"]}
                assert env == {f"BOOKCLUSTER_{name.upper()}_FILE":
                               f"/etc/bookcluster/secrets/{name}" for name in PURPOSES}
                assert not any("password" in str(a).lower() for a in container.get("args", []))
    assert images == {"bookcluster:latest"}  # compose/Dockerfile's image, nobody else's


def test_three_releases_share_a_namespace_without_clashing(
        rendered: dict[str, list[dict[str, Any]]]) -> None:
    names = [(d["kind"], d["metadata"]["name"]) for docs in rendered.values() for d in docs]
    assert len(names) == len(set(names))


def test_keda_scales_the_worker_on_its_waiting_jobs(topology: Topology) -> None:
    docs = render(topology, "south", worker={"keda": {
        "enabled": True, "minReplicas": 1, "maxReplicas": 4,
        "prometheus": "http://prometheus:9090", "waitingJobs": 50}})
    [scaled] = of_kind(docs, "ScaledObject")
    [worker] = [d for d in of_kind(docs, "Deployment") if d["metadata"]["name"] ==
                scaled["spec"]["scaleTargetRef"]["name"]]
    assert "replicas" not in worker["spec"]  # KEDA owns the count
    [trigger] = scaled["spec"]["triggers"]
    assert trigger["type"] == "prometheus"
    assert 'region="south"' in trigger["metadata"]["query"]
    assert "bookcluster_queue_depth" in trigger["metadata"]["query"]
    assert scaled["spec"]["maxReplicaCount"] == 4


def test_helm_values_command_prints_what_the_chart_takes(
        topology: Topology, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["--topology", str(TOPOLOGY), "deploy", "helm-values", "--region"]
    with pytest.raises(SystemExit) as done:
        cli.main([*base, "west"])
    assert done.value.code == 0
    assert yaml.safe_load(capsys.readouterr().out) == \
        helm.values(topology, "west", TOPOLOGY.read_text())
    with pytest.raises(SystemExit) as done:
        cli.main([*base, "east"])
    assert done.value.code == 2 and "no region 'east'" in capsys.readouterr().err


def test_k8s_names() -> None:
    assert helm.k8s_name("north.redis.replica.south") == "north-redis-replica-south"
    assert helm.k8s_name("West.Postgres.1") == "west-postgres-1"
