"""The settings object: environment prefix, local defaults, validation, secrets masked."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from streams.settings import ENV_PREFIX, Settings, env_var, unknown_env_vars


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith(ENV_PREFIX):
            monkeypatch.delenv(name)
    monkeypatch.chdir("/")  # no .env file from a checkout


def test_defaults_point_at_the_local_services() -> None:
    settings = Settings()
    assert settings.kafka_bootstrap_servers == "127.0.0.1:9092"
    assert settings.redis_url == "redis://127.0.0.1:6379/0"
    assert settings.web_host == "127.0.0.1"


def test_local_ports_move_the_client_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRAUDSTREAM_LOCAL_KAFKA_PORT", "19092")
    monkeypatch.setenv("FRAUDSTREAM_LOCAL_REDIS_PORT", "16379")
    settings = Settings()
    assert settings.kafka_bootstrap_servers == "127.0.0.1:19092"
    assert settings.redis_url == "redis://127.0.0.1:16379/0"


def test_environment_variables_use_one_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRAUDSTREAM_KAFKA_BOOTSTRAP_SERVERS", "kafka-1:9092,kafka-2:9092")
    monkeypatch.setenv("FRAUDSTREAM_TOPIC_PARTITIONS", "12")
    monkeypatch.setenv("FRAUDSTREAM_TOPIC_PREFIX", "staging.")
    settings = Settings()
    assert settings.kafka_bootstrap_servers == "kafka-1:9092,kafka-2:9092"
    assert settings.topic_partitions == 12
    assert settings.topic_names["transactions"] == "staging.transactions"
    assert settings.topic_names["dlq"] == "staging.transactions-dlq"
    assert env_var("topic_partitions") == "FRAUDSTREAM_TOPIC_PARTITIONS"


def test_init_arguments_override_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRAUDSTREAM_WEB_PORT", "7000")
    assert Settings(web_port=7001).web_port == 7001


def test_unknown_settings_and_bad_values_are_refused() -> None:
    with pytest.raises(ValidationError, match="extra"):
        Settings(kafka_bootstrap=":9092")  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="greater than or equal to 1"):
        Settings(topic_partitions=0)
    with pytest.raises(ValidationError, match="third of"):
        Settings(kafka_session_timeout_s=6, kafka_heartbeat_interval_s=3)


def test_the_object_is_frozen() -> None:
    settings = Settings()
    with pytest.raises(ValidationError, match="frozen"):
        settings.web_port = 1  # type: ignore[misc]


def test_a_password_inside_the_redis_url_is_refused() -> None:
    with pytest.raises(ValidationError, match="FRAUDSTREAM_REDIS_PASSWORD"):
        Settings(redis_url="redis://:hunter2@cache:6379/0")
    with pytest.raises(ValidationError, match="redis://"):
        Settings(redis_url="http://cache:6379")


def test_sasl_needs_complete_credentials() -> None:
    with pytest.raises(ValidationError, match="kafka_sasl_password"):
        Settings(kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism="SCRAM-SHA-512")


def test_the_local_redis_cluster_port_and_its_url() -> None:
    settings = Settings()
    assert settings.local_redis_cluster_ports == [7000, 7001, 7002]
    assert settings.local_redis_cluster_url == "redis://127.0.0.1:7000/0?cluster=true"
    moved = Settings(local_redis_cluster_port=21000)
    assert moved.local_redis_cluster_url == "redis://127.0.0.1:21000/0?cluster=true"


@pytest.mark.parametrize(
    ("ports", "culprit"),
    [
        ({"local_redis_cluster_port": 6378}, "local_redis_port"),  # 6378..6380
        ({"local_redis_cluster_port": 9090}, "local_kafka_port"),  # 9090..9092
        ({"local_redis_cluster_port": 9093}, "local_kafka_controller_port"),
        ({"local_redis_cluster_port": 20000, "local_redis_port": 20002}, "local_redis_port"),
        # The cluster buses, 10000 above: 17000..17002 by default.
        ({"local_kafka_port": 17001}, "local_kafka_port"),
    ],
)
def test_the_local_redis_cluster_ports_must_not_collide(
    ports: dict[str, int], culprit: str
) -> None:
    with pytest.raises(ValidationError, match=f"collide with {culprit}"):
        Settings(**ports)  # type: ignore[arg-type]


def test_the_local_redis_cluster_ports_fit_below_65536_with_their_buses() -> None:
    assert Settings(local_redis_cluster_port=55533).local_redis_cluster_ports[-1] == 55535
    with pytest.raises(ValidationError, match="less than or equal to 55533"):
        Settings(local_redis_cluster_port=55534)
    with pytest.raises(ValidationError, match="greater than or equal to 1"):
        Settings(local_redis_cluster_port=0)
    # Next to the other services, but not on them: fine.
    assert Settings(local_redis_cluster_port=6380).local_redis_cluster_port == 6380


def test_secrets_never_appear_in_repr_or_the_public_view() -> None:
    settings = Settings(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="svc-fraud",
        kafka_sasl_password="kafka-secret-123",
        redis_password="redis-secret-456",
    )
    shown = repr(settings) + str(settings) + str(settings.public_view())
    assert "kafka-secret-123" not in shown
    assert "redis-secret-456" not in shown
    assert settings.public_view()["kafka_sasl_password"] == "**********"
    assert settings.public_view()["kafka_sasl_username"] == "svc-fraud"


def test_variables_that_set_nothing_are_named_with_the_setting_they_may_mean() -> None:
    environ = {
        "FRAUDSTREAM_BATCH_MAXX": "50",
        "fraudstream_topic_prefix": "x-",  # a setting: names match case-insensitively
        "FRAUDSTREAM_NB_CUSTOMERS": "100",  # a notebook parameter
        "FRAUDSTREAM_COLOUR": "blue",
        "PATH": "/bin",
    }
    assert unknown_env_vars(environ) == [
        ("FRAUDSTREAM_BATCH_MAXX", "FRAUDSTREAM_BATCH_MAX"),
        ("FRAUDSTREAM_COLOUR", None),
    ]
