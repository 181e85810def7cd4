"""bench/tag: images/s of the tag job end to end (HDFS read -> votes -> filter -> JSON written), next to
the original approach (one RDD prediction pass per tree, zipped) and the numpy vote-only floor, in one run.

    .venv/bin/python -m bench.tag                                   # 1,000,000 images (the goal's size)
    .venv/bin/python -m bench.tag --images 100000 --original-images 1000 --floor-images 50000   # quick
    .venv/bin/python -m bench.tag --output hdfs://127.0.0.1:9000/tinytags-bench/tags   # JSON into HDFS too

Needs the local stack (make up). Model: --model DIR (e.g. from jobs/train.py), else scikit-learn's
RandomForestClassifier (10 trees, depth 10) fitted on ../shared's 10,000 sample training images and
flattened (tinytags/core/forest.py), written to bench/out/tag-model. Corpus: --images Tiny-format images
(the sample's 15,000 real CIFAR-10 images in Tiny Images' column-major layout, cycled) uploaded
once to HDFS under /tinytags-bench/ (jobs/shards.py make-sample; a later run reuses the shards).

Contenders, all on the same model and images:
  - ours: `spark-submit --master local[2] jobs/tag.py` reading the shards from HDFS, writing JSON
    lines to --output (default local disk, bench/out/tag-output). "tag phase" is the job's own
    clock (Spark session up -> manifest written); "end to end" is the whole spark-submit, JVM start
    included. CPU: seconds used by the spark-submit process tree (JVM, Python workers), per image,
    a figure that other load on a shared machine does not inflate much (the HDFS datanode's share
    is not in it).
  - original: what the original project did, in PySpark: records read one by one
    (sc.binaryRecords), each turned into a feature vector, one RDD pass per tree predicting record
    by record (MLlib's tree walk), the ten prediction RDDs zipped, votes counted, JSON with
    json.dumps per record, saveAsTextFile. On --original-images images from HDFS; its kept images
    and votes are checked against ours.
  - floor: tinytags.core.forest.Evaluator.votes alone on in-memory CIFAR-layout batches, one core (no I/O,
    no layout conversion, no JSON): what the trees cost.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from deploy.stack.supervisor import recorded_pid
from tests.helpers import forest_from_sklearn  # the reference forest, shared with the tests
from tinytags.core import forest as forest_io
from tinytags.core.contract import (
    CARD_FILE,
    CLASSES,
    MANIFEST_NAME,
    MIN_AGREEMENT,
    min_votes_for,
)
from tinytags.core.images import RECORD_BYTES, tiny_to_cifar_layout
from tinytags.io.cifar_files import read_local
from tinytags.io.shard_files import make_sample
from tinytags.io.storage import Storage, kind, local_path
from tinytags.settings import stack_settings

ROOT = Path(__file__).resolve().parent.parent

SAMPLE = ROOT.parent / "shared" / "data" / "cifar-10-sample-binary.tar.gz"
OUT = ROOT / "bench" / "out"


def spark_env() -> tuple[Path, dict]:
    import pyspark

    spark_home = Path(pyspark.__file__).resolve().parent
    return spark_home, dict(os.environ, SPARK_HOME=str(spark_home), PYSPARK_PYTHON=sys.executable,
                            PYSPARK_DRIVER_PYTHON=sys.executable)


def fit_model(data, folder: Path) -> forest_io.Forest:
    """scikit-learn's forest (10 trees, depth 10, 2 cores) on the sample's training images, as a model dir."""
    from sklearn.ensemble import RandomForestClassifier

    fitted = RandomForestClassifier(n_estimators=10, max_depth=10, n_jobs=2, random_state=1)
    fitted.fit(data.train.pixels, data.train.labels)
    forest = forest_from_sklearn(fitted.estimators_, len(CLASSES))
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    forest_io.save(forest, folder)
    (folder / CARD_FILE).write_text(json.dumps(
        {"classes": list(CLASSES), "version": forest.version, "format": forest_io.FOREST_FORMAT}))
    return forest


def process_tree_cpu(root_pid: int) -> dict[int, float]:
    """CPU seconds (user + system) of a process and all its descendants, by pid, from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    parents, cpu = {}, {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry)] = int(fields[1])
        cpu[int(entry)] = (int(fields[11]) + int(fields[12])) / tick
    tree, grew = {root_pid}, True
    while grew:
        grew = False
        for pid, parent in parents.items():
            if parent in tree and pid not in tree:
                tree.add(pid)
                grew = True
    return {pid: cpu[pid] for pid in tree if pid in cpu}


