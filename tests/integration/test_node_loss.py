"""One node of a cluster killed mid-run (kill -9), against real processes: a SolrCloud node while the
indexer loads and clients search, a Spark standalone worker while jobs/tag.py runs, an HDFS
DataNode while jobs/tag.py reads and writes.

The Solr and Spark tests kill a node of the shared test stack (deploy/test.sh starts it with
--cloud: ZooKeeper + two SolrCloud nodes, a Spark master with two workers; a fixture starts what is
down and stops only that): each works in its own collection or job, and in a ``finally`` starts the
killed node again from the stack's own services table and waits until it is whole (every replica of
every collection active, every worker registered) before the next test. The shared HDFS has one
DataNode inside its NameNode, so the DataNode test starts an HDFS of its own (a NameNode and two
DataNode processes on free ports). Sizes are small (CI); bench/node_loss.py runs each case at the
issue's sizes beside an uninterrupted run, and bench/RESULTS.md holds its figures.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sys
import threading
import time
import uuid

import pytest
import requests

from deploy.stack import supervisor
from deploy.stack.health import alive_workers, live_datanodes
from deploy.stack.services import base_services, cloud_services, replicated_hdfs_services
from deploy.stack.solr_cloud import cluster_shards
from jobs import index
from tests.helpers import ROOT, wait_for_ledger, write_tag_output
from tinytags.core.solr_docs import to_solr_docs
from tinytags.pipeline import index as index_pipeline
from tinytags.settings import LOOPBACK, stack_settings
from webapp import create_app

os.environ.setdefault("PYSPARK_PYTHON", sys.executable)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def restore(settings, table, whole, timeout: float = 120) -> None:
    """Start again every service of ``table`` whose process is gone (the shared settings and command,
    as `up` does), then wait until ``whole()`` is true: the shared stack as the next test expects it."""
    restarted = [supervisor.launch(settings, s)[0] for s in table if supervisor.running_pid(settings, s.name) is None]
    for finish in restarted:
        print(finish())
    deadline = time.monotonic() + timeout
    while not whole():
        if time.monotonic() > deadline:
            pytest.fail(f"the shared stack is not whole again after {timeout:.0f} s")
        time.sleep(0.25)


@pytest.fixture(scope="module")
def restores():
    """Restores (``restore`` calls) run when this module ends instead of in a test's teardown: a killed
    worker then starts again while the next test of the module runs, and is back before any other."""
    pending: list = []
    try:
        yield pending
    finally:
        for step in pending:
            step()


# --- a SolrCloud node killed while the indexer loads and clients search ---------------------------------


def not_active(settings) -> list[str]:
    """Every replica of every collection that is not active on a live node (empty: all recovered)."""
    try:
        cluster = requests.get(f"{settings.solr_cloud_root}/admin/collections", timeout=10, params={
            "action": "CLUSTERSTATUS", "wt": "json"}).json()["cluster"]
    except (requests.RequestException, ValueError, KeyError):
        return ["the cluster state is unreadable"]
    live = set(cluster.get("live_nodes", []))
    return [f"{name}/{shard}/{replica.get('core')}: {replica.get('state')}"
            for name, collection in cluster.get("collections", {}).items()
            for shard, body in collection.get("shards", {}).items()
            for replica in body.get("replicas", {}).values()
            if replica.get("state") != "active" or replica.get("node_name") not in live]


@pytest.fixture()
def shared_cloud():
    """The shared stack's SolrCloud (started here if down, and then stopped again). The test may kill
    a node: afterwards it runs again and every replica of every collection is active."""
    settings = stack_settings()
    table = cloud_services(settings)
    started: list[str] = []
    try:
        list(supervisor.up(settings, table, started))
        yield settings, {s.name: s for s in table}
    finally:
        try:
            restore(settings, table, lambda: not not_active(settings))
        finally:
            list(supervisor.down(settings, [s for s in table if s.name in started]))


def replica_contents(settings, collection: str) -> dict[str, list[dict]]:
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
            time.sleep(0.2)  # 8 clients at about 5 searches/s each; faster ones starve the indexer's driver (GIL)

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
def test_a_solr_node_killed_mid_index_under_search_load_loses_nothing(spark, shared_cloud, tmp_path):
    """kill -9 one of two SolrCloud nodes while the indexer loads and 8 clients search through the web
    API, both pointed at that node: the run finishes (at most one --resume) with every document once,
    searches fail at most briefly after the kill and flag the failover, a shard with no live replica
    gives a flagged partial answer, and when the node is back both replicas of each shard are equal."""
    settings, table = shared_cloud
    node1, node2 = (f"http://{LOOPBACK}:{port}/solr" for port in settings.cloud_ports)
    name, single_name = f"nodeloss_{uuid.uuid4().hex[:8]}", f"single_{uuid.uuid4().hex[:8]}"
    admin = f"{node1}/admin/collections"
    try:
        # One replica of each shard on each node (2 x 2), both shards led from node 2, the one killed
        # (made there first, then copied to node 1): every shard then loses its leader, and updates
        # wait for ZooKeeper to end node 2's session and node 1 to lead. "single" has one replica per
        # shard, so the killed node takes one shard's documents offline.
        node_names = [f"{LOOPBACK}:{port}_solr" for port in settings.cloud_ports]
        for collection, nodes in ((name, node_names[1]), (single_name, ",".join(node_names))):
            requests.get(admin, timeout=120, params={
                "action": "CREATE", "name": collection, "numShards": 2, "replicationFactor": 1,
                "createNodeSet": nodes, "collection.configName": "tinytags", "wt": "json"}).raise_for_status()
        for shard in ("shard1", "shard2"):
            requests.get(admin, timeout=120, params={
                "action": "ADDREPLICA", "collection": name, "shard": shard, "node": node_names[0],
                "wt": "json"}).raise_for_status()
        assert all(r["leader"] == "true" for rs in cluster_shards(settings, name).values() for r in rs
                   if r["base_url"] == node2), cluster_shards(settings, name)
        # The copies on node 1 start by recovering from the leaders: only an active replica can take
        # over, so the kill waits for them (under load that takes seconds).
        deadline = time.monotonic() + 60
        while not_active(settings) and time.monotonic() < deadline:
            time.sleep(0.25)
        assert not not_active(settings), not_active(settings)
        run_kill(spark, settings, table, node1, node2, name, single_name, tmp_path)
    finally:
        for collection in (name, single_name):
            requests.get(admin, timeout=120, params={"action": "DELETE", "name": collection, "wt": "json"})


def run_kill(spark, settings, table, node1, node2, name, single_name, tmp_path) -> None:
    """The test's body, in its collections (made and deleted by the test)."""
    victim = f"{node2}/{name}"
    single_lines = write_tag_output(tmp_path / "single", {0: 150})[0]
    requests.post(f"{node1}/{single_name}/update", params={"commit": "true"}, json=to_solr_docs(single_lines),
                  timeout=60).raise_for_status()
    survivor_docs = sum(replica["count"] for replicas in replica_contents(settings, single_name).values()
                        for replica in replicas if replica["node"] == node1)
    assert 0 < survivor_docs < len(single_lines)

    blocks = 8
    lines = write_tag_output(tmp_path / "tags", {block: 250 for block in range(blocks)}, parts=2, seed=4)
    expected = sorted(str(line["id"]) for block in lines.values() for line in block)
    ledger_file = tmp_path / "tags" / "_index_ledger.json"
    flags = ["--input", str(tmp_path / "tags"), "--solr", victim, "--parallelism", "2", "--blocks-per-commit", "2",
             "--batch-size", "100", "--retries", "6", "--backoff", "1", "--timeout", "30"]
    outcome = {}
    runner = threading.Thread(target=lambda: outcome.setdefault(
        "summary", index_pipeline.run(spark, index.parse_args(flags))))
    with Searchers(victim, 8, tmp_path / "no-model") as searchers:
        runner.start()
        wait_for_ledger(ledger_file, victim, 2, timeout=180)  # kill the node once the first wave is verified
        killed = time.monotonic()
        os.killpg(supervisor.running_pid(settings, "solr-cloud-2"), 9)
        runner.join(timeout=300)
        time.sleep(0.5)  # a few searches after the run, node still gone
    first = outcome["summary"]
    resumed = None
    if first.exit_code != 0:
        print(first.text())
        # What docs/operations.md tells the user: run it again with --resume, giving a live node too
        # (the ledger is keyed by the first node, so the blocks verified before the kill are kept).
        both = [*flags[:3], f"{victim},{node1}/{name}", *flags[4:], "--resume"]
        resumed = index_pipeline.run(spark, index.parse_args(both))
        assert resumed.exit_code == 0, resumed.text()
        assert len(resumed.skipped) >= 2, resumed.text()

    answers = searchers.answers
    failed = [(t - killed, status) for t, status, _, _ in answers if status != 200]
    before = [a for a in answers if a[0] < killed]
    print(f"searches: {len(answers)}, failed {len(failed)} ({failed[:5]}), index run: "
          f"{'finished' if resumed is None else 'one --resume'} {time.monotonic() - killed:.1f} s after the kill")
    assert len(answers) > 50 and len(failed) <= 0.01 * len(answers), failed
    assert all(t < 15 for t, _ in failed), failed
    assert not any(partial for _, _, partial, _ in before)
    assert all(r["leader"] == "true" for rs in cluster_shards(settings, name).values() for r in rs
               if r["base_url"] == node1), "node 1 did not take over leading every shard"
    assert any(partial for t, _, partial, _ in answers if t >= killed), "the failover was never flagged"

    # Node 2 is still down. A web app started now, with the two nodes configured (the dead one
    # first), answers whole from node 1 and flags the failover; "single" flags its missing shard.
    app = create_app({"SOLR_URL": f"{victim},{node1}/{name}", "MODEL_DIR": str(tmp_path),
                      "TESTING": True}).test_client()
    whole = app.get("/api/search", query_string={"rows": 0}).get_json()
    assert (whole["numFound"], whole["partial"]) == (len(expected), True)
    assert app.get("/api/search", query_string={"rows": 0}).get_json()["partial"] is False  # stays on node 1
    single = create_app({"SOLR_URL": f"{node1}/{single_name}", "MODEL_DIR": str(tmp_path),
                         "TESTING": True}).test_client()
    answer = single.get("/api/search", query_string={"rows": 0}).get_json()
    assert (answer["partial"], answer["numFound"]) == (True, survivor_docs)

    returned = time.monotonic()
    supervisor.start(settings, table["solr-cloud-2"])
    answering = time.monotonic()
    while not_active(settings) and time.monotonic() - answering < 90:
        time.sleep(0.25)
    recovery = time.monotonic() - answering
    print(f"replicas active {recovery:.1f} s after the node answered ({time.monotonic() - returned:.1f} s after start)")
    assert recovery < 60, not_active(settings)
    contents = replica_contents(settings, name)
    union = []
    for shard, replicas in contents.items():
        assert len(replicas) == 2, replicas
        assert (replicas[0]["count"], replicas[0]["sha1"]) == (replicas[1]["count"], replicas[1]["sha1"]), shard
        union += replicas[0]["ids"]
    assert sorted(union) == expected  # every document, each once


