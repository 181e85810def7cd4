"""One node of a cluster killed mid-run (kill -9), against real processes: a SolrCloud node while the
indexer loads and clients search, a Spark standalone worker while jobs/tag.py runs, an HDFS
DataNode while jobs/tag.py reads and writes.

Each test starts its own extra processes (a private SolrCloud, Spark workers, an HDFS with two
DataNodes) from the stack's own services table, on free ports under the test's folder, so killing
one never touches the shared stack. Sizes are small (CI); bench/node_loss.py runs the Solr case at
the issue's sizes and bench/RESULTS.md holds its figures.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sys
import threading
import time

import pytest
import requests

from deploy.stack import supervisor
from deploy.stack.services import cloud_services
from deploy.stack.solr_cloud import cluster_shards, ensure_cloud_collection
from jobs import index
from tests.helpers import write_tag_output
from tinytags.core.solr_docs import to_solr_docs
from tinytags.pipeline import index as index_pipeline
from tinytags.settings import stack_settings
from webapp import create_app

os.environ.setdefault("PYSPARK_PYTHON", sys.executable)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture()
def private_cloud(tmp_path):
    """A SolrCloud of our own: ZooKeeper and two Solr nodes on free ports, collection tinytags with
    2 shards x 2 replicas made by the stack's own code; stopped (by pid) afterwards."""
    settings = stack_settings(stack_dir=tmp_path / "stack", zk_port=_free_port(),
                              cloud_ports=(_free_port(), _free_port()), cloud_heap="512m")
    table = cloud_services(settings)
    try:
        list(supervisor.up(settings, table, []))
        ensure_cloud_collection(settings)
        yield settings, {s.name: s for s in table}
    finally:
        list(supervisor.down(settings, table))


def replica_contents(settings, collection: str = "tinytags") -> dict[str, list[dict]]:
    """shard -> each replica's node, document count, sha1 of its sorted ids and the ids, asked of each
    core alone (distrib=false)."""
    contents = {}
    for shard, replicas in cluster_shards(settings, collection).items():
        contents[shard] = []
        for replica in replicas:
            answer = requests.get(f"{replica['base_url']}/{replica['core']}/select", timeout=60, params={
                "q": "*:*", "distrib": "false", "fl": "id", "rows": 1_000_000, "wt": "json"}).json()
            ids = sorted(doc["id"] for doc in answer["response"]["docs"])
            contents[shard].append({"node": replica["base_url"], "count": len(ids), "ids": ids,
                                    "sha1": hashlib.sha1("\n".join(ids).encode()).hexdigest()})
    return contents


def wait_all_active(settings, timeout: float, collection: str = "tinytags") -> float:
    """Seconds until every replica of the collection is active (fails after ``timeout``)."""
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        try:
            states = [r["state"] for rs in cluster_shards(settings, collection).values() for r in rs]
        except Exception:  # noqa: BLE001 - the cluster state may be unreadable while a node starts
            states = []
        if states and all(state == "active" for state in states):
            return time.monotonic() - began
        time.sleep(0.25)
    pytest.fail(f"replicas not all active after {timeout:.0f} s: {cluster_shards(settings, collection)}")


class Searchers:
    """Clients searching through the web API (its Flask app, one Solr client shared as in a gunicorn
    worker) in threads until stopped; each answer is kept as (time, status, partial, numFound)."""

    def __init__(self, solr_url: str, clients: int, model_dir):
        self.app = create_app({"SOLR_URL": solr_url, "MODEL_DIR": str(model_dir), "TESTING": True,
                               "SEARCH_CACHE_SECONDS": 0, "FACET_CACHE_SECONDS": 0})
        self.answers: list[tuple[float, int, bool, int]] = []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._search, args=(n,), daemon=True) for n in range(clients)]

    def _search(self, n: int) -> None:
        client = self.app.test_client()
        tags = ["cat", "dog", "ship", ""]
        while not self.stop.is_set():
            response = client.get("/api/search", query_string={"tags": tags[n % 4], "rows": 10})
            body = response.get_json(silent=True) or {}
            self.answers.append((time.monotonic(), response.status_code, bool(body.get("partial")),
                                 body.get("numFound", -1)))
            time.sleep(0.05)

    def __enter__(self):
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=30)


