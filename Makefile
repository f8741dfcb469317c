# The two commands a newcomer needs: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-faults system-packages bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/trainserve serve

# Tools the tests drive as real programs: docker-compose (validates the compose file without an
# engine), redis-server (started by the tests when no Redis answers) and chromium (renders /docs
# and /redoc offline, tests/app/api/test_docs.py), wrk (bench/predict.py's load). Installed when
# missing.
system-packages:
	@missing=""; \
	command -v docker-compose >/dev/null || missing="$$missing docker-compose"; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	command -v chromium >/dev/null || missing="$$missing chromium chromium-driver"; \
	command -v wrk >/dev/null || missing="$$missing wrk"; \
	if [ -n "$$missing" ]; then \
		echo "installing$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

test: $(STAMP) system-packages
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q -m "not fault" -n 2

# The fault-injection suite (kill -9, SIGTERM, Redis restarts, dropped connections, S3 outages,
# several hosts): about 7 minutes on 2 cores, so it runs on its own; CI runs it after `make test`.
test-faults: $(STAMP) system-packages
	$(BIN)/python -m pytest -q -m fault

bench: $(STAMP)
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	$(BIN)/python bench/trainer_overhead.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
