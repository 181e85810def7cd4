#!/usr/bin/env bash
# The test command: start the local real stack (what is not already running), run the whole
# pytest suite against it, and stop again only the services this script started, also on failure.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
started_file=$(mktemp)
stop_started() {
  local started
  started=$(cat "$started_file" 2>/dev/null)
  if [ -n "$started" ]; then
    echo "test: stopping what this run started ($started)"
    $PY deploy/stack.py down --only "$started"
  fi
  rm -f "$started_file"
}
trap stop_started EXIT
$PY deploy/stack.py up --started-file "$started_file" || exit 1
$PY -m pytest "$@"
rc=$?
if [ $rc -eq 5 ]; then
  echo "test: pytest collected no tests; that is a failure" >&2
  rc=1
fi
exit $rc
