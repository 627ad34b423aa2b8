# Two entry points for a fresh machine (each creates .venv and installs what it needs):
#   make demo   - set up, audit the embedded demo set and build its report -> ./audit-output/
#   make test   - set up, then lint, type-check and run the test suite (what CI runs)
#   make test-fast - set up, then only the quick tier: no slow, cluster or browser tests
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv demo test test-fast lint browser bench clean

$(STAMP): pyproject.toml constraints-test.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -c constraints-test.txt -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

# the demo's run id, fixed here so that its report can be built after it
DEMO_RUN := demo-$(shell date -u +%Y%m%d-%H%M%S)

demo: venv
	$(BIN)/audit-cli run --run-id $(DEMO_RUN)
	$(BIN)/audit-cli report audit-output/$(DEMO_RUN)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# The report tests open the report in a real headless Chromium (Debian's packages).
browser:
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		if ! command -v apt-get >/dev/null || { [ -n "$$SUDO" ] && ! command -v sudo >/dev/null; }; then \
			echo "make test needs Chromium and ChromeDriver on PATH as 'chromium' and 'chromedriver'" \
				"(the report's browser tests), and cannot install them here (no apt-get as root or" \
				"through sudo): install them first (Debian, Ubuntu: chromium chromium-driver;" \
				"Fedora: chromium chromedriver), then run make test again." >&2; \
			exit 1; \
		fi; \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends \
			chromium chromium-driver >/dev/null; \
	fi

test: lint browser
	$(BIN)/pytest -q

# The quick tier (docs/development.md): no lint, no browser install; tests/conftest.py marks
# the slow, cluster and browser tests.
test-fast: venv
	$(BIN)/pytest -q -m "not slow and not cluster and not browser"

bench: venv
	$(BIN)/python -m pip install --no-deps torchattacks
	$(BIN)/python benchmarks/bench_predict.py
	$(BIN)/python benchmarks/bench_attack.py

clean:
	rm -rf $(VENV) audit-output .pytest_cache .mypy_cache .ruff_cache
