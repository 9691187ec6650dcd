"""What the deploy tests share: the deploy files parsed, and what they must agree with.

No Docker engine or cluster runs on the development machines, so deploy/docker and
deploy/k8s are checked by reading them: a small Dockerfile parser, compose-style variable
interpolation, the settings object, the Typer command tree and the worker's web routes.
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatch
from functools import cache
from pathlib import Path
from typing import Any

import typer
import yaml
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from streams.settings import ENV_PREFIX, Settings, env_var

REPO = Path(__file__).resolve().parents[3]
DOCKER_DIR = REPO / "deploy" / "docker"
K8S_DIR = REPO / "deploy" / "k8s"
DOCKERFILE = DOCKER_DIR / "Dockerfile"

#: Every environment variable the settings object reads.
SETTINGS_ENV_VARS = frozenset(env_var(name) for name in Settings.model_fields)

#: The variables of secret settings (SecretStr fields): only ever in a Secret.
SECRET_ENV_VARS = frozenset(
    env_var(name)
    for name, info in Settings.model_fields.items()
    if SecretStr in typing.get_args(info.annotation) or info.annotation is SecretStr
)


def pyproject() -> dict[str, Any]:
    """The parsed pyproject.toml of the repository."""
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))


def load_yaml_documents(path: Path) -> list[Any]:
    """Every document of a YAML file, empty ones left out."""
    with path.open(encoding="utf-8") as stream:
        return [doc for doc in yaml.safe_load_all(stream) if doc is not None]


# --- the settings -------------------------------------------------------------------------


def fraudstream_variables(env: Mapping[str, object]) -> dict[str, str]:
    """The FRAUDSTREAM_* entries of an environment, as strings."""
    return {k: str(v) for k, v in env.items() if k.startswith(ENV_PREFIX)}


def settings_from_env(env: Mapping[str, object]) -> Settings:
    """The settings a process would build from exactly these FRAUDSTREAM_* variables.

    Validated from the values alone (no process environment, no .env file), with the
    prefix stripped as the settings source does; raises pydantic's ValidationError.
    """
    values = {
        name.removeprefix(ENV_PREFIX).lower(): value
        for name, value in fraudstream_variables(env).items()
    }
    return Settings.model_validate(values)


def unknown_variables(names: Iterable[str]) -> set[str]:
    """The FRAUDSTREAM_* names the settings object does not know."""
    return {n for n in names if n.startswith(ENV_PREFIX)} - SETTINGS_ENV_VARS


# --- the CLI ------------------------------------------------------------------------------


def parse_command(args: Sequence[str]) -> dict[str, Any]:
    """Parse ``fraudstream ARGS`` as the CLI would, without running anything.

    Returns:
        The parameters of the (sub)command the arguments name.

    Raises:
        AssertionError: no such command, an unknown option, a value of the wrong type.
    """
    from streams.cli import cli

    command: Any = typer.main.get_command(cli)
    path = ["fraudstream"]
    rest = list(args)
    while hasattr(command, "commands"):
        assert rest, f"`{' '.join(path)}` needs a subcommand"
        name, rest = rest[0], rest[1:]
        assert name in command.commands, f"`{' '.join(path)}` has no command {name!r}"
        command = command.commands[name]
        path.append(name)
    try:
        context = command.make_context(" ".join(path), rest)
    except Exception as exc:  # the CLI's own usage errors
        raise AssertionError(f"`{' '.join([*path, *rest])}`: {exc}") from exc
    return dict(context.params)


# --- the worker's web server and metrics ---------------------------------------------------


def served_paths(local_dir: Path) -> set[str]:
    """The URL paths a worker's web server answers, pipeline built as `fraudstream worker` does."""
    from streams.app import create_app
    from streams.pipeline import build_pipeline

    settings = Settings.model_validate({"local_dir": local_dir, "table_store": "memory://"})
    app = create_app(settings)
    return set(build_pipeline(app, settings).web.routes)


#: Series Prometheus makes itself for every target, which dashboards and rules may query.
PROMETHEUS_SERIES = frozenset({"up"})


