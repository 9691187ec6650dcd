"""The event contracts: the one description of each event on the wire, and its decoders.

Each record of ``streams.records`` (a plain frozen dataclass: the event's Python shape)
gets a ``Contract`` here: one ``FieldRule`` per record field, in the record's field order
(checked when this module is imported, so a field added to a record without a rule fails
at once). A rule says what the field means, which values are valid and how a value is
written. Derived from the rules:

- the validating decoders, ``Contract.decode`` (``decode_transaction`` and the others),
  which every event read from Kafka goes through;
- the encoders: ``Contract.encode`` (a record) and ``Contract.encode_fields`` (field
  values, no record built: the workers' scores and alerts, ``streams.pipeline.outputs``),
  compact JSON in the record's field order, null for None, amounts as decimal strings;
- the published JSON Schemas (``streams.schemas`` writes ``schemas/*.json``; a unit test
  fails when the files drift);
- the replay's polars expressions (``streams.replay.encoding.json_object``), which write
  each field as its rule says for a whole batch of rows, tested byte for byte against
  ``Contract.encode`` on rows generated from the rules.

So the schema and the decoder cannot disagree (what the schema accepts the decoder
accepts; the unit tests hold each bad-input class against both), and what the encoders
write decodes to the record again (tested on generated records of every kind).

Why a hand-written decoder instead of running a JSON Schema validator per event: the
worker decodes every transaction on the critical path. Measured on this 2-core machine
for a 196-byte transaction (``bench/bench_decode.py``, best of five, load 1.7): stdlib
``json.loads`` alone 2.3 us; ``decode_transaction`` (parse, every check, record built)
3.4 us; ``json.loads`` and the record's own ``__init__``, which checks nothing but the
amount, 5.4 us; ``json.loads`` + ``jsonschema`` 110 us; ``json.loads`` + ``fastjsonschema``
7.7 us with no record built and vaguer errors. The decoder also gives one precise reason
per bad event for the dead-letter topic. It parses with orjson (about 0.6 us against
1.9 us for the standard library's decoder on a transaction), and only what orjson refuses
goes through the standard library, whose verdict (not JSON, or a number out of range) the
dead-letter topic gives.

Bad input never raises: ``decode`` returns a ``DecodeError`` (problem class, one-line
reason naming the field, the field) that the pipeline puts on the dead-letter topic with
the original bytes.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Any, Final, Generic, TypeVar

import orjson
from typing_extensions import override

from streams.records import (
    ALERT_ID_NAMESPACE,
    CENT,
    SCHEMA_VERSION,
    Alert,
    AlertReason,
    FraudReport,
    Score,
    Transaction,
    alert_id,
)

R = TypeVar("R")

#: Ids: letters, digits and ``_ . : -``, 1 to 64 characters (Kafka keys, Redis keys).
ID_PATTERN: Final = r"[A-Za-z0-9_.:-]{1,64}"
#: Amounts: a non-negative decimal string, no leading zeros, at most two decimals, below
#: ten million: a larger card payment is a unit or parsing mistake upstream, not a sale.
MONEY_PATTERN: Final = r"(?:0|[1-9][0-9]{0,6})(?:\.[0-9]{1,2})?"
#: ISO 4217 alphabetic currency code.
CURRENCY_PATTERN: Final = r"[A-Z]{3}"
#: Canonical lower-case UUID text.
UUID_PATTERN: Final = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"

#: Event times must lie in [1980-01-01, 2100-01-01) UTC. Anything else is almost surely
#: a unit mistake: epoch *seconds* of any date up to 2100 read as milliseconds fall in
#: January 1970, and microseconds fall after the year 2100.
MIN_EPOCH_MS: Final = 315_532_800_000
MAX_EPOCH_MS: Final = 4_102_444_799_999

#: Most reasons an alert may list; more would make it unreadable.
MAX_REASONS: Final = 64


class Problem(StrEnum):
    """Classes of bad input, as the dead-letter topic reports them."""

    NOT_JSON = "not_json"
    NOT_AN_OBJECT = "not_an_object"
    BAD_SCHEMA_VERSION = "bad_schema_version"
    MISSING_FIELD = "missing_field"
    WRONG_TYPE = "wrong_type"
    BAD_VALUE = "bad_value"
    UNKNOWN_FIELD = "unknown_field"
    #: Beyond decoding, set by the agents:
    WRONG_KEY = "wrong_key"  # the Kafka key is not the entity the topic is keyed by
    TOO_LARGE = "too_large"  # over the worker's message size limit, not read
    TOO_LATE = "too_late"  # later than the entity's allowed lateness: cannot be exact
    FUTURE_EVENT = "future_event"  # event time ahead of the wall clock by more than the skew
    CONFLICTING_DUPLICATE = "conflicting_duplicate"  # a seen tx_id with other content
    WRONG_PARTITION = "wrong_partition"  # not where the default partitioner puts its key
    INTERNAL_ERROR = "internal_error"  # the worker failed on it: a bug, reported, not lost


@dataclass(frozen=True, slots=True)
class DecodeError:
    """Why raw bytes are not a valid event: what the dead-letter topic carries.

    Attributes:
        problem: The class of problem, for counters and routing.
        reason: One line for a human, naming the field and what was wrong.
        field: The offending field (``reasons[2].value`` for nested ones), if any.
    """

    problem: Problem
    reason: str
    field: str | None = None

    def __str__(self) -> str:
        return f"{self.problem}: {self.reason}"

    def dlq_headers(self) -> list[tuple[str, bytes]]:
        """Kafka headers describing the problem, to send with the original bytes."""
        headers = [
            ("fraudstream-problem", self.problem.value.encode()),
            ("fraudstream-reason", _utf8(self.reason)),
        ]
        if self.field is not None:
            headers.append(("fraudstream-field", _utf8(self.field)))
        return headers


def _utf8(text: str) -> bytes:
    """UTF-8 of a text that may come from input, lone surrogates written as escapes.

    JSON allows lone surrogates (an escape of a code point from D800 to DFFF), and a
    reason may quote them (the names of unknown fields): strict UTF-8 would raise on
    them while the dead letter is built.
    """
    return text.encode("utf-8", "backslashreplace")


class FieldProblem(Exception):  # noqa: N818 - it is a problem report, not an error class
    """Raised by a rule (and only inside this module) when a field value is bad."""

    def __init__(self, problem: Problem, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.problem = problem
        self.message = message
        self.field = field


def _json_type(value: object) -> str:
    """The JSON name of a parsed value's type, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _preview(value: object, limit: int = 40) -> str:
    """A short repr of a bad value: enough to recognise it, never a whole payload."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --- field rules -------------------------------------------------------------------------


class FieldRule(ABC):
    """How one field looks on the wire: its JSON Schema and its per-event check.

    Attributes:
        description: What the field means, published in the JSON Schema.
    """

    def __init__(self, description: str) -> None:
        self.description = description

    @abstractmethod
    def json_schema(self) -> dict[str, Any]:
        """The JSON Schema of a (non-null) value of the field."""

    @abstractmethod
    def parse(self, value: Any) -> Any:
        """Check a parsed JSON value (never None) and return the record's value.

        Raises:
            FieldProblem: The value breaks the contract.
        """

    def to_json(self) -> Callable[[Any], Any] | None:
        """How a record's value of the field (never None) becomes its JSON value.

        The inverse of ``parse`` for a valid value. None, the default, means the value is
        written as it is: orjson writes strings, integers, floats and dicts of them.
        """
        return None


class PatternRule(FieldRule):
    """A string matching a regular expression (written to mean the same in ECMA and Python)."""

    def __init__(self, description: str, pattern: str, expected: str) -> None:
        super().__init__(description)
        self.pattern = pattern
        self.expected = expected
        self._fullmatch = re.compile(pattern).fullmatch

    @override
    def json_schema(self) -> dict[str, Any]:
        return {"type": "string", "pattern": f"^{self.pattern}$"}

    @override
    def parse(self, value: Any) -> Any:
        if type(value) is not str:
            raise FieldProblem(
                Problem.WRONG_TYPE, f"expected a string ({self.expected}), got {_json_type(value)}"
            )
        if self._fullmatch(value) is None:
            raise FieldProblem(
                Problem.BAD_VALUE, f"expected {self.expected}, got {_preview(value)}"
            )
        return value


class IdRule(PatternRule):
    """An id: a short string safe as a Kafka key and inside a Redis key."""

    def __init__(self, description: str) -> None:
        super().__init__(description, ID_PATTERN, "1-64 letters, digits or _.:-")


class MoneyRule(FieldRule):
    """An amount as a decimal string, non-negative, below ten million, two decimals at most."""

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self._fullmatch = re.compile(MONEY_PATTERN).fullmatch

    @override
    def json_schema(self) -> dict[str, Any]:
        return {"type": "string", "pattern": f"^{MONEY_PATTERN}$", "examples": ["57.16", "0.99"]}

    @override
    def parse(self, value: Any) -> Any:
        if type(value) is not str:
            raise FieldProblem(
                Problem.WRONG_TYPE,
                f'expected a decimal string such as "12.30", got {_json_type(value)} '
                f"{_preview(value)}",
            )
        if self._fullmatch(value) is None:
            if value.startswith("-"):
                raise FieldProblem(
                    Problem.BAD_VALUE, f"must not be negative, got {_preview(value)}"
                )
            raise FieldProblem(
                Problem.BAD_VALUE,
                "expected a decimal below 10,000,000 with at most two decimal places, "
                f"got {_preview(value)}",
            )
        return Decimal(value).quantize(CENT)

    @override
    def to_json(self) -> Callable[[Any], Any]:
        # The record holds a Decimal quantised to cents (``money()``): "57.16", "0.00".
        return str


class EpochMillisRule(FieldRule):
    """An instant as integer epoch milliseconds, UTC, within a plausible range."""

    @override
    def json_schema(self) -> dict[str, Any]:
        return {"type": "integer", "minimum": MIN_EPOCH_MS, "maximum": MAX_EPOCH_MS}

    @override
    def parse(self, value: Any) -> Any:
        value = _integer(value, "epoch milliseconds")
        if not MIN_EPOCH_MS <= value <= MAX_EPOCH_MS:
            hint = ""
            if 0 <= value < MIN_EPOCH_MS:
                hint = " (epoch seconds instead of milliseconds?)"
            elif value > MAX_EPOCH_MS:
                hint = " (microseconds instead of milliseconds?)"
            raise FieldProblem(
                Problem.BAD_VALUE,
                f"epoch milliseconds {value} is outside 1980-01-01..2099-12-31{hint}",
            )
        return value


class NonNegativeIntRule(FieldRule):
    """An integer >= 0 (durations, counts)."""

    @override
    def json_schema(self) -> dict[str, Any]:
        return {"type": "integer", "minimum": 0}

    @override
    def parse(self, value: Any) -> Any:
        value = _integer(value, "an integer")
        if value < 0:
            raise FieldProblem(Problem.BAD_VALUE, f"must not be negative, got {value}")
        return value


class SchemaVersionRule(FieldRule):
    """The producer's contract version: an integer >= 1 (readers accept newer versions)."""

    @override
    def json_schema(self) -> dict[str, Any]:
        return {"type": "integer", "minimum": 1, "examples": [SCHEMA_VERSION]}

    @override
    def parse(self, value: Any) -> Any:
        try:
            version = _integer(value, "an integer")
        except FieldProblem as problem:
            raise FieldProblem(Problem.BAD_SCHEMA_VERSION, problem.message) from None
        if version < 1:
            raise FieldProblem(Problem.BAD_SCHEMA_VERSION, f"must be >= 1, got {version}")
        return version


