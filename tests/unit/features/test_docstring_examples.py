"""The examples in the features package's docstrings run, and every aggregation has one.

The doctests of the ``features`` package only, one test per docstring, without pytest's
``--doctest-modules`` (which would import every module of the repository).
"""

from __future__ import annotations

import doctest
import importlib
import inspect
import pkgutil
from types import ModuleType

import pytest

import features
from features import aggregations


def _modules() -> list[ModuleType]:
    names = sorted(info.name for info in pkgutil.iter_modules(features.__path__))
    return [importlib.import_module(f"features.{name}") for name in names]


#: Every docstring of the package that holds an example.
EXAMPLES = [
    test
    for module in _modules()
    for test in doctest.DocTestFinder().find(module, module.__name__)
    if test.examples
]


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda test: test.name)
def test_the_example_holds(example: doctest.DocTest) -> None:
    report: list[str] = []
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    result = runner.run(example, out=report.append)
    assert result.failed == 0, "".join(report)


@pytest.mark.parametrize("module", ["features.spec", "features.aggregations"])
def test_the_spec_and_the_aggregations_have_examples(module: str) -> None:
    assert any(test.name.startswith(f"{module}.") for test in EXAMPLES)


def test_every_aggregation_shows_its_online_value() -> None:
    kinds = (aggregations.WindowAggregation, aggregations.TransactionAttribute)
    concrete = [
        cls
        for _, cls in inspect.getmembers(aggregations, inspect.isclass)
        if issubclass(cls, kinds) and not inspect.isabstract(cls)
    ]
    assert len(concrete) >= 10
    without = [cls.__name__ for cls in concrete if ">>> " not in (cls.__doc__ or "")]
    assert not without, f"aggregations without an example: {without}"
