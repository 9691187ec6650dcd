"""The replay's Kafka edge, without a broker: partitions, topic checks, headers."""

from __future__ import annotations

from aiokafka.partitioner import DefaultPartitioner

from streams.kafka import EVENT_TOPIC_CONFIG, SENT_AT_HEADER, product_topics, sent_at_ms
from streams.replay.events import REPORT, TRANSACTION
from streams.replay.sender import (
    MIN_KEEP_MS,
    KeyHashes,
    SentEvent,
    kafka_partition,
    topic_config_problem,
)
from streams.settings import Settings

NOW_MS = 1_780_000_000_000
OLD_MS = 1_522_540_800_000  # 2018-04-01


def test_partitions_are_kafkas_default_partitioners() -> None:
    keys = [f"C{i:04d}".encode() for i in range(500)] + [b"", b"T0042", "é".encode()]
    hashes = KeyHashes()
    for partitions in (1, 3, 6, 7):
        chosen = [kafka_partition(h, partitions) for h in hashes(keys)]
        expected = [DefaultPartitioner()(key, list(range(partitions)), []) for key in keys]
        assert chosen == expected


def test_event_topics_keep_old_events_and_the_others_use_broker_defaults() -> None:
    specs = {spec.name: dict(spec.config) for spec in product_topics(Settings(topic_prefix="p-"))}
    assert specs["p-transactions"] == specs["p-fraud-reports"] == dict(EVENT_TOPIC_CONFIG)
    assert EVENT_TOPIC_CONFIG["retention.ms"] == "-1"
    assert EVENT_TOPIC_CONFIG["message.timestamp.type"] == "CreateTime"
    assert specs["p-alerts"] == specs["p-scores"] == specs["p-transactions-dlq"] == {}


def test_the_sent_at_header_is_read_back() -> None:
    assert SENT_AT_HEADER == "fraudstream-sent-ms"
    assert sent_at_ms([("other", b"1"), (SENT_AT_HEADER, b"1718031234567")]) == 1718031234567
    assert sent_at_ms([(SENT_AT_HEADER, b"soon")]) is None
    assert sent_at_ms([]) is None
    assert sent_at_ms(None) is None


def test_topics_that_keep_everything_pass() -> None:
    config = {"retention.ms": "-1", "message.timestamp.type": "CreateTime"}
    assert topic_config_problem("tx", config, OLD_MS, NOW_MS) is None
    assert topic_config_problem("tx", {}, OLD_MS, NOW_MS) is None


def test_a_retention_shorter_than_the_events_age_is_refused() -> None:
    problem = topic_config_problem("tx", {"retention.ms": "604800000"}, OLD_MS, NOW_MS)
    assert problem is not None
    assert "topic tx deletes events older than 604800000 ms (retention.ms)" in problem
    assert "2018-04-01T00:00:00.000Z" in problem
    assert "retention.ms=-1" in problem


def test_a_retention_must_leave_a_day_after_the_send() -> None:
    age = NOW_MS - OLD_MS
    just_enough = str(age + MIN_KEEP_MS)
    assert topic_config_problem("tx", {"retention.ms": just_enough}, OLD_MS, NOW_MS) is None
    short = str(age + MIN_KEEP_MS - 1)
    assert topic_config_problem("tx", {"retention.ms": short}, OLD_MS, NOW_MS) is not None


def test_append_time_topics_and_timestamp_limits_are_refused() -> None:
    append = topic_config_problem("tx", {"message.timestamp.type": "LogAppendTime"}, OLD_MS, NOW_MS)
    assert append is not None
    assert "overwrites event timestamps" in append
    limited = topic_config_problem(
        "tx", {"message.timestamp.before.max.ms": "86400000"}, OLD_MS, NOW_MS
    )
    assert limited is not None
    assert "refuses events older than 86400000 ms" in limited


def test_sent_events_describe_themselves() -> None:
    assert (
        SentEvent(TRANSACTION, "0001234", OLD_MS).describe()
        == "transaction 0001234 at 2018-04-01T00:00:00.000Z"
    )
    assert SentEvent(REPORT, "7", OLD_MS + 1).describe() == (
        "fraud report of 7 at 2018-04-01T00:00:00.001Z"
    )
