"""bench/index: docs/s loading a tag output with its pixels into Solr, three ways, side by side.

    .venv/bin/python -m bench.index [--docs 200000] [--sample 2000] [--parallelism 2] \\
        [--solr http://127.0.0.1:8983/solr] [--master local[2]] [--vector-formats hnsw,flat,flat+compact]

1. ours: jobs/index.py (its ``run``, on a SparkSession with --master; wall time of the whole run:
   planning, every wave, commits and count checks);
2. the original approach: one HTTP POST per document, a new connection each, on --sample documents;
3. Solr's own bulk JSON load: the same documents, prebuilt as Solr JSON (one file per block, not
   timed), POSTed file by file to /update in --parallelism streams, then one commit; and
   "bulk+prep", the same timed from the tag lines (building the files counted too).

CPU milliseconds per document are printed for the client side (this process and its children:
the Spark JVM and Python workers) and for Solr (when its pid file is known), and from them the
docs/s the machine would reach if all its cores did only this: figures that do not depend on
what else runs on the shared machine, unlike docs/s.

The tag output is synthetic (jobs/tag.py's contract: OUT/block=<n>/part-*, _manifest.json) with
smooth random 32x32 images, so the similarity vectors are as varied as real ones. Each method gets
a fresh core made from the `tinytags` configset through CoreAdmin, unloaded afterwards. The machine
is shared: the load average before and after is printed, since other work skews the figures.

--vector-formats runs the bulk load and ours once per vector option, each into cores made with
that option's properties (docs/operations.md, "Vector options"), and prints them side by side
with disk bytes per document: FORMAT is hnsw (Solr's own), hnsw-int8 or flat (tinytags.vector.format,
read by deploy/solr's codec factory: the Solr at --solr must run it), and FORMAT+compact also
stores the vector as vector_f32 instead of 48 stored values.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import requests

from deploy.stack.supervisor import pid_file as stack_pid_file
from tinytags.core.contract import CLASSES, MANIFEST_NAME, MIN_AGREEMENT, block_folder
from tinytags.core.solr_docs import to_solr_docs
from tinytags.settings import env, stack_settings

ROOT = Path(__file__).resolve().parent.parent

BLOCK_SIZE = 20_000
MODEL = "bench-model"


def smooth_images(rng: np.random.Generator, n: int) -> np.ndarray:
    """n CIFAR-layout records: an 8x8 random colour layout blown up to 32x32, plus pixel noise."""
    coarse = rng.integers(0, 256, (n, 3, 8, 8), dtype=np.int16)
    image = np.repeat(np.repeat(coarse, 4, axis=2), 4, axis=3) + rng.integers(-20, 21, (n, 3, 32, 32), dtype=np.int16)
    return np.clip(image, 0, 255).astype(np.uint8).reshape(n, 3072)


def real_images(path: Path, n: int) -> np.ndarray:
    """n CIFAR-layout records made from the archive's real training images: each image once, then
    mirrored, then again with a little pixel noise per further pass, so no two records are equal and
    similarity neighbours are as structured as real photos' are (random pixels have no neighbours
    worth the name: HNSW recall on them says nothing about real use)."""
    from tinytags.io.cifar_files import read_local

    base = read_local(path).train.pixels
    rng = np.random.default_rng(11)
    out = np.empty((n, base.shape[1]), np.uint8)
    for start in range(0, n, len(base)):
        take = min(len(base), n - start)
        chunk = base[:take].reshape(take, 3, 32, 32)
        passes = start // len(base)
        if passes % 2:
            chunk = chunk[:, :, :, ::-1]
        chunk = chunk.reshape(take, -1).astype(np.int16)
        if passes >= 2:
            chunk += rng.integers(-4, 5, chunk.shape, dtype=np.int16)
        out[start:start + take] = np.clip(chunk, 0, 255).astype(np.uint8)
    return out


def write_tag_output(root: Path, docs: int, seed: int = 0, parts: int = 2, images: np.ndarray | None = None) -> dict[int, int]:
    """A tag output of ``docs`` kept images in blocks of BLOCK_SIZE ids (80% kept); -> kept per block.
    Pixels from ``images`` in order, else smooth random images."""
    rng = np.random.default_rng(seed)
    kept_per_block = BLOCK_SIZE * 4 // 5
    blocks, manifest, image_id = {}, {}, 0
    for block in range((docs + kept_per_block - 1) // kept_per_block):
        count = min(kept_per_block, docs - block * kept_per_block)
        ids = np.sort(rng.choice(BLOCK_SIZE, count, replace=False)) + block * BLOCK_SIZE
        done = sum(blocks.values())
        pixels = images[done:done + count] if images is not None else smooth_images(rng, count)
        counts = rng.multinomial(10, [0.1] * 10, size=count)
        labels = counts.argmax(axis=1)
        lines = []
        for row, image_id in enumerate(ids.tolist()):
            votes = int(counts[row, labels[row]])
            lines.append(json.dumps({
                "id": image_id, "block": block, "label": int(labels[row]), "tag": CLASSES[labels[row]],
                "votes": votes, "agreement": votes / 10, "vote_counts": counts[row].tolist(), "model": MODEL,
                "pixels": base64.b64encode(pixels[row].tobytes()).decode(), "shard": image_id // 10_000,
                "offset": image_id % 10_000,
            }))
        folder = root / block_folder(block)
        folder.mkdir(parents=True)
        for part in range(parts):
            (folder / f"part-{part:05d}").write_text("".join(line + "\n" for line in lines[part::parts]))
        blocks[block] = count
        manifest[str(block)] = {"read": BLOCK_SIZE, "kept": count, "dropped": BLOCK_SIZE - count}
    (root / MANIFEST_NAME).write_text(json.dumps({"model": MODEL, "min_agreement": MIN_AGREEMENT, "blocks": manifest}))
    return blocks


class Meter:
    """Wall time and CPU seconds of a timed section: this process and all its descendants (the
    Spark JVM and Python workers: the client side), and Solr's process when its pid is known.
    CPU per document does not depend on what else the shared machine is doing; docs/s does."""

    def __init__(self, solr_pid: int | None):
        self.solr_pid = solr_pid

    @staticmethod
    def _stat(pid: int) -> list[str] | None:
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            return None

    def _cpu(self, pids) -> float:
        ticks = os.sysconf("SC_CLK_TCK")
        total = 0.0
        for pid in pids:
            fields = self._stat(pid)
            if fields:  # utime, stime (fields 14 and 15 of /proc/<pid>/stat)
                total += (int(fields[11]) + int(fields[12])) / ticks
        return total

    def _tree(self) -> list[int]:
        children: dict[int, list[int]] = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                fields = self._stat(int(entry.name))
                if fields:
                    children.setdefault(int(fields[1]), []).append(int(entry.name))
        tree, todo = [], [os.getpid()]
        while todo:
            pid = todo.pop()
            tree.append(pid)
            todo.extend(children.get(pid, []))
        return tree

    def start(self) -> None:
        self.began = time.perf_counter()
        self.client0 = self._cpu(self._tree())
        self.solr0 = self._cpu([self.solr_pid]) if self.solr_pid else None

    def stop(self) -> tuple[float, float, float | None]:
        """-> (seconds, client CPU seconds, Solr CPU seconds or None)"""
        seconds = time.perf_counter() - self.began
        client = self._cpu(self._tree()) - self.client0
        solr = self._cpu([self.solr_pid]) - self.solr0 if self.solr_pid else None
        return seconds, client, solr


def read_lines(root: Path, block: int) -> list[dict]:
    return [json.loads(line) for part in sorted((root / block_folder(block)).glob("part-*"))
            for line in part.read_text().splitlines() if line.strip()]


class BenchCore:
    """A fresh core from the tinytags configset (with these core properties, e.g. the HNSW
    settings), unloaded (and its files deleted) on exit."""

    def __init__(self, solr: str, label: str, properties: dict[str, str] | None = None):
        self.solr = solr.rstrip("/")
        self.name = f"bench_{label}_{uuid.uuid4().hex[:6]}"
        self.url = f"{self.solr}/{self.name}"
        self.properties = properties or {}

    def __enter__(self) -> str:
        answer = requests.get(f"{self.solr}/admin/cores", params={
            "action": "CREATE", "name": self.name, "configSet": "tinytags", "wt": "json",
            **{f"property.{key}": value for key, value in self.properties.items()}}, timeout=120)
        answer.raise_for_status()
        return self.url

    def __exit__(self, *exc) -> None:
        requests.get(f"{self.solr}/admin/cores", params={
            "action": "UNLOAD", "core": self.name, "deleteInstanceDir": "true", "wt": "json"}, timeout=120)


def core_bytes(url: str) -> int:
    """A core's index size on disk, from CoreAdmin STATUS."""
    root, name = url.rsplit("/", 1)
    status = requests.get(f"{root}/admin/cores", params={"action": "STATUS", "core": name, "wt": "json"}, timeout=60)
    return int(status.json()["status"][name]["index"]["sizeInBytes"])