# --- jobs/tag.py with a node killed: the shared input and its uninterrupted output ------------------------

TAG_IMAGES, TAG_BLOCK = 2000, 100  # 20 blocks, one task each


@pytest.fixture(scope="module")
def tag_inputs(tmp_path_factory, cifar_sample):
    """A small real forest (scikit-learn on 2,000 CIFAR training images) and 2,000 test images as one
    Tiny-format shard; with the output of the job's own block code run here, without Spark."""
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
    make_sample(Storage(), data.test.pixels[:TAG_IMAGES], data.test.labels[:TAG_IMAGES], str(shards))
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


def _untimed(value):
    """A JSON value without its timings (the one thing that differs between two runs of the same input)."""
    if isinstance(value, dict):
        return {k: _untimed(v) for k, v in value.items() if k not in ("seconds", "images_per_second")}
    return value


def tag_output(folder, files=None) -> dict[str, object]:
    """A tag output (local folder, or hdfs:// through ``files``) as comparable data: every file's text
    by relative path, its JSON files (manifest, _run.json, each block's counts) without timings."""
    from tinytags.core.contract import MANIFEST_NAME

    if files is None:
        texts = {str(p.relative_to(folder)): p.read_text() for p in sorted(folder.rglob("*")) if p.is_file()}
    else:
        texts = {f.path[len(folder) + 1:]: files.read_bytes(f.path).decode() for f in files.walk(folder)}
    manifest = _untimed(json.loads(texts.pop(MANIFEST_NAME)))
    return {"files": {name: _untimed(json.loads(text)) if name.endswith(".json") else text
                      for name, text in sorted(texts.items())}, "manifest": manifest}


