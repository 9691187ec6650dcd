"""Live traffic for bench_pipeline.py: transactions stamped with the present, at a rate.

Not run by hand: bench_pipeline.py starts it (``--latency-live``) with the FRAUDSTREAM_*
variables of the worker it measures. ``fraudstream replay`` keeps the dataset's event
times, so a paced replay is a compressed history (days of event time a second), which
the terminal watermarks treat as a replay. A card network sends transactions as they
happen: this sends the dataset's transactions from ``--from`` on, ``--rate`` a second,
each with ``tx_time`` the moment it is handed to the producer (the live path), through a
plain aiokafka producer with Kafka's default partitioner, its own JSON and one header,
``fraudstream-sent-ms``, the same moment. No fraud reports: none is due within the hour
a live transaction reads.

Prints one line a bench parses, as ``fraudstream replay`` does:
``live: N transactions sent in S s (R events/s)``.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path

import orjson
import polars as pl
from aiokafka import AIOKafkaProducer

from features import dataset
from streams.kafka import client_options
from streams.settings import Settings

#: The pacing tick: transactions due within it are sent together.
TICK_S = 0.001


def rows(path: str, start: str, limit: int) -> list[tuple[str, str, str, str]]:
    """``limit`` transactions from ``start`` on, in event-time order: id, card, terminal, amount."""
    since = datetime.fromisoformat(start).replace(tzinfo=UTC)
    frame = (
        dataset.DatasetReader(Path(path))
        .read()
        .filter(pl.col(dataset.TX_TIME) >= since)
        .sort(dataset.TX_TIME)
        .head(limit)
        .select(dataset.TX_ID, dataset.CUSTOMER_ID, dataset.TERMINAL_ID, dataset.AMOUNT)
    )
    return [(str(t), str(c), str(m), f"{a:.2f}") for t, c, m, a in frame.iter_rows()]


async def send(
    settings: Settings, topic: str, todo: list[tuple[str, str, str, str]], rate: float
) -> None:
    """Send ``todo`` at ``rate`` a second, each stamped with the moment it is handed over."""
    producer = AIOKafkaProducer(linger_ms=1, acks=1, **client_options(settings))
    await producer.start()
    began = time.monotonic()
    try:
        sent = 0
        while sent < len(todo):
            due = min(len(todo), int((time.monotonic() - began) * rate) + 1)
            while sent < due:
                tx, card, terminal, amount = todo[sent]
                now_ms = int(time.time() * 1000)
                value = orjson.dumps(
                    {
                        "tx_id": tx,
                        "tx_time": now_ms,
                        "customer_id": card,
                        "terminal_id": terminal,
                        "amount": amount,
                        "currency": "EUR",
                        "schema_version": 1,
                    }
                )
                await producer.send(
                    topic,
                    value,
                    key=card.encode(),
                    headers=[("fraudstream-sent-ms", str(now_ms).encode())],
                )
                sent += 1
            await asyncio.sleep(TICK_S)
        await producer.flush()
    finally:
        await producer.stop()
    took = time.monotonic() - began
    print(f"live: {len(todo)} transactions sent in {took:.1f} s ({len(todo) / took:,.0f} events/s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path")
    parser.add_argument("--from", dest="start", required=True, help="first event day, ISO")
    parser.add_argument("--rate", type=float, required=True, help="transactions a second")
    parser.add_argument("--limit", type=int, required=True)
    args = parser.parse_args()
    settings = Settings()
    todo = rows(args.path, args.start, args.limit)
    asyncio.run(send(settings, settings.topic_names["transactions"], todo, args.rate))


if __name__ == "__main__":
    main()
