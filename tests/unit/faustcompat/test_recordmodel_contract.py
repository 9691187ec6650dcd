"""What streams.faustcompat.recordmodel reads of Faust records, and the record it builds."""

from __future__ import annotations

from pathlib import Path

import faust
import faust.models._cython
import faust.models.fields
import faust.models.record
from upstream import upstream_source

from streams.faustcompat.recordmodel import record_builder, record_defaults, record_fields


class Point(faust.Record, serializer="json"):
    x: int
    y: int


class Shape(faust.Record, serializer="json"):
    name: str
    corners: list[Point]
    weights: dict[str, float]
    note: str | None = None


def test_a_record_class_declares_its_fields_in_order_and_its_defaults() -> None:
    options = Shape._options
    assert list(options.fields) == ["name", "corners", "weights", "note"]
    assert dict(options.defaults) == {"note": None}
    assert record_fields(Shape) == ("name", "corners", "weights", "note")
    assert dict(record_defaults(Shape)) == {"note": None}


def test_lazily_coerced_fields_are_marked_in_evaluated_fields() -> None:
    """Marking every field evaluated is what stops Faust re-coercing what we built."""
    generated = upstream_source(faust.models.record, "Record._BUILD_init")
    assert '"self.__evaluated_fields__ = set()",' in generated
    python_get = upstream_source(faust.models.fields, "_PyFieldDescriptorBase.__get__")
    assert "evaluated_fields = instance.__evaluated_fields__" in python_get
    assert "if field not in evaluated_fields:" in python_get
    pyx = (Path(faust.models._cython.__file__).parent / "fields.pyx").read_text()
    assert "evaluated_fields = instance.__evaluated_fields__" in pyx
    assert "if field not in evaluated_fields:" in pyx


def test_a_built_record_equals_the_one_built_the_ordinary_way() -> None:
    build = record_builder(Shape)
    corners = [Point(1, 2), Point(3, 4)]
    built = build({"name": "square", "corners": corners, "weights": {"a": 1.0}, "note": None})
    ordinary = Shape(name="square", corners=corners, weights={"a": 1.0})
    assert built == ordinary
    assert built.dumps() == ordinary.dumps()
    assert built.corners[1].y == 4
    assert Shape.loads(built.dumps()) == ordinary