def count(url: str) -> int:
    return requests.get(f"{url}/select", params={"q": "*:*", "rows": 0, "wt": "json"}, timeout=60).json()["response"]["numFound"]


# What /api/similar asks Solr for 10 neighbours (webapp/services.py similar_to_vector): topK=50, rows=11.
RECALL_TOP_K = 50


def knn_recall(root: Path, blocks: dict[int, int], url: str, probes: int, seed: int = 5) -> dict[int, float]:
    """recall@10 of Solr's HNSW k-NN against exact brute-force cosine neighbours over every indexed
    vector (recomputed from the tag lines by the indexer's own code), for topK 10 and RECALL_TOP_K."""
    # Block by block: only ids and float32 vectors stay in memory (at 2M documents the decoded lines
    # with their pixels would be ~15 GB).
    id_parts, vector_parts = [], []
    for block in blocks:
        lines = read_lines(root, block)
        id_parts.append(np.array([line["id"] for line in lines]))
        vector_parts.append(np.array([doc["vector"] for doc in to_solr_docs(lines)], np.float32))
    ids = np.concatenate(id_parts)
    vectors = np.concatenate(vector_parts)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(ids), min(probes, len(ids)), replace=False)
    session = requests.Session()
    found = {10: [], RECALL_TOP_K: []}
    for pick in picks:
        cosine = vectors @ vectors[pick]
        cosine[pick] = -2.0  # the probe itself is not its own neighbour
        truth = set(ids[np.argpartition(-cosine, 10)[:10]].tolist())
        numbers = ",".join(repr(float(v)) for v in vectors[pick])
        for top_k in found:
            body = session.post(f"{url}/select", data={
                "q": f"{{!knn f=vector topK={top_k}}}[{numbers}]", "fl": "id", "rows": "11", "wt": "json"},
                timeout=60).json()
            got = [int(doc["id"]) for doc in body["response"]["docs"] if int(doc["id"]) != ids[pick]][:10]
            found[top_k].append(len(truth.intersection(got)) / 10)
    return {top_k: float(np.mean(values)) for top_k, values in found.items()}


