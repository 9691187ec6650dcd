"""Decoding cost per transaction on the happy path, against the alternatives.

Run: ``.venv/bin/python bench/bench_decode.py``. Prints microseconds per event (best of
five rounds) for:

- json only:          stdlib ``json.loads``, the floor of any JSON decoder here;
- decode_transaction: our decoder (parse + every contract check + record build);
- json + Transaction(): stdlib ``json.loads`` and the record's own ``__init__`` (no check
  but the amount's), the plain way to build a record;
- json + jsonschema:  parse, then a prepared Draft 2020-12 validator;
- json + fastjsonschema: parse, then a compiled validator (no record built).
"""

from __future__ import annotations

import json
import os
import timeit
from collections.abc import Callable

import fastjsonschema
from jsonschema import Draft202012Validator  # type: ignore[import-untyped]  # no stubs

from streams.contracts import TRANSACTION, decode_transaction
from streams.records import Transaction
from streams.schemas import json_schema

RAW = json.dumps(
    {
        "tx_id": "1754154",
        "tx_time": 1_538_352_000_123,
        "customer_id": "C4999",
        "terminal_id": "T9999",
        "amount": "123.45",
        "currency": "EUR",
        "schema_version": 1,
        "channel": None,
        "merchant_category": None,
        "country": None,
    },
    separators=(",", ":"),
).encode()


def per_event_us(function: Callable[[], object], number: int) -> float:
    return min(timeit.repeat(function, number=number, repeat=5)) / number * 1e6


def main() -> None:
    schema = json_schema(TRANSACTION)
    validator = Draft202012Validator(schema)
    compiled = fastjsonschema.compile(schema)
    assert isinstance(decode_transaction(RAW), Transaction)

    candidates: dict[str, Callable[[], object]] = {
        "json only": lambda: json.loads(RAW),
        "decode_transaction": lambda: decode_transaction(RAW),
        "json + Transaction()": lambda: Transaction(**json.loads(RAW)),
        "json + jsonschema": lambda: validator.validate(json.loads(RAW)),
        "json + fastjsonschema": lambda: compiled(json.loads(RAW)),
    }
    print(f"event: {len(RAW)} bytes")
    for name, function in candidates.items():
        number = 2_000 if "jsonschema" in name and "fast" not in name else 50_000
        print(f"{name:<24} {per_event_us(function, number):8.2f} us/event")
    print(f"load average: {os.getloadavg()}")


if __name__ == "__main__":
    main()
