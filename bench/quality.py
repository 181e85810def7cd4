"""Tag quality and cost per feature set and forest size, in one table from one run.

    .venv/bin/python -m bench.quality [--cifar cifar-10-binary.tar.gz] [--images 200000] [--trees 10,20]

For each feature set (pixels, kmeans) and forest size, on the local stack (make up):
- ``bin/spark-submit jobs/train.py`` on the Spark standalone cluster: whole-job wall seconds and the
  card's test figures (test accuracy; coverage and precision at the 40% rule; synthetic junk tagged,
  real test images called junk);
- similar images: for each test image, the share of its 10 nearest training images (cosine, the
  model's similarity vector) that have its class;
- ``bin/spark-submit jobs/tag.py`` over a Tiny-format corpus of --images images in HDFS (CIFAR-10
  images cycled): the job's own images/s (the manifest's, tasks only) and the whole job's.
The original approach's row: the raw-pixel forest fed Tiny Images bytes unconverted (every image
seen transposed), as the original project did, on the same test images and junk.

Data: the full CIFAR-10 training set (default: the development archive beside this checkout).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np

from tinytags.core import features
from tinytags.core.contract import MIN_AGREEMENT, min_votes_for
from tinytags.core.images import cifar_to_tiny_layout
from tinytags.core.tagger import Tagger
from tinytags.io.cifar_files import read_local
from tinytags.io.shard_files import make_sample
from tinytags.io.storage import Storage

ROOT = Path(__file__).resolve().parent.parent

DEV = ROOT.parent / "shared" / "data" / "cifar-10-dev-binary.tar.gz"
OUT = ROOT / "bench" / "out" / "quality"


def submit(master: str, *args: str) -> tuple[float, str]:
    """Run a job with bin/spark-submit; (wall seconds, stdout+stderr). Fails loudly."""
    started = time.monotonic()
    result = subprocess.run([str(ROOT / "bin" / "spark-submit"), "--master", master,
                             "--conf", "spark.executor.memory=3g", "--driver-memory", "4g", *args],
                            cwd=ROOT, capture_output=True, text=True)
    seconds = time.monotonic() - started
    if result.returncode != 0:
        raise SystemExit(f"{args[0]} failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}")
    return seconds, result.stdout + result.stderr


def load_tagger(model: Path) -> Tagger:
    card = json.loads((model / "model_card.json").read_text())
    extra = model / features.FEATURES_FILE
    return Tagger.from_files((model / "forest.npz").read_bytes(), extra.read_bytes() if extra.exists() else None, card)


def knn_share(tagger: Tagger, train: np.ndarray, train_labels: np.ndarray, test: np.ndarray,
              test_labels: np.ndarray, k: int = 10) -> float:
    """Share of each test image's k nearest training images (cosine) with the test image's class."""
    base = np.concatenate([tagger.predict(train[i:i + 4096]).vectors for i in range(0, len(train), 4096)])
    query = tagger.predict(test).vectors
    hits = 0
    for lo in range(0, len(query), 500):
        scores = query[lo:lo + 500] @ base.T
        nearest = np.argpartition(-scores, k, axis=1)[:, :k]
        hits += int((train_labels[nearest] == test_labels[lo:lo + 500, None]).sum())
    return hits / (len(query) * k)


def rule_figures(tagger: Tagger, pixels: np.ndarray, labels: np.ndarray, junk: np.ndarray) -> dict:
    """Accuracy, coverage and precision at the 40% rule, junk tagged, on these images."""
    need = min_votes_for(MIN_AGREEMENT, tagger.n_trees)
    p = tagger.predict(pixels)
    kept = ~p.junk & (p.votes >= need)
    correct = (p.label == labels) & ~p.junk
    j = tagger.predict(junk)
    return {"accuracy": float(correct.mean()), "coverage": float(kept.mean()),
            "precision": float(correct[kept].mean()) if kept.any() else None,
            "junk_tagged": float((~j.junk & (j.votes >= need)).mean())}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cifar", default=str(DEV), help="CIFAR-10 archive or folder (default: the dev archive)")
    parser.add_argument("--images", type=int, default=200_000, help="images in the tagging corpus")
    parser.add_argument("--trees", default="10,20", help="forest sizes, comma-separated")
    parser.add_argument("--features", default="pixels,kmeans", help="feature sets, comma-separated")
    parser.add_argument("--master", default=os.environ.get("TINYTAGS_SPARK_MASTER", "spark://127.0.0.1:7077"))
    parser.add_argument("--hdfs", default=os.environ.get("TINYTAGS_HDFS_URI", "hdfs://127.0.0.1:9000"))
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    data = read_local(args.cifar)
    junk = features.junk_images(2000, seed=12345)  # a seed no model trained on
    storage = Storage()
    corpus = f"{args.hdfs}/tinytags-bench/quality-{args.images}"
    pixels = np.concatenate([data.train.pixels, data.test.pixels])
    print(f"corpus: {args.images:,} images in {corpus} (written once, then reused)", flush=True)
    make_sample(storage, pixels, None, corpus, count=args.images, shard_size=args.images)

    rows = []
    for feature_set in args.features.split(","):
        for trees in map(int, args.trees.split(",")):
            name = f"{feature_set} x {trees} trees"
            model = OUT / f"model-{feature_set}-{trees}"
            print(f"== {name}: train", flush=True)
            train_seconds, _ = submit(args.master, "jobs/train.py", "--cifar", args.cifar, "--model", str(model),
                                      "--features", feature_set, "--trees", str(trees))
            card = json.loads((model / "model_card.json").read_text())
            tagger = load_tagger(model)
            cut = next(r for r in card["agreement"] if r["min_agreement"] >= MIN_AGREEMENT - 1e-9)
            print(f"== {name}: similar images, tag {args.images:,} images", flush=True)
            share = knn_share(tagger, data.train.pixels, data.train.labels, data.test.pixels, data.test.labels)
            output = f"{args.hdfs}/tinytags-bench/quality-tags-{uuid.uuid4().hex[:8]}"
            tag_seconds, _ = submit(args.master, "jobs/tag.py", "--model", str(model), "--input", corpus,
                                    "--output", output)
            manifest = json.loads(storage.read_bytes(f"{output}/_manifest.json"))
            storage.delete(output)
            rows.append({
                "name": name, "features": card["features"]["name"], "trees": trees,
                "accuracy": card["test_accuracy"], "coverage": cut["coverage"], "precision": cut["precision"],
                "junk_tagged": (card.get("junk") or {}).get("tagged"),
                "real_called_junk": card.get("real_called_junk"),
                "knn_same_class": round(share, 4), "train_job_seconds": round(train_seconds, 1),
                "tag_images_per_s": manifest["images_per_second"],
                "tag_job_images_per_s": round(args.images / tag_seconds, 1),
            })
            if feature_set == "pixels" and trees == 10:
                # The original project: the same kind of forest, fed Tiny bytes unconverted.
                transposed = cifar_to_tiny_layout(data.test.pixels)
                original = rule_figures(tagger, transposed, data.test.labels, junk)
                rows.append({"name": "original approach (pixels, Tiny bytes unconverted)", "features": "pixels",
                             "trees": trees, **{k: round(v, 4) if v is not None else None for k, v in original.items()},
                             "real_called_junk": 0.0, "knn_same_class": None, "train_job_seconds": None,
                             "tag_images_per_s": None, "tag_job_images_per_s": None})
                rows[-1]["accuracy"] = rows[-1].pop("accuracy")

    machine = (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, load average "
               f"{os.getloadavg()[0]:.1f} at the end, Python {platform.python_version()}")
    (OUT / "results.json").write_text(json.dumps({"machine": machine, "cifar": args.cifar, "rows": rows}, indent=1))
    print(f"\nQuality at the {MIN_AGREEMENT:.0%} rule on the {len(data.test.labels):,} test images "
          f"({len(data.train.labels):,} training images); junk = 2,000 synthetic non-photos; {machine}")
    header = ("| model | accuracy | coverage | precision | junk tagged | real called junk | 10-NN same class "
              "| train job s | tag images/s (tasks) | tag images/s (whole job) |")
    print(header)
    print("|" + "---|" * 10)

    def cell(value, pct=True):
        if value is None:
            return "–"
        return f"{value:.1%}" if pct else f"{value:,.1f}"

    for r in rows:
        print(f"| {r['name']} | {cell(r['accuracy'])} | {cell(r['coverage'])} | {cell(r['precision'])} | "
              f"{cell(r['junk_tagged'])} | {cell(r['real_called_junk'])} | {cell(r['knn_same_class'])} | "
              f"{cell(r['train_job_seconds'], False)} | {cell(r['tag_images_per_s'], False)} | "
              f"{cell(r['tag_job_images_per_s'], False)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