class NumberRule(FieldRule):
    """A finite JSON number, optionally bounded."""

    def __init__(
        self, description: str, *, minimum: float | None = None, maximum: float | None = None
    ) -> None:
        super().__init__(description)
        self.minimum = minimum
        self.maximum = maximum

    @override
    def json_schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": "number"}
        if self.minimum is not None:
            schema["minimum"] = self.minimum
        if self.maximum is not None:
            schema["maximum"] = self.maximum
        return schema

    @override
    def parse(self, value: Any) -> Any:
        number = _number(value)
        if (self.minimum is not None and number < self.minimum) or (
            self.maximum is not None and number > self.maximum
        ):
            raise FieldProblem(
                Problem.BAD_VALUE, f"{number!r} is outside [{self.minimum}, {self.maximum}]"
            )
        return number


class FeatureMapRule(FieldRule):
    """A JSON object of feature name -> finite number."""

    @override
    def json_schema(self) -> dict[str, Any]:
        return {
            "type": "object",
            "propertyNames": {"minLength": 1, "maxLength": 128},
            "additionalProperties": {"type": "number"},
        }

    @override
    def parse(self, value: Any) -> Any:
        if type(value) is not dict:
            raise FieldProblem(
                Problem.WRONG_TYPE, f"expected an object of numbers, got {_json_type(value)}"
            )
        features: dict[str, float] = {}
        for name, number in value.items():
            if not 1 <= len(name) <= 128:
                raise FieldProblem(Problem.BAD_VALUE, "feature names must have 1-128 characters")
            try:
                features[name] = _number(number)
            except FieldProblem as problem:
                raise FieldProblem(problem.problem, f"{name!r}: {problem.message}") from None
        return features


