"""bench/node_loss: one node killed (kill -9) mid-run: a SolrCloud node while the indexer loads and
clients search, a Spark worker or an HDFS DataNode while jobs/tag.py runs.

    .venv/bin/python -m bench.node_loss [--scenario index,solr,worker,datanode] [--docs 200000]
        [--clients 8] [--types nrt,tlog] [--images 100000] [--block-size 1000] [--kill-at 0.5]

Every scenario runs on private processes (free ports, from deploy/stack's own services table):

- index: indexing speed of each replica type (--types) on a SolrCloud of ZooKeeper + 2 Solr nodes
  (2 shards x 2 replicas): the same synthetic tag output (bench/index.py's) loaded by jobs/index.py
  into a fresh collection of that type, nothing killed: docs/s wall;
- solr: with the first type, the same load, the indexer and --clients search threads (the web
  API's Flask app) pointed at node 2, which is killed once the first wave is verified. It prints the
  failover window (first to last failed search after the kill) and the errors in it, the failed
  share, whether the run needed --resume, documents lost or twice, and after node 2 is started
  again, the seconds until every replica is active and whether both replicas of each shard hold the
  same ids (count and sha1 per replica). The original approach (replicationFactor=1) is printed
  beside it: the killed node's shard is offline until the node returns;
- worker: jobs/tag.py (spark-submit; a scikit-learn forest fitted on the sample, --images Tiny-format
  images cycled from its test images, local disk) on a Spark master with two 1-core workers,
  uninterrupted, then again with worker 1 killed once --kill-at of the blocks are done;
- datanode: the same job on local[2,4] with its shards and output on an HDFS of two DataNodes
  (replication 2), uninterrupted, then again with DataNode 2 killed at the same point.

The tag scenarios print both wall times side by side, their ratio, the task attempts Spark lost and
retried, and whether the two outputs are identical (every file's sha1, timings left out). Losing
one of two 1-core workers halves the job's cores for the rest of the run: killed at half the
blocks, that alone makes the run about 1.5x as long once start-up is small beside the work.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

from bench.common import machine
from bench.index import write_tag_output
from deploy.stack import supervisor
from deploy.stack.services import cloud_services
from deploy.stack.solr_cloud import cluster_shards, ensure_cloud_collection
from tinytags.settings import stack_settings


def free_port() -> int:
    """A port nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def index(spark, root: Path, solr: str, *flags: str):
    """jobs/index.py's run with its own flags (what users run)."""
    from jobs.index import parse_args
    from tinytags.pipeline.index import run

    return run(spark, parse_args(["--input", str(root), "--solr", solr, "--parallelism", "2",
                                  "--blocks-per-commit", "4", *flags]))


def replicas_equal(settings) -> tuple[bool, list[str]]:
    """Whether both replicas of every shard hold the same ids; the ids of the first replica of each."""
    ids_all, equal = [], True
    for replicas in cluster_shards(settings).values():
        sums = []
        for replica in replicas:
            body = requests.get(f"{replica['base_url']}/{replica['core']}/select", timeout=300, params={
                "q": "*:*", "distrib": "false", "fl": "id", "rows": 10_000_000, "wt": "json"}).json()
            ids = sorted(doc["id"] for doc in body["response"]["docs"])
            sums.append((len(ids), hashlib.sha1("\n".join(ids).encode()).hexdigest()))
            if len(sums) == 1:
                ids_all += ids
        equal &= len(set(sums)) == 1
    return equal, ids_all