@pytest.mark.integration
@pytest.mark.slow
def test_a_solr_node_killed_mid_index_under_search_load_loses_nothing(spark, private_cloud, tmp_path):
    """kill -9 one of two SolrCloud nodes while the indexer loads and 8 clients search through the web
    API, both pointed at that node: the run finishes (at most one --resume) with every document once,
    searches fail at most briefly after the kill and flag the failover, a shard with no live replica
    gives a flagged partial answer, and when the node is back both replicas of each shard are equal."""
    settings, table = private_cloud
    node1, node2 = (f"http://127.0.0.1:{port}/solr" for port in settings.cloud_ports)
    victim = f"{node2}/tinytags"
    # A second collection with one replica per shard: the killed node takes one shard's documents offline.
    requests.get(f"{node1}/admin/collections", timeout=120, params={
        "action": "CREATE", "name": "single", "numShards": 2, "replicationFactor": 1,
        "collection.configName": "tinytags", "wt": "json"}).raise_for_status()
    single_lines = write_tag_output(tmp_path / "single", {0: 150})[0]
    requests.post(f"{node1}/single/update", params={"commit": "true"}, json=to_solr_docs(single_lines),
                  timeout=60).raise_for_status()
    survivor_docs = sum(replica["count"] for replicas in replica_contents(settings, "single").values()
                        for replica in replicas if replica["node"] == node1)
    assert 0 < survivor_docs < len(single_lines)

    blocks = 8
    lines = write_tag_output(tmp_path / "tags", {block: 500 for block in range(blocks)}, parts=2, seed=4)
    expected = sorted(str(line["id"]) for block in lines.values() for line in block)
    ledger_file = tmp_path / "tags" / "_index_ledger.json"
    flags = ["--input", str(tmp_path / "tags"), "--solr", victim, "--parallelism", "2", "--blocks-per-commit", "2",
             "--batch-size", "100", "--retries", "6", "--backoff", "1", "--timeout", "30"]
    outcome = {}
    runner = threading.Thread(target=lambda: outcome.setdefault(
        "summary", index_pipeline.run(spark, index.parse_args(flags))))
    with Searchers(victim, 8, tmp_path / "no-model") as searchers:
        runner.start()
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:  # kill the node once the first wave is verified
            ledger = json.loads(ledger_file.read_text()) if ledger_file.exists() else {"targets": {}}
            if len(ledger["targets"].get(victim, {}).get("blocks", {})) >= 2:
                break
            time.sleep(0.05)
        killed = time.monotonic()
        os.killpg(supervisor.running_pid(settings, "solr-cloud-2"), 9)
        runner.join(timeout=300)
        time.sleep(1)  # a few searches after the run, node still gone
    first = outcome["summary"]
    resumed = None
    if first.exit_code != 0:
        resumed = index_pipeline.run(spark, index.parse_args([*flags, "--resume"]))
        assert resumed.exit_code == 0, resumed.text()

    answers = searchers.answers
    failed = [(t - killed, status) for t, status, _, _ in answers if status != 200]
    before = [a for a in answers if a[0] < killed]
    print(f"searches: {len(answers)}, failed {len(failed)} ({failed[:5]}), index run: "
          f"{'finished' if resumed is None else 'one --resume'}")
    assert len(answers) > 50 and len(failed) <= 0.01 * len(answers), failed
    assert all(t < 15 for t, _ in failed), failed
    assert not any(partial for _, _, partial, _ in before)
    assert any(partial for t, _, partial, _ in answers if t >= killed), "the failover was never flagged"

    # Node 2 is still down. A web app started now, with the two nodes configured (the dead one
    # first), answers whole from node 1 and flags the failover; "single" flags its missing shard.
    app = create_app({"SOLR_URL": f"{node2}/tinytags,{node1}/tinytags", "MODEL_DIR": str(tmp_path),
                      "TESTING": True}).test_client()
    whole = app.get("/api/search", query_string={"rows": 0}).get_json()
    assert (whole["numFound"], whole["partial"]) == (len(expected), True)
    assert app.get("/api/search", query_string={"rows": 0}).get_json()["partial"] is False  # stays on node 1
    single = create_app({"SOLR_URL": f"{node1}/single", "MODEL_DIR": str(tmp_path), "TESTING": True}).test_client()
    answer = single.get("/api/search", query_string={"rows": 0}).get_json()
    assert (answer["partial"], answer["numFound"]) == (True, survivor_docs)

    returned = time.monotonic()
    supervisor.start(settings, table["solr-cloud-2"])
    recovery = wait_all_active(settings, 90)
    print(f"replicas active {recovery:.1f} s after the node answered ({time.monotonic() - returned:.1f} s after start)")
    assert recovery < 60
    contents = replica_contents(settings)
    union = []
    for shard, replicas in contents.items():
        assert len(replicas) == 2, replicas
        assert (replicas[0]["count"], replicas[0]["sha1"]) == (replicas[1]["count"], replicas[1]["sha1"]), shard
        union += replicas[0]["ids"]
    assert sorted(union) == expected  # every document, each once


