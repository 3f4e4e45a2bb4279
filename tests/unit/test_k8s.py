"""deploy/k8s: every manifest is loaded and checked against the code it deploys (no cluster runs in CI).

Each layout (``external``, ``sentinel``) is rendered the way ``kubectl kustomize`` renders it, which for
kustomizations made only of ``resources`` is: every document of every file listed, directories recursively.
"""

from __future__ import annotations

import re
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from litestar.routes import HTTPRoute
from prometheus_client import start_http_server

from pipeline.settings import Settings
from pipeline.store.keys import Keys
from pipeline.worker.runtime import WorkerRuntime
from pipeline.worker.status import WorkerMetrics
from services.api.app import create_app
from services.api.auth import PUBLIC

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
LAYOUTS = {"external": "redis", "sentinel": "redis-sentinel"}  # layout → KEDA trigger type
#: an address nothing listens on: building the app and the worker's broker connects to nothing
NOWHERE = "redis://127.0.0.1:9/0"

Doc = dict[str, Any]


def _render(directory: Path) -> list[Doc]:
    """The documents ``kubectl kustomize directory`` puts out (resources only: anything else is refused)."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text(encoding="utf-8"))
    assert set(kustomization) <= {"apiVersion", "kind", "resources"}, "the offline render knows only resources"
    documents: list[Doc] = []
    for resource in kustomization["resources"]:
        path = directory / resource
        if path.is_dir():
            documents += _render(path)
        else:
            documents += [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]
    return documents


def _one(documents: list[Doc], kind: str, name: str) -> Doc:
    found = [d for d in documents if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, (kind, name)
    return found[0]


def _container(documents: list[Doc], deployment: str) -> Doc:
    containers = _one(documents, "Deployment", deployment)["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    container: Doc = containers[0]
    return container


def _environment(documents: list[Doc], container: Doc) -> dict[str, str]:
    """The variables a container gets: its ``env`` and every key of the ConfigMaps and Secrets of ``envFrom``.

    A source marked ``optional`` (a Secret created by hand) may be absent from the manifests."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        ref = source.get("configMapRef") or source["secretRef"]
        kind = "ConfigMap" if "configMapRef" in source else "Secret"
        matches = [d for d in documents if d["kind"] == kind and d["metadata"]["name"] == ref["name"]]
        if not matches and ref.get("optional"):
            continue
        assert len(matches) == 1, (kind, ref["name"])
        env.update({**matches[0].get("data", {}), **matches[0].get("stringData", {})})
    env.update({item["name"]: item.get("value", "") for item in container.get("env", [])})
    return env


class _Recording(Mapping[str, str]):
    """An empty environment that remembers every name looked up in it."""

    def __init__(self) -> None:
        self.names: set[str] = set()

    def __getitem__(self, name: str) -> str:
        self.names.add(name)
        raise KeyError(name)

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


def _names_the_processes_read() -> set[str]:
    """What ``Settings.from_env`` looks up, and what the entry points read themselves (the log format)."""
    env = _Recording()
    Settings.from_env(env)
    logs = (ROOT / "services" / "logs.py").read_text(encoding="utf-8")
    return env.names | set(re.findall(r'os\.environ\.get\("([A-Z_]+)"\)', logs))


@pytest.fixture(scope="module", params=sorted(LAYOUTS))
def layout(request: pytest.FixtureRequest) -> tuple[str, list[Doc]]:
    return request.param, _render(K8S / request.param)


def test_every_document_names_itself() -> None:
    files = sorted(K8S.rglob("*.yaml"))
    assert {f.parent.name for f in files} == {"base", *LAYOUTS}
    for path in files:
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            assert doc["apiVersion"] and doc["kind"], path
            if doc["kind"] != "Kustomization":
                assert doc["metadata"]["name"], path


