"""deploy/docker: the image, the compose stack, Prometheus and Grafana, checked by reading.

No Docker engine runs here: these tests parse the files and check that they agree with
each other and with the code (settings, CLI commands, web routes, metric names).
"""

from __future__ import annotations

import http.server
import json
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_checks import (
    DOCKER_DIR,
    DOCKERFILE,
    PROMETHEUS_SERIES,
    REPO,
    SECRET_ENV_VARS,
    Image,
    compose,
    compose_environment,
    dockerfile_stages,
    dockerignore_rules,
    dockerignored,
    exported_metrics,
    image_problem,
    image_tag,
    image_uid,
    parse_command,
    parse_dockerfile,
    port_of,
    pyproject,
    runtime_image,
    served_paths,
    settings_from_env,
    unknown_variables,
)
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from streams.settings import Settings

FRAUDSTREAM_SERVICES = ("worker", "replay", "train", "model")


@pytest.fixture(scope="module")
def image() -> Image:
    return runtime_image()


@pytest.fixture(scope="module")
def stack() -> dict[str, Any]:
    return compose()


@pytest.fixture(scope="module")
def paths(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    return served_paths(tmp_path_factory.mktemp("worker"))


def image_settings(image: Image) -> Settings:
    return settings_from_env(image.env)


def service_settings(image: Image, service: dict[str, Any]) -> Settings:
    """What a container of this service reads: the image's ENV, then the service's."""
    return settings_from_env({**image.env, **compose_environment(service)})


def service_args(image: Image, service: dict[str, Any]) -> list[str]:
    """The fraudstream arguments a service runs: entrypoint tail, then command."""
    entrypoint = service.get("entrypoint", image.entrypoint)
    command = service.get("command", image.cmd)
    assert entrypoint[0] == "fraudstream", entrypoint
    return [*entrypoint[1:], *command]


def volume_targets(service: dict[str, Any]) -> dict[str, str]:
    """Container path -> source of each short-syntax volume of a service."""
    targets = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        targets[target] = source
    return targets


# --- the image -----------------------------------------------------------------------------


def test_the_parser_reads_continuations_comments_and_exec_forms() -> None:
    instructions = parse_dockerfile(
        "# syntax=docker/dockerfile:1\nFROM a:1 AS b\nRUN x \\\n    # inner\n    && y\n"
        'CMD ["worker"]\n'
    )
    assert [(i.keyword, i.value) for i in instructions] == [
        ("FROM", "a:1 AS b"),
        ("RUN", "x && y"),
        ("CMD", '["worker"]'),
    ]
    assert instructions[2].exec_form() == ["worker"]
    assert instructions[1].exec_form() is None


def test_image_is_built_in_stages_on_one_pinned_python_3_11_slim_base() -> None:
    stages = dockerfile_stages(DOCKERFILE.read_text(encoding="utf-8"))
    assert len(stages) >= 2, "multi-stage: the build tools stay out of the runtime image"
    bases = {stage.base for stage in stages}
    # The runtime copies the build stage's venv: both must have the same Python.
    assert len(bases) == 1, bases
    (base,) = bases
    assert image_problem(base) is None
    name, tag = image_tag(base)
    assert name == "python"
    assert tag.startswith("3.11.")
    assert "slim" in tag
    names = {stage.name for stage in stages}
    for stage in stages:
        for copy in stage.all("COPY"):
            if "from" in copy.flags():
                assert copy.flags()["from"] in names


def test_image_installs_the_locked_dependencies_with_their_hashes() -> None:
    stages = dockerfile_stages(DOCKERFILE.read_text(encoding="utf-8"))
    runs = [run.value for stage in stages for run in stage.all("RUN")]
    locked = [run for run in runs if "requirements.lock" in run]
    assert locked
    assert all("--require-hashes" in run for run in locked)
    assert any("-r /tmp/requirements.lock" in run for run in locked)
    assert any("-r /tmp/build-requirements.lock" in run for run in locked)
    # The project itself goes in without resolving anything beyond the lock.
    assert any("--no-deps" in run and "fraudstream-" in run for run in runs)


def locked_versions(path: Path) -> dict[str, Version]:
    """name -> version of a `uv pip compile --generate-hashes` output, checking its form."""
    text = path.read_text(encoding="utf-8")
    versions: dict[str, Version] = {}
    for block in re.split(r"\n(?=\S)", text):
        if block.startswith("#"):
            continue
        requirement = Requirement(block.split("\\")[0].strip())
        (specifier,) = requirement.specifier
        assert specifier.operator == "==", block
        assert "--hash=sha256:" in block, f"{requirement.name} has no hash"
        versions[canonicalize_name(requirement.name)] = Version(specifier.version)
    return versions


def test_lock_pins_every_dependency_of_the_project_within_its_range() -> None:
    lock = DOCKER_DIR / "requirements.lock"
    assert "uv pip compile pyproject.toml" in lock.read_text(encoding="utf-8").splitlines()[1]
    versions = locked_versions(lock)
    for line in pyproject()["project"]["dependencies"]:
        requirement = Requirement(line)
        name = canonicalize_name(requirement.name)
        assert name in versions, f"{name} is missing from the lock: regenerate it"
        assert requirement.specifier.contains(versions[name]), (
            f"lock has {name}=={versions[name]}, pyproject.toml asks {requirement.specifier}"
        )
        for extra in requirement.extras:  # redis[hiredis]
            assert extra in versions, extra


def test_build_lock_pins_the_build_backend_of_pyproject() -> None:
    versions = locked_versions(DOCKER_DIR / "build-requirements.lock")
    build_in = (DOCKER_DIR / "build-requirements.in").read_text(encoding="utf-8")
    wanted = [line for line in build_in.splitlines() if line and not line.startswith("#")]
    assert sorted(wanted) == sorted(pyproject()["build-system"]["requires"])
    for line in wanted:
        requirement = Requirement(line)
        assert requirement.specifier.contains(versions[canonicalize_name(requirement.name)])


def test_image_runs_as_a_non_root_user_in_its_own_directory(image: Image) -> None:
    assert image_uid(image) != 0
    final = dockerfile_stages(DOCKERFILE.read_text(encoding="utf-8"))[-1]
    assert final.last("WORKDIR").value.startswith("/")


def test_image_environment_is_settings_the_worker_accepts(image: Image) -> None:
    assert not unknown_variables(image.env)
    assert not SECRET_ENV_VARS & image.env.keys()
    settings = image_settings(image)
    # Loopback unless a deployment says otherwise: the HEALTHCHECK probes it from inside.
    assert settings.web_host == "127.0.0.1"
    assert image.exposed == [str(settings.web_port)]
    # Writable places are directories of their own, not the read-only install.
    assert settings.local_dir.is_absolute()
    assert settings.model_registry_dir.is_absolute()


def test_image_runs_the_worker_through_the_console_script(image: Image) -> None:
    assert image.entrypoint == list(pyproject()["project"]["scripts"])
    assert image.cmd == ["worker"]
    parse_command(image.cmd)


def test_parse_command_refuses_what_the_cli_refuses() -> None:
    assert parse_command(["replay", "/data/x.parquet", "--speed", "10"])["speed"] == 10.0
    with pytest.raises(AssertionError, match="no command"):
        parse_command(["wrker"])
    with pytest.raises(AssertionError, match="--sped"):
        parse_command(["replay", "/data/x.parquet", "--sped", "10"])
    with pytest.raises(AssertionError):
        parse_command(["replay", "/data/x.parquet", "--speed", "fast"])


def healthcheck_argv(image: Image) -> list[str]:
    words = image.healthcheck.without_options().split(maxsplit=1)
    assert words[0] == "CMD"
    argv = json.loads(words[1])
    assert isinstance(argv, list)
    return [str(a) for a in argv]


def test_healthcheck_asks_the_worker_health_page_on_its_port(image: Image, paths: set[str]) -> None:
    argv = healthcheck_argv(image)
    assert argv[0] == "python"  # no curl in a slim image
    url = re.search(r"http://[^'\"]+", argv[-1])
    assert url is not None
    path = url[0].split("/", 3)[3]
    assert f"/{path}" == "/health"
    assert "/health" in paths
    assert f"'{image_settings(image).web_port}'" in argv[-1]  # the port's default
    # The address the worker binds, not always 127.0.0.1 (compose binds its host name).
    assert "os.environ.get('FRAUDSTREAM_WEB_HOST', '127.0.0.1')" in argv[-1]


class _Page(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/health" else 404)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def page() -> Iterator[tuple[type[_Page], int]]:
    handler = type("Page", (_Page,), {})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield handler, server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def run_healthcheck(image: Image, port: int, host: str | None = None) -> int:
    argv = healthcheck_argv(image)
    env = {"FRAUDSTREAM_WEB_PORT": str(port)}
    if host is not None:
        env["FRAUDSTREAM_WEB_HOST"] = host
    return subprocess.run(
        [sys.executable, *argv[1:]], env=env, capture_output=True, timeout=30, check=False
    ).returncode


def test_healthcheck_passes_on_200_and_fails_otherwise(
    image: Image, page: tuple[type[_Page], int]
) -> None:
    handler, port = page
    assert run_healthcheck(image, port) == 0
    assert run_healthcheck(image, port, host="127.0.0.1") == 0
    handler.status = 503
    assert run_healthcheck(image, port) != 0


def test_build_context_holds_what_the_image_copies_and_nothing_private() -> None:
    rules = dockerignore_rules()
    stages = dockerfile_stages(DOCKERFILE.read_text(encoding="utf-8"))
    for copy in (c for stage in stages for c in stage.all("COPY") if "from" not in c.flags()):
        for source in copy.without_options().split()[:-1]:
            assert (REPO / source).exists(), source
            assert not dockerignored(source, rules), f"{source} is left out by .dockerignore"
            if (REPO / source).is_dir():
                assert not dockerignored(f"{source}/__init__.py", rules)
    for private in (
        ".venv/bin/python",
        ".local/kafka",
        "data/t.parquet",
        "model-registry/x",
        ".git/HEAD",
        ".env",
        "streams/__pycache__/app.cpython-311.pyc",
    ):
        assert dockerignored(private, rules), private


# --- the compose stack ---------------------------------------------------------------------


def test_compose_has_only_top_level_keys_every_compose_version_reads(
    stack: dict[str, Any],
) -> None:
    # docker-compose v1 refuses a top-level `name` (and `version` is obsolete in v2).
    keys = {k for k in stack if not k.startswith("x-")}
    assert keys <= {"services", "volumes", "networks", "configs", "secrets"}, keys


def test_compose_runs_the_whole_stack(stack: dict[str, Any]) -> None:
    assert {"kafka", "redis", "worker", "replay", "train", "model", "prometheus", "grafana"} <= set(
        stack["services"]
    )


def test_compose_images_are_pinned_and_ours_is_built_here(stack: dict[str, Any]) -> None:
    version = pyproject()["project"]["version"]
    for name, service in stack["services"].items():
        assert "image" in service, name
        assert image_problem(service["image"]) is None, name
        if "build" in service:
            assert service["image"] == f"fraudstream:{version}"
            context = (DOCKER_DIR / service["build"]["context"]).resolve()
            assert context == REPO
            assert (context / service["build"]["dockerfile"]).resolve() == DOCKERFILE
    assert all("build" in stack["services"][name] for name in FRAUDSTREAM_SERVICES)


def test_compose_kafka_is_the_local_version_in_kraft_mode(stack: dict[str, Any]) -> None:
    kafka = stack["services"]["kafka"]
    name, tag = image_tag(kafka["image"])
    assert name == "apache/kafka"
    assert tag == Settings.model_fields["local_kafka_version"].default
    env = compose_environment(kafka)
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert env["CLUSTER_ID"]
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    protocols = dict(p.split(":") for p in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    listeners = dict(a.split("://") for a in env["KAFKA_LISTENERS"].split(","))
    advertised = dict(a.split("://") for a in env["KAFKA_ADVERTISED_LISTENERS"].split(","))
    assert set(listeners) <= set(protocols)
    assert set(advertised) <= set(listeners)
    for listener, address in advertised.items():
        assert port_of(address) == port_of(listeners[listener])
    # The address the containers use is the one the broker advertises in the network.
    bootstrap = compose_environment(stack["services"]["worker"])[
        "FRAUDSTREAM_KAFKA_BOOTSTRAP_SERVERS"
    ]
    assert bootstrap in advertised.values()
    assert bootstrap.split(":")[0] == "kafka"
    # Internal topics of a one-node cluster cannot be replicated.
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"


def test_compose_redis_persists_like_the_local_redis(stack: dict[str, Any]) -> None:
    local = {}
    for line in (REPO / "deploy/local/redis/redis.conf").read_text(encoding="utf-8").splitlines():
        key, _, value = line.partition(" ")
        if key in ("appendonly", "appendfsync", "save"):
            local[key] = value
    command = stack["services"]["redis"]["command"]
    assert command[0] == "redis-server"
    options = dict(zip(command[1::2], command[2::2], strict=True))
    assert options == {f"--{key}": value for key, value in local.items()}
    url = compose_environment(stack["services"]["worker"])["FRAUDSTREAM_REDIS_URL"]
    assert url.startswith("redis://redis:6379/")


@pytest.mark.parametrize("name", FRAUDSTREAM_SERVICES)
def test_compose_fraudstream_settings_are_known_valid_and_not_secret(
    stack: dict[str, Any], image: Image, name: str
) -> None:
    service = stack["services"][name]
    environment = compose_environment(service)
    assert not unknown_variables(environment)
    assert not SECRET_ENV_VARS & environment.keys(), "no secrets in compose"
    settings = service_settings(image, service)
    assert settings.kafka_security_protocol == "PLAINTEXT"  # local development only
    assert settings.model_registry_dir == image_settings(image).model_registry_dir


@pytest.mark.parametrize("name", FRAUDSTREAM_SERVICES)
def test_compose_commands_are_commands_of_the_cli(
    stack: dict[str, Any], image: Image, name: str
) -> None:
    parse_command(service_args(image, stack["services"][name]))


def test_compose_model_service_promotes_as_documented(stack: dict[str, Any], image: Image) -> None:
    # `docker compose run --rm model promote VERSION` replaces the command only.
    model = {**stack["services"]["model"], "command": ["promote", "20250101T120000Z-hgb-1a2b3c4d"]}
    params = parse_command(service_args(image, model))
    assert params["version"] == "20250101T120000Z-hgb-1a2b3c4d"


def test_compose_workers_serve_on_the_image_port(stack: dict[str, Any], image: Image) -> None:
    worker = stack["services"]["worker"]
    settings = service_settings(image, worker)
    assert [str(p) for p in worker["expose"]] == image.exposed == [str(settings.web_port)]
    # Its own address, through its host name (never every interface).
    assert settings.web_host == worker["hostname"]
    assert "ports" not in worker, "replicas would clash on a host port"
    # The image's /health check applies, and asks the address the worker binds.
    assert "healthcheck" not in worker
    assert settings.web_host != "127.0.0.1"
    assert "FRAUDSTREAM_WEB_HOST" in healthcheck_argv(image)[-1]
    replicas = int(worker["deploy"]["replicas"])
    assert 1 <= replicas <= settings.topic_partitions, "extra workers would idle"


def test_compose_jobs_are_one_shot_and_unprobed(stack: dict[str, Any]) -> None:
    for name in ("replay", "train", "model"):
        service = stack["services"][name]
        assert service["profiles"], f"{name} runs on demand only"
        assert service["healthcheck"] == {"disable": True}, "a job serves no /health"
        assert service["restart"] == "no"


def test_compose_jobs_read_the_dataset_and_share_the_registry(
    stack: dict[str, Any], image: Image
) -> None:
    services = stack["services"]
    registry = str(image_settings(image).model_registry_dir)
    for name in ("worker", "train", "model"):
        assert volume_targets(services[name]).get(registry) == "model-registry", name
    assert "model-registry" in stack["volumes"]

    replay = parse_command(service_args(image, services["replay"]))
    train = parse_command(service_args(image, services["train"]))
    for name, dataset in (("replay", replay["path"]), ("train", train["data"])):
        targets = volume_targets(services[name])
        mounts = [t for t in targets if Path(t) in Path(dataset).parents]
        assert mounts, f"{name} reads {dataset} from no volume"
        # The dataset directory of the README (`fraudstream generate --out data/...`).
        assert (DOCKER_DIR / targets[mounts[0]]).resolve() == REPO / "data"


def test_compose_mounts_files_that_exist(stack: dict[str, Any]) -> None:
    for name, service in stack["services"].items():
        for target, source in volume_targets(service).items():
            if source.startswith(".") and (DOCKER_DIR / source).resolve() != REPO / "data":
                assert (DOCKER_DIR / source).exists(), f"{name}: {source} -> {target}"


# --- Prometheus and Grafana ----------------------------------------------------------------


def test_prometheus_loads_the_rules_compose_mounts_next_to_its_config(
    stack: dict[str, Any],
) -> None:
    mounted = volume_targets(stack["services"]["prometheus"])
    config = yaml.safe_load((DOCKER_DIR / mounted["/etc/prometheus/prometheus.yml"]).read_text())
    assert config["rule_files"] == ["rules.yml"]  # relative to the config file's directory
    assert (DOCKER_DIR / mounted["/etc/prometheus/rules.yml"]).resolve() == (
        DOCKER_DIR / "prometheus" / "rules.yml"
    )


def test_prometheus_scrapes_every_worker_metrics_page(
    stack: dict[str, Any], image: Image, paths: set[str]
) -> None:
    mounted = volume_targets(stack["services"]["prometheus"])["/etc/prometheus/prometheus.yml"]
    config = yaml.safe_load((DOCKER_DIR / mounted).read_text(encoding="utf-8"))
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "fraudstream-worker"]
    assert job["metrics_path"] in paths
    assert job["metrics_path"] == "/metrics"
    (discovery,) = job["dns_sd_configs"]
    assert discovery["names"] == ["worker"]
    assert discovery["names"][0] in stack["services"]
    assert discovery["port"] == service_settings(image, stack["services"]["worker"]).web_port


def grafana_mounts(stack: dict[str, Any]) -> dict[str, Path]:
    return {
        target: DOCKER_DIR / source
        for target, source in volume_targets(stack["services"]["grafana"]).items()
        if source.startswith(".")
    }


def test_grafana_provisions_the_prometheus_datasource_and_the_dashboards(
    stack: dict[str, Any],
) -> None:
    mounts = grafana_mounts(stack)
    provisioning = mounts["/etc/grafana/provisioning"]
    (datasource,) = yaml.safe_load(
        (provisioning / "datasources" / "prometheus.yaml").read_text(encoding="utf-8")
    )["datasources"]
    assert datasource["type"] == "prometheus"
    assert datasource["url"] == "http://prometheus:9090"
    (provider,) = yaml.safe_load(
        (provisioning / "dashboards" / "fraudstream.yaml").read_text(encoding="utf-8")
    )["providers"]
    dashboards = mounts[provider["options"]["path"]]
    assert (dashboards / "fraudstream.json").is_file()
    home = compose_environment(stack["services"]["grafana"])[
        "GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"
    ]
    assert (mounts[str(Path(home).parent)] / Path(home).name).is_file()


def dashboard() -> dict[str, Any]:
    parsed = json.loads((DOCKER_DIR / "grafana/dashboards/fraudstream.json").read_text("utf-8"))
    assert isinstance(parsed, dict)
    return parsed


def expressions() -> list[str]:
    return [t["expr"] for p in dashboard()["panels"] for t in p.get("targets", [])]


def test_dashboard_panels_are_well_formed() -> None:
    board = dashboard()
    assert board["uid"]
    assert board["title"]
    assert board["schemaVersion"] >= 36
    panels = board["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    datasource = yaml.safe_load(
        (DOCKER_DIR / "grafana/provisioning/datasources/prometheus.yaml").read_text("utf-8")
    )["datasources"][0]
    for panel in panels:
        assert {"x", "y", "w", "h"} <= panel["gridPos"].keys()
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] == datasource["uid"], panel["title"]
            assert target["expr"].count("(") == target["expr"].count(")"), target["expr"]


_IDENTIFIER = re.compile(r"(?<![\w$])([a-zA-Z_:][\w:]*)(?=\s*[\[{)]|\s+(?:and|or|unless|\*|/)|$)")
_GROUPING = re.compile(r"\b(?:by|on|without|ignoring)\s*\(([^)]*)\)")


def test_dashboard_queries_only_metrics_the_workers_export() -> None:
    exported = exported_metrics()
    labels = set().union(*exported.values()) | {"instance", "job", "le"}
    used: set[str] = set()
    for expr in expressions():
        names = {
            n
            for n in _IDENTIFIER.findall(expr)
            if n.startswith(("fraudstream_", "process_")) or n in PROMETHEUS_SERIES
        }
        assert names, f"no metric found in {expr}"
        unknown = names - exported.keys() - PROMETHEUS_SERIES
        assert not unknown, f"{expr}: the workers export no {sorted(unknown)}"
        used |= names
        for group in _GROUPING.findall(expr):
            for label in (g.strip() for g in group.split(",")):
                assert label in labels, f"{expr}: no metric has the label {label!r}"
        if "_bucket[" in expr:
            assert re.search(r"by \([^)]*\ble\b", expr), f"{expr}: quantiles need `by (le)`"
    # The panels the deploy promises: throughput, alerts, DLQ, latency, lag, model, Redis.
    assert {
        "fraudstream_transactions_total",
        "fraudstream_alerts_total",
        "fraudstream_dlq_records_total",
        "fraudstream_event_to_alert_latency_seconds_bucket",
        "fraudstream_processing_latency_seconds_bucket",
        "fraudstream_batch_size_bucket",
        "fraudstream_terminal_aggregation_lag_seconds",
        "fraudstream_model_info",
        "fraudstream_redis_flush_seconds_bucket",
        "fraudstream_consumer_lag_records",
        "fraudstream_rebalances_total",
        "fraudstream_rebalance_duration_seconds_bucket",
        "fraudstream_assigned_partitions",
        "fraudstream_table_entries",
        "fraudstream_redis_available",
        "fraudstream_build_info",
        "up",
    } <= used


def test_metric_check_catches_a_misspelt_metric() -> None:
    expr = "sum(rate(fraudstream_transaction_total[5m]))"
    names = set(_IDENTIFIER.findall(expr))
    assert "fraudstream_transaction_total" in names
    assert "fraudstream_transaction_total" not in exported_metrics()