# --- a Spark standalone worker killed while jobs/tag.py runs --------------------------------------------

TAG_BLOCK = 100  # 5,000 images: 50 blocks, one task each


@pytest.fixture(scope="module")
def tag_inputs(tmp_path_factory, cifar_sample):
    """A small real forest (scikit-learn on 2,000 CIFAR training images) and the 5,000 test images as
    Tiny-format shards; with the output of the job's own block code run here, without Spark."""
    from sklearn.ensemble import RandomForestClassifier

    from tests.helpers import forest_from_sklearn
    from tinytags.core import forest as forest_io
    from tinytags.core.contract import CARD_FILE, CLASSES
    from tinytags.io import cifar_files
    from tinytags.io.shard_files import make_sample
    from tinytags.io.storage import Storage

    data = cifar_files.read_local(cifar_sample)
    fitted = RandomForestClassifier(n_estimators=10, max_depth=8, random_state=0, n_jobs=2)
    fitted.fit(data.train.pixels[:2000], data.train.labels[:2000])
    forest = forest_from_sklearn(fitted.estimators_, len(CLASSES))
    root = tmp_path_factory.mktemp("node-loss-tag")
    model = root / "model"
    model.mkdir()
    forest_io.save(forest, model)
    (model / CARD_FILE).write_text(json.dumps({"classes": list(CLASSES), "version": forest.version,
                                               "format": forest_io.FOREST_FORMAT}))
    shards = root / "tiny"
    make_sample(Storage(), data.test.pixels, data.test.labels, str(shards), shard_size=2000)
    reference = root / "reference"
    _tag_without_spark(model, shards, reference)
    return model, shards, tag_output(reference)


def _tag_without_spark(model, shards, output, *flags: str) -> None:
    """The job's own prepare / tag_block / finish, every block in this process: the uninterrupted run."""
    from jobs import tag as tag_job
    from tinytags.pipeline import tag as tag_pipeline

    options = tag_job.parse_args(["--model", str(model), "--input", str(shards), "--output", str(output),
                                  "--block-size", str(TAG_BLOCK), *flags])
    plan = tag_pipeline.prepare(options)
    context = tag_pipeline.task_context(plan, options)

    class Broadcast:
        value = plan.tagger

    tag_pipeline.finish(plan, [tag_pipeline.tag_block(context, Broadcast, task) for task in plan.todo], 0.0)


def tag_output(folder) -> dict[str, object]:
    """A tag output as comparable data: every file's text by relative path, the manifest without
    its timings (the one field that differs between two runs of the same input)."""
    from tinytags.core.contract import MANIFEST_NAME

    def untimed(value):
        if isinstance(value, dict):
            return {k: untimed(v) for k, v in value.items() if k not in ("seconds", "images_per_second")}
        return value

    files = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.name != MANIFEST_NAME:
            text = path.read_text()
            # The job's own small JSON files (_run.json, each block's counts) carry timings too.
            files[str(path.relative_to(folder))] = untimed(json.loads(text)) if path.name.endswith(".json") else text
    return {"files": files, "manifest": untimed(json.loads((folder / MANIFEST_NAME).read_text()))}


@pytest.fixture()
def private_spark(tmp_path):
    """A Spark standalone master and two workers of our own (1 core, 2 GB each), from the stack's table."""
    from deploy.stack.services import base_services

    settings = stack_settings(stack_dir=tmp_path / "stack", spark_port=_free_port(), spark_ui_port=_free_port(),
                              worker_memory="2g")
    table = [s for s in base_services(settings) if s.group == "spark"]
    try:
        list(supervisor.up(settings, table, []))
        yield settings
    finally:
        list(supervisor.down(settings, table))


