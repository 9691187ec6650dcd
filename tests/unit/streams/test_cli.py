"""The fraudstream command group: settings shown safely, bad settings refused clearly."""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from streams.cli import cli

runner = CliRunner()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_settings_command_masks_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRAUDSTREAM_REDIS_PASSWORD", "s3cret-redis")
    result = runner.invoke(cli, ["--partitions", "9", "settings"])
    assert result.exit_code == 0, result.output
    assert "s3cret-redis" not in result.output
    assert "FRAUDSTREAM_TOPIC_PARTITIONS=9" in result.output.splitlines()
    assert "FRAUDSTREAM_REDIS_PASSWORD=**********" in result.output.splitlines()


def test_cli_options_override_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRAUDSTREAM_TOPIC_PREFIX", "from-env-")
    result = runner.invoke(cli, ["--topic-prefix", "from-cli-", "settings"])
    assert result.exit_code == 0, result.output
    assert "from-cli-" in result.output
    assert "from-env-" not in result.output


def test_a_misspelt_variable_is_named_at_start(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("FRAUDSTREAM_BATCH_MAXX", "50")
    with caplog.at_level(logging.WARNING, logger="streams.settings"):
        result = runner.invoke(cli, ["settings"])
    assert result.exit_code == 0, result.output
    assert (
        "FRAUDSTREAM_BATCH_MAXX is not a fraudstream setting and is ignored "
        "(did you mean FRAUDSTREAM_BATCH_MAX?)" in caplog.messages
    )


def test_invalid_settings_exit_2_with_one_clear_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRAUDSTREAM_TOPIC_PARTITIONS", "many")
    result = runner.invoke(cli, ["settings"])
    assert result.exit_code == 2
    assert "invalid settings: topic_partitions" in result.output
    assert "Traceback" not in result.output


def test_infra_status_reports_stopped_services_and_exits_3(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("FRAUDSTREAM_LOCAL_DIR", str(tmp_path))
    monkeypatch.setenv("FRAUDSTREAM_LOCAL_KAFKA_PORT", str(free_port()))
    monkeypatch.setenv("FRAUDSTREAM_LOCAL_KAFKA_CONTROLLER_PORT", str(free_port()))
    monkeypatch.setenv("FRAUDSTREAM_LOCAL_REDIS_PORT", str(free_port()))
    result = runner.invoke(cli, ["infra", "status"])
    assert result.exit_code == 3
    assert result.output.splitlines() == ["kafka: stopped", "redis: stopped"]