VECTOR_FORMATS = ("hnsw", "hnsw-int8", "flat")


def vector_option(text: str) -> tuple[dict[str, str], bool]:
    """'flat+compact' -> (the cores' properties, whether documents carry vector_f32)."""
    name, _, extra = text.partition("+")
    if name not in VECTOR_FORMATS or extra not in ("", "compact"):
        raise ValueError(f"vector option {text!r}: expected one of {', '.join(VECTOR_FORMATS)}, optionally +compact")
    properties = {"tinytags.vector.format": name}
    if extra:
        properties.update({"tinytags.vector.stored": "false", "tinytags.vector.compact": "true"})
    return properties, bool(extra)


def bench_ours(root: Path, url: str, options, meter: Meter):
    from pyspark.sql import SparkSession

    from jobs.index import parse_args  # the job's own flags and defaults, so the bench runs what users run
    from tinytags.pipeline.index import run

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    spark = (SparkSession.builder.master(options.master).appName("bench-index")
             .config("spark.ui.enabled", "false").config("spark.cores.max", str(options.parallelism)).getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    try:
        args = ["--input", str(root), "--solr", url, "--parallelism", str(options.parallelism),
                "--batch-size", str(options.batch_size), "--blocks-per-commit", str(options.blocks_per_commit)]
        meter.start()
        summary = run(spark, parse_args(args))
        measured = meter.stop()  # before spark.stop(), while the JVM and its workers still count
    finally:
        spark.stop()
    if summary.exit_code:
        raise SystemExit(f"our indexer failed: {summary.text()}")
    how = f"jobs/index.py, {options.master}, {options.parallelism} at a time, batches of {options.batch_size}"
    return summary.docs, measured, how, []


def bench_bulk(root: Path, blocks: dict[int, int], url: str, options, scratch: Path, meter: Meter,
               compact: bool = False):
    files = []
    meter.start()
    for block in blocks:  # the Solr JSON files, built first: the bulk load proper does not time this
        path = scratch / f"solr-block-{block}.json"
        path.write_text(json.dumps(to_solr_docs(read_lines(root, block), compact_vector=compact)))
        files.append(path)
    prep = meter.stop()

    def post(path: Path) -> None:
        with open(path, "rb") as body:
            requests.post(f"{url}/update", data=body, headers={"Content-Type": "application/json"},
                          timeout=3600).raise_for_status()

    meter.start()
    with ThreadPoolExecutor(options.parallelism) as pool:
        list(pool.map(post, files))
    requests.post(f"{url}/update", params={"commit": "true"}, json={}, timeout=3600).raise_for_status()
    post_measured = meter.stop()
    docs = sum(blocks.values())
    with_prep = (prep[0] + post_measured[0], prep[1] + post_measured[1], post_measured[2])
    return docs, post_measured, f"POST of {len(files)} prebuilt JSON files to /update, {options.parallelism} streams", [
        ("bulk+prep", docs, with_prep, "the same, timed from the tag lines: read, build the documents and JSON, POST")]


def bench_original(root: Path, url: str, options, meter: Meter):
    lines = read_lines(root, 0)[:options.sample]
    meter.start()
    for line in lines:  # one request per image, a new connection each, as the original did
        requests.post(f"{url}/update", json=to_solr_docs([line]), timeout=60).raise_for_status()
    requests.post(f"{url}/update", params={"commit": "true"}, json={}, timeout=600).raise_for_status()
    return len(lines), meter.stop(), f"one POST per document, sequential, sample of {len(lines):,}", []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=200_000, help="documents in the tag output")
    parser.add_argument("--sample", type=int, default=2_000, help="documents the one-POST-per-document run sends")
    parser.add_argument("--parallelism", type=int, default=2, help="our tasks at once and the bulk load's streams")
    parser.add_argument("--batch-size", type=int, default=2000)
    parser.add_argument("--blocks-per-commit", type=int, default=8)
    parser.add_argument("--master", default=env("TINYTAGS_SPARK_MASTER", "local[2]"))
    parser.add_argument("--solr", default=env("TINYTAGS_SOLR_BASE_URL", stack_settings().solr_root),
                        help="Solr base URL (cores are created there)")
    parser.add_argument("--workdir", default=env("TINYTAGS_BENCH_DIR"), help="scratch folder (default: a temp dir)")
    parser.add_argument("--cifar", type=Path, default=ROOT.parent / "shared" / "data" / "cifar-10-dev-binary.tar.gz",
                        help="CIFAR-10 archive whose real training images (cycled, mirrored) are the pixels; "
                             "'none': smooth random images")
    parser.add_argument("--beam-width", type=int, help="HNSW beam width of the bench cores (default: the schema's)")
    parser.add_argument("--max-connections", type=int, help="HNSW max connections (default: the schema's)")
    parser.add_argument("--vector-formats", type=lambda text: [t.strip() for t in text.split(",") if t.strip()],
                        help="comma-separated vector options, each run by the bulk load and ours into its own "
                             "cores: hnsw, hnsw-int8, flat, each optionally +compact (e.g. hnsw,flat,flat+compact); "
                             "default: the schema's, one run each")
    parser.add_argument("--recall-probes", type=int, default=200,
                        help="vectors whose Solr k-NN neighbours are checked against brute force (0: no recall check)")
    parser.add_argument("--skip-original", action="store_true", help="leave out the one-POST-per-document run")
    parser.add_argument("--solr-pid-file", type=Path, default=None,
                        help="pid file of that Solr, for its CPU time (default: the local stack's, with the default --solr)")
    parser.add_argument("--sizes", help="comma-separated document counts, e.g. 200000,2000000: the whole bench at "
                                        "each (the original at the first only, the recall check at the last), then the growth "
                                        "of the cost per document (instead of --docs)")
    options = parser.parse_args(argv)
    for text in options.vector_formats or []:
        try:
            vector_option(text)
        except ValueError as error:
            parser.error(str(error))
    if options.sizes:
        sizes = [int(n.replace("_", "")) for n in options.sizes.split(",") if n.strip()]
        growth = []
        for number, docs in enumerate(sizes):
            later = {**({"skip_original": True} if number else {}),
                     **({"recall_probes": 0} if number < len(sizes) - 1 else {})}
            growth.append((docs, run_once(argparse.Namespace(**{**vars(options), "docs": docs, **later}), parser)))
        print("\ncost per document as the index grows (ours: jobs/index.py):")
        print(f"{'docs':>11}{'docs/s':>9}{'client ms':>11}{'Solr ms':>9}{'total ms':>10}{'disk B/doc':>12}")
        for docs, ours in growth:
            total = ours["client_ms"] + (ours["solr_ms"] or 0.0)
            print(f"{docs:>11,}{ours['rate']:>9,.0f}{ours['client_ms']:>11.3f}{ours['solr_ms'] or 0:>9.3f}{total:>10.3f}"
                  f"{ours['disk'] / docs:>12,.0f}")
        (small, a), (large, b) = growth[0], growth[-1]
        cost = lambda row: row["client_ms"] + (row["solr_ms"] or 0.0)  # noqa: E731
        ratio = cost(b) / cost(a)
        print(f"goal: cost per document at {large:,} <= 1.3x the cost at {small:,}: "
              f"{'met' if ratio <= 1.3 else 'NOT met'} ({ratio:.2f}x); at 50,000,000 documents the index "
              f"would take about {b['disk'] / large * 50e6 / 1e9:,.0f} GB")
        return 0
    run_once(options, parser)
    return 0