class RecordListRule(FieldRule):
    """A JSON array of nested records, each checked by its own contract."""

    def __init__(self, description: str, contract: Contract[Any], max_items: int) -> None:
        super().__init__(description)
        self.contract = contract
        self.max_items = max_items

    @override
    def json_schema(self) -> dict[str, Any]:
        return {
            "type": "array",
            "items": {"$ref": f"#/$defs/{self.contract.title}"},
            "maxItems": self.max_items,
        }

    @override
    def parse(self, value: Any) -> Any:
        if type(value) is not list:
            raise FieldProblem(Problem.WRONG_TYPE, f"expected an array, got {_json_type(value)}")
        if len(value) > self.max_items:
            raise FieldProblem(
                Problem.BAD_VALUE, f"at most {self.max_items} items, got {len(value)}"
            )
        items = []
        for index, item in enumerate(value):
            if type(item) is not dict:
                raise FieldProblem(
                    Problem.WRONG_TYPE,
                    f"expected an object, got {_json_type(item)}",
                    field=f"[{index}]",
                )
            try:
                items.append(self.contract.from_mapping(item))
            except FieldProblem as problem:
                problem.field = f"[{index}].{problem.field}"
                raise
        return items

    @override
    def to_json(self) -> Callable[[Any], Any]:
        item = self.contract.to_json

        def items(records: Iterable[Any]) -> list[dict[str, Any]]:
            return [item(record) for record in records]

        return items


