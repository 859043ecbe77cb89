# The README's two commands: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PROMTOOL := $(BIN)/promtool
CHROMIUM := /usr/bin/chromium

.PHONY: install run test test-deps lint format clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev,analytics,bench]"
	touch $(STAMP)

run: install
	$(BIN)/ciolake serve --dev-key

# A simulated month in ./demo (never ./data, where `make run` lands real events), then the
# dashboard over it at http://127.0.0.1:8081/dashboard. Simulated once: rm -rf demo for a new one.
.PHONY: demo
demo: install
	@[ -d demo/tables/raw_events ] || \
	  $(BIN)/ciolake simulate --days 30 --deliveries 200 --data-dir demo
	$(BIN)/ciolake dashboard --data-dir demo

lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

# Everything but Spark on every core (pytest-xdist), then the Spark tests in two processes,
# a test file each at a time, each process with one JVM for all its files (a JVM alone keeps
# about one core busy). The slowest tests are listed, to keep the whole under 15 minutes.
test: lint test-deps
	$(BIN)/pytest -n auto -m "not spark" --durations=15
	$(BIN)/pytest -m spark -n 2 --dist loadfile --durations=10

# What the tests need besides Python, each installed only when missing: Debian's Chromium
# (the dashboard's browser test) and promtool (checks deploy/prometheus/alerts.yml).
test-deps: install $(PROMTOOL) $(CHROMIUM)

$(CHROMIUM):
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	else \
	  echo "warning: no $(CHROMIUM), and installing it needs root and apt-get;" \
	    "the dashboard's browser test will be skipped" >&2; \
	fi

# promtool alone, unpacked from Debian's prometheus package into the venv: installing the
# package would also set up a Prometheus server and its service.
$(PROMTOOL): | $(STAMP)
	@if command -v apt-get >/dev/null; then \
	  tmp=$$(mktemp -d) && cd $$tmp && \
	  { apt-get download prometheus 2>/dev/null || \
	    { apt-get update -qq && apt-get download prometheus; }; } && \
	  dpkg-deb -x prometheus_*.deb unpacked && \
	  cp unpacked/usr/bin/promtool $(CURDIR)/$(PROMTOOL) && rm -rf $$tmp; \
	else \
	  echo "warning: no apt-get to fetch promtool; the alert rules' promtool tests will be" \
	    "skipped" >&2; \
	fi

format: install
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache

# The benchmark harness (bench/README.md); not part of `make test`. QUICK=1: the short run
# (under 2 minutes); WORKERS=N: pass --workers N to ciolake serve and to the baselines;
# BENCH_ARGS: any other flag of `python -m bench --help`.
.PHONY: bench soak bench-deps
bench-deps:
	@command -v wrk >/dev/null || (apt-get update && apt-get install -y wrk)

bench: install bench-deps
	$(BIN)/python -m bench $(if $(filter 1 yes true,$(QUICK)),--quick) \
	  $(if $(WORKERS),--workers $(WORKERS)) $(BENCH_ARGS)
	$(BIN)/python -m bench.receivers $(if $(filter 1 yes true,$(QUICK)),--seconds 8)

# 10 minutes at half of saturation, kill -9 and restart every 2 minutes; MINUTES=2 for a
# short one (a kill every 30 s), KILL_EVERY=S to choose the interval.
soak: install bench-deps
	$(BIN)/python -m bench --soak $(if $(MINUTES),--minutes $(MINUTES)) \
	  $(if $(KILL_EVERY),--kill-every $(KILL_EVERY)) $(if $(WORKERS),--workers $(WORKERS)) \
	  $(BENCH_ARGS)