def searchers(url: str, clients: int, answers: list, stop: threading.Event) -> list[threading.Thread]:
    """Threads searching through the web API (one Flask app, as one gunicorn worker) until ``stop``."""
    from webapp import create_app

    app = create_app({"SOLR_URL": url, "MODEL_DIR": tempfile.mkdtemp(), "TESTING": True,
                      "SEARCH_CACHE_SECONDS": 0, "FACET_CACHE_SECONDS": 0})

    def search(n: int) -> None:
        client = app.test_client()
        while not stop.is_set():
            began = time.monotonic()
            response = client.get("/api/search", query_string={"tags": ["cat", "dog", "ship", ""][n % 4], "rows": 10})
            body = response.get_json(silent=True) or {}
            answers.append((began, response.status_code, bool(body.get("partial")), body.get("error")))
            time.sleep(0.05)

    return [threading.Thread(target=search, args=(n,), daemon=True) for n in range(clients)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.node_loss", description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", default="index,solr,worker,datanode",
                        help="what to run (comma separated): index (replica types' speed), solr, worker, datanode")
    parser.add_argument("--docs", type=int, default=200_000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--types", default="nrt,tlog", help="replica types to time (the first takes the fault)")
    parser.add_argument("--images", type=int, default=100_000, help="images the tag job reads (worker, datanode)")
    parser.add_argument("--block-size", type=int, default=1000, help="images per tag block (worker, datanode)")
    parser.add_argument("--kill-at", type=float, default=0.5, help="share of the tag blocks done at the kill")
    options = parser.parse_args(argv)
    scenarios = options.scenario.split(",")
    unknown = set(scenarios) - {"index", "solr", "worker", "datanode"}
    if unknown:
        parser.error(f"unknown scenario(s) {sorted(unknown)}")
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    print(f"machine: {machine()}", flush=True)
    scratch = Path(tempfile.mkdtemp(prefix="bench-node-loss-"))
    try:
        if "index" in scenarios or "solr" in scenarios:
            solr_scenarios(scratch, options, scenarios)
        if "worker" in scenarios or "datanode" in scenarios:
            tag_scenarios(scratch, options, scenarios)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)  # the tag scenarios' shards take gigabytes
    return 0