def _integer(value: Any, expected: str) -> int:
    """An integer JSON value; ``1.0`` counts, as JSON Schema's ``integer`` says."""
    if type(value) is int:
        return value
    if type(value) is float and value.is_integer():
        return int(value)
    raise FieldProblem(
        Problem.WRONG_TYPE,
        f"expected {expected} (an integer), got {_json_type(value)} {_preview(value)}",
    )


def _number(value: Any) -> float:
    """A finite JSON number as a float (booleans are not numbers)."""
    if type(value) is float:
        if math.isfinite(value):
            return value
        raise FieldProblem(Problem.BAD_VALUE, f"must be a finite number, got {value!r}")
    if type(value) is int:
        return float(value)
    raise FieldProblem(
        Problem.WRONG_TYPE, f"expected a number, got {_json_type(value)} {_preview(value)}"
    )


# --- contracts ---------------------------------------------------------------------------


def _refuse_constant(name: str) -> float:
    """Refuse NaN and Infinity, which Python's json accepts but JSON does not have."""
    raise ValueError(f"{name} is not valid JSON")


_JSON: Final = json.JSONDecoder(parse_constant=_refuse_constant)

_new: Final = object.__new__
_setattr: Final = object.__setattr__


#: Checks across fields of a decoded mapping; raise ``FieldProblem`` to refuse it.
CrossCheck = Callable[[dict[str, Any]], None]


