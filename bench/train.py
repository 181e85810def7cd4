"""bench/train: seconds and test accuracy of our training job, Spark ML's RandomForestClassifier and
scikit-learn's RandomForestClassifier — same data, same forest size — side by side in one run.

    .venv/bin/python -m bench.train                                  # 50,000 images (see below)
    .venv/bin/python -m bench.train --cifar path/to/cifar-10-binary.tar.gz   # real CIFAR-10
    .venv/bin/python -m bench.train --n 10000 --skip spark-ml        # smaller / fewer contenders

Data: real CIFAR-10 when --cifar is given (any form tinytags/core/cifar.py reads); otherwise --n training
images of the same shape built from ../shared/data's real sample (its 10,000 training images plus
label-preserving variants: mirrored, shifted by up to 2 pixels, brightness moved by up to ±12),
tested on the sample's 5,000 test images; pure noise-free synthetic class templates if even the
sample is missing. The training set is written as a CIFAR-10 binary folder under bench/out/.

Contenders (raw pixels, 10 trees, depth 10, 50 bins where the engine has bins, gini, 2 cores):
  - ours: `spark-submit jobs/train.py --features pixels` on local[2], end to end; train s = the card's train_seconds
    (binning, broadcast, growing every tree in Spark tasks, back on the driver); job s = wall time
    of the whole spark-submit (JVM start, reading, evaluating, writing the model dir);
  - spark-ml: Spark ML's RandomForestClassifier (DataFrame API) in a local[2] session, fit only;
  - scikit-learn: RandomForestClassifier(n_jobs=2), fit only; its accuracy as its own predict()
    (soft votes), and as hard votes through our evaluator.
Accuracy of ours and spark-ml is through the one evaluator (tinytags/core/forest.py), as the tag job sees it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from tests.helpers import forest_from_sklearn  # the reference forest, shared with the tests
from tinytags.core.cifar import BINARY_META, Batch, CifarData
from tinytags.core.contract import CLASSES, MIN_AGREEMENT, min_votes_for
from tinytags.core.forest import Evaluator
from tinytags.core.images import cifar_to_hwc, hwc_to_cifar
from tinytags.io.cifar_files import read_local

ROOT = Path(__file__).resolve().parent.parent

SAMPLE = ROOT.parent / "shared" / "data" / "cifar-10-sample-binary.tar.gz"
OUT = ROOT / "bench" / "out"


# The in-process Spark ML session's Python workers need this venv (numpy).
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)

def augmented(data: CifarData, n: int, seed: int) -> CifarData:
    """n training images: the originals, then mirrored / shifted / re-lit copies of them."""
    rng = np.random.default_rng(seed)
    base = cifar_to_hwc(data.train.pixels)
    pieces, labels = [base], [data.train.labels]
    while sum(len(p) for p in pieces) < n:
        images = base[:, :, ::-1] if len(pieces) % 2 else base
        dy, dx = rng.integers(-2, 3, 2)
        images = np.roll(images, (dy, dx), axis=(1, 2))
        light = rng.integers(-12, 13, (len(images), 1, 1, 1))
        pieces.append(np.clip(images.astype(np.int16) + light, 0, 255).astype(np.uint8))
        labels.append(data.train.labels)
    pixels = hwc_to_cifar(np.concatenate(pieces)[:n])
    return CifarData(train=Batch(pixels, np.concatenate(labels)[:n]), test=data.test, classes=data.classes,
                     source=f"{data.source} + variants", format="binary", files=())


def templates(n: int, n_test: int, seed: int) -> CifarData:
    """Noisy copies of ten smooth random colour layouts, when no real images are at hand."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(40, 216, (10, 4, 4, 3))
    layouts = np.repeat(np.repeat(coarse, 8, axis=1), 8, axis=2)

    def draw(count):
        labels = rng.integers(0, 10, count)
        noise = rng.normal(0, 70, (count, 32, 32, 3))
        return hwc_to_cifar(np.clip(layouts[labels] + noise, 0, 255).astype(np.uint8)), labels

    return CifarData(train=Batch(*draw(n)), test=Batch(*draw(n_test)), classes=CLASSES,
                     source="synthetic templates", format="binary", files=())


def write_binary_folder(data: CifarData, folder: Path) -> Path:
    """The data as a cifar-10-batches-bin folder (10,000 images per training batch)."""
    batches = folder / "cifar-10-batches-bin"
    batches.mkdir(parents=True, exist_ok=True)
    for old in batches.glob("*.bin"):
        old.unlink()

    def records(batch_pixels, batch_labels):
        return np.hstack([batch_labels.astype(np.uint8)[:, None], batch_pixels]).tobytes()

    for i, start in enumerate(range(0, len(data.train.labels), 10_000)):
        end = start + 10_000
        (batches / f"data_batch_{i + 1}.bin").write_bytes(
            records(data.train.pixels[start:end], data.train.labels[start:end]))
    (batches / "test_batch.bin").write_bytes(records(data.test.pixels, data.test.labels))
    (batches / BINARY_META).write_text("\n".join(data.classes) + "\n")
    return folder


def accuracy_and_cut(forest, data: CifarData) -> dict:
    """Test accuracy and what ≥ 40% agreement keeps, through the one evaluator."""
    counts, predicted, top = Evaluator(forest).predict(data.test.pixels)
    kept = top >= min_votes_for(MIN_AGREEMENT, forest.n_trees)
    return {"accuracy": float((predicted == data.test.labels).mean()), "kept_at_40": float(kept.mean()),
            "precision_at_40": float((predicted[kept] == data.test.labels[kept]).mean())}


