"""deploy/k8s: the manifests parsed and checked against the settings, the image and the CLI.

No cluster runs here: these tests read the kustomization, its resources, the Secret
template and the Jobs, and check what a pod would get (the image's environment, then the
ConfigMap and the Secret) and what the kubelet would probe.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from deploy_checks import (
    K8S_DIR,
    REPO,
    SECRET_ENV_VARS,
    Image,
    compose,
    image_problem,
    image_uid,
    load_yaml_documents,
    parse_command,
    runtime_image,
    served_paths,
    settings_from_env,
    unknown_variables,
)

from streams.settings import Settings

WORKLOAD_FILES = ("deployment.yaml", "jobs/replay.yaml", "jobs/train.yaml", "jobs/promote.yaml")


@pytest.fixture(scope="module")
def image() -> Image:
    return runtime_image()


@pytest.fixture(scope="module")
def paths(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    return served_paths(tmp_path_factory.mktemp("worker"))


def kustomization() -> dict[str, Any]:
    (document,) = load_yaml_documents(K8S_DIR / "kustomization.yaml")
    assert isinstance(document, dict)
    return document


def resources() -> list[dict[str, Any]]:
    """Every object `kubectl apply -k deploy/k8s` creates."""
    return [
        doc for name in kustomization()["resources"] for doc in load_yaml_documents(K8S_DIR / name)
    ]


def one(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and name in (None, o["metadata"].get("name"))]
    assert len(found) == 1, f"{len(found)} {kind} {name or ''}"
    return found[0]


def secret_template() -> dict[str, Any]:
    (secret,) = load_yaml_documents(K8S_DIR / "secret.template.yaml")
    assert isinstance(secret, dict)
    return secret


def workload(name: str) -> dict[str, Any]:
    (document,) = load_yaml_documents(K8S_DIR / name)
    assert isinstance(document, dict)
    return document


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    spec = workload["spec"]["template"]["spec"]
    assert isinstance(spec, dict)
    return spec


def container(workload: dict[str, Any]) -> dict[str, Any]:
    (only,) = pod_spec(workload)["containers"]
    assert isinstance(only, dict)
    return only


def pod_environment(image: Image, container: dict[str, Any]) -> dict[str, str]:
    """What the container's process sees: image ENV, then envFrom in order, then env."""
    configmap = one(resources(), "ConfigMap")
    secret = secret_template()
    env = dict(image.env)
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            assert source["configMapRef"]["name"] == configmap["metadata"]["name"]
            env.update(configmap["data"])
        else:
            assert source["secretRef"]["name"] == secret["metadata"]["name"]
            env.update(secret["stringData"])
    for variable in container.get("env", []):
        if "value" in variable:
            env[variable["name"]] = variable["value"]
    return env


def pod_settings(image: Image, container: dict[str, Any]) -> Settings:
    return settings_from_env(pod_environment(image, container))


def mounts(workload: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Mount path -> {mount, volume} of the workload's container."""
    volumes = {v["name"]: v for v in pod_spec(workload).get("volumes", [])}
    return {
        m["mountPath"]: {"mount": m, "volume": volumes[m["name"]]}
        for m in container(workload).get("volumeMounts", [])
    }


def quantity(text: str) -> float:
    """A Kubernetes quantity ("500m", "2", "1Gi") as a number."""
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "": 1}
    match = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", text)
    assert match is not None, text
    assert match[2] in units, text
    return float(match[1]) * units[match[2]]


# --- the kustomization ---------------------------------------------------------------------