def run_once(options, parser) -> dict:
    """The bench at options.docs documents; prints its table and returns our indexer's figures."""
    pid_file = options.solr_pid_file
    if pid_file is None and options.solr == parser.get_default("solr"):
        pid_file = stack_pid_file(stack_settings(), "solr")
    solr_pid = int(pid_file.read_text()) if pid_file and pid_file.exists() else None
    meter = Meter(solr_pid)

    scratch = Path(tempfile.mkdtemp(prefix="bench-index-", dir=options.workdir))
    try:
        root = scratch / "tags"
        began = time.perf_counter()
        images = None
        if str(options.cifar) != "none":
            if not options.cifar.exists():
                raise SystemExit(f"{options.cifar}: no such CIFAR-10 archive (give --cifar PATH, or --cifar none)")
            images = real_images(options.cifar, options.docs)
        blocks = write_tag_output(root, options.docs, images=images)
        size = sum(p.stat().st_size for p in root.rglob("part-*"))
        pixels = f"real CIFAR-10 training images from {options.cifar.name}" if images is not None else "smooth random images"
        del images  # 3 KB per document (6 GB at 2M): the tag output holds them now
        print(f"tag output: {options.docs:,} documents ({pixels}) in {len(blocks)} blocks, {size / 1e6:,.0f} MB, "
              f"written in {time.perf_counter() - began:.1f} s; load average {os.getloadavg()[0]:.1f}", flush=True)
        rows = []
        properties = {key: str(value) for key, value in (("tinytags.hnsw.beamWidth", options.beam_width),
                                                          ("tinytags.hnsw.maxConnections", options.max_connections))
                      if value is not None}
        # One pass per vector option (--vector-formats), else one with the schema's defaults; the
        # first option's rows are the ones the goals below are checked on.
        vector_runs = [(text, *vector_option(text)) for text in options.vector_formats or []] or [(None, {}, False)]
        key = lambda label, option: label if option is None else f"{label}:{option}"  # noqa: E731
        recall, disks, recalls = None, {}, {}
        for number, (option, vector_properties, compact) in enumerate(vector_runs):
            runs = [("bulk", lambda url, compact=compact: bench_bulk(root, blocks, url, options, scratch, meter, compact)),
                    ("ours", lambda url: bench_ours(root, url, options, meter))]
            if number == 0 and not options.skip_original:
                runs.append(("original", lambda url: bench_original(root, url, options, meter)))
            for label, run in runs:
                name = key(label, option)
                core_label = name.replace(":", "_").replace("+", "_").replace("-", "")
                with BenchCore(options.solr, core_label, {**properties, **vector_properties}) as url:
                    docs, (seconds, client_cpu, solr_cpu), how, more = run(url)
                    found = count(url)
                    disks[name] = core_bytes(url)
                    flat = vector_properties.get("tinytags.vector.format") == "flat"  # {!knn} finds nothing there
                    if label == "ours" and options.recall_probes and not flat:
                        recalls[option] = knn_recall(root, blocks, url, options.recall_probes)
                if found != docs:
                    raise SystemExit(f"{name}: Solr holds {found:,} documents, expected {docs:,}")
                rows.append((name, docs, seconds, client_cpu, solr_cpu, how))
                rows.extend((key(extra, option), n, *measured, text) for extra, n, measured, text in more)
                print(f"  {name:9} {docs:>9,} docs {seconds:8.1f} s {docs / seconds:>9,.0f} docs/s   ({how})", flush=True)
        first = vector_runs[0][0]
        bulk_key, ours_key = key("bulk", first), key("ours", first)
        disk, recall = disks[ours_key], recalls.get(first)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    rate = {row[0]: row[1] / row[2] for row in rows}
    width = max(10, *(len(row[0]) + 1 for row in rows))
    cores = os.cpu_count() or 1
    print(f"\nindex: {options.docs:,} documents with pixels, {options.parallelism} at a time "
          f"(load average now {os.getloadavg()[0]:.1f} on {cores} cores)")
    print(f"{'method':<{width}}{'docs':>9}{'seconds':>9}{'docs/s':>9}{'x bulk':>8}{'client ms':>11}{'Solr ms':>9}"
          f"{'CPU-bound':>11}  how")
    for label, docs, seconds, client_cpu, solr_cpu, how in rows:
        client_ms = 1000 * client_cpu / docs
        solr_ms = f"{1000 * solr_cpu / docs:9.3f}" if solr_cpu is not None else f"{'?':>9}"
        bound = f"{cores * docs / (client_cpu + solr_cpu):11,.0f}" if solr_cpu is not None else f"{'?':>11}"
        print(f"{label:<{width}}{docs:>9,}{seconds:>9.1f}{rate[label]:>9,.0f}{rate[label] / rate[bulk_key]:>8.2f}"
              f"{client_ms:>11.3f}{solr_ms}{bound}  {how}")
    print("(client/Solr ms: CPU milliseconds per document; CPU-bound: docs/s if all cores did only this)")
    if options.vector_formats:
        print_vector_options(rows, vector_runs, disks, recalls)
    ratio = rate[ours_key] / rate[bulk_key]
    hnsw = ", ".join(f"{k.rsplit('.', 1)[1]}={v}" for k, v in properties.items()) or "the schema's defaults"
    if recall is not None:
        print(f"vector field: HNSW {hnsw}; recall@10 against brute force over all {options.docs:,} vectors "
              f"({options.recall_probes} probes): {recall[10]:.3f} at topK=10, {recall[RECALL_TOP_K]:.3f} at "
              f"topK={RECALL_TOP_K} (what /api/similar asks); goal >= 0.95: "
              f"{'met' if recall[RECALL_TOP_K] >= 0.95 else 'NOT met'}")
    original_key = key("original", first)
    original = f"; vs the original approach: {rate[ours_key] / rate[original_key]:,.0f}x" if original_key in rate else ""
    print(f"goal >= 10,000 docs/s{f' ({first})' if first else ''}: {'met' if rate[ours_key] >= 10_000 else 'NOT met'} "
          f"({rate[ours_key]:,.0f}); goal >= 0.9x bulk: {'met' if ratio >= 0.9 else 'NOT met'} ({ratio:.2f}x){original}",
          flush=True)
    ours = next(row for row in rows if row[0] == ours_key)
    return {"rate": rate[ours_key], "client_ms": 1000 * ours[3] / ours[1],
            "solr_ms": 1000 * ours[4] / ours[1] if ours[4] is not None else None, "disk": disk}


