"""bench/node_loss: one SolrCloud node killed (kill -9) while the indexer loads and clients search.

    .venv/bin/python -m bench.node_loss [--docs 200000] [--clients 8] [--types nrt,tlog]

On a private SolrCloud (ZooKeeper + 2 Solr nodes on free ports, from deploy/stack's own services
table and collection code, 2 shards x 2 replicas):

1. indexing speed of each replica type (--types): the same synthetic tag output (bench/index.py's)
   loaded by jobs/index.py into a fresh collection of that type, nothing killed: docs/s wall;
2. the fault, with the first type: the same load, the indexer and --clients search threads (the
   web API's Flask app) pointed at node 2, which is killed once the first wave is verified. It
   prints the failover window (first to last failed search after the kill) and the errors in it,
   the failed share, whether the run needed --resume, documents lost or twice, and after node 2
   is started again, the seconds until every replica is active and whether both replicas of each
   shard hold the same ids (count and sha1 per replica).

The original approach (replicationFactor=1) is printed beside it: the killed node's shard is
offline, so its documents are missing from every search until the node returns.
"""

from __future__ import annotations

import argparse
import hashlib
import os
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
    parser.add_argument("--docs", type=int, default=200_000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--types", default="nrt,tlog", help="replica types to time (the first takes the fault)")
    options = parser.parse_args(argv)
    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    print(f"machine: {machine()}", flush=True)
    scratch = Path(tempfile.mkdtemp(prefix="bench-node-loss-"))
    root = scratch / "tags"
    write_tag_output(root, options.docs)
    spark = (SparkSession.builder.master("local[2]").appName("bench-node-loss")
             .config("spark.ui.enabled", "false").getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    types = options.types.split(",")
    try:
        for kind in types:
            settings = stack_settings(stack_dir=scratch / f"stack-{kind}", zk_port=free_port(),
                                      cloud_ports=(free_port(), free_port()), cloud_replica_type=kind)
            table = cloud_services(settings)
            try:
                list(supervisor.up(settings, table, []))
                ensure_cloud_collection(settings)
                node1, node2 = (f"http://127.0.0.1:{port}/solr/tinytags" for port in settings.cloud_ports)
                began = time.monotonic()
                summary = index(spark, root, node1)
                seconds = time.monotonic() - began
                print(f"{kind.upper()} replicas: {summary.docs:,} docs in {seconds:.1f} s wall, "
                      f"{summary.docs / seconds:,.0f} docs/s (load {os.getloadavg()[0]:.1f})", flush=True)
                if kind == types[0]:
                    fault(spark, settings, {s.name: s for s in table}, root, node2, options)
            finally:
                list(supervisor.down(settings, table))
    finally:
        spark.stop()
    return 0


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


if __name__ == "__main__":
    sys.exit(main())