def hdfs_cpu() -> float | None:
    """CPU seconds of the local stack's HDFS JVM (namenode + datanode; shared with other users)."""
    try:
        pid = recorded_pid(stack_settings(), "hdfs")
        if pid is None:
            return None
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, ValueError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_ours(model: Path, shards: str, output: str, images: int) -> dict:
    spark_home, env = spark_env()
    Storage().delete(output)
    command = [str(spark_home / "bin" / "spark-submit"), "--master", "local[2]", "--driver-memory", "2g",
               "--conf", "spark.ui.enabled=false", str(ROOT / "jobs" / "tag.py"), "--model", str(model),
               "--input", shards, "--output", output]
    began = time.monotonic()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT)
    seen: dict[int, float] = {}

    def sample_cpu():  # a process's last sample stands for its total (a sample every 0.2 s)
        while process.poll() is None:
            for pid, seconds in process_tree_cpu(process.pid).items():
                seen[pid] = max(seen.get(pid, 0.0), seconds)
            time.sleep(0.2)

    sampler = threading.Thread(target=sample_cpu, daemon=True)
    sampler.start()
    lines = []
    phase = {}  # CPU of the job's processes (and the HDFS JVM) when the tag phase starts and ends
    for line in process.stdout:  # the job's progress lines
        lines.append(line)
        if line.startswith("[tag "):
            print(f"    {line.rstrip()}", flush=True)
            mark = "start" if " to tag (" in line else "end" if "] done: " in line else None
            if mark:
                for pid, seconds in process_tree_cpu(process.pid).items():
                    seen[pid] = max(seen.get(pid, 0.0), seconds)
                phase[mark] = (sum(seen.values()), hdfs_cpu())
    process.wait()
    wall = time.monotonic() - began
    sampler.join()
    if process.returncode:
        raise SystemExit(f"our job failed:\n{''.join(lines)[-4000:]}")
    manifest = json.loads(Storage().read_bytes(f"{output}/{MANIFEST_NAME}"))
    if manifest["totals"]["read"] != images:
        raise SystemExit(f"our job read {manifest['totals']['read']:,} images, expected {images:,}")
    cpu = sum(seen.values())
    tag_cpu = phase["end"][0] - phase["start"][0] if len(phase) == 2 else float("nan")
    hdfs = phase["end"][1] - phase["start"][1] if len(phase) == 2 and phase["start"][1] is not None else None
    return {"images": images, "tag_seconds": manifest["seconds"], "tag_images_per_s": manifest["images_per_second"],
            "job_seconds": round(wall, 1), "job_images_per_s": round(images / wall, 1),
            "kept": manifest["totals"]["kept"], "cpu_seconds": round(cpu, 1),
            "cpu_us_per_image": round(cpu / images * 1e6, 1),
            "tag_phase_cpu_us_per_image": round(tag_cpu / images * 1e6, 1),
            "hdfs_cpu_us_per_image": round(hdfs / images * 1e6, 1) if hdfs is not None else None}