def run_ours(folder: Path, args) -> dict:
    import pyspark

    spark_home = Path(pyspark.__file__).resolve().parent
    model = OUT / "train-model"
    env = dict(os.environ, SPARK_HOME=str(spark_home), PYSPARK_PYTHON=sys.executable,
               PYSPARK_DRIVER_PYTHON=sys.executable)
    command = [str(spark_home / "bin" / "spark-submit"), "--master", args.master,
               "--driver-memory", "4g", "--conf", "spark.ui.enabled=false",
               str(ROOT / "jobs" / "train.py"), "--cifar", str(folder), "--model", str(model),
               "--features", "pixels", "--trees", str(args.trees), "--max-depth", str(args.max_depth),
               "--max-bins", str(args.max_bins), "--seed", str(args.seed)]
    began = time.monotonic()
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)
    job_seconds = time.monotonic() - began
    if result.returncode:
        raise SystemExit(f"our job failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}")
    card = json.loads((model / "model_card.json").read_text())
    cut = next(r for r in card["agreement"] if r["min_agreement"] >= MIN_AGREEMENT - 1e-9)
    return {"train_seconds": card["train_seconds"], "job_seconds": round(job_seconds, 1),
            "accuracy": card["test_accuracy"], "kept_at_40": cut["coverage"],
            "precision_at_40": cut["precision"], "version": card["version"]}


def run_spark_ml(data: CifarData, args) -> dict:
    from pyspark.sql import SparkSession

    from tinytags.core.training import TreeParams
    from tinytags.pipeline.train import train_spark_ml

    spark = (SparkSession.builder.master(args.master).appName("bench-train-spark-ml")
             .config("spark.driver.memory", "8g").config("spark.ui.enabled", "false").getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    try:
        began = time.monotonic()
        forest = train_spark_ml(spark, data.train.pixels, data.train.labels, len(data.classes),
                                TreeParams(max_depth=args.max_depth, max_bins=args.max_bins), args.trees, args.seed,
                                str(OUT))
        seconds = time.monotonic() - began
    finally:
        spark.stop()
    return {"train_seconds": round(seconds, 1), **accuracy_and_cut(forest, data)}


def run_sklearn(data: CifarData, args) -> dict:
    from sklearn.ensemble import RandomForestClassifier

    model = RandomForestClassifier(n_estimators=args.trees, max_depth=args.max_depth, n_jobs=2,
                                   random_state=args.seed)
    began = time.monotonic()
    model.fit(data.train.pixels, data.train.labels)
    seconds = time.monotonic() - began
    soft = float((model.predict(data.test.pixels) == data.test.labels).mean())
    hard = accuracy_and_cut(forest_from_sklearn(model.estimators_, len(data.classes)), data)
    return {"train_seconds": round(seconds, 1), "accuracy": soft, "hard_vote_accuracy": hard["accuracy"],
            "kept_at_40": hard["kept_at_40"], "precision_at_40": hard["precision_at_40"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cifar", help="real CIFAR-10 (archive or folder); default: built from the sample")
    parser.add_argument("--n", type=int, default=50_000, help="training images when built from the sample")
    parser.add_argument("--trees", type=int, default=10)
    parser.add_argument("--max-depth", type=int, default=10)
    parser.add_argument("--max-bins", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--skip", action="append", default=[], choices=["ours", "spark-ml", "scikit-learn"])
    args = parser.parse_args()

    if args.cifar:
        data = read_local(args.cifar)
    elif SAMPLE.exists():
        data = augmented(read_local(SAMPLE), args.n, args.seed)
    else:
        data = templates(args.n, 10_000, args.seed)
    OUT.mkdir(parents=True, exist_ok=True)
    folder = write_binary_folder(data, OUT / "train-data")
    print(f"data: {len(data.train.labels):,} training / {len(data.test.labels):,} test images from {data.source}",
          flush=True)

    results = {}
    for name, run in (("ours", lambda: run_ours(folder, args)), ("spark-ml", lambda: run_spark_ml(data, args)),
                      ("scikit-learn", lambda: run_sklearn(data, args))):
        if name in args.skip:
            continue
        print(f"running {name} …", flush=True)
        results[name] = run()
        print(f"  {json.dumps(results[name])}", flush=True)

    load = os.getloadavg()
    machine = (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
               f"load average {load[0]:.1f} at the end, Python {platform.python_version()}")
    print(f"\n{args.trees} trees, depth {args.max_depth}, {args.max_bins} bins, gini, "
          f"{len(data.train.labels):,} training images, {len(data.test.labels):,} test images; {machine}")
    print(f"{'':34}{'train s':>9}{'job s':>8}{'accuracy':>10}{'≥40% keeps':>12}{'at precision':>14}")
    labels = {"ours": f"ours (broadcast, {args.master})", "spark-ml": f"Spark ML RF ({args.master})",
              "scikit-learn": "scikit-learn RF (n_jobs=2)"}
    for name, r in results.items():
        job = f"{r['job_seconds']:.1f}" if "job_seconds" in r else "—"
        accuracy = f"{r['accuracy']:.1%}"
        print(f"{labels[name]:34}{r['train_seconds']:>9.1f}{job:>8}{accuracy:>10}"
              f"{r['kept_at_40']:>12.1%}{r['precision_at_40']:>14.1%}")
        if "hard_vote_accuracy" in r:
            print(f"{'  (its trees as hard votes)':34}{'':>17}{r['hard_vote_accuracy']:>10.1%}")
    (OUT / f"train-{len(data.train.labels)}.json").write_text(
        json.dumps({"machine": machine, "args": vars(args), "results": results}, indent=2))


if __name__ == "__main__":
    main()
