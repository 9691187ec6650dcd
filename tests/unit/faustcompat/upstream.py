"""Helpers of the faustcompat contract tests: the code of an upstream function, as shipped.

The source is read from the installed module's file, not from the live object: the
modules under test replace some of these functions (``Consumer._drain_messages``,
``AIOKafkaConsumerThread._create_worker_consumer``) once an app is created.
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import inspect
import textwrap
import typing
from collections.abc import Iterator, Mapping
from types import ModuleType
from typing import Any

import faust


def upstream_source(module: ModuleType, qualname: str) -> str:
    """The source of ``qualname`` (``Class.method`` or ``function``) in ``module``'s file."""
    text = inspect.getsource(module)
    body: list[ast.stmt] = ast.parse(text).body
    node: ast.AST | None = None
    for name in qualname.split("."):
        node = next(
            (
                item
                for item in body
                if isinstance(item, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
                and item.name == name
            ),
            None,
        )
        assert node is not None, f"{module.__name__}.{qualname} is gone upstream"
        body = getattr(node, "body", [])
    assert node is not None
    segment = ast.get_source_segment(text, node, padded=True)
    assert segment is not None
    return textwrap.dedent(segment)


def assert_unchanged(module: ModuleType, qualname: str, digest: str, mirrored_in: str) -> None:
    """Fail, saying what to re-read, when ``qualname``'s source is not the one mirrored."""
    found = hashlib.sha256(upstream_source(module, qualname).encode()).hexdigest()
    assert found == digest, (
        f"{module.__name__}.{qualname} changed upstream (source sha256 {found}): re-read "
        f"it against {mirrored_in}, adapt that module, then store the new digest here"
    )


@contextlib.contextmanager
def unstarted_app(name: str) -> Iterator[faust.App]:
    """A Faust app never started (no broker needed); its consumer's thread loop closed after."""
    app = faust.App(name, autodiscover=False, web_enabled=False)
    try:
        yield app
    finally:
        app.consumer._thread.thread_loop.close()  # type: ignore[attr-defined]  # made with it


def is_mapping(annotation: Any, key: Any, value: Any) -> bool:
    """Whether ``annotation`` is ``Mapping[key, value]`` (typing's or collections.abc's)."""
    return typing.get_origin(annotation) is Mapping and typing.get_args(annotation) == (key, value)
