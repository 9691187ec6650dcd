# The two commands of the README, and the steps they are made of.
#   make demo   run the main job end to end (brings Kafka and Redis up first)
#   make test   install, bring Kafka and Redis up, ruff, mypy, pytest (what CI runs)

PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: install demo test lint typecheck pytest test-tools infra-up infra-down infra-status clean

# The virtualenv is rebuilt only when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found: fraudstream needs Python 3.11" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv
	$(BIN)/uv pip install --quiet --python $(BIN)/python -e '.[dev]'
	@touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/fraudstream demo

test: install infra-up lint typecheck pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

# Test processes (pytest-xdist): two tests at a time. Most integration tests wait on
# workers, brokers and paced replays, so that takes about two thirds of the time of one
# test after another on 2 cores; tests that load the cores themselves still run one at a
# time (the `cpu_bound` marker, the clusters). TEST_PROCESSES=0 runs the suite in this
# process, one test after another (docs/development.md).
TEST_PROCESSES ?= 2

pytest: install infra-up test-tools
	$(BIN)/pytest -n $(TEST_PROCESSES) --dist loadgroup

# Tools that are not ours: kcat (librdkafka), for the tests that drive the worker as other
# producers do; prometheus and promtool (Debian's prometheus package), for the tests of the
# alert rules and of every dashboard query against a live worker. Installed with apt-get
# when missing and running as root. The tests start their own Prometheus; where systemd
# runs, the package also starts a system one on :9090 (`systemctl disable --now prometheus`).
test-tools:
	@command -v kcat >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
		&& (apt-get update -qq && apt-get install -y -qq kcat >/dev/null); } \
		|| { echo "kcat not found: apt-get install kcat" >&2; exit 1; }
	@command -v promtool >/dev/null && command -v prometheus >/dev/null \
		|| { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && (apt-get update -qq \
			&& apt-get install -y -qq --no-install-recommends prometheus >/dev/null); } \
		|| { echo "promtool not found: apt-get install prometheus" >&2; exit 1; }

infra-up: install
	$(BIN)/fraudstream infra up

infra-down: install
	$(BIN)/fraudstream infra down

infra-status: install
	$(BIN)/fraudstream infra status

clean: infra-down
	rm -rf $(VENV) .local .mypy_cache .ruff_cache .pytest_cache