class Contract(Generic[R]):
    """One record's wire contract: its field rules, schema identity, decoder and encoders.

    Args:
        record: The record class: a frozen dataclass without slots (``streams.records``).
        name: File-name stem of the published schema (``transaction`` ->
            ``schemas/transaction.v1.json``).
        rules: One rule per record field, in the record's field order.
        checks: Cross-field checks run after every field passed.

    Raises:
        TypeError: ``record`` is not a frozen dataclass without slots, or ``rules`` does
            not name exactly its fields, in order.
    """

    def __init__(
        self,
        record: type[R],
        name: str,
        rules: Mapping[str, FieldRule],
        checks: tuple[CrossCheck, ...] = (),
    ) -> None:
        if not dataclasses.is_dataclass(record) or not record.__dataclass_params__.frozen:  # type: ignore[attr-defined]  # on every dataclass
            raise TypeError(f"{record.__name__} is not a frozen dataclass")
        if "__slots__" in vars(record):
            raise TypeError(f"{record.__name__} has slots: the decoder sets its __dict__")
        fields = tuple(field.name for field in dataclasses.fields(record))
        if tuple(rules) != fields:
            raise TypeError(
                f"{record.__name__} fields {fields} and contract rules {tuple(rules)} differ"
            )
        defaults = {
            field.name: field.default
            for field in dataclasses.fields(record)
            if field.default is not dataclasses.MISSING
        }
        self.record = record
        self.name = name
        self.title: str = record.__name__
        self.rules = dict(rules)
        self.checks = checks
        #: The record's fields, in its order: the order of the JSON object's members.
        self.fields = fields
        #: The fields that have a default, with it (schema_version, optional fields).
        self.defaults: Mapping[str, Any] = defaults
        #: A field whose default is None may be absent or null on the wire; every other
        #: field is required (schema_version too, although Python fills it in).
        self.optional = frozenset(field for field, default in defaults.items() if default is None)
        self.required = tuple(field for field in fields if field not in self.optional)
        # The decoding plan: schema_version first, so that an event of an unknown shape
        # is reported as such rather than as a missing field.
        ordered = sorted(fields, key=lambda field: field != "schema_version")
        self._plan = tuple(
            (field, self.rules[field].parse, field not in self.optional) for field in ordered
        )
        self._fieldset = frozenset(fields)
        encoders = _compile_encoders(self.title, fields, self.rules, defaults)
        #: The JSON object of a record (or of any object with the record's attributes),
        #: as a dict in the record's field order; ``encode`` writes it.
        self.to_json: Callable[[Any], dict[str, Any]] = encoders[0]
        #: ``encode_fields(**values) -> bytes``: the event's JSON from its field values,
        #: given by keyword (fields with a default may be left out), without building a
        #: record: the workers' encoder on the hot path (``streams.pipeline.outputs``).
        #: Byte for byte what ``encode`` writes for the record of those values.
        self.encode_fields: Callable[..., bytes] = encoders[1]

    def encode(self, record: R) -> bytes:
        """The event's canonical JSON: what fraudstream writes to Kafka for ``record``.

        Compact UTF-8 JSON of one object: every field in the record's field order, null
        where the value is None, each value as its rule writes it (amounts as decimal
        strings, nested records as objects). Nothing is checked: a record is valid once
        built. ``decode`` gives the record back.
        """
        return orjson.dumps(self.to_json(record))

    def decode(self, raw: bytes | str | None) -> R | DecodeError:
        """Validate a Kafka message value and build the record, or say why not.

        Unknown fields are ignored (a newer producer's additive fields); absent or null
        optional fields become None.

        Args:
            raw: The message value: UTF-8 JSON text of one object.

        Returns:
            The record, or a ``DecodeError`` for the dead-letter topic.
        """
        if not raw:
            return DecodeError(Problem.NOT_JSON, "empty message (null or zero bytes)")
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            # orjson is 3x faster on the hot path but stricter than JSON itself (numbers
            # beyond 64-bit integers or doubles): the standard library says which it is.
            try:
                text = raw if isinstance(raw, str) else raw.decode("utf-8")
                data = _JSON.decode(text)
            except (ValueError, RecursionError) as exc:  # also UnicodeDecodeError
                return DecodeError(Problem.NOT_JSON, f"not JSON: {_preview(str(exc), 100)}")
        if type(data) is not dict:
            return DecodeError(
                Problem.NOT_AN_OBJECT, f"expected a JSON object, got {_json_type(data)}"
            )
        try:
            return self.from_mapping(data)
        except FieldProblem as problem:
            where = problem.field
            reason = f"{where}: {problem.message}" if where else problem.message
            return DecodeError(problem.problem, reason, where)

    def from_mapping(self, data: dict[str, Any]) -> R:
        """Check a parsed JSON object field by field and build the record.

        Raises:
            FieldProblem: A field breaks the contract; ``field`` names it.
        """
        values: dict[str, Any] = {}
        field = ""
        try:
            for field, parse, required in self._plan:
                value = data.get(field)
                if value is None:
                    if required:
                        if field in data:
                            raise FieldProblem(Problem.WRONG_TYPE, "must not be null")
                        raise FieldProblem(Problem.MISSING_FIELD, "is required")
                    values[field] = None
                else:
                    values[field] = parse(value)
            field = ""
            version = values.get("schema_version")
            if (
                version is not None
                and version <= SCHEMA_VERSION
                and not data.keys() <= self._fieldset
            ):
                unknown = sorted(data.keys() - self._fieldset)
                raise FieldProblem(
                    Problem.UNKNOWN_FIELD,
                    f"unknown field(s) {', '.join(unknown)[:100]} in a version-{version} event "
                    "(a producer adding fields must raise schema_version)",
                    unknown[0][:64],
                )
            for check in self.checks:
                check(values)
        except FieldProblem as problem:
            if field:
                problem.field = f"{field}{problem.field or ''}"
            raise
        # The record is built without __init__: a frozen dataclass's sets each field
        # through object.__setattr__ and runs __post_init__ (about 1.4 us for a
        # transaction, a third of decoding it); the values are checked and of the
        # fields' types already (amounts quantised by MoneyRule as money() would), so
        # they become the instance's __dict__ as they are (0.1 us).
        record = _new(self.record)
        _setattr(record, "__dict__", values)
        return record