def submit(script, *args, master: str):
    """bin/spark-submit of a job, running in the background (the venv's pyspark and Python)."""
    import subprocess

    env = {k: v for k, v in os.environ.items() if k not in ("SPARK_HOME", "PYSPARK_PYTHON", "PYSPARK_DRIVER_PYTHON")}
    command = [str(ROOT / "bin" / "spark-submit"), "--master", master, "--conf", "spark.ui.enabled=false",
               "--conf", "spark.executor.memory=1g", str(script), *args]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT)


def wait_for_blocks(count_done, count: int, process, timeout: float = 120) -> int:
    """Wait until the job has moved ``count`` finished block folders into place; returns how many."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        done = count_done()
        if done >= count:
            return done
        time.sleep(0.02)
    output = process.communicate()[0] if process.poll() is not None else ""
    pytest.fail(f"the job did not reach {count} blocks (exit code {process.poll()}): {output[-2000:]}")


def lost_tasks(log: str) -> int:
    """How many task attempts the Spark driver logged as lost (failed and retried)."""
    return sum("Lost task" in line for line in log.splitlines())


# --- a Spark standalone worker killed while jobs/tag.py runs --------------------------------------------


@pytest.fixture()
def shared_spark(restores):
    """The shared stack's Spark master and workers (started here if down, then stopped again). The
    test may kill a worker: it is launched again at once, and by the module's end the master counts
    every worker alive."""
    settings = stack_settings()
    table = [s for s in base_services(settings) if s.group == "spark"]
    master_ui = f"http://{LOOPBACK}:{settings.spark_ui_port}"
    started: list[str] = []
    try:
        list(supervisor.up(settings, table, started))
        yield settings
    finally:
        for service in table:  # launched now, awaited by ``restores``
            if supervisor.running_pid(settings, service.name) is None:
                supervisor.launch(settings, service)

        def whole_again():
            try:
                restore(settings, table, lambda: alive_workers(master_ui) == settings.spark_workers)
            finally:
                list(supervisor.down(settings, [s for s in table if s.name in started]))

        restores.append(whole_again)


@pytest.mark.integration
@pytest.mark.slow
def test_a_spark_worker_killed_mid_tag_changes_nothing_in_the_output(shared_spark, tag_inputs, tmp_path):
    """kill -9 one of the two standalone workers (its executor with it) after the job's first blocks:
    the job finishes on the other, with the output and manifest of an uninterrupted run."""
    settings = shared_spark
    model, shards, reference = tag_inputs
    output = tmp_path / "tags"
    began = time.monotonic()
    job = submit(ROOT / "jobs" / "tag.py", "--model", str(model), "--input", str(shards), "--output", str(output),
                 "--block-size", str(TAG_BLOCK), master=settings.spark_master)
    done_at_kill = wait_for_blocks(lambda: len(list(output.glob("block=*"))), 3, job)
    killed = time.monotonic()
    os.killpg(supervisor.running_pid(settings, "spark-worker-1"), 9)
    log, _ = job.communicate(timeout=300)
    blocks = TAG_IMAGES // TAG_BLOCK
    print(f"worker killed after {done_at_kill} of {blocks} blocks, {killed - began:.1f} s into the job; "
          f"job {time.monotonic() - began:.1f} s, {lost_tasks(log)} task attempts lost")
    assert job.returncode == 0, log[-3000:]
    assert done_at_kill < blocks
    assert tag_output(output) == reference
    assert "lost" in log.lower() or "removed" in log.lower(), "the driver never saw the worker go"


# --- an HDFS DataNode killed while jobs/tag.py reads and writes HDFS ------------------------------------


@pytest.fixture(scope="module", autouse=True)
def private_hdfs(tmp_path_factory):
    """An HDFS of our own from the stack's table (replicated_hdfs_services): a NameNode (replication 2,
    a silent DataNode stale after 3 s) and two DataNodes, each its own process. Launched when the
    module starts, so that its three JVMs come up while the Solr and Spark tests run; calling the
    fixture's value waits until they answer. Stopped when the module ends."""
    stack = tmp_path_factory.mktemp("node-loss-hdfs") / "stack"
    settings = stack_settings(stack_dir=stack, hdfs_rpc_port=_free_port(), hdfs_http_port=_free_port(),
                              hdfs_heap="512m")
    table = replicated_hdfs_services(settings, [(_free_port(), _free_port(), _free_port()) for _ in range(2)])
    try:
        waits = [supervisor.launch(settings, service)[0] for service in table]  # the DataNodes retry their NameNode

        def ready():
            for finish in waits:
                finish()
            return settings, {s.name: s for s in table if s.name != "hdfs"}

        yield ready
    finally:
        list(supervisor.down(settings, table))


