"""End to end on the local real stack: CIFAR-10 + a Tiny-format shard in HDFS -> train -> tag ->
index -> /api/search, every job through spark-submit on the Spark standalone cluster.

The expectation is computed independently of the pipeline's output: the saved model (its features, then its forest) evaluated
directly on the CIFAR-10 test images (CIFAR layout, read by the reader), so the search results
must be exactly the images whose top class is the tag with at least 40% of the trees agreeing.
Indexed twice: into a standalone Solr core and into a two-shard SolrCloud collection.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import numpy as np
import pytest
import requests

from tests.helpers import IN_CI, ROOT, spark_submit
from tinytags.core.contract import CLASSES
from tinytags.core.tagger import Tagger
from tinytags.io import cifar_files

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SAMPLE_IMAGES = 2000
CLOUD_URL = os.environ.get("TINYTAGS_E2E_SOLR_CLOUD", "http://127.0.0.1:8985/solr")


def _ok(result, what: str) -> None:
    assert result.returncode == 0, f"{what} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"


@pytest.fixture(scope="module")
def pipeline(stack, hdfs_client, cluster_model):
    """Shards into HDFS from the CIFAR-10 sample there, then tag on the cluster with the model trained
    there (the shared cluster model), once for both Solrs."""
    import subprocess
    import sys

    base = f"/tinytags-test/e2e-{uuid.uuid4().hex[:8]}"
    hdfs = stack["hdfs"]
    try:
        hdfs_client.makedirs(base)
        cifar_uri = cluster_model["cifar_uri"]
        shards = f"{hdfs}{base}/shards"
        made = subprocess.run(
            [sys.executable, "-m", "jobs.shards", "make-sample", "--cifar", cifar_uri, "--out", shards,
             "--count", str(SAMPLE_IMAGES)],
            capture_output=True, text=True, cwd=ROOT, timeout=300,
        )
        _ok(made, "make-sample")
        model = cluster_model["model"]
        tags = f"{hdfs}{base}/tags"
        _ok(spark_submit(ROOT / "jobs" / "tag.py", "--model", str(model), "--input", shards,
                         "--output", tags), "tag")
        with hdfs_client.read(f"{base}/tags/_manifest.json") as reader:
            manifest = json.loads(reader.read())
        yield {"model": model, "tags": tags, "manifest": manifest}
    finally:
        hdfs_client.delete(base, recursive=True)


@pytest.fixture(scope="module")
def expected(pipeline, cifar_sample):
    """Per tag, the ids the pipeline must find: the model (features + forest) evaluated in-process on
    the CIFAR-layout pixels, with the agreement rule written out here; and the junk count."""
    test = cifar_files.read_local(cifar_sample).test
    pixels = test.pixels[:SAMPLE_IMAGES]
    model = Path(pipeline["model"])
    card = json.loads((model / "model_card.json").read_text())
    assert card["features"]["name"] != "pixels", "the default model should use the learned features"
    tagger = Tagger.from_files((model / "forest.npz").read_bytes(), (model / "features.npz").read_bytes(), card)
    prediction = tagger.predict(pixels)
    keep = ~prediction.junk & (prediction.votes / tagger.n_trees >= 0.4 - 1e-9)
    return {
        tag: {str(i) for i in np.flatnonzero(keep & (prediction.label == c))} for c, tag in enumerate(CLASSES)
    }, int(keep.sum()), int(prediction.junk.sum())


def _collection(kind: str, stack):
    """(Solr base URL for index.py, admin call to make it, admin call to drop it)."""
    name = f"e2e_{uuid.uuid4().hex[:8]}"
    if kind == "standalone":
        root = stack["solr"]
        create = (f"{root}/admin/cores", {"action": "CREATE", "name": name, "configSet": "tinytags"})
        drop = (f"{root}/admin/cores", {"action": "UNLOAD", "core": name, "deleteInstanceDir": "true"})
    else:
        root = CLOUD_URL
        try:
            requests.get(f"{root}/admin/info/system", params={"wt": "json"}, timeout=5).raise_for_status()
        except requests.RequestException:
            message = f"SolrCloud is not running at {root} (make up CLOUD=1)"
            if IN_CI:
                pytest.fail(message + "; make test starts it in CI")
            pytest.skip(message)
        create = (f"{root}/admin/collections", {"action": "CREATE", "name": name, "numShards": 2,
                                                "replicationFactor": 1, "collection.configName": "tinytags"})
        drop = (f"{root}/admin/collections", {"action": "DELETE", "name": name})
    return f"{root}/{name}", create, drop


@pytest.mark.parametrize("kind", ["standalone", "cloud"])
def test_pipeline_finds_exactly_the_images_the_model_tags(kind, stack, pipeline, expected):
    from webapp import create_app

    url, create, drop = _collection(kind, stack)
    response = requests.get(create[0], params={**create[1], "wt": "json"}, timeout=120)
    assert response.status_code == 200, response.text
    try:
        _ok(spark_submit(ROOT / "jobs" / "index.py", "--input", pipeline["tags"], "--solr", url), "index")
        by_tag, kept, junk = expected
        manifest = pipeline["manifest"]
        assert sum(block["kept"] for block in manifest["blocks"].values()) == kept
        assert manifest["totals"]["none"] == junk
        assert sum(block["read"] for block in manifest["blocks"].values()) == SAMPLE_IMAGES

        client = create_app({"SOLR_URL": url, "MODEL_DIR": str(pipeline["model"]),
                             "SEARCH_CACHE_SECONDS": 0}).test_client()
        for tag in ("cat", "ship", "frog"):
            found, cursor = [], "*"
            while True:
                page = client.get(f"/api/search?tags={tag}&min_agreement=0.4&rows=100&cursor={cursor}")
                assert page.status_code == 200, page.get_json()
                body = page.get_json()
                found.extend(result["id"] for result in body["results"])
                assert all(result["tag"] == tag and result["agreement"] >= 0.4 for result in body["results"])
                if not body["next_cursor"]:
                    break
                cursor = body["next_cursor"]
            assert body["numFound"] == len(expected[0][tag])
            assert len(found) == len(set(found)), "paging returned an image twice"
            assert set(found) == expected[0][tag]
        everything = client.get("/api/search?rows=0").get_json()
        assert everything["numFound"] == kept
        # Every document carries its tag's held-out precision at its vote count, from the card.
        card = json.loads((Path(pipeline["model"]) / "model_card.json").read_text())
        docs = requests.get(f"{url}/select", params={"q": "*:*", "fl": "tag,votes,expected_precision",
                                                     "rows": 500, "wt": "json"}, timeout=60).json()["response"]["docs"]
        assert docs and all(doc["expected_precision"] == pytest.approx(card["expected_precision"][doc["tag"]][doc["votes"]],
                                                                       abs=1e-6) for doc in docs)
        image = client.get(f"/api/images/{next(iter(expected[0]['cat']))}.png")
        assert image.status_code == 200 and image.data[:8] == b"\x89PNG\r\n\x1a\n"
    finally:
        requests.get(drop[0], params={**drop[1], "wt": "json"}, timeout=120)