def _compile_encoders(
    title: str, fields: tuple[str, ...], rules: Mapping[str, FieldRule], defaults: Mapping[str, Any]
) -> tuple[Callable[[Any], dict[str, Any]], Callable[..., bytes]]:
    """A contract's ``to_json`` and ``encode_fields``, generated from its field rules.

    They are compiled Python, as ``dataclasses`` compiles ``__init__``: a dict display
    with one entry per field, in order, each value read and converted by its rule's
    ``to_json`` (a field whose default is None keeps None). For ``AlertReason``::

        def to_json(record):
            return {"feature": record.feature, "value": record.value,
                    "contribution": record.contribution}

        def encode_fields(*, feature, value, contribution=_default_contribution):
            return _dumps({"feature": feature, "value": value, "contribution": contribution})

    A loop over the fields with ``getattr`` would cost about a microsecond more per event
    on the workers' hot path (a score record per transaction).
    """
    namespace: dict[str, Any] = {"_dumps": orjson.dumps}
    from_record: list[str] = []
    from_fields: list[str] = []
    parameters: list[str] = []
    for field in fields:
        if not field.isidentifier() or field.startswith("_"):
            raise TypeError(f"{title}: field name {field!r} cannot be encoded")
        convert = rules[field].to_json()
        if convert is not None:
            namespace[f"_to_json_{field}"] = convert
        nullable = field in defaults and defaults[field] is None
        for source, out in ((f"record.{field}", from_record), (field, from_fields)):
            value = source if convert is None else f"_to_json_{field}({source})"
            if convert is not None and nullable:
                value = f"(None if {source} is None else {value})"
            out.append(f"{field!r}: {value}")
        if field in defaults:
            namespace[f"_default_{field}"] = defaults[field]
            parameters.append(f"{field}=_default_{field}")
        else:
            parameters.append(field)
    source = (
        f"def to_json(record):\n    return {{{', '.join(from_record)}}}\n\n"
        f"def encode_fields(*, {', '.join(parameters)}):\n"
        f"    return _dumps({{{', '.join(from_fields)}}})\n"
    )
    exec(compile(source, f"<{title} encoders>", "exec"), namespace)  # noqa: S102 - our own source
    to_json, encode_fields = namespace["to_json"], namespace["encode_fields"]
    to_json.__qualname__ = f"{title}.to_json"
    encode_fields.__qualname__ = f"{title}.encode_fields"
    return to_json, encode_fields