def submit(script, *args, master: str):
    """bin/spark-submit of a job, running in the background (the venv's pyspark and Python)."""
    import subprocess

    from tests.helpers import ROOT

    env = {k: v for k, v in os.environ.items() if k not in ("SPARK_HOME", "PYSPARK_PYTHON", "PYSPARK_DRIVER_PYTHON")}
    command = [str(ROOT / "bin" / "spark-submit"), "--master", master, "--conf", "spark.ui.enabled=false",
               "--conf", "spark.executor.memory=1g", str(script), *args]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT)


def wait_for_blocks(output, count: int, process, timeout: float = 120) -> int:
    """Wait until the job has moved ``count`` finished block folders into place; returns how many."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        done = len(list(output.glob("block=*"))) if output.exists() else 0
        if done >= count:
            return done
        time.sleep(0.02)
    pytest.fail(f"the job did not reach {count} blocks (exit code {process.poll()})")


@pytest.mark.integration
@pytest.mark.slow
def test_a_spark_worker_killed_mid_tag_changes_nothing_in_the_output(private_spark, tag_inputs, tmp_path):
    settings = private_spark
    model, shards, reference = tag_inputs
    from tests.helpers import ROOT

    output = tmp_path / "tags"
    began = time.monotonic()
    job = submit(ROOT / "jobs" / "tag.py", "--model", str(model), "--input", str(shards), "--output", str(output),
                 "--block-size", str(TAG_BLOCK), master=settings.spark_master)
    done_at_kill = wait_for_blocks(output, 3, job)
    killed = time.monotonic()
    os.killpg(supervisor.running_pid(settings, "spark-worker-1"), 9)
    log, _ = job.communicate(timeout=300)
    print(f"worker killed after {done_at_kill} of 50 blocks, {killed - began:.1f} s into the job; "
          f"job {time.monotonic() - began:.1f} s")
    assert job.returncode == 0, log[-3000:]
    assert done_at_kill < 50
    got = tag_output(output)
    assert got["files"].keys() == reference["files"].keys()
    assert [name for name in got["files"] if got["files"][name] != reference["files"][name]] == []
    assert got["manifest"] == reference["manifest"]
    assert "lost" in log.lower() or "removed" in log.lower(), "the driver never saw the worker go"


# --- an HDFS DataNode killed while jobs/tag.py reads and writes HDFS ------------------------------------


def live_datanodes(namenode_http: str) -> int:
    """How many DataNodes the NameNode counts live (0 when it does not answer)."""
    try:
        beans = requests.get(f"{namenode_http}/jmx", timeout=3,
                             params={"qry": "Hadoop:service=NameNode,name=FSNamesystemState"}).json()["beans"]
        return int(beans[0].get("NumLiveDataNodes", 0))
    except (requests.RequestException, ValueError, KeyError, IndexError):
        return 0


@pytest.fixture()
def private_hdfs(tmp_path):
    """An HDFS of our own: a NameNode (replication 2, dead DataNodes noticed in seconds) and two
    DataNodes, each its own process, from the stack's hdfs service and its launcher."""
    from dataclasses import replace

    from deploy.stack.health import Http
    from deploy.stack.launchers import JAVA_OPENS, classpath
    from deploy.stack.services import base_services

    settings = stack_settings(stack_dir=tmp_path / "stack", hdfs_rpc_port=_free_port(),
                              hdfs_http_port=_free_port(), hdfs_heap="512m")
    namenode = next(s for s in base_services(settings) if s.name == "hdfs")
    namenode = replace(namenode, command=[*namenode.command, "--datanodes", "0", "--replication", "2",
                                          "--fast-dead"],
                       ready=Http(f"{settings.namenode_http}/jmx?qry=Hadoop:service=NameNode,name=FSNamesystemState"))
    table, data_ports = [namenode], {}
    for n in (1, 2):
        ports = (_free_port(), _free_port(), _free_port())
        data_ports[f"datanode-{n}"] = ports[0]
        table.append(supervisor.Service(
            name=f"datanode-{n}", group="hdfs",
            command=[settings.java, "-Xmx256m", *JAVA_OPENS, "-cp", classpath("hdfs"), "tinytags.HdfsLauncher",
                     "--datanode", settings.hdfs_uri, "--base", settings.stack_dir / "data" / f"datanode-{n}",
                     "--port", ports[0], "--http-port", ports[1], "--ipc-port", ports[2]],
            ports=ports, url=f"127.0.0.1:{ports[0]}",
            ready=lambda count=n: live_datanodes(settings.namenode_http) >= count,
            depends_on={"hdfs": "healthy"} if n == 1 else {"datanode-1": "healthy"}))
    try:
        list(supervisor.up(settings, table, []))
        yield settings, data_ports
    finally:
        list(supervisor.down(settings, table))


