"""Train the random forest on CIFAR-10 and write the model dir that every later step uses.

    bin/spark-submit jobs/train.py --cifar SRC --model DIR [--trees 10 --max-depth 10 --max-bins 50 --seed N]

SRC: cifar-10-binary.tar.gz or cifar-10-python.tar.gz, or either extracted folder, as a local
path or an hdfs:// URI. DIR (local) receives ``forest.npz`` (the flat forest, jobs/core/forest.py),
``model_card.json`` (docs: README.md, "Training") and two plots, all at once: the dir is built
beside DIR and renamed into place, so a failed run never leaves a model that looks valid.

Engines (``--engine``): ``broadcast`` grows each tree in its own Spark task from a broadcast copy
of the binned training set (jobs/core/training.py); ``spark-ml`` runs Spark ML's RandomForestClassifier,
for a training set too large to broadcast; ``auto`` (default) picks broadcast up to
``--broadcast-limit-mb``. Why: README.md, "Training".
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path[0] = str(Path(__file__).resolve().parent.parent)  # noqa: E402 - see jobs/infra/spark.py

import argparse
import json
import shutil
import tempfile
import threading
import time
import uuid

import numpy as np

from jobs.core import cifar, training
from jobs.core import forest as forest_io
from jobs.core.contract import CARD_FILE, FOREST_FILE, MIN_AGREEMENT
from jobs.core.forest import Evaluator, Forest
from jobs.core.training import (
    IMPURITIES,
    TreeParams,
    bin_pixels,
    fit_bins,
    forest_from_spark_ml,
    grow_trees,
)
from jobs.infra.settings import env
from jobs.infra.spark import log, spark_session
from jobs.infra.storage import Storage, kind, local_path

JOB = "train"


class TrainError(ValueError):
    """A flag or model dir that cannot be used; the message says which and why."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Flags, with defaults from TINYTAGS_* environment variables where a path is involved."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cifar", default=env("TINYTAGS_CIFAR"),
                        help="CIFAR-10 archive or folder, local or hdfs:// (env TINYTAGS_CIFAR)")
    parser.add_argument("--model", default=env("TINYTAGS_MODEL_DIR"),
                        help="model dir to write, local (env TINYTAGS_MODEL_DIR)")
    parser.add_argument("--trees", type=int, default=10)
    parser.add_argument("--max-depth", type=int, default=10)
    parser.add_argument("--max-bins", type=int, default=50, help="bins per pixel feature, 2..256")
    parser.add_argument("--impurity", choices=IMPURITIES, default="gini")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--engine", choices=("auto", "broadcast", "spark-ml"), default="auto",
                        help="broadcast: our trees in parallel Spark tasks; spark-ml: Spark ML's forest")
    parser.add_argument("--broadcast-limit-mb", type=float, default=float(
        env("TINYTAGS_BROADCAST_LIMIT_MB", "2048")),
        help="largest training set (MB of pixels) that auto trains by broadcast")
    parser.add_argument("--scratch", default=env("TINYTAGS_SCRATCH"),
                        help="folder the spark-ml engine saves its model in; on a multi-node "
                             "cluster one that every node sees, e.g. hdfs:///tmp (env TINYTAGS_SCRATCH)")
    args = parser.parse_args(argv)
    missing = [flag for flag, value in (("--cifar", args.cifar), ("--model", args.model)) if not value]
    if missing:
        parser.error(f"{' and '.join(missing)} required (or TINYTAGS_CIFAR / TINYTAGS_MODEL_DIR)")
    for flag, value, low, high in (("--trees", args.trees, 1, 1000), ("--max-depth", args.max_depth, 1, 30),
                                   ("--max-bins", args.max_bins, 2, 256)):
        if not low <= value <= high:
            parser.error(f"{flag} must be between {low} and {high}, got {value}")
    return args


# --- extract ----------------------------------------------------------------------------------


def read_cifar(spark, source: str) -> cifar.CifarData:
    """CIFAR-10 from a local path, hdfs:// (WebHDFS) or any other Hadoop URI (the driver's JVM)."""
    return cifar.read(Storage(spark=spark), source)


# --- transform ----------------------------------------------------------------------------------