def _reported_after_transaction(values: dict[str, Any]) -> None:
    if values["reported_at"] < values["tx_time"]:
        raise FieldProblem(Problem.BAD_VALUE, "reported_at is before tx_time", field="reported_at")


def _score_reaches_threshold(values: dict[str, Any]) -> None:
    if values["score"] < values["threshold"]:
        raise FieldProblem(Problem.BAD_VALUE, "score is below threshold", field="score")


def _alert_id_derived(values: dict[str, Any]) -> None:
    if values["alert_id"] != alert_id(values["tx_id"], values["model_version"]):
        raise FieldProblem(
            Problem.BAD_VALUE,
            "alert_id is not uuid5(tx_id + NUL + model_version) in the alert namespace",
            field="alert_id",
        )


_SCHEMA_VERSION_DOC: Final = (
    "Contract version of the producer (current: 1). Changes are additive only, so a "
    "reader accepts any version >= 1 and ignores fields it does not know."
)

TRANSACTION: Final = Contract(
    Transaction,
    "transaction",
    {
        "tx_id": IdRule("Unique id of the transaction."),
        "tx_time": EpochMillisRule(
            "When the transaction happened (event time), epoch milliseconds UTC."
        ),
        "customer_id": IdRule("The card holder; the Kafka key of the event."),
        "terminal_id": IdRule("The terminal (merchant point of sale) that took the payment."),
        "amount": MoneyRule(
            "The amount in `currency`, as a decimal string with at most two decimal places."
        ),
        "currency": PatternRule(
            "ISO 4217 alphabetic currency code.", CURRENCY_PATTERN, "three capital letters"
        ),
        "schema_version": SchemaVersionRule(_SCHEMA_VERSION_DOC),
        "channel": PatternRule(
            "How the card was used, lower-case, e.g. pos, ecommerce, atm.",
            r"[a-z][a-z0-9_]{0,31}",
            "a lower-case word of at most 32 characters",
        ),
        "merchant_category": PatternRule(
            "ISO 18245 merchant category code.", r"[0-9]{4}", "four digits"
        ),
        "country": PatternRule(
            "ISO 3166-1 alpha-2 country of the terminal.", r"[A-Z]{2}", "two capital letters"
        ),
    },
)

FRAUD_REPORT: Final = Contract(
    FraudReport,
    "fraud-report",
    {
        "tx_id": IdRule("The fraudulent transaction."),
        "customer_id": IdRule("Its card holder."),
        "terminal_id": IdRule("Its terminal; the Kafka key of the event."),
        "tx_time": EpochMillisRule("When the transaction happened, epoch milliseconds UTC."),
        "reported_at": EpochMillisRule(
            "When the fraud was reported (the event time), epoch milliseconds UTC; "
            "not before tx_time."
        ),
        "schema_version": SchemaVersionRule(_SCHEMA_VERSION_DOC),
    },
    checks=(_reported_after_transaction,),
)