def original_approach(spark, shards: str, forest: forest_io.Forest, output: str) -> dict:
    """The original project's way, timed from reading the records to the JSON written."""
    from pyspark.mllib.linalg import Vectors

    sc = spark.sparkContext
    trees = []
    for t, root in enumerate(forest.roots.tolist()):
        end = forest.roots[t + 1] if t + 1 < forest.n_trees else forest.left.size
        nodes = range(root, int(end))
        trees.append({"root": root, "feature": {n: int(forest.feature[n]) for n in nodes},
                      "threshold": {n: float(forest.threshold[n]) for n in nodes},
                      "left": {n: int(forest.left[n]) for n in nodes}, "right": {n: int(forest.right[n]) for n in nodes},
                      "leaf": {n: int(forest.leaf_class[n]) for n in nodes}})
    min_votes = min_votes_for(MIN_AGREEMENT, forest.n_trees)
    version = forest.version

    def to_vector(record: bytes):
        pixels = tiny_to_cifar_layout(record)[0]
        return Vectors.dense(pixels.astype(np.float64))

    def predict(tree, features) -> int:  # MLlib's Node.predict: walk from the root, one record at a time
        node = tree["root"]
        while tree["left"][node] != node:
            node = tree["left"][node] if features[tree["feature"][node]] <= tree["threshold"][node] else tree["right"][node]
        return tree["leaf"][node]

    def to_json(item):
        (image_id, features), votes = item
        counts = [votes.count(c) for c in range(len(CLASSES))]
        top = max(counts)
        if top < min_votes:
            return None
        label = counts.index(top)
        return json.dumps({"id": image_id, "block": image_id // 20_000, "label": label, "tag": CLASSES[label],
                           "votes": top, "agreement": top / len(votes), "vote_counts": counts, "model": version,
                           "pixels": base64.b64encode(bytes(features.toArray().astype(np.uint8))).decode()})

    Storage().delete(output)
    # Like the original on 3 GB shards, give both cores work: split the small sample in 2.
    size = Storage().status(shards)[1]
    sc._jsc.hadoopConfiguration().set("mapreduce.input.fileinputformat.split.maxsize", str(-(-size // 2)))  # noqa: SLF001 - as the original did
    sc.parallelize(range(8), 8).map(lambda x: x).count()  # start the Python workers before the clock
    began = time.monotonic()
    features = sc.binaryRecords(shards, RECORD_BYTES).map(to_vector).zipWithIndex().map(lambda fi: (fi[1], fi[0]))
    features.cache()
    votes = features.map(lambda item, tree=trees[0]: [predict(tree, item[1])])
    for tree in trees[1:]:  # one prediction pass per tree, zipped onto the votes so far
        votes = votes.zip(features.map(lambda item, tree=tree: predict(tree, item[1]))).map(lambda vp: vp[0] + [vp[1]])
    features.zip(votes).map(to_json).filter(lambda line: line is not None).saveAsTextFile(output)
    seconds = time.monotonic() - began
    count = features.count()
    features.unpersist()
    return {"images": count, "seconds": round(seconds, 1), "images_per_s": round(count / seconds, 1)}


def original_matches_ours(original_output: str, ours_output: str, images: int) -> str:
    """Same kept ids and vote counts for the images both tagged (labels may break ties differently)."""
    def lines(folder, pattern):
        found = {}
        for path in sorted(Path(local_path(folder)).glob(pattern)):
            for line in path.read_text().splitlines():
                record = json.loads(line)
                if record["id"] < images:
                    found[record["id"]] = record["vote_counts"]
        return found

    if kind(ours_output) != "local":
        return "not checked (ours wrote to HDFS)"
    theirs, ours = lines(original_output, "part-*"), lines(ours_output, "block=*/part-*")
    ours = {i: v for i, v in ours.items() if i < images}
    if theirs != ours:
        differ = sorted(set(theirs) ^ set(ours)) or [i for i in theirs if theirs[i] != ours[i]]
        raise SystemExit(f"the original approach and ours disagree, e.g. on image {differ[0]}")
    return f"same {len(ours):,} kept images and vote counts"


def tag_quality(forest: forest_io.Forest, data) -> dict:
    """The quality figures on the sample's 5,000 test images (what the job tags them as)."""
    _, labels, top = forest_io.Evaluator(forest).predict(data.test.pixels)
    kept = top >= min_votes_for(MIN_AGREEMENT, forest.n_trees)
    right = labels == data.test.labels
    return {"accuracy": round(float(right.mean()), 4), "kept_at_40": round(float(kept.mean()), 4),
            "precision_at_40": round(float(right[kept].mean()), 4)}


def numpy_floor(forest: forest_io.Forest, pixels: np.ndarray, images: int, batch: int = 2048) -> dict:
    evaluator = forest_io.Evaluator(forest)
    rows = np.resize(pixels, (max(batch, min(images, 50_000)), RECORD_BYTES))
    began = time.monotonic()
    done = 0
    while done < images:
        for start in range(0, len(rows), batch):
            evaluator.votes(rows[start:start + batch])
        done += len(rows)
    seconds = time.monotonic() - began
    return {"images": done, "seconds": round(seconds, 2), "images_per_s_per_core": round(done / seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1_000_000, help="images our job tags (default 1,000,000)")
    parser.add_argument("--shard-size", type=int, default=1_000_000, help="images per shard of the corpus")
    parser.add_argument("--original-images", type=int, default=5_000, help="images for the original approach")
    parser.add_argument("--floor-images", type=int, default=200_000, help="images for the numpy floor")
    parser.add_argument("--model", help="model dir to use (default: fit one, see above)")
    parser.add_argument("--hdfs", default=os.environ.get("TINYTAGS_HDFS_URI", stack_settings().hdfs_uri))
    parser.add_argument("--output", default=str(OUT / "tag-output"), help="where our job writes (local or hdfs://)")
    parser.add_argument("--skip", action="append", default=[], choices=["ours", "original", "floor"])
    args = parser.parse_args()

    if not SAMPLE.exists():
        raise SystemExit(f"{SAMPLE} is missing: the corpus is built from its real CIFAR-10 images")
    data = read_local(SAMPLE)
    OUT.mkdir(parents=True, exist_ok=True)
    if args.model:
        model = Path(args.model)
        forest = forest_io.load(model)
    else:
        model = OUT / "tag-model"
        forest = fit_model(data, model)
    pixels = np.concatenate([data.train.pixels, data.test.pixels])
    files = Storage()
    corpus = f"{args.hdfs}/tinytags-bench/tiny-{args.images}-{args.shard_size}"
    print(f"corpus: {args.images:,} images in {corpus} (written once, then reused) …", flush=True)
    make_sample(files, pixels, None, corpus, count=args.images, shard_size=args.shard_size)
    load_before = os.getloadavg()

    results: dict = {}
    if "ours" not in args.skip:
        print("running ours (spark-submit jobs/tag.py, local[2]) …", flush=True)
        results["ours"] = run_ours(model, corpus, args.output, args.images)
        print(f"  {json.dumps(results['ours'])}", flush=True)
    if "original" not in args.skip:
        print(f"running the original approach on {args.original_images:,} images …", flush=True)
        small = f"{args.hdfs}/tinytags-bench/tiny-{args.original_images}-{args.original_images}"
        make_sample(files, pixels, None, small, count=args.original_images)
        from pyspark.sql import SparkSession

        os.environ["PYSPARK_PYTHON"] = sys.executable  # workers need this venv's numpy
        spark = (SparkSession.builder.master("local[2]").appName("bench-tag-original")
                 .config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false").getOrCreate())
        spark.sparkContext.setLogLevel("ERROR")
        try:
            results["original"] = original_approach(spark, f"{small}/tiny_00000.bin", forest, str(OUT / "tag-original"))
        finally:
            spark.stop()
        if "ours" in results:
            results["original"]["check"] = original_matches_ours(str(OUT / "tag-original"), args.output,
                                                                 args.original_images)
        print(f"  {json.dumps(results['original'])}", flush=True)
    if "floor" not in args.skip:
        print(f"running the numpy vote-only floor on {args.floor_images:,} images …", flush=True)
        results["floor"] = numpy_floor(forest, data.test.pixels, args.floor_images)
        print(f"  {json.dumps(results['floor'])}", flush=True)

    load_after = os.getloadavg()
    machine = (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, load average "
               f"{load_before[0]:.1f} before / {load_after[0]:.1f} after, Python {platform.python_version()}")
    where = "HDFS" if args.output.startswith("hdfs://") else "local disk"
    print(f"\ntag throughput, model {forest.version} ({forest.n_trees} trees), HDFS in -> JSON lines on {where}; {machine}")
    print(f"{'':52}{'images':>11}{'seconds':>9}{'images/s':>11}{'vs original':>13}")
    base = results.get("original", {}).get("images_per_s")

    def row(label, images, seconds, rate):
        ratio = f"{rate / base:,.0f}x" if base else "—"
        print(f"{label:52}{images:>11,}{seconds:>9.1f}{rate:>11,.0f}{ratio:>13}")

    if "ours" in results:
        r = results["ours"]
        row("ours, tag phase (Spark up -> manifest written)", r["images"], r["tag_seconds"], r["tag_images_per_s"])
        row("ours, end to end (whole spark-submit)", r["images"], r["job_seconds"], r["job_images_per_s"])
        print(f"{'  CPU per image, whole job (JVM start included)':52}{r['cpu_us_per_image']:>31,.1f} µs")
        phase_cpu = r["tag_phase_cpu_us_per_image"] + (r["hdfs_cpu_us_per_image"] or 0)
        print(f"{'  CPU per image, tag phase (+ HDFS JVM)':52}{r['tag_phase_cpu_us_per_image']:>31,.1f} µs "
              f"(+ {r['hdfs_cpu_us_per_image'] or 0:.1f} µs: ~{2e6 / phase_cpu:,.0f} images/s if 2 cores were ours)")
    if "original" in results:
        r = results["original"]
        row("original: per-tree RDD passes, zipped", r["images"], r["seconds"], r["images_per_s"])
        if "check" in r:
            print(f"{'  checked against ours':52}{r['check']:>44}")
    if "floor" in results:
        r = results["floor"]
        row("numpy vote-only floor, 1 core", r["images"], r["seconds"], r["images_per_s_per_core"])
    quality = results["quality"] = tag_quality(forest, data)
    print(f"tag quality on the sample's {len(data.test.labels):,} test images: accuracy {quality['accuracy']:.1%}; "
          f">= 40% agreement keeps {quality['kept_at_40']:.1%} at precision {quality['precision_at_40']:.1%}")
    (OUT / f"tag-{args.images}.json").write_text(
        json.dumps({"machine": machine, "args": vars(args), "results": results}, indent=2))


if __name__ == "__main__":
    main()