def print_vector_options(rows, vector_runs, disks, recalls) -> None:
    """The --vector-formats runs side by side: docs/s, Solr CPU ms/doc, index bytes/doc, recall."""
    by_name = {row[0]: row for row in rows}
    print(f"\nvector options{'':8}{'bulk docs/s':>12}{'Solr ms':>9}{'ours docs/s':>12}{'Solr ms':>9}{'client ms':>10}"
          f"{'B/doc':>8}  recall@10 (topK={RECALL_TOP_K})")
    for option, _, _ in vector_runs:
        bulk, ours = by_name[f"bulk:{option}"], by_name[f"ours:{option}"]
        solr_ms = lambda row: f"{1000 * row[4] / row[1]:9.3f}" if row[4] is not None else f"{'?':>9}"  # noqa: E731
        found = recalls.get(option)
        recall = f"{found[RECALL_TOP_K]:.3f}" if found else ("exact only ({!knn} finds nothing)"
                                                             if option.startswith("flat") else "-")
        print(f"{option:<22}{bulk[1] / bulk[2]:>12,.0f}{solr_ms(bulk)}{ours[1] / ours[2]:>12,.0f}{solr_ms(ours)}"
              f"{1000 * ours[3] / ours[1]:>10.3f}{disks[f'ours:{option}'] / ours[1]:>8,.0f}  {recall}")


if __name__ == "__main__":
    sys.exit(main())