def solr_scenarios(scratch: Path, options, scenarios: list[str]) -> None:
    """NRT vs TLOG indexing speed (index), and the SolrCloud node killed (solr, with the first type)."""
    from pyspark.sql import SparkSession

    root = scratch / "tags"
    write_tag_output(root, options.docs)
    spark = (SparkSession.builder.master("local[2]").appName("bench-node-loss")
             .config("spark.ui.enabled", "false").getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    types = options.types.split(",") if "index" in scenarios else options.types.split(",")[:1]
    try:
        for kind in types:
            settings = stack_settings(stack_dir=scratch / f"stack-{kind}", zk_port=free_port(),
                                      cloud_ports=(free_port(), free_port()), cloud_replica_type=kind)
            table = cloud_services(settings)
            try:
                list(supervisor.up(settings, table, []))
                ensure_cloud_collection(settings)
                node1, node2 = (f"http://127.0.0.1:{port}/solr/tinytags" for port in settings.cloud_ports)
                if "index" in scenarios:
                    began = time.monotonic()
                    summary = index(spark, root, node1)
                    seconds = time.monotonic() - began
                    print(f"{kind.upper()} replicas: {summary.docs:,} docs in {seconds:.1f} s wall, "
                          f"{summary.docs / seconds:,.0f} docs/s (exit code {summary.exit_code}, "
                          f"load {os.getloadavg()[0]:.1f})", flush=True)
                if kind == types[0] and "solr" in scenarios:
                    fault(spark, settings, {s.name: s for s in table}, root, node2, options)
            finally:
                list(supervisor.down(settings, table))
    finally:
        spark.stop()


def fault(spark, settings, table, root: Path, victim: str, options) -> None:
    """Re-index with node 2 killed mid-run under search load; print the figures (module docstring)."""
    requests.get(f"{settings.solr_cloud_root}/admin/collections", timeout=300, params={
        "action": "DELETE", "name": "tinytags", "wt": "json"}).raise_for_status()
    ensure_cloud_collection(settings)
    ledger_file = root / "_index_ledger.json"
    ledger_file.unlink(missing_ok=True)
    flags = ("--retries", "6", "--backoff", "1", "--timeout", "60")
    answers, stop, outcome = [], threading.Event(), {}
    threads = searchers(victim, options.clients, answers, stop)
    for thread in threads:
        thread.start()
    runner = threading.Thread(target=lambda: outcome.setdefault("summary", index(spark, root, victim, *flags)))
    began = time.monotonic()
    runner.start()
    while runner.is_alive() and not (ledger_file.exists() and ledger_file.read_text().count('"docs"') >= 4):
        time.sleep(0.05)
    killed = time.monotonic()
    os.killpg(supervisor.running_pid(settings, "solr-cloud-2"), 9)
    runner.join()
    wall = time.monotonic() - began
    stop.set()
    for thread in threads:
        thread.join()
    first = outcome["summary"]
    resumed = None if first.exit_code == 0 else index(spark, root, victim, "--resume", *flags)
    after = [a for a in answers if a[0] >= killed]
    failed = [(round(a[0] - killed, 1), a[1], (a[3] or "")[:120]) for a in after if a[1] != 200]
    window = f"{failed[0][0]}-{failed[-1][0]} s after the kill" if failed else "none"
    print(f"kill -9 of node 2 {killed - began:.1f} s into the run; index run {wall:.1f} s wall, "
          f"{'finished without --resume' if resumed is None else 'needed one --resume'}", flush=True)
    print(f"searches: {len(answers):,} ({len(after):,} after the kill), failed {len(failed)} "
          f"({100 * len(failed) / max(len(answers), 1):.2f}%), window {window}; "
          f"flagged partial after the kill: {sum(a[2] for a in after)}", flush=True)
    for item in failed[:5]:
        print(f"  failed: {item}")
    returned = time.monotonic()
    supervisor.start(settings, table["solr-cloud-2"])
    answering = time.monotonic()
    while not all(r["state"] == "active" for rs in cluster_shards(settings).values() for r in rs):
        time.sleep(0.25)
    active = time.monotonic()
    equal, ids = replicas_equal(settings)
    lost = options.docs - len(set(ids))
    print(f"node 2 back: answering after {answering - returned:.1f} s, every replica active "
          f"{active - answering:.1f} s later; replicas equal: {equal}; documents lost {lost}, "
          f"twice {len(ids) - len(set(ids))}", flush=True)
    print("original approach (replicationFactor=1): the killed node's shard is offline, about half "
          "the documents missing from every search until it returns", flush=True)


# --- jobs/tag.py with a Spark worker or an HDFS DataNode killed ----------------------------------------


def tag_scenarios(scratch: Path, options, scenarios: list[str]) -> None:
    """Each of worker and datanode: jobs/tag.py run uninterrupted, then again with one node killed once
    --kill-at of its blocks are done; wall times side by side, and whether the outputs are equal."""
    from bench.tag import SAMPLE, fit_model
    from tinytags.io import cifar_files
    from tinytags.io.shard_files import make_sample
    from tinytags.io.storage import Storage

    data = cifar_files.read_local(SAMPLE)
    model = scratch / "model"
    fit_model(data, model)
    shards = scratch / "tiny"
    make_sample(Storage(), data.test.pixels, None, str(shards), count=options.images, shard_size=50_000)
    blocks = -(-options.images // options.block_size)
    print(f"tag job: {options.images:,} images in {blocks} blocks of {options.block_size:,}, "
          f"node killed once {options.kill_at:.0%} of the blocks are done", flush=True)
    if "worker" in scenarios:
        worker_scenario(scratch, model, shards, blocks, options)
    if "datanode" in scenarios:
        datanode_scenario(scratch, model, shards, blocks, options)


def run_tag(model, shards: str, output: str, options, master: str, *flags: str, kill=None):
    """One spark-submit of jobs/tag.py; ``kill`` = (blocks done before it, how many are done, the kill).
    Returns (wall seconds, seconds into the run of the kill, task attempts and executors the driver
    logged lost); its
    output goes to bench-node-loss-<output folder name>.log in the temp folder."""
    import subprocess

    from bench.tag import ROOT, spark_env

    spark_home, env = spark_env()
    command = [str(spark_home / "bin" / "spark-submit"), "--master", master, "--driver-memory", "2g",
               "--conf", "spark.ui.enabled=false", "--conf", "spark.executor.memory=1g",
               str(ROOT / "jobs" / "tag.py"), "--model", str(model), "--input", shards, "--output", output,
               "--block-size", str(options.block_size), *flags]
    began = time.monotonic()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(process.stdout), daemon=True)
    reader.start()
    killed_at = None
    if kill:
        needed, done, do_kill = kill
        while process.poll() is None and done() < needed:
            time.sleep(0.05)
        killed_at = time.monotonic() - began
        do_kill()
    process.wait()
    wall = time.monotonic() - began
    reader.join()
    Path(tempfile.gettempdir(), f"bench-node-loss-{Path(output).name}.log").write_text("".join(lines))
    if process.returncode:
        raise SystemExit(f"the tag job failed:\n{''.join(lines)[-4000:]}")
    return wall, killed_at, sum("Lost task" in line or "Lost executor" in line for line in lines)


def output_digest(files, folder: str) -> dict[str, str]:
    """Relative path -> sha1 of each file of a tag output; JSON files without their timings."""
    def untimed(value):
        if isinstance(value, dict):
            return {k: untimed(v) for k, v in value.items() if k not in ("seconds", "images_per_second")}
        return value

    digest = {}
    for found in files.walk(folder):
        data = files.read_bytes(found.path)
        if found.path.endswith(".json"):
            data = json.dumps(untimed(json.loads(data)), sort_keys=True).encode()
        digest[found.path[len(folder.rstrip("/")) + 1:]] = hashlib.sha1(data).hexdigest()
    return digest


def side_by_side(what: str, plain: float, faulted: tuple, equal: bool) -> None:
    wall, killed_at, lost = faulted
    print(f"{what}: uninterrupted {plain:.1f} s; killed {killed_at:.1f} s in, job {wall:.1f} s = "
          f"{wall / plain:.2f}x; {lost} task attempts or executors lost; outputs identical: {equal} "
          f"(load {os.getloadavg()[0]:.1f})", flush=True)


def worker_scenario(scratch: Path, model: Path, shards: Path, blocks: int, options) -> None:
    """A private Spark master and two 1-core workers; the second run loses worker 1 (and its executor)."""
    from deploy.stack.services import base_services
    from tinytags.io.storage import Storage

    settings = stack_settings(stack_dir=scratch / "stack-spark", spark_port=free_port(),
                              spark_ui_port=free_port(), worker_memory="2g")
    table = [s for s in base_services(settings) if s.group == "spark"]
    files = Storage()
    try:
        list(supervisor.up(settings, table, []))
        plain, _, _ = run_tag(model, str(shards), str(scratch / "worker-a"), options, settings.spark_master)
        faulted = run_tag(model, str(shards), str(scratch / "worker-b"), options, settings.spark_master, kill=(
            int(blocks * options.kill_at), lambda: len(list((scratch / "worker-b").glob("block=*"))),
            lambda: os.killpg(supervisor.running_pid(settings, "spark-worker-1"), 9)))
        equal = output_digest(files, str(scratch / "worker-a")) == output_digest(files, str(scratch / "worker-b"))
        side_by_side("Spark worker kill -9 (2 workers x 1 core)", plain, faulted, equal)
    finally:
        list(supervisor.down(settings, table))


def datanode_scenario(scratch: Path, model: Path, shards: Path, blocks: int, options) -> None:
    """A private HDFS of two DataNodes (replication 2), shards uploaded, output written there, the job on
    local[2,4] (a task may fail 4 times); the second run loses DataNode 2."""
    from deploy.stack.services import replicated_hdfs_services
    from tinytags.io.shard_files import upload
    from tinytags.io.storage import Storage

    settings = stack_settings(stack_dir=scratch / "stack-hdfs", hdfs_rpc_port=free_port(),
                              hdfs_http_port=free_port(), hdfs_heap="1g")
    table = replicated_hdfs_services(settings, [(free_port(), free_port(), free_port()) for _ in range(2)])
    files = Storage(webhdfs=settings.namenode_http)
    hdfs = settings.hdfs_uri
    try:
        list(supervisor.up(settings, table, []))
        upload(files, [str(shards)], f"{hdfs}/tiny")
        flags = ("--webhdfs", settings.namenode_http)
        plain, _, _ = run_tag(model, f"{hdfs}/tiny", f"{hdfs}/tags-a", options, "local[2,4]", *flags)

        def done() -> int:
            return sum(e.name.startswith("block=") for e in files.list(f"{hdfs}/tags-b")) \
                if files.status(f"{hdfs}/tags-b") else 0

        faulted = run_tag(model, f"{hdfs}/tiny", f"{hdfs}/tags-b", options, "local[2,4]", *flags, kill=(
            int(blocks * options.kill_at), done, lambda: os.killpg(supervisor.running_pid(settings, "datanode-2"), 9)))
        equal = output_digest(files, f"{hdfs}/tags-a") == output_digest(files, f"{hdfs}/tags-b")
        side_by_side("HDFS DataNode kill -9 (2 DataNodes, replication 2, local[2,4])", plain, faulted, equal)
    finally:
        list(supervisor.down(settings, table))


if __name__ == "__main__":
    sys.exit(main())
