# TinyTags: `make setup`, `make up|down|status`, `make test`, `make demo`. See README.md.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STACK := $(PY) deploy/stack.py

.PHONY: setup up down status test demo dist bench clean-stack

setup:
	@PYTHON=$(PYTHON) bash deploy/setup.sh

# CLOUD=1 also starts SolrCloud (ZooKeeper + 2 Solr nodes, collection tinytags with 2 shards).
up: setup
	@$(STACK) up $(if $(filter-out 0,$(CLOUD)),--cloud)

down:
	@if [ -x $(PY) ]; then $(STACK) down; else echo "nothing to stop (no $(VENV))"; fi

status:
	@$(STACK) status $(if $(filter-out 0,$(CLOUD)),--cloud)

# The README's test command: set-up, stack up, the whole suite, stack down if this started it.
test: setup
	@bash deploy/test.sh

# The README's run command: the whole pipeline on the local real stack, then the web UI.
demo: setup
	@$(PY) deploy/demo.py

# A zip of the jobs package for spark-submit --py-files (YARN, or clusters without this checkout).
dist: setup
	@$(PY) -c "from jobs.infra.spark import package_zip; import pathlib; pathlib.Path('dist').mkdir(exist_ok=True); print(package_zip('dist'))"

bench: setup
	@bash bench/run_all.sh

# Deletes the local stack's data (HDFS files, Solr index, logs). Stop it first.
clean-stack: down
	rm -rf .stack
