# TinyTags: `make setup`, `make check`, `make up|down|status`, `make test`, `make demo`. See README.md.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STACK := $(PY) -m deploy.stack

.PHONY: setup setup-python check up down status test demo dist bench clean-stack

setup:
	@PYTHON=$(PYTHON) bash deploy/setup.sh

setup-python:
	@PYTHON=$(PYTHON) bash deploy/setup.sh --python

# The fast check: lint and the unit tests (tests/unit: no services, no JDK), in well under 2 minutes.
check: setup-python
	@$(VENV)/bin/ruff check .
	@$(PY) -m pytest -q -p no:cacheprovider tests/unit

# CLOUD=1 also starts SolrCloud (ZooKeeper + 2 Solr nodes, collection tinytags with 2 shards).
# YARN=1 also starts YARN (ResourceManager 127.0.0.1:8032, UI :8088, one NodeManager with 2 vcores and
# 6 GB), writes .stack/conf/hadoop (HADOOP_CONF_DIR) and stages Spark's jars on HDFS once.
# AUTH=1: the standalone Solr with BasicAuth (security.json; passwords in .stack/secrets/).
up: setup
	@$(STACK) up $(if $(filter-out 0,$(CLOUD)),--cloud) $(if $(filter-out 0,$(YARN)),--yarn) $(if $(filter-out 0,$(AUTH)),--auth)

down:
	@if [ -x $(PY) ]; then $(STACK) down; else echo "nothing to stop (no $(VENV))"; fi

status:
	@$(STACK) status $(if $(filter-out 0,$(CLOUD)),--cloud) $(if $(filter-out 0,$(YARN)),--yarn)

# The README's test command, everything: make check (lint + unit tests), then stack up, the integration
# tests against it (and the API tests again on SolrCloud), stack down if this started it.
test: check setup
	@bash deploy/test.sh

# The README's run command: the whole pipeline on the local real stack, then the web UI.
demo: setup
	@$(PY) deploy/demo.py

# The package as a wheel, and the same file as dist/tinytags.zip for spark-submit --py-files (YARN, or
# clusters whose nodes lack the package).
dist: setup
	@rm -rf dist build && $(PY) -m pip wheel -q --disable-pip-version-check --no-deps -w dist . \
	  && cp dist/tinytags-*.whl dist/tinytags.zip && rm -rf build tinytags.egg-info && ls dist

bench: setup
	@bash bench/run_all.sh

# Deletes the local stack's data (HDFS files, Solr index, logs). Stop it first.
clean-stack: down
	rm -rf .stack
