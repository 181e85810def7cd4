#!/usr/bin/env bash
# make test's second half (make check ran lint and the unit tests): start the local real stack with
# SolrCloud and YARN (what is not already running), run the integration tests against it, then the
# API tests once more against a two-shard SolrCloud collection, and stop again only the
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
  echo "test: API tests again, against SolrCloud (2 shards)"
  # The first SolrCloud node, from the one settings place (TINYTAGS_SOLR_CLOUD_PORTS or its default).
  cloud_root=$($PY -c 'from tinytags.settings import stack_settings; print(stack_settings().solr_cloud_root)')
  # Search, paging, facets and similar images across shards. The indexer's SolrCloud side ran in
  # the first pass: test_end_to_end.py's [cloud] case indexes with spark-submit into a two-shard
  # collection and finds exactly what the model tags, and test_node_loss.py indexes into the
  # replicated collection with Spark (one node killed on the way). The HTML pages render what
  # the API tests check. Left out here too: what does not depend on how the collection is laid
  # out (classifying an upload, image PNGs, the card's precision tables); each collection costs
  # SolrCloud a second or two to make.
  TINYTAGS_TEST_SOLR_CLOUD=$cloud_root $PY -m pytest -q tests/integration/test_webapp.py \
    -k "not classify and not png and not unknown_image and not reports"
  rc=$?
  echo "test: SolrCloud pass done after ${SECONDS} s"
fi
exit $rc