@cache
def exported_metrics() -> dict[str, frozenset[str]]:
    """Every sample name a worker's /metrics page can show, with its label names."""
    from streams.metrics import PipelineMetrics

    metrics = PipelineMetrics()
    # Labelled metrics without a default child show up once used.
    metrics.set_model_version("v")
    metrics.redis_flush.labels(table="t").observe(0.001)
    metrics.duplicates_skipped.labels(source="s").inc()
    metrics.consumer_lag.labels(topic="t", partition="0").set(0)
    metrics.consumer_lag_seconds.labels(topic="t", partition="0").set(0)
    metrics.assigned_partitions.labels(topic="t").set(1)
    metrics.table_entries.labels(table="t").set(0)
    metrics.table_stored_entries.labels(table="t").set(0)
    metrics.table_stored_bytes.labels(table="t").set(0)
    metrics.table_census_seconds.labels(table="t").set(0)
    metrics.partition_stalled.labels(topic="t", partition="0").set(0)
    names: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(metrics.render()[0].decode()):
        for sample in family.samples:
            names.setdefault(sample.name, set()).update(sample.labels)
    return {name: frozenset(labels) for name, labels in names.items()}


# --- images --------------------------------------------------------------------------------

_TAG = re.compile(
    r"^(?P<name>[^@]+?)"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]*))?"
    r"(?:@(?P<digest>sha256:[0-9a-f]{64}))?$"
)


def image_problem(reference: str) -> str | None:
    """Why an image reference is not pinned (no tag, ``latest``, no version), or None."""
    match = _TAG.match(reference)
    if match is None:
        return f"{reference!r} is not an image reference"
    if match["digest"]:
        return None
    tag = match["tag"]
    if not tag:
        return f"{reference!r} has no tag"
    if tag == "latest" or not re.search(r"\d", tag):
        return f"{reference!r} is not pinned to a version"
    return None


def image_tag(reference: str) -> tuple[str, str]:
    """The name and tag of a pinned image reference."""
    match = _TAG.match(reference)
    assert match is not None, reference
    assert match["tag"], reference
    return match["name"], match["tag"]


# --- Dockerfile ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction: its keyword (upper case) and arguments, lines joined."""

    keyword: str
    value: str

    def exec_form(self) -> list[str] | None:
        """The JSON array of an exec-form instruction, or None for the shell form."""
        if not self.value.startswith("["):
            return None
        parsed = json.loads(self.value)
        assert isinstance(parsed, list)
        assert all(isinstance(a, str) for a in parsed)
        return parsed

    def flags(self) -> dict[str, str]:
        """The leading ``--name=value`` options (COPY --from, HEALTHCHECK --interval...)."""
        return dict(re.findall(r"--([a-z-]+)=(\S+)", self.options_text()))

    def options_text(self) -> str:
        """The leading options, as written."""
        match = re.match(r"^((?:--[a-z-]+=\S+\s+)*)", self.value)
        return match.group(1) if match else ""

    def without_options(self) -> str:
        """The arguments after the leading options."""
        return self.value[len(self.options_text()) :]