def test_kustomization_lists_every_manifest_but_the_secret_template_and_the_jobs() -> None:
    listed = set(kustomization()["resources"])
    on_disk = {p.name for p in K8S_DIR.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk - {"secret.template.yaml"}
    # Applying a template on every deploy would overwrite the real secrets.
    assert "secret.template.yaml" not in listed
    assert {p.relative_to(K8S_DIR).as_posix() for p in K8S_DIR.glob("jobs/*.yaml")} == set(
        WORKLOAD_FILES[1:]
    )


def test_every_object_lives_in_the_kustomization_namespace() -> None:
    namespace = kustomization()["namespace"]
    assert one(resources(), "Namespace")["metadata"]["name"] == namespace
    others = [o for o in resources() if o["kind"] != "Namespace"]
    others += [secret_template(), *(workload(name) for name in WORKLOAD_FILES[1:])]
    for obj in others:
        assert obj["metadata"]["namespace"] == namespace, obj["metadata"]


def test_resources_are_the_ones_the_workers_need() -> None:
    kinds = sorted(o["kind"] for o in resources())
    assert kinds == sorted(
        [
            "Namespace",
            "ConfigMap",
            "PersistentVolumeClaim",
            "PersistentVolumeClaim",
            "Deployment",
            "Service",
            "PodDisruptionBudget",
            "NetworkPolicy",
        ]
    )


# --- configuration -------------------------------------------------------------------------


def test_configmap_sets_known_non_secret_settings_as_strings() -> None:
    data = one(resources(), "ConfigMap")["data"]
    assert not unknown_variables(data)
    assert all(name.startswith("FRAUDSTREAM_") for name in data)
    assert not SECRET_ENV_VARS & data.keys(), "secrets belong in the Secret"
    # A ConfigMap holds strings only: an unquoted 6 or true is refused by the API server.
    assert all(isinstance(value, str) for value in data.values())


def test_secret_template_holds_exactly_the_secret_settings_as_placeholders() -> None:
    secret = secret_template()
    assert secret["kind"] == "Secret"
    assert secret["type"] == "Opaque"
    assert set(secret["stringData"]) == SECRET_ENV_VARS
    assert all(value.startswith("REPLACE-") for value in secret["stringData"].values())


def test_configmap_and_secret_make_valid_settings_for_the_image(image: Image) -> None:
    settings = pod_settings(image, container(workload("deployment.yaml")))
    # SASL needs its password: the Secret supplies it, so the combination must validate.
    assert settings.kafka_security_protocol.startswith("SASL")
    assert settings.kafka_sasl_password is not None
    assert settings.redis_password is not None
    # The pod's own address from the downward API, never every interface.
    assert settings.web_host == "127.0.0.1"  # what the ConfigMap and image alone give
    (web_host,) = [
        v
        for v in container(workload("deployment.yaml"))["env"]
        if v["name"] == "FRAUDSTREAM_WEB_HOST"
    ]
    assert web_host["valueFrom"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    assert settings.redis_url.startswith(("redis://", "rediss://"))


# --- workloads -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", WORKLOAD_FILES)
def test_workloads_run_our_pinned_image_with_a_cli_command(name: str) -> None:
    spec = container(workload(name))
    assert image_problem(spec["image"]) is None
    assert spec["image"] == compose()["services"]["worker"]["image"]
    assert "command" not in spec, "the image's ENTRYPOINT is fraudstream"
    parse_command(spec["args"])


@pytest.mark.parametrize("name", WORKLOAD_FILES)
def test_workloads_take_their_settings_from_the_configmap_and_the_secret(
    image: Image, name: str
) -> None:
    spec = container(workload(name))
    sources = [next(iter(source)) for source in spec["envFrom"]]
    assert sources == ["configMapRef", "secretRef"]
    for variable in spec.get("env", []):
        assert variable["name"] not in unknown_variables([variable["name"]])
        if variable["name"] in SECRET_ENV_VARS:
            assert "secretKeyRef" in variable.get("valueFrom", {}), "secrets from the Secret"
    pod_settings(image, spec)


@pytest.mark.parametrize("name", WORKLOAD_FILES)
def test_workloads_run_as_the_image_user_on_a_read_only_root(image: Image, name: str) -> None:
    spec = pod_spec(workload(name))
    pod = spec["securityContext"]
    assert pod["runAsNonRoot"] is True
    assert pod["runAsUser"] == image_uid(image)
    assert pod["fsGroup"] == pod["runAsGroup"]
    own = container(workload(name))["securityContext"]
    assert own["readOnlyRootFilesystem"] is True
    assert own["allowPrivilegeEscalation"] is False
    assert own["capabilities"]["drop"] == ["ALL"]
    # What the process writes: Faust's worker-data under local_dir, and temporary files.
    settings = pod_settings(image, container(workload(name)))
    volumes = mounts(workload(name))
    for path in (str(settings.local_dir), "/tmp"):
        assert "emptyDir" in volumes[path]["volume"], path


@pytest.mark.parametrize("name", WORKLOAD_FILES)
def test_workloads_mount_the_claims_of_the_manifests(image: Image, name: str) -> None:
    claims = {o["metadata"]["name"]: o for o in resources() if o["kind"] == "PersistentVolumeClaim"}
    for path, entry in mounts(workload(name)).items():
        claim = entry["volume"].get("persistentVolumeClaim")
        if claim:
            assert claim["claimName"] in claims, path
    registry = str(pod_settings(image, container(workload(name))).model_registry_dir)
    if name != "jobs/replay.yaml":
        claim = mounts(workload(name))[registry]["volume"]["persistentVolumeClaim"]
        assert "ReadWriteMany" in claims[claim["claimName"]]["spec"]["accessModes"]


@pytest.mark.parametrize("name", WORKLOAD_FILES)
def test_workloads_request_and_limit_cpu_and_memory(name: str) -> None:
    resources_ = container(workload(name))["resources"]
    for kind in ("cpu", "memory"):
        request = quantity(str(resources_["requests"][kind]))
        limit = quantity(str(resources_["limits"][kind]))
        assert 0 < request <= limit, kind


# --- the Deployment ------------------------------------------------------------------------


def deployment() -> dict[str, Any]:
    return one(resources(), "Deployment")


def pod_labels() -> dict[str, str]:
    labels = deployment()["spec"]["template"]["metadata"]["labels"]
    assert isinstance(labels, dict)
    return labels


def selects_workers(selector: dict[str, str]) -> bool:
    return bool(selector) and selector.items() <= pod_labels().items()


def test_deployment_replicas_stay_within_the_partitions(image: Image) -> None:
    settings = pod_settings(image, container(deployment()))
    replicas = deployment()["spec"]["replicas"]
    assert 1 < replicas <= settings.topic_partitions, "extra workers would idle"
    assert selects_workers(deployment()["spec"]["selector"]["matchLabels"])
    rolling = deployment()["spec"]["strategy"]["rollingUpdate"]
    assert rolling["maxUnavailable"] == 0


def test_deployment_serves_on_the_image_port(image: Image) -> None:
    spec = container(deployment())
    (port,) = spec["ports"]
    assert port["name"] == "http"
    settings = pod_settings(image, spec)
    assert port["containerPort"] == settings.web_port
    assert image.exposed == [str(port["containerPort"])]


def test_probes_ask_the_pages_the_worker_serves(paths: set[str]) -> None:
    spec = container(deployment())
    expected = {"startupProbe": "/health", "livenessProbe": "/health", "readinessProbe": "/ready"}
    for probe, path in expected.items():
        get = spec[probe]["httpGet"]
        assert get["path"] == path, probe
        assert get["path"] in paths
        assert get["port"] == "http"
    # A slow start (topics, Faust) is the startup probe's, never a liveness restart.
    startup = spec["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 60


def test_workers_have_time_to_flush_on_sigterm(image: Image) -> None:
    settings = pod_settings(image, container(deployment()))
    grace = pod_spec(deployment())["terminationGracePeriodSeconds"]
    # The batch in hand, the Redis flush and the commit: a few commit intervals at most.
    assert grace >= max(30, 10 * settings.commit_interval_s)


def test_workers_spread_over_nodes_and_read_the_registry_only(image: Image) -> None:
    constraints = pod_spec(deployment())["topologySpreadConstraints"]
    assert "kubernetes.io/hostname" in {c["topologyKey"] for c in constraints}
    assert all(selects_workers(c["labelSelector"]["matchLabels"]) for c in constraints)
    registry = str(pod_settings(image, container(deployment())).model_registry_dir)
    entry = mounts(deployment())[registry]
    assert entry["mount"]["readOnly"] is True


def test_disruption_budget_takes_one_worker_at_a_time() -> None:
    budget = one(resources(), "PodDisruptionBudget")["spec"]
    assert budget["maxUnavailable"] == 1
    assert selects_workers(budget["selector"]["matchLabels"])


def test_headless_service_lets_prometheus_scrape_every_worker(
    image: Image, paths: set[str]
) -> None:
    service = one(resources(), "Service")
    spec = service["spec"]
    assert spec["clusterIP"] == "None"
    assert spec["publishNotReadyAddresses"] is True
    assert selects_workers(spec["selector"])
    (port,) = spec["ports"]
    assert port["targetPort"] == "http"
    settings = pod_settings(image, container(deployment()))
    annotations = service["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(settings.web_port) == str(port["port"])
    assert annotations["prometheus.io/path"] in paths
    assert annotations["prometheus.io/path"] == "/metrics"


# --- the Jobs ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", WORKLOAD_FILES[1:])
def test_jobs_run_once_under_a_fresh_name(name: str) -> None:
    job = workload(name)
    assert job["kind"] == "Job"
    assert job["metadata"]["generateName"].endswith("-")
    assert pod_spec(job)["restartPolicy"] == "Never"


@pytest.mark.parametrize(
    ("name", "option"), [("jobs/replay.yaml", "path"), ("jobs/train.yaml", "data")]
)
def test_replay_and_train_read_the_dataset_from_the_datasets_claim(name: str, option: str) -> None:
    job = workload(name)
    dataset = parse_command(container(job)["args"])[option]
    volumes = mounts(job)
    (mount,) = [path for path in volumes if Path(path) in Path(dataset).parents]
    claim = volumes[mount]["volume"]["persistentVolumeClaim"]["claimName"]
    assert claim == "fraudstream-datasets"
    assert volumes[mount]["mount"]["readOnly"] is True


def test_train_and_promote_write_the_registry_the_workers_read(image: Image) -> None:
    registry = str(pod_settings(image, container(deployment())).model_registry_dir)
    worker_claim = mounts(deployment())[registry]["volume"]["persistentVolumeClaim"]["claimName"]
    for name in ("jobs/train.yaml", "jobs/promote.yaml"):
        entry = mounts(workload(name))[registry]
        assert entry["volume"]["persistentVolumeClaim"]["claimName"] == worker_claim
        assert not entry["mount"].get("readOnly", False), name
    promote = parse_command(container(workload("jobs/promote.yaml"))["args"])
    assert promote["version"] == "REPLACE-WITH-VERSION"


# --- the network policy ----------------------------------------------------------------------


def test_network_policy_lets_only_prometheus_reach_the_worker_port(image: Image) -> None:
    policy = one(resources(), "NetworkPolicy")["spec"]
    assert selects_workers(policy["podSelector"]["matchLabels"])
    assert policy["policyTypes"] == ["Ingress"]  # egress: the site's Kafka and Redis
    (rule,) = policy["ingress"]
    (source,) = rule["from"]  # one peer: a namespace AND a pod selector, both required
    assert set(source) == {"namespaceSelector", "podSelector"}
    assert source["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "prometheus"}
    assert "kubernetes.io/metadata.name" in source["namespaceSelector"]["matchLabels"]
    (port,) = rule["ports"]
    (named,) = container(deployment())["ports"]
    assert port["port"] == named["name"]
    assert named["containerPort"] == pod_settings(image, container(deployment())).web_port


# --- the Kubernetes version ------------------------------------------------------------------

#: The Kubernetes minor version (1.x) from which each API version, and each field these
#: manifests use that is newer than the API version itself, works without a feature gate
#: (GA, or beta and on by default). A field or API version not listed fails the test:
#: add it with its version from the Kubernetes documentation.
API_SINCE = {
    "v1": 0,
    "apps/v1": 9,
    "batch/v1": 0,
    "policy/v1": 21,
    "networking.k8s.io/v1": 7,
}
FIELD_SINCE = {
    "startupProbe": 18,
    "topologySpreadConstraints": 19,
    "seccompProfile": 19,
    "ttlSecondsAfterFinished": 21,
    "unhealthyPodEvictionPolicy": 27,
    # Newer fields, absent today; listed so that adding one raises the minimum knowingly.
    "endPort": 22,
    "minDomains": 27,
    "matchLabelKeys": 27,
    "nodeAffinityPolicy": 26,
    "podFailurePolicy": 26,
    "backoffLimitPerIndex": 29,
    "managedBy": 32,
    "trafficDistribution": 31,
}
#: Fields as old as their API version: listed to tell them from unknown ones.
OLD_FIELDS = {
    "accessModes", "allowPrivilegeEscalation", "annotations", "args", "backoffLimit",
    "capabilities", "claimName", "clusterIP", "containerPort", "containers", "cpu", "drop",
    "emptyDir", "env", "envFrom", "failureThreshold", "fieldPath", "fieldRef", "fsGroup",
    "generateName", "httpGet", "image", "ingress", "labelSelector", "labels", "limits",
    "livenessProbe", "matchLabels", "maxSurge", "maxUnavailable", "memory", "metadata",
    "mountPath", "name", "namespace", "path", "periodSeconds", "persistentVolumeClaim",
    "podSelector", "policyTypes", "port", "ports", "protocol", "publishNotReadyAddresses",
    "readOnly", "readOnlyRootFilesystem", "readinessProbe", "replicas", "requests",
    "resources", "restartPolicy", "rollingUpdate", "runAsGroup", "runAsNonRoot", "runAsUser",
    "securityContext", "selector", "sizeLimit", "spec", "storage", "strategy", "targetPort",
    "template", "terminationGracePeriodSeconds", "timeoutSeconds", "topologyKey", "type",
    "valueFrom", "volumeMounts", "volumes", "whenUnsatisfiable", "data", "stringData", "kind",
    "apiVersion", "secretRef", "configMapRef", "from", "namespaceSelector", "maxSkew",
}  # fmt: skip


def field_names(node: Any) -> set[str]:
    """Every mapping key of a manifest, except free-form keys (labels, selectors, data)."""
    if isinstance(node, list):
        return set().union(*(field_names(item) for item in node)) if node else set()
    if not isinstance(node, dict):
        return set()
    names: set[str] = set()
    for key, value in node.items():
        if "/" in key:  # a label key, as in a Service's selector
            continue
        names.add(key)
        if key not in ("labels", "annotations", "matchLabels", "data", "stringData"):
            names |= field_names(value)
    return names


def stated_minimum() -> int:
    """The minimum Kubernetes minor version deploy/k8s/README.md states."""
    found = re.findall(r"Kubernetes 1\.(\d+) or later", (K8S_DIR / "README.md").read_text())
    assert found, "deploy/k8s/README.md states no minimum Kubernetes version"
    assert len(set(found)) == 1, found
    return int(found[0])


def test_manifests_need_no_newer_kubernetes_than_the_documented_minimum() -> None:
    jobs = [workload(name) for name in WORKLOAD_FILES if name.startswith("jobs/")]
    documents = [*resources(), secret_template(), *jobs]
    minimum = stated_minimum()
    needed = {}
    for document in documents:
        assert document["apiVersion"] in API_SINCE, document["apiVersion"]
        needed[document["apiVersion"]] = API_SINCE[document["apiVersion"]]
        for name in field_names(document):
            assert name in FIELD_SINCE or name in OLD_FIELDS, f"unknown field {name}: add it"
            needed[name] = FIELD_SINCE.get(name, 0)
    too_new = {name: f"1.{v}" for name, v in needed.items() if v > minimum}
    assert too_new == {}, f"needs a newer Kubernetes than 1.{minimum}"
    # The minimum is what the manifests need, not an arbitrary older or newer number.
    assert max(needed.values()) == minimum
    assert f"Kubernetes 1.{minimum} or later" in (REPO / "docs" / "operations.md").read_text()