def test_each_layout_deploys_the_api_the_workers_and_their_autoscaler(layout: tuple[str, list[Doc]]) -> None:
    _, documents = layout
    kinds = sorted((d["kind"], d["metadata"]["name"]) for d in documents)
    assert len(set(kinds)) == len(kinds)  # no name given twice
    assert {
        ("Deployment", "litminer-api"),
        ("Service", "litminer-api"),
        ("PodDisruptionBudget", "litminer-api"),
        ("Deployment", "litminer-worker"),
        ("PodDisruptionBudget", "litminer-worker"),
        ("ScaledObject", "litminer-worker"),
        ("TriggerAuthentication", "litminer-redis"),
        ("Secret", "litminer-redis"),
    } <= set(kinds)
    api, worker = _container(documents, "litminer-api"), _container(documents, "litminer-worker")
    assert api["image"] == worker["image"]  # one image, built from the Dockerfile
    assert api["command"][:2] == ["litminer", "api"] and worker["command"][:2] == ["litminer", "worker"]
    assert worker["command"][worker["command"].index("--processes") + 1] == "1"  # scale with pods


def test_probes_reach_paths_the_app_serves_on_the_container_port(layout: tuple[str, list[Doc]]) -> None:
    _, documents = layout
    app = create_app(Settings(redis_url=NOWHERE))
    http = [route for route in app.routes if isinstance(route, HTTPRoute)]
    public = {route.path for route in http for handler in route.route_handlers if handler.opt.get(PUBLIC)}
    paths = {route.path for route in http}
    api = _container(documents, "litminer-api")
    ports = {port["name"]: port["containerPort"] for port in api["ports"]}
    assert api["command"][api["command"].index("--port") + 1] == str(ports["http"])

    liveness = api["livenessProbe"]["httpGet"]
    assert liveness["path"] == "/health" and liveness["port"] == "http"
    assert liveness["path"] in public  # an httpGet probe carries no API key
    readiness = urlsplit(api["readinessProbe"]["exec"]["command"][-1])
    assert readiness.path == "/ready" and readiness.path in paths
    assert readiness.hostname == "127.0.0.1" and readiness.port == ports["http"]
    assert "LITMINER_API_KEYS" in api["readinessProbe"]["exec"]["command"][2]  # it sends a key when keys are set

    service = _one(documents, "Service", "litminer-api")
    assert all(port["targetPort"] in ports for port in service["spec"]["ports"])


def test_the_worker_probe_reaches_its_metrics_server(layout: tuple[str, list[Doc]]) -> None:
    _, documents = layout
    worker = _container(documents, "litminer-worker")
    probe = worker["livenessProbe"]["httpGet"]
    ports = {port["name"]: port["containerPort"] for port in worker["ports"]}
    metrics_port = Settings.from_env(_environment(documents, worker)).worker_metrics_port
    assert ports[probe["port"]] == metrics_port != 0
    # prometheus_client's server answers any path; the probe names the one Prometheus scrapes and the docs give
    assert probe["path"] == "/metrics"
    # The server WorkerStatus starts on LITMINER_WORKER_METRICS_PORT, answering with the worker's metrics.
    server, _ = start_http_server(0, addr="127.0.0.1", registry=WorkerMetrics().registry)
    try:
        url = f"http://127.0.0.1:{server.server_port}{probe['path']}"
        with urllib.request.urlopen(url, timeout=5) as reply:
            assert reply.status == 200 and b"litminer_worker_in_flight" in reply.read()
    finally:
        server.shutdown()
        server.server_close()


def test_every_variable_set_is_one_the_processes_read(layout: tuple[str, list[Doc]]) -> None:
    _, documents = layout
    read = _names_the_processes_read()
    assert {"REDIS_HOST", "REDIS_PASSWORD", "LITMINER_KEY_PREFIX", "LITMINER_API_KEYS"} <= read
    for deployment in ("litminer-api", "litminer-worker"):
        env = _environment(documents, _container(documents, deployment))
        assert sorted(set(env) - read) == [], deployment
        Settings.from_env(env)  # and every value is one it accepts


