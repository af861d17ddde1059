# One set of commands, the same locally and in CI.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: venv install format lint typecheck test test-unit stack-up stack-down browser demo clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

venv install: $(STAMP)

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

lint: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy

stack-up: $(STAMP)
	$(BIN)/runcoord stack up

stack-down: $(STAMP)
	$(BIN)/runcoord stack down

# Debian's chromium, for the console's browser tests (installed when missing and root).
browser: $(STAMP)
	$(BIN)/runcoord stack browser

# The README's test command: install, bring the real stack up, run every test.
# pytest exits 5 when it collected nothing; that is a failure here, never a green run.
test: $(STAMP) stack-up browser
	@rc=0; $(BIN)/python -m pytest $(PYTEST_ARGS) || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest ran no tests; failing" >&2; fi; \
	exit $$rc

test-unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

# The main job (runcoord/harness/README.md): ~2,000 turns with the seeds' incident (provider latency
# spike, replica churn, slow successes) against runcoord and the variant-A baseline, side by
# side; the table is printed, the HTML report lands in $(DEMO)/report/index.html.
DEMO ?= .state/demo
DEMO_TURNS ?= 2000
DEMO_RATE ?= 8
DEMO_PROVIDER ?= assistants
demo: $(STAMP) stack-up
	$(BIN)/runcoord topics apply
	$(BIN)/runcoord db migrate
	@mkdir -p $(DEMO)
	$(BIN)/runcoord workload generate --turns $(DEMO_TURNS) --seed 7 --out $(DEMO)/trace.jsonl
	$(BIN)/runcoord replay $(DEMO)/trace.jsonl --faults incident --system both \
		--rate $(DEMO_RATE) --provider $(DEMO_PROVIDER) --coordinators 2 --executors 1 \
		--out $(DEMO)/replay-$$(date +%Y%m%d-%H%M%S) --html $(DEMO)/report

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
