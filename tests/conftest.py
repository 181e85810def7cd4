"""Session fixtures: the real local stack (Solr, HDFS, Spark), used if running, else started.

Integration tests never touch a user's data: each gets its own Solr core (created from the
`tinytags` configset, unloaded afterwards) and its own HDFS folder under /tinytags-test/.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import uuid
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"
CIFAR_SAMPLE = SHARED_DATA / "cifar-10-sample-binary.tar.gz"

SOLR_URL = os.environ.get("TINYTAGS_TEST_SOLR_ROOT", "http://127.0.0.1:8983/solr")  # Solr root, not a core
WEBHDFS_URL = os.environ.get("TINYTAGS_WEBHDFS_URL", "http://127.0.0.1:9870")
HDFS_URI = os.environ.get("TINYTAGS_HDFS_URI", "hdfs://127.0.0.1:9000")
SPARK_MASTER = os.environ.get("TINYTAGS_SPARK_MASTER", "spark://127.0.0.1:7077")
SOLR_CLOUD_URL = os.environ.get("TINYTAGS_TEST_SOLR_CLOUD", "")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def need_shared(path: Path) -> Path:
    """The ../shared data file, or a skip outside CI (a failure in CI) when it is missing."""
    if path.exists():
        return path
    message = f"{path} is missing (the ../shared development data)"
    if IN_CI:
        pytest.fail(message + "; CI must have it")
    pytest.skip(message)


@pytest.fixture(scope="session")
def cifar_sample() -> Path:
    """The real CIFAR-10 sample archive from ../shared/data."""
    return need_shared(CIFAR_SAMPLE)


@pytest.fixture(scope="session")
def stack():
    """Make sure the local stack answers; start what is down and stop only that at the end."""
    started_file = ROOT / ".stack" / f"pytest-started-{os.getpid()}"
    started_file.parent.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [sys.executable, str(ROOT / "deploy" / "stack.py"), "up", "--started-file", str(started_file)],
        capture_output=True, text=True,
    )
    started = started_file.read_text().strip() if started_file.exists() else ""
    started_file.unlink(missing_ok=True)
    try:
        if result.returncode != 0:
            pytest.fail(f"the local stack did not come up:\n{result.stdout}{result.stderr}")
        yield {"solr": SOLR_URL, "webhdfs": WEBHDFS_URL, "hdfs": HDFS_URI, "spark": SPARK_MASTER}
    finally:
        if started:
            subprocess.run(
                [sys.executable, str(ROOT / "deploy" / "stack.py"), "down", "--only", started],
                capture_output=True,
            )


@pytest.fixture()
def solr_core(stack):
    """A fresh, empty Solr core made from the tinytags configset; yields its URL, then unloads it.

    With TINYTAGS_TEST_SOLR_CLOUD set (a SolrCloud base URL, e.g. http://127.0.0.1:8985/solr, from
    `make up CLOUD=1`), it is a two-shard collection on SolrCloud instead, deleted afterwards.
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


@pytest.fixture(scope="session")
def spark():
    """An in-process SparkSession on local[2] (jobs on the cluster run through spark-submit)."""
    from pyspark.sql import SparkSession

    # Python workers must run this venv's interpreter (numpy and the project's deps), not python3.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    session = (
        SparkSession.builder.master("local[2]")
        .appName("tinytags-tests")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "4")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    try:
        yield session
    finally:
        session.stop()


def spark_submit(script: Path | str, *args: str, master: str = SPARK_MASTER, timeout: float = 600):
    """Run a script with the installed pyspark's spark-submit; returns the CompletedProcess."""
    import pyspark

    spark_home = Path(pyspark.__file__).resolve().parent
    env = dict(os.environ, SPARK_HOME=str(spark_home), PYSPARK_PYTHON=sys.executable,
               PYSPARK_DRIVER_PYTHON=sys.executable)
    command = [
        str(spark_home / "bin" / "spark-submit"), "--master", master,
        "--conf", "spark.ui.enabled=false", "--conf", "spark.executor.memory=2g",
        str(script), *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=timeout)


@pytest.fixture(scope="session")
def cifar_sample_dir(tmp_path_factory, cifar_sample) -> Path:
    """The sample archive extracted once (the cifar-10-batches-bin folder)."""
    target = tmp_path_factory.mktemp("cifar")
    with tarfile.open(cifar_sample) as archive:
        archive.extractall(target, filter="data")
    return target / "cifar-10-batches-bin"