def test_keda_scales_the_worker_deployment_on_the_queues_the_broker_uses(layout: tuple[str, list[Doc]]) -> None:
    name, documents = layout
    scaled = _one(documents, "ScaledObject", "litminer-worker")["spec"]
    assert scaled["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "litminer-worker"}
    assert scaled["minReplicaCount"] >= 1  # /ready wants a worker heartbeat: with none, no job arrives to scale up
    worker = _container(documents, "litminer-worker")
    env = _environment(documents, worker)
    settings = Settings.from_env(env)

    # The queues the worker consumes, as its broker declares them, and the list Dramatiq keeps for each.
    runtime = WorkerRuntime(Settings(redis_url=NOWHERE, key_prefix=settings.key_prefix))
    try:
        consumed = runtime.broker.get_declared_queues()
        lists = {f"{runtime.broker.namespace}:{queue}" for queue in consumed}
    finally:
        runtime.close()
    assert {"schema_preparation", "search", "extraction", "assembly", "webhooks"} == consumed
    assert lists == {Keys(settings.key_prefix).queue(queue) for queue in consumed}

    triggers = scaled["triggers"]
    assert {trigger["type"] for trigger in triggers} == {LAYOUTS[name]}
    # and the extraction batches that fair sharing holds back from the queue (one token each in a list)
    lists.add(Keys(settings.key_prefix).fair_waiting)
    assert sorted(trigger["metadata"]["listName"] for trigger in triggers) == sorted(lists)
    for trigger in triggers:
        metadata = trigger["metadata"]
        for key, variable in metadata.items():
            if key.endswith("FromEnv"):  # KEDA reads these from the worker container's environment
                assert variable in env, (key, variable)
        assert metadata["databaseIndex"] == env.get("REDIS_DB", "0")
        assert int(metadata["listLength"]) >= 1
        auth = _one(documents, "TriggerAuthentication", trigger["authenticationRef"]["name"])
        [password] = auth["spec"]["secretTargetRef"]
        assert password["parameter"] == "password"
        secret = _one(documents, "Secret", password["name"])
        assert password["key"] == "REDIS_PASSWORD" and password["key"] in secret["stringData"]
        assert env[password["key"]] == secret["stringData"][password["key"]]  # the workers' password too


def test_selectors_match_their_pods_and_only_theirs(layout: tuple[str, list[Doc]]) -> None:
    _, documents = layout
    pods = {
        d["metadata"]["name"]: d["spec"]["template"]["metadata"]["labels"]
        for d in documents
        if d["kind"] == "Deployment"
    }

    def selected(selector: Mapping[str, str]) -> set[str]:
        return {name for name, labels in pods.items() if selector.items() <= labels.items()}

    for d in documents:
        if d["kind"] == "Deployment":
            assert selected(d["spec"]["selector"]["matchLabels"]) == {d["metadata"]["name"]}
    assert selected(_one(documents, "Service", "litminer-api")["spec"]["selector"]) == {"litminer-api"}
    for name in ("litminer-api", "litminer-worker"):
        assert selected(_one(documents, "PodDisruptionBudget", name)["spec"]["selector"]["matchLabels"]) == {name}


def test_a_worker_stopping_has_time_to_finish_or_time_out_its_stage(layout: tuple[str, list[Doc]]) -> None:
    _, documents = layout
    pod = _one(documents, "Deployment", "litminer-worker")["spec"]["template"]["spec"]
    settings = Settings.from_env(_environment(documents, pod["containers"][0]))
    # Dramatiq's Worker.stop lets running messages end; TimeLimit interrupts one at the stage limit.
    assert pod["terminationGracePeriodSeconds"] >= settings.stage_time_limit_ms / 1000 + 30
    assert pod["containers"][0]["livenessProbe"]["terminationGracePeriodSeconds"] <= 60  # a hung one goes sooner


def test_containers_run_unprivileged_on_a_read_only_root_with_sized_resources(
    layout: tuple[str, list[Doc]],
) -> None:
    _, documents = layout
    guide = (ROOT / "docs" / "kubernetes.md").read_text(encoding="utf-8")
    for name in ("litminer-api", "litminer-worker"):
        pod = _one(documents, "Deployment", name)["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] > 0
        [container] = pod["containers"]
        context = container["securityContext"]
        assert context["readOnlyRootFilesystem"] is True and context["allowPrivilegeEscalation"] is False
        assert context["capabilities"]["drop"] == ["ALL"]
        # What the processes write (the local library's index, temporary files) goes to an emptyDir.
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert "emptyDir" in volumes[mounts["/tmp"]]
        index_dir = Settings.from_env(_environment(documents, container)).index_dir
        assert index_dir.startswith("/tmp/")
        resources = container["resources"]
        assert set(resources["requests"]) == set(resources["limits"]) == {"cpu", "memory"}
        for figure in (resources["requests"]["memory"], resources["limits"]["memory"]):
            assert f"`{figure}`" in guide, (name, figure)  # the guide explains each figure
