"""deploy/docker/prometheus/rules.yml: valid, unit-tested with promtool, and about our metrics.

promtool (Debian's ``prometheus`` package; ``make test-tools`` installs it) checks the
rules and runs their unit tests in rules.test.yml: each alert fires on the series it is
written for, with the labels and text an on-call reads, and stays quiet otherwise.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_checks import DOCKER_DIR, PROMETHEUS_SERIES, exported_metrics

RULES_DIR = DOCKER_DIR / "prometheus"
RULES = RULES_DIR / "rules.yml"

#: The alerts issue #18 asks for, by what they watch, and the crash loop `up` misses.
EXPECTED_ALERTS = {
    "FraudstreamWorkerDown",
    "FraudstreamWorkerRestarting",
    "FraudstreamNoWorkers",
    "FraudstreamConsumerLagGrowing",
    "FraudstreamAlertLatencySLOBurnFast",
    "FraudstreamAlertLatencySLOBurnSlow",
    "FraudstreamDeadLetters",
    "FraudstreamModelLoadFailures",
    "FraudstreamRedisDown",
    "FraudstreamPartitionStalled",
}

_NAME = re.compile(
    r"(?<![\w:$.\"'])([a-zA-Z_][\w]*(?::[\w]+)*)(?=\s*[\[{)]|\s+(?:and|or|unless|[*/<>=!])|\s*$)"
)


def promtool() -> str:
    found = shutil.which("promtool")
    assert found, "promtool (Debian package prometheus) is needed: `make test-tools` installs it"
    return found


def rules() -> list[dict[str, Any]]:
    parsed = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [rule for group in parsed["groups"] for rule in group["rules"]]


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


def test_promtool_accepts_the_rules_and_the_config_that_loads_them() -> None:
    checked = run("check", "rules", "rules.yml", cwd=RULES_DIR)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    config = run("check", "config", "prometheus.yml", cwd=RULES_DIR)
    assert config.returncode == 0, config.stdout + config.stderr


def test_promtool_unit_tests_of_the_rules_pass() -> None:
    tested = run("test", "rules", "rules.test.yml", cwd=RULES_DIR)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_every_alert_asked_for_is_there_with_a_severity_and_a_summary() -> None:
    alerts = {rule["alert"]: rule for rule in rules() if "alert" in rule}
    assert set(alerts) == EXPECTED_ALERTS
    for name, rule in alerts.items():
        assert rule["labels"]["severity"] in {"page", "ticket"}, name
        assert rule["annotations"]["summary"], name
    tested = yaml.safe_load((RULES_DIR / "rules.test.yml").read_text(encoding="utf-8"))
    fired = {
        case["alertname"]
        for test in tested["tests"]
        for case in test.get("alert_rule_test", [])
        if case["exp_alerts"]
    }
    assert fired == EXPECTED_ALERTS, "every alert has a unit test in which it fires"


@pytest.mark.parametrize("rule", rules(), ids=lambda r: r.get("alert") or r["record"])
def test_rules_query_only_metrics_the_workers_export_or_rules_record(rule: dict[str, Any]) -> None:
    recorded = {r["record"] for r in rules() if "record" in r}
    names = set(_NAME.findall(rule["expr"]))
    ours = {n for n in names if n.startswith(("fraudstream", "process_")) or n in PROMETHEUS_SERIES}
    assert ours, f"no metric found in {rule['expr']}"
    for name in ours:
        if ":" in name:
            assert name in recorded, f"{name} is recorded by no rule"
        else:
            assert name in exported_metrics() or name in PROMETHEUS_SERIES, name
