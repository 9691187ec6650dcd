"""The one place where fraudstream touches faust-streaming's and aiokafka's internals.

Each module here names the upstream code it mirrors or wraps, and
``tests/unit/faustcompat`` holds a contract test per touched internal that fails when an
upgrade changes it. Both libraries are pinned in ``pyproject.toml`` for this reason.
"""