def train_broadcast(spark, data: cifar.CifarData, params: TreeParams, trees: int, seed: int) -> Forest:
    """Every tree in its own Spark task, over one broadcast copy of the binned training set."""
    sc = spark.sparkContext
    log(JOB, f"binning {data.train.labels.size} images into at most {params.max_bins} bins per pixel")
    bins = fit_bins(data.train.pixels, params.max_bins, seed)
    binned = bin_pixels(data.train.pixels, bins)
    shared = sc.broadcast((binned, data.train.labels, bins))
    n_classes = len(data.classes)
    log(JOB, f"broadcast {binned.nbytes / 1e6:.0f} MB; growing {trees} trees in {trees} tasks "
                     f"on {sc.defaultParallelism} cores")

    def grow(indices):
        binned, labels, bins = shared.value
        for index in indices:
            yield index, grow_trees(binned, labels, n_classes, bins, params, seed, [index])

    tasks = sc.parallelize(range(trees), trees).mapPartitions(grow)
    try:
        grown = dict(_collect_with_progress(sc, tasks, trees))
    finally:
        shared.destroy()
    return forest_io.concat([grown[i] for i in range(trees)])


def train_spark_ml(spark, data: cifar.CifarData, params: TreeParams, trees: int, seed: int,
                   scratch: str | None) -> Forest:
    """Spark ML's RandomForestClassifier, converted to the flat forest through its saved node table."""
    from pyspark.ml.classification import RandomForestClassifier
    from pyspark.ml.linalg import Vectors, VectorUDT
    from pyspark.sql.types import DoubleType, StructField, StructType

    sc = spark.sparkContext
    chunk = 2_000
    pieces = [(data.train.pixels[i:i + chunk].tobytes(), data.train.labels[i:i + chunk].tolist())
              for i in range(0, data.train.labels.size, chunk)]

    def to_rows(piece):
        pixels, labels = piece
        rows = np.frombuffer(pixels, np.uint8).reshape(-1, 3072).astype(np.float64)
        return [(float(label), Vectors.dense(row)) for label, row in zip(labels, rows)]

    schema = StructType([StructField("label", DoubleType()), StructField("features", VectorUDT())])
    frame = spark.createDataFrame(sc.parallelize(pieces, len(pieces)).flatMap(to_rows), schema).cache()
    log(JOB, f"spark-ml: {frame.count()} rows in {len(pieces)} partitions; fitting {trees} trees")
    model = RandomForestClassifier(
        numTrees=trees, maxDepth=params.max_depth, maxBins=params.max_bins, impurity=params.impurity,
        seed=seed, featureSubsetStrategy="sqrt",
    ).fit(frame)
    frame.unpersist()
    return spark_ml_forest(spark, model, len(data.classes), scratch)


def spark_ml_forest(spark, model, n_classes: int, scratch: str | None = None) -> Forest:
    """A fitted RandomForestClassificationModel as a flat Forest, read from the node table it saves."""
    base = scratch or tempfile.mkdtemp(prefix="tinytags-sparkml-")
    folder = f"{base.rstrip('/')}/rf-{uuid.uuid4().hex[:8]}"
    try:
        model.write().save(folder)
        nodes = [row.asDict(recursive=True) for row in spark.read.parquet(f"{folder}/data").collect()]
    finally:
        if kind(folder) == "local":  # a scratch folder on HDFS is the user's to clean
            shutil.rmtree(local_path(base if scratch is None else folder), ignore_errors=True)
    log(JOB, f"spark-ml: converted {len(nodes)} nodes to the flat forest")
    return forest_from_spark_ml(nodes, model.getNumTrees, n_classes)


def _collect_with_progress(sc, rdd, total: int) -> list:
    """rdd.collect(), logging "k/total trees" as tasks finish (the collect runs in a thread)."""
    result: dict = {}

    def run():
        try:
            result["value"] = rdd.collect()
        except Exception as error:  # noqa: BLE001 - re-raised in the caller's thread
            result["error"] = error

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    tracker = sc.statusTracker()
    reported = -1
    while worker.is_alive():
        worker.join(0.5)
        done = sum(
            info.numCompletedTasks for info in
            (tracker.getStageInfo(stage) for stage in tracker.getActiveStageIds()) if info
        )
        if done != reported and worker.is_alive():
            log(JOB, f"trained {done}/{total} trees")
            reported = done
    if "error" in result:
        raise result["error"]
    log(JOB, f"trained {total}/{total} trees")
    return result["value"]


def choose_engine(requested: str, data: cifar.CifarData, limit_mb: float) -> str:
    """The engine to use: as requested, or for auto by the size of the training pixels."""
    if requested != "auto":
        return requested
    return "broadcast" if data.train.pixels.nbytes <= limit_mb * 1e6 else "spark-ml"


# --- load -------------------------------------------------------------------------------------


