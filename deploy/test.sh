#!/usr/bin/env bash
# make test's second half (make check ran lint and the unit tests): start the local real stack with
# SolrCloud and YARN (what is not already running), run the integration tests against it, then the
# indexer and API tests once more against a two-shard SolrCloud collection, and stop again only the
# services this script started, also on failure. Arguments go to pytest instead of tests/integration.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
started_file=$(mktemp)
stop_started() {
  local started
  started=$(cat "$started_file" 2>/dev/null)
  if [ -n "$started" ]; then
    echo "test: stopping what this run started ($started)"
    $PY -m deploy.stack down --only "$started"
  fi
  rm -f "$started_file"
}
trap stop_started EXIT
SECONDS=0
$PY -m deploy.stack up --cloud --yarn --started-file "$started_file" || exit 1
echo "test: stack up after ${SECONDS} s"
if [ $# -eq 0 ]; then
  # The slowest tests are listed at the end, so that the time make test takes can be watched.
  $PY -m pytest --durations=20 tests/integration
else
  $PY -m pytest "$@"
fi
rc=$?
echo "test: integration tests done after ${SECONDS} s"
if [ $rc -eq 5 ]; then
  echo "test: pytest collected no tests; that is a failure" >&2
  rc=1
fi
if [ $rc -eq 0 ] && [ $# -eq 0 ]; then
  echo "test: indexer and API tests again, against SolrCloud (2 shards)"
  # The first SolrCloud node, from the one settings place (TINYTAGS_SOLR_CLOUD_PORTS or its default).
  cloud_root=$($PY -c 'from tinytags.settings import stack_settings; print(stack_settings().solr_cloud_root)')
  # The two fault tests start their own standalone Solr (private_solr) whatever the collection,
  # so here they would only repeat the first pass; the HTML pages render what the API tests check.
  # The spark-submit test's HDFS and cluster side ran in the first pass, and test_node_loss.py
  # indexes into SolrCloud with Spark (one node killed on the way).
  TINYTAGS_TEST_SOLR_CLOUD=$cloud_root \
    $PY -m pytest -q tests/integration/test_index.py tests/integration/test_webapp.py \
      --deselect tests/integration/test_index.py::test_solr_stopped_mid_run_then_resume_is_exact \
      --deselect tests/integration/test_index.py::test_solr_killed_mid_run_stops_within_one_backoff_cycle \
      --deselect tests/integration/test_index.py::test_spark_submit_on_the_cluster_from_hdfs
  rc=$?
  echo "test: SolrCloud pass done after ${SECONDS} s"
fi
exit $rc
