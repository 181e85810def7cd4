"""Session fixtures for the real local stack (Solr, HDFS, Spark), used if running, else started.

Integration tests never touch a user's data: each gets its own Solr core (created from the
`tinytags` configset, unloaded afterwards) and its own HDFS folder under /tinytags-test/.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import uuid

import numpy as np
import pytest
import requests

from tests.helpers import (
    CNN_TINY,
    HDFS_URI,
    PHOTOS,
    ROOT,
    SAMPLE_MODEL_SEED,
    SOLR_CLOUD_URL,
    SOLR_URL,
    SPARK_MASTER,
    WEBHDFS_URL,
    Loaded,
    card_tables,
    load_documents,
    make_lines,
    need_shared,
    spark_submit,
    stack_services,
)
from tinytags.core.contract import CLASSES


@pytest.fixture(scope="session")
def stack():
    """Make sure the local stack answers; start what is down and stop only that at the end."""
    with stack_services(what="the local stack"):
        yield {"solr": SOLR_URL, "webhdfs": WEBHDFS_URL, "hdfs": HDFS_URI, "spark": SPARK_MASTER}


@pytest.fixture(scope="session")
def cluster_model(stack, hdfs_client, cifar_sample, tmp_path_factory):
    """The default model (--features cnn, at test size) trained once with spark-submit on the Spark
    cluster from the CIFAR-10 sample in HDFS, with the photos archive as --extra. Tests that only read
    a model share it (one JVM start and one training instead of one per test file): the end-to-end
    test, and test_cnn_pipeline.py, which checks its card, its wild table and its network."""
    base = f"/tinytags-test/model-{uuid.uuid4().hex[:8]}"
    try:
        hdfs_client.makedirs(base)
        hdfs_client.upload(f"{base}/{cifar_sample.name}", str(cifar_sample))
        cifar_uri = f"{stack['hdfs']}{base}/{cifar_sample.name}"
        model = tmp_path_factory.mktemp("cluster-model") / "model"
        result = spark_submit(ROOT / "jobs" / "train.py", "--cifar", cifar_uri, "--model", str(model),
                              "--extra", str(need_shared(PHOTOS)), *CNN_TINY, "--seed", SAMPLE_MODEL_SEED,
                              master=stack["spark"])
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        yield {"model": model, "card": json.loads((model / "model_card.json").read_text()), "cifar_uri": cifar_uri,
               "result": result}
    finally:
        hdfs_client.delete(base, recursive=True)


@pytest.fixture()
def solr_core(stack):
    """A fresh, empty Solr core made from the tinytags configset; yields its URL, then unloads it.

    With TINYTAGS_TEST_SOLR_CLOUD set (a SolrCloud base URL, e.g. http://127.0.0.1:8985/solr, from
    `make up CLOUD=1`), it is a two-shard collection on SolrCloud instead, deleted afterwards: one
    replica per shard, each shard on its own node, for what that pass checks (distributed search,
    sorting, paging and facets across shards). Replication, failover and recovery are
    test_node_loss.py's; a second replica here would only make each collection slower to create
    and load.
    """
    name = f"test_{uuid.uuid4().hex[:10]}"
    if SOLR_CLOUD_URL:
        admin = f"{SOLR_CLOUD_URL}/admin/collections"
        create = {"action": "CREATE", "name": name, "numShards": 2, "replicationFactor": 1,
                  "collection.configName": "tinytags", "wt": "json"}
        delete = {"action": "DELETE", "name": name, "wt": "json"}
        base = SOLR_CLOUD_URL
    else:
        admin = f"{stack['solr']}/admin/cores"
        create = {"action": "CREATE", "name": name, "configSet": "tinytags", "wt": "json"}
        delete = {"action": "UNLOAD", "core": name, "deleteInstanceDir": "true", "wt": "json"}
        base = stack["solr"]
    response = requests.get(admin, params=create, timeout=120)
    assert response.status_code == 200, response.text
    try:
        yield f"{base}/{name}"
    finally:
        requests.get(admin, params=delete, timeout=120)


@pytest.fixture(scope="session")
def hdfs_client(stack):
    """An HdfsCLI client on the local WebHDFS."""
    from hdfs import InsecureClient

    return InsecureClient(stack["webhdfs"], user=os.environ.get("USER", "tinytags"))


@pytest.fixture()
def hdfs_dir(hdfs_client):
    """A fresh HDFS folder under /tinytags-test/, deleted afterwards."""
    path = f"/tinytags-test/{uuid.uuid4().hex[:10]}"
    hdfs_client.makedirs(path)
    try:
        yield path
    finally:
        hdfs_client.delete(path, recursive=True)


@pytest.fixture()
def loaded(solr_core):
    lines = make_lines()
    load_documents(solr_core, lines)
    return Loaded(solr_core, lines)


@pytest.fixture(scope="module")
def unreachable_solr_url():
    """A Solr URL nothing listens on: a request that got past validation would answer 503, not 400."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/solr/tinytags"


@pytest.fixture()
def model_dir(tmp_path, loaded):
    """A small real forest over raw pixels (scikit-learn trees in the one forest format) and a model
    card with the fields jobs/train.py writes (made-up per-class tables: tests.helpers.card_tables)."""
    from sklearn.tree import DecisionTreeClassifier

    from tests.helpers import forest_from_sklearn
    from tinytags.core import forest

    pixels = np.stack([np.frombuffer(base64.b64decode(l["pixels"]), np.uint8) for l in loaded.lines])
    labels = np.array([l["label"] for l in loaded.lines])
    rng = np.random.default_rng(3)
    trees = []
    for seed in range(5):
        sample = rng.integers(0, len(labels), len(labels))
        trees.append(DecisionTreeClassifier(max_depth=5, random_state=seed).fit(pixels[sample], labels[sample]))
    forest.save(forest_from_sklearn(trees, len(CLASSES)), tmp_path)
    card = {"params": {"trees": 5}, "test_accuracy": 0.25,
            "agreement": [{"min_votes": v, "coverage": 1 - v / 10, "precision": 0.2 + v / 10} for v in range(1, 6)],
            **card_tables(5)}
    (tmp_path / "model_card.json").write_text(json.dumps(card))
    return tmp_path, trees, pixels


def pytest_collection_modifyitems(items):
    """Everything in tests/integration/ needs the real stack: mark it so (-m "not integration" skips it)."""
    for item in items:
        if "/tests/integration/" in str(item.fspath):
            item.add_marker(pytest.mark.integration)