def hdfs_tag_output(files, folder: str) -> dict[str, object]:
    """``tag_output`` of a tag output on HDFS (read through the storage layer)."""
    local = {}
    for found in files.walk(folder):
        local[found.path[len(folder) + 1:]] = files.read_bytes(found.path).decode()
    from tinytags.core.contract import MANIFEST_NAME

    def untimed(value):
        if isinstance(value, dict):
            return {k: untimed(v) for k, v in value.items() if k not in ("seconds", "images_per_second")}
        return value

    manifest = untimed(json.loads(local.pop(MANIFEST_NAME)))
    return {"files": {name: untimed(json.loads(text)) if name.endswith(".json") else text
                      for name, text in sorted(local.items())}, "manifest": manifest}


def block_nodes(settings, path: str) -> set[str]:
    """The DataNodes (data address host:port) holding a file's blocks, as the NameNode lists them."""
    answer = requests.get(f"{settings.namenode_http}/webhdfs/v1{path}", timeout=10,
                          params={"op": "GETFILEBLOCKLOCATIONS", "user.name": "tinytags"}).json()
    return {name for block in answer["BlockLocations"]["BlockLocation"] for name in block["names"]}


@pytest.mark.integration
@pytest.mark.slow
def test_a_datanode_killed_mid_tag_changes_nothing_and_a_lost_only_replica_is_named(private_hdfs, tag_inputs,
                                                                                      tmp_path):
    """Two DataNodes, replication 2: kill -9 one while jobs/tag.py reads its shards from HDFS and writes
    its output there; the job finishes with the output of an uninterrupted run. A file kept with one
    replica, on the killed DataNode, then fails to read with an error that names it."""
    from tests.helpers import ROOT
    from tinytags.io.shard_files import upload
    from tinytags.io.storage import FILE_ERRORS, Storage

    settings, data_ports = private_hdfs
    model, shards, _ = tag_inputs
    files = Storage(webhdfs=settings.namenode_http)
    hdfs = settings.hdfs_uri
    upload(files, [str(shards)], f"{hdfs}/in/tiny")
    _tag_without_spark(model, f"{hdfs}/in/tiny", f"{hdfs}/reference", "--webhdfs", settings.namenode_http)
    reference = hdfs_tag_output(files, f"{hdfs}/reference")
    victim = "datanode-2"
    victim_port = data_ports[victim]
    # Files of one replica each until one sits on the DataNode that will die.
    lonely = None
    for n in range(20):
        path = f"/lonely/file-{n}"
        requests.put(f"{settings.namenode_http}/webhdfs/v1{path}", timeout=30, allow_redirects=True,
                     params={"op": "CREATE", "replication": 1, "user.name": "tinytags", "overwrite": "true"},
                     data=b"x" * 1000).raise_for_status()
        if block_nodes(settings, path) == {f"127.0.0.1:{victim_port}"}:
            lonely = path
            break
    assert lonely is not None

    output = f"{hdfs}/tags"
    began = time.monotonic()
    job = submit(ROOT / "jobs" / "tag.py", "--model", str(model), "--input", f"{hdfs}/in/tiny", "--output", output,
                 "--block-size", str(TAG_BLOCK), "--webhdfs", settings.namenode_http, master="local[2,4]")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and job.poll() is None:
        if files.status(output) and len([e for e in files.list(output) if e.name.startswith("block=")]) >= 3:
            break
        time.sleep(0.05)
    killed = time.monotonic()
    os.killpg(supervisor.running_pid(settings, victim), 9)
    log, _ = job.communicate(timeout=300)
    print(f"DataNode killed {killed - began:.1f} s into the job; job {time.monotonic() - began:.1f} s")
    assert job.returncode == 0, log[-3000:]
    assert hdfs_tag_output(files, output) == reference

    with pytest.raises(FILE_ERRORS) as error:
        files.read_bytes(f"{hdfs}{lonely}")
    assert lonely in str(error.value), str(error.value)