@dataclass
class Stage:
    """One FROM ... stage: the image it starts from, its name and its instructions."""

    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        """The instructions with this keyword, in order."""
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction:
        """The last instruction with this keyword (the one Docker keeps)."""
        found = self.all(keyword)
        assert found, f"stage {self.name or self.base} has no {keyword}"
        return found[-1]

    def env(self) -> dict[str, str]:
        """The ENV variables the stage sets (``ENV a=1 b=2``, or ``ENV a 1``)."""
        env: dict[str, str] = {}
        for instruction in self.all("ENV"):
            words = shlex.split(instruction.value)
            if words and "=" not in words[0]:
                env[words[0]] = " ".join(words[1:])
                continue
            for word in words:
                key, _, value = word.partition("=")
                env[key] = value
        return env


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions of a Dockerfile: comments dropped, ``\\`` continuations joined."""
    instructions: list[Instruction] = []
    pending: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and not pending):
            continue  # comments (and parser directives), also inside a continuation
        if line.endswith("\\"):
            pending.append(line[:-1].strip())
            continue
        pending.append(line)
        joined = " ".join(part for part in pending if part)
        pending = []
        keyword, _, value = joined.partition(" ")
        instructions.append(Instruction(keyword.upper(), value.strip()))
    assert not pending, "the Dockerfile ends inside a continuation"
    return instructions


def dockerfile_stages(text: str) -> list[Stage]:
    """The build stages, FROM arguments expanded with the global ARG defaults."""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for instruction in parse_dockerfile(text):
        if instruction.keyword == "ARG" and not stages:
            name, _, default = instruction.value.partition("=")
            args[name] = default
        elif instruction.keyword == "FROM":
            words = instruction.without_options().split()
            base = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args[m[1] or m[2]], words[0])
            alias = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base, alias))
        else:
            assert stages, f"{instruction.keyword} before the first FROM"
            stages[-1].instructions.append(instruction)
    return stages


@dataclass(frozen=True)
class Image:
    """What the runtime image gives a container: environment, user, port, commands."""

    env: dict[str, str]
    user: str
    exposed: list[str]
    entrypoint: list[str]
    cmd: list[str]
    healthcheck: Instruction


def runtime_image() -> Image:
    """The final stage of deploy/docker/Dockerfile, as a container sees it."""
    final = dockerfile_stages(DOCKERFILE.read_text(encoding="utf-8"))[-1]
    entrypoint = final.last("ENTRYPOINT").exec_form()
    cmd = final.last("CMD").exec_form()
    assert entrypoint is not None, "ENTRYPOINT in exec form"
    assert cmd is not None, "CMD in exec form"
    return Image(
        env=final.env(),
        user=final.last("USER").value,
        exposed=[p for i in final.all("EXPOSE") for p in i.value.split()],
        entrypoint=entrypoint,
        cmd=cmd,
        healthcheck=final.last("HEALTHCHECK"),
    )


def image_uid(image: Image) -> int:
    """The numeric uid the image runs as (USER uid or uid:gid)."""
    uid = image.user.partition(":")[0]
    assert uid.isdigit(), f"USER {image.user}: numeric, so Kubernetes can check runAsNonRoot"
    return int(uid)


# --- .dockerignore -------------------------------------------------------------------------


def dockerignored(path: str, patterns: Sequence[str]) -> bool:
    """Whether a context path is left out by these .dockerignore rules (last match wins).

    Enough of Docker's rules for the file we keep: ``*``, ``!path`` exceptions, a
    directory rule covering what is under it, and ``**/`` for any depth.
    """
    excluded = False
    for rule in patterns:
        negated = rule.startswith("!")
        pattern = rule.removeprefix("!").strip("/")
        candidates = [path]
        parts = path.split("/")
        candidates += ["/".join(parts[:i]) for i in range(1, len(parts))]
        if pattern.startswith("**/"):
            tail = pattern.removeprefix("**/")
            hit = any(fnmatch(part, tail) for part in parts)
        else:
            hit = any(
                fnmatch(candidate, pattern) and candidate.count("/") == pattern.count("/")
                for candidate in candidates
            )
        if hit:
            excluded = not negated
    return excluded


def dockerignore_rules() -> list[str]:
    """The rules of the repository's .dockerignore."""
    lines = (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


# --- compose -------------------------------------------------------------------------------

_VARIABLE = re.compile(r"\$\$|\$\{(?P<name>\w+)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


def interpolate(value: object, env: Mapping[str, str] | None = None) -> object:
    """Expand ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}`` as compose does.

    Non-string values are returned as they are; an unset ``${VAR:?message}`` raises.
    """
    if not isinstance(value, str):
        return value
    variables = env or {}

    def expand(match: re.Match[str]) -> str:
        if match[0] == "$$":
            return "$"
        name, op, arg = match["name"], match["op"], match["arg"]
        current = variables.get(name)
        if op in (":-", ":?") and not current:
            current = None
        if current is not None:
            return current
        if op and op.endswith("?"):
            raise AssertionError(f"${{{name}}} must be set: {arg}")
        return arg if op else ""

    return _VARIABLE.sub(expand, value)


def interpolate_all(value: object) -> Any:
    """Interpolate every string in a parsed compose document (with no variables set)."""
    if isinstance(value, dict):
        return {k: interpolate_all(v) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate_all(v) for v in value]
    return interpolate(value)


def compose() -> dict[str, Any]:
    """deploy/docker/compose.yaml, parsed (anchors merged) and interpolated with defaults."""
    documents = load_yaml_documents(DOCKER_DIR / "compose.yaml")
    assert len(documents) == 1
    parsed = interpolate_all(documents[0])
    assert isinstance(parsed, dict)
    return parsed


def compose_environment(service: Mapping[str, Any]) -> dict[str, str]:
    """A service's ``environment``, in either compose form, as strings."""
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        pairs = (entry.partition("=") for entry in environment)
        return {key: value for key, _, value in pairs}
    return {key: "" if value is None else str(value) for key, value in environment.items()}


def port_of(address: str) -> int:
    """The port of ``host:port`` (or of a URL)."""
    return int(address.rsplit(":", 1)[1].split("/")[0])