def block_nodes(settings, path: str) -> set[str]:
    """The DataNodes (data address host:port) holding a file's blocks, as the NameNode lists them."""
    answer = requests.get(f"{settings.namenode_http}/webhdfs/v1{path}", timeout=10,
                          params={"op": "GETFILEBLOCKLOCATIONS", "user.name": "tinytags"}).json()
    return {name for block in answer["BlockLocations"]["BlockLocation"] for name in block["names"]}


def one_replica_files(settings, datanodes) -> dict[str, str]:
    """datanode name -> a file written with one replica that sits on it (files until each has one)."""
    found = {}
    for n in range(40):
        path = f"/lonely/file-{n}"
        requests.put(f"{settings.namenode_http}/webhdfs/v1{path}", timeout=30, allow_redirects=True,
                     params={"op": "CREATE", "replication": 1, "user.name": "tinytags", "overwrite": "true"},
                     data=b"x" * 1000).raise_for_status()
        for name, service in datanodes.items():
            if block_nodes(settings, path) == {f"{LOOPBACK}:{service.ports[0]}"}:
                found.setdefault(name, path)
        if len(found) == len(datanodes):
            return found
    pytest.fail(f"no file with its one replica on each DataNode: {found}")


@pytest.mark.integration
@pytest.mark.slow
def test_a_datanode_killed_mid_tag_changes_nothing_and_a_lost_only_replica_is_named(private_hdfs, tag_inputs,
                                                                                      tmp_path):
    """Two DataNodes, replication 2: kill -9 one while jobs/tag.py reads its shard from HDFS and writes
    its output there, and while a large read streams from it; the job finishes with the output of an
    uninterrupted run, and the read goes on from the other DataNode with the file's exact bytes. A
    file kept with one replica, on the killed DataNode, then fails to read with an error that names it."""
    from tinytags.io.shard_files import upload
    from tinytags.io.storage import FILE_ERRORS, Storage

    settings, datanodes = private_hdfs()
    model, shards, reference = tag_inputs  # the output names no paths: the local run's is the expectation
    files = Storage(webhdfs=settings.namenode_http)
    hdfs = settings.hdfs_uri
    upload(files, [str(shards)], f"{hdfs}/in/tiny")
    big = os.urandom(48 << 20)  # more than the sockets can buffer (tcp_rmem + tcp_wmem maxima): the kill cuts it
    files.write(f"{hdfs}/big.bin", big)
    lonely = one_replica_files(settings, datanodes)

    output = f"{hdfs}/tags"
    began = time.monotonic()
    job = submit(ROOT / "jobs" / "tag.py", "--model", str(model), "--input", f"{hdfs}/in/tiny", "--output", output,
                 "--block-size", str(TAG_BLOCK), "--webhdfs", settings.namenode_http, master="local[2,4]")
    wait_for_blocks(lambda: sum(e.name.startswith("block=") for e in files.list(output))
                    if files.status(output) else 0, 3, job)
    with files.open_range(f"{hdfs}/big.bin", 0, None) as reader:
        head = reader.read(1 << 20)
        streaming = int(reader._response.url.split("/")[2].rsplit(":", 1)[1])  # the DataNode's HTTP port
        victim = next(name for name, service in datanodes.items() if service.ports[1] == streaming)
        killed = time.monotonic()
        os.killpg(supervisor.running_pid(settings, victim), 9)
        rest = reader.read()
        resumed_from = reader._excluded
    log, _ = job.communicate(timeout=300)
    print(f"DataNode killed {killed - began:.1f} s into the job; job {time.monotonic() - began:.1f} s, "
          f"{lost_tasks(log)} task attempts lost; the big read left out {resumed_from}")
    assert job.returncode == 0, log[-3000:]
    assert tag_output(output, files) == reference
    assert head + rest == big
    assert resumed_from == [f"{LOOPBACK}:{datanodes[victim].ports[0]}"]  # it went on from the other DataNode

    with pytest.raises(FILE_ERRORS) as error:
        files.read_bytes(f"{hdfs}{lonely[victim]}")
    assert lonely[victim] in str(error.value), str(error.value)
    assert live_datanodes(settings.namenode_http)  # the NameNode still serves the other DataNode