ALERT_REASON: Final = Contract(
    AlertReason,
    "alert-reason",
    {
        "feature": PatternRule(
            "Feature name, as in the model's feature list.",
            r"[A-Za-z0-9_.:-]{1,128}",
            "1-128 letters, digits or _.:-",
        ),
        "value": NumberRule("The feature's value for this transaction."),
        "contribution": NumberRule(
            "How much the feature pushed the score up, in the explainer's units; "
            "null when the model gives none."
        ),
    },
)

ALERT: Final = Contract(
    Alert,
    "alert",
    {
        "alert_id": PatternRule(
            f"Stable id: UUID v5 of tx_id + NUL + model_version in namespace "
            f"{ALERT_ID_NAMESPACE}. The same transaction scored by the same model gives the "
            "same id, so consumers can deduplicate.",
            UUID_PATTERN,
            "a lower-case UUID",
        ),
        "tx_id": IdRule("The transaction."),
        "customer_id": IdRule("Its card holder; the Kafka key of the event."),
        "terminal_id": IdRule("Its terminal."),
        "amount": MoneyRule("Its amount in `currency`, a decimal string (two decimals at most)."),
        "currency": PatternRule(
            "ISO 4217 alphabetic currency code.", CURRENCY_PATTERN, "three capital letters"
        ),
        "tx_time": EpochMillisRule("When the transaction happened, epoch milliseconds UTC."),
        "score": NumberRule("The model's fraud probability.", minimum=0, maximum=1),
        "threshold": NumberRule(
            "The model's alert threshold, which the score reached.", minimum=0, maximum=1
        ),
        "model_version": IdRule("Registry version of the model that scored."),
        "reasons": RecordListRule(
            "The top features behind the score, most important first.",
            ALERT_REASON,
            MAX_REASONS,
        ),
        "features": FeatureMapRule("The feature vector the model saw, name -> value."),
        "emitted_at": EpochMillisRule("When the alert was sent (wall clock), epoch ms UTC."),
        "latency_ms": NonNegativeIntRule(
            "Wall-clock milliseconds from the transaction entering Kafka (the producer's "
            "send time, from a Kafka header) to emitted_at."
        ),
        "schema_version": SchemaVersionRule(_SCHEMA_VERSION_DOC),
    },
    checks=(_score_reaches_threshold, _alert_id_derived),
)

SCORE: Final = Contract(
    Score,
    "score",
    {
        "tx_id": IdRule("The transaction."),
        "customer_id": IdRule("Its card holder; the Kafka key of the event."),
        "terminal_id": IdRule("Its terminal."),
        "tx_time": EpochMillisRule("When the transaction happened, epoch milliseconds UTC."),
        "score": NumberRule("The model's fraud probability.", minimum=0, maximum=1),
        "threshold": NumberRule(
            "The model's alert threshold; the transaction alerted when score >= threshold.",
            minimum=0,
            maximum=1,
        ),
        "model_version": IdRule("Registry version of the model that scored."),
        "features": FeatureMapRule("The feature vector the model saw, name -> value."),
        "scored_at": EpochMillisRule("When the record was sent (wall clock), epoch ms UTC."),
        "schema_version": SchemaVersionRule(_SCHEMA_VERSION_DOC),
    },
)

#: The contracts published as JSON Schema files, by schema name.
PUBLISHED: Final[Mapping[str, Contract[Any]]] = {
    contract.name: contract for contract in (TRANSACTION, FRAUD_REPORT, ALERT, SCORE)
}


def decode_transaction(raw: bytes | str | None) -> Transaction | DecodeError:
    """Decode a ``transactions`` message value; see ``Contract.decode``."""
    return TRANSACTION.decode(raw)


def decode_fraud_report(raw: bytes | str | None) -> FraudReport | DecodeError:
    """Decode a ``fraud-reports`` message value; see ``Contract.decode``."""
    return FRAUD_REPORT.decode(raw)


def decode_alert(raw: bytes | str | None) -> Alert | DecodeError:
    """Decode an ``alerts`` message value; see ``Contract.decode``."""
    return ALERT.decode(raw)


def decode_score(raw: bytes | str | None) -> Score | DecodeError:
    """Decode a ``scores`` message value; see ``Contract.decode``."""
    return SCORE.decode(raw)
