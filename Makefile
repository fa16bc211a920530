# The two commands of the README. Both work on a fresh Debian machine as root.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
APT_PACKAGES := bubblewrap chromium redis-server xvfb
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck install system-deps clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# Debian packages the test suite drives: the real browser. apt-get update runs once, and only
# when something is missing ("ok installed": a removed package leaves config files that
# `dpkg -s` still reports).
system-deps:
	@missing=""; for p in $(APT_PACKAGES); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

demo: install
	$(BIN)/gamecast up

lint: install
	$(BIN)/ruff check --no-cache .
	$(BIN)/ruff format --no-cache --check .

typecheck: install
	$(BIN)/mypy  # the files and the strict list are in pyproject.toml

# asyncio debug mode: a callback that blocks the event loop for 100 ms or more is logged live.
test: install system-deps lint typecheck
	PYTHONASYNCIODEBUG=1 $(BIN)/pytest -p no:cacheprovider -o log_cli=true -o log_cli_level=WARNING \
		--cov --cov-report=term:skip-covered

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
