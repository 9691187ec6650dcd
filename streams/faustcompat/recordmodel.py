"""A Faust record class's declared fields, and building a record from checked values fast.

Upstream: faust-streaming 0.15.3, ``faust/models/record.py`` and ``faust/models/base.py``:

- ``Record._options`` (a ``ModelOptions``): ``fields`` (names, in declaration order)
  and ``defaults`` (field -> default value). Faust has no public accessor for either;
  `record_fields` and `record_defaults` read them so that the event contracts
  (``streams.contracts``) can check their rules against the record they build.
- ``Record.__init__``, generated per class (``Record._BUILD_init``), which runs a
  descriptor ``__set__`` per field (about 3.5 us for a transaction, more than parsing
  its JSON), and ``faust/models/fields.py``, ``FieldDescriptor.__get__`` (and its
  Cython twin), which coerces a lazily coerced field (nested records, maps) on first
  read unless the field's name is in the instance's ``__evaluated_fields__``.
  `record_builder` makes records without ``__init__``: the instance dict is set to the
  values, already checked and of the right types, with every field marked evaluated.
  ``tests/unit/streams/test_contracts.py`` proves such a record equal to one built the
  ordinary way.

``tests/unit/faustcompat/test_recordmodel_contract.py`` fails when one of them changes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

R = TypeVar("R")


def record_fields(record: type[Any]) -> tuple[str, ...]:
    """The fields of the Faust record class ``record``, in declaration order."""
    return tuple(record._options.fields)


def record_defaults(record: type[Any]) -> Mapping[str, Any]:
    """The fields of ``record`` that have a default value, with that value."""
    defaults: Mapping[str, Any] = record._options.defaults
    return defaults


def record_builder(record: type[R]) -> Callable[[dict[str, Any]], R]:
    """A function building a ``record`` from its values (field -> value), taking them over.

    The values must be complete and already of the fields' types: nothing is checked
    or coerced, and the dict becomes the record's own.
    """
    new = record.__new__
    fields = frozenset(record_fields(record))

    def build(values: dict[str, Any]) -> R:
        instance = new(record)
        values["__evaluated_fields__"] = set(fields)
        instance.__dict__ = values
        return instance

    return build