def check_model_dir(model_dir: Path) -> None:
    """Refuse, before any work, a model dir that is a file or a folder of something else."""
    if model_dir.exists() and not model_dir.is_dir():
        raise TrainError(f"--model {model_dir}: is a file; expected a folder for the model")
    if model_dir.is_dir() and any(model_dir.iterdir()) and not (
        (model_dir / CARD_FILE).exists() or (model_dir / FOREST_FILE).exists()
    ):
        raise TrainError(
            f"--model {model_dir}: is a folder that holds no model ({CARD_FILE}, {FOREST_FILE}); "
            f"refusing to replace it — give an empty or new folder, or an older model dir"
        )
    parent = model_dir.resolve().parent
    if not parent.exists():
        try:
            parent.mkdir(parents=True)
        except OSError as error:
            raise TrainError(f"--model {model_dir}: cannot create {parent} ({error})") from error


def write_model_dir(model_dir: Path, forest: Forest, card: dict, classes: tuple[str, ...]) -> None:
    """Forest, plots and (last) card into a staging dir beside model_dir, then swap it into place."""
    model_dir = model_dir.resolve()
    staging = model_dir.parent / f".{model_dir.name}.partial-{uuid.uuid4().hex[:8]}"
    staging.mkdir(parents=True)
    try:
        forest_io.save(forest, staging)
        training.plot_confusion(card["confusion_matrix"], classes, staging / training.CONFUSION_PNG)
        training.plot_agreement(card["agreement"], staging / training.AGREEMENT_PNG, MIN_AGREEMENT)
        (staging / CARD_FILE).write_text(json.dumps(card, indent=2) + "\n")
        if model_dir.exists():
            retired = model_dir.parent / f".{model_dir.name}.old-{uuid.uuid4().hex[:8]}"
            model_dir.rename(retired)
            staging.rename(model_dir)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            staging.rename(model_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    model_dir = Path(args.model)
    began = time.monotonic()
    try:
        if kind(args.model) != "local":
            raise TrainError(f"--model {args.model}: expected a local folder for the model dir")
        if kind(args.cifar) == "local" and not Path(local_path(args.cifar)).exists():
            cifar.read_local(local_path(args.cifar))  # fails with the reader's message, before Spark starts
        check_model_dir(model_dir)
        params = TreeParams(max_depth=args.max_depth, max_bins=args.max_bins, impurity=args.impurity)
    except (cifar.CifarError, TrainError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    spark = spark_session("tinytags-train")
    try:
        card = run(spark, args, params, model_dir, began)
    except (cifar.CifarError, TrainError, forest_io.ModelError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    finally:
        spark.stop()
    print(training.summary(card, str(model_dir), MIN_AGREEMENT))
    return 0


def run(spark, args: argparse.Namespace, params: TreeParams, model_dir: Path, began: float) -> dict:
    """Extract, transform, load; returns the model card written."""
    log(JOB, f"reading CIFAR-10 from {args.cifar}")
    started = time.monotonic()
    data = read_cifar(spark, args.cifar)
    timings = {"read": round(time.monotonic() - started, 2)}
    log(JOB, f"read {data.train.labels.size} training and {data.test.labels.size} test images "
                     f"({data.format} format; classes {', '.join(data.classes)})")

    engine = choose_engine(args.engine, data, args.broadcast_limit_mb)
    started = time.monotonic()
    if engine == "broadcast":
        forest = train_broadcast(spark, data, params, args.trees, args.seed)
    else:
        forest = train_spark_ml(spark, data, params, args.trees, args.seed, args.scratch)
    timings["train"] = round(time.monotonic() - started, 2)

    log(JOB, f"evaluating on {data.test.labels.size} test images")
    started = time.monotonic()
    counts, predicted, _ = Evaluator(forest).predict(data.test.pixels)
    figures = training.evaluate(counts, predicted, data.test.labels, data.classes)
    timings["evaluate"] = round(time.monotonic() - started, 2)
    timings["job"] = round(time.monotonic() - began, 2)
    card = training.model_card(
        forest=forest, figures=figures, classes=data.classes,
        params={
            "trees": args.trees, "max_depth": params.max_depth, "max_bins": params.max_bins,
            "impurity": params.impurity, "seed": args.seed, "engine": engine,
            "features_per_node": "sqrt", "bootstrap": params.bootstrap,
            "leaf_votes": "all training images" if engine == "broadcast" and params.relabel_leaves
            else "bootstrap sample",
        },
        source={"path": data.source, "format": data.format, "files": list(data.files)},
        n_train=data.train.labels.size, n_test=data.test.labels.size, timings=timings,
        spark_master=spark.sparkContext.master,
    )
    log(JOB, f"writing {model_dir}")
    write_model_dir(model_dir, forest, card, data.classes)
    return card


if __name__ == "__main__":
    sys.exit(main())
