"""The train job on Spark: read CIFAR-10, fit the features and the forest, evaluate, write the model dir.

The entry point is jobs/train.py, whose docstring documents the flags, the engines and the model dir.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np

from tinytags.core import cifar, features, training, wild
from tinytags.core import forest as forest_io
from tinytags.core.cnn import CnnFeatures, Shape
from tinytags.core.cnn_training import Recipe
from tinytags.core.contract import CARD_FILE, FOREST_FILE, MIN_AGREEMENT, min_votes_for
from tinytags.core.forest import Forest
from tinytags.core.images import RECORD_BYTES
from tinytags.core.junk import JUNK_KINDS, junk_images
from tinytags.core.labelled import NONE_LABEL
from tinytags.core.tagger import Tagger
from tinytags.core.training import (
    TreeParams,
    bin_pixels,
    fit_bins,
    forest_from_spark_ml,
    grow_trees,
)
from tinytags.io.extra_files import read_extras
from tinytags.io.spark import log
from tinytags.io.storage import Storage, kind, local_path
from tinytags.pipeline.train_sets import PREDICTIONS_FILE, fit_cnn, training_pool, wild_evaluation

JOB = "train"
FEATURE_SETS = ("cnn", "kmeans", "pixels")
FEATURE_CHUNK = 2000  # images per feature task (6 MB of pixels in, 8 MB of pooled features out)


class TrainError(ValueError):
    """A flag or model dir that cannot be used; the message says which and why."""




# --- extract ----------------------------------------------------------------------------------


def read_cifar(spark, source: str) -> cifar.CifarData:
    """CIFAR-10 from a local path, hdfs:// (WebHDFS) or any other Hadoop URI (the driver's JVM)."""
    return cifar.read(Storage(spark=spark), source)


# --- transform ----------------------------------------------------------------------------------

def _chunks(pixels: np.ndarray, size: int) -> list[tuple[int, bytes]]:
    return [(lo, pixels[lo:lo + size].tobytes()) for lo in range(0, len(pixels), size)]


def fit_features(spark, train_pixels: np.ndarray, train_labels: np.ndarray, n_classes: int, seed: int,
                 junk: int) -> tuple[features.FeatureSet, np.ndarray, np.ndarray]:
    """Learn the k-means feature set; returns it, the training set's forest inputs (uint8) and their labels.

    Labels ``n_classes`` (real photos of none of the classes, from ``--extra``) join the synthetic
    junk as the "none" class.

    Spark tasks sample patches and encode every training image (the heavy part); the driver fits
    the whitening and k-means on the sampled patches and the LDA head on the pooled features.
    k-means runs in numpy on the driver: 200,000 patches x 40 dims x 256 centroids is a few
    seconds of BLAS there, while Spark ML's KMeans on the same patches would first turn them into
    200,000 DataFrame vectors (docs/models.md, "Features"; timings in bench/RESULTS.md).
    """
    sc = spark.sparkContext
    config = features.Config()
    n_real = train_labels.size
    junk_pixels = junk_images(junk, seed + 1) if junk else np.zeros((0, RECORD_BYTES), np.uint8)
    pixels = np.concatenate([train_pixels, junk_pixels])
    labels = np.concatenate([train_labels, np.full(junk, n_classes, train_labels.dtype)])
    chunks = _chunks(pixels, FEATURE_CHUNK)  # fixed: the same seed gives the same model on any cluster
    parts = sc.parallelize(chunks, len(chunks)).cache()
    per_image = config.kmeans_patches / n_real

    def sample(items):
        for lo, data_bytes in items:
            real = max(0, min(len(data_bytes) // RECORD_BYTES, n_real - lo))
            if real:
                block = np.frombuffer(data_bytes, np.uint8).reshape(-1, RECORD_BYTES)[:real]
                count = int(round(per_image * real))
                yield features.sample_patches(block, count, seed * 7919 + lo, config.patch).tobytes()

    started = time.monotonic()
    patches = np.frombuffer(b"".join(parts.mapPartitions(sample).collect()), np.float32).reshape(-1, config.patch ** 2 * 3)
    log(JOB, f"features: {len(patches):,} patches sampled in {len(chunks)} tasks ({time.monotonic() - started:.1f} s); "
             f"whitening + k-means ({config.centroids} centroids) on the driver")
    started = time.monotonic()
    dictionary = features.fit_dictionary(patches, config, seed)
    del patches
    log(JOB, f"features: dictionary fitted in {time.monotonic() - started:.1f} s; encoding {len(pixels):,} images "
             f"({n_real:,} real + {junk:,} synthetic junk) in Spark tasks")
    shared = sc.broadcast(dictionary)

    def encode(items):
        encoder = features.Encoder(shared.value, config)
        for lo, data_bytes in items:
            yield lo, encoder(np.frombuffer(data_bytes, np.uint8).reshape(-1, RECORD_BYTES)).tobytes()

    started = time.monotonic()
    dims = config.grid ** 2 * config.centroids
    pooled = np.empty((len(pixels), dims), np.float32)
    try:
        # toLocalIterator: one task's result at a time through the driver's JVM (a collect would
        # hold all of them, 56,000 x 2,304 floats, there at once).
        for lo, values in parts.mapPartitions(encode).toLocalIterator(prefetchPartitions=True):
            block = np.frombuffer(values, np.float32).reshape(-1, dims)
            pooled[lo:lo + len(block)] = block
    finally:
        shared.destroy()
        parts.unpersist()
    log(JOB, f"features: encoded in {time.monotonic() - started:.1f} s; fitting the LDA head on the driver")
    has_none = bool(junk) or bool((labels == n_classes).any())
    feature_set = features.FeatureSet(config).fit_from_pooled(
        dictionary, pooled, labels, n_classes, n_classes if has_none else None)
    inputs = features.quantise(feature_set.project(pooled), feature_set.head.cuts)
    return feature_set, inputs, labels




def train_broadcast(spark, inputs: np.ndarray, labels: np.ndarray, n_classes: int, params: TreeParams,
                    trees: int, seed: int) -> Forest:
    """Every tree in its own Spark task, over one broadcast copy of the binned training set."""
    sc = spark.sparkContext
    log(JOB, f"binning {labels.size} images x {inputs.shape[1]} features into at most {params.max_bins} bins each")
    bins = fit_bins(inputs, params.max_bins, seed)
    binned = bin_pixels(inputs, bins)
    shared = sc.broadcast((binned, labels, bins))
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


def train_spark_ml(spark, inputs: np.ndarray, labels: np.ndarray, n_classes: int, params: TreeParams,
                   trees: int, seed: int, scratch: str | None) -> Forest:
    """Spark ML's RandomForestClassifier, converted to the flat forest through its saved node table."""
    from pyspark.ml.classification import RandomForestClassifier
    from pyspark.ml.linalg import Vectors, VectorUDT
    from pyspark.sql.types import DoubleType, StructField, StructType

    sc = spark.sparkContext
    chunk = 2_000
    dims = inputs.shape[1]
    pieces = [(inputs[i:i + chunk].tobytes(), labels[i:i + chunk].tolist())
              for i in range(0, labels.size, chunk)]

    def to_rows(piece):
        values, piece_labels = piece
        rows = np.frombuffer(values, np.uint8).reshape(-1, dims).astype(np.float64)
        return [(float(label), Vectors.dense(row)) for label, row in zip(piece_labels, rows)]

    schema = StructType([StructField("label", DoubleType()), StructField("features", VectorUDT())])
    frame = spark.createDataFrame(sc.parallelize(pieces, len(pieces)).flatMap(to_rows), schema).cache()
    log(JOB, f"spark-ml: {frame.count()} rows in {len(pieces)} partitions; fitting {trees} trees")
    model = RandomForestClassifier(
        numTrees=trees, maxDepth=params.max_depth, maxBins=params.max_bins, impurity=params.impurity,
        seed=seed, featureSubsetStrategy="sqrt",
    ).fit(frame)
    frame.unpersist()
    return spark_ml_forest(spark, model, n_classes, scratch)


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


def choose_engine(requested: str, inputs: np.ndarray, limit_mb: float) -> str:
    """The engine to use: as requested, or for auto by the size of the forest's training inputs."""
    if requested != "auto":
        return requested
    return "broadcast" if inputs.nbytes <= limit_mb * 1e6 else "spark-ml"


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


def write_model_dir(model_dir: Path, tagger: Tagger, card: dict, classes: tuple[str, ...],
                    predictions: bytes | None = None) -> None:
    """Forest, features, plots and (last) card into a staging dir beside model_dir, then swap it into place."""
    model_dir = model_dir.resolve()
    staging = model_dir.parent / f".{model_dir.name}.partial-{uuid.uuid4().hex[:8]}"
    staging.mkdir(parents=True)
    try:
        forest_io.save(tagger.forest, staging)
        if isinstance(tagger.features, (features.FeatureSet, CnnFeatures)):
            tagger.features.save(staging)
        if predictions is not None:
            (staging / PREDICTIONS_FILE).write_bytes(predictions)
        training.plot_confusion(card["confusion_matrix"], classes, staging / training.CONFUSION_PNG)
        training.plot_agreement(card["agreement"], staging / training.AGREEMENT_PNG, MIN_AGREEMENT)
        training.plot_precision_coverage(card["per_class_agreement"], staging / training.PRECISION_COVERAGE_PNG,
                                         MIN_AGREEMENT)
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




def forest_none_weight(requested: str, labels: np.ndarray, junk_class: int | None, extra, share: float,
                       feature_set: str) -> float:
    """The forest's weight on "none" images: ``--none-weight`` as a number, or ``auto``: for ``cnn``,
    the prior of ``--wild-share`` (tinytags.core.wild.prior_weight) when the extra photos hold "none"
    photos, else 1. (``kmeans`` keeps 1: its features hardly tell photos of the ten from other
    photos, so the prior costs most of its coverage of them; docs/models.md.)"""
    if junk_class is None:
        return 1.0
    if requested != "auto":
        return float(requested)
    if feature_set != "cnn" or extra is None or not (extra.labels == NONE_LABEL).any():
        return 1.0
    return wild.prior_weight(labels, junk_class, share)


def run(spark, args: argparse.Namespace, params: TreeParams, model_dir: Path, began: float) -> dict:
    """Extract, transform, load; returns the model card written."""
    log(JOB, f"reading CIFAR-10 from {args.cifar}")
    started = time.monotonic()
    data = read_cifar(spark, args.cifar)
    timings = {"read": round(time.monotonic() - started, 2)}
    log(JOB, f"read {data.train.labels.size} training and {data.test.labels.size} test images "
                     f"({data.format} format; classes {', '.join(data.classes)})")

    extra = None
    if args.extra:
        log(JOB, f"reading --extra {', '.join(args.extra)}")
        extra = read_extras(Storage(spark=spark), args.extra)
        log(JOB, f"read {len(extra):,} labelled photos: " + ", ".join(f"{k} {n:,}" for k, n in extra.counts().items()))
    pool = training_pool(data.train.pixels, data.train.labels, extra, args.holdout_share, args.seed)
    started = time.monotonic()
    n_classes = len(data.classes)
    network_facts = None
    if args.features == "pixels":
        feature_set, inputs, labels = features.PixelFeatures(), pool.pixels, pool.labels
    elif args.features == "cnn":
        shape = Shape(widths=tuple(args.cnn_widths), flip=not args.cnn_no_flip)
        recipe = Recipe(epochs=args.cnn_epochs, batch=args.cnn_batch, peak_lr=args.cnn_lr, precision=args.cnn_precision)
        feature_set, inputs, labels, network_facts = fit_cnn(
            pool, shape, recipe, args.junk_images, args.forest_share, args.cnn_forest_pcs, args.seed,
            lambda line: log(JOB, line))
        n_classes += 1
    else:
        feature_set, inputs, labels = fit_features(spark, pool.pixels, pool.labels, n_classes, args.seed,
                                                   args.junk_images)
        n_classes += feature_set.junk_class is not None
    timings["features"] = round(time.monotonic() - started, 2)
    none_weight = forest_none_weight(args.none_weight, labels, feature_set.junk_class, extra, args.wild_share,
                                     args.features)
    fitted_images = len(labels)
    if none_weight > 1.0:
        rows = wild.none_repeats(labels, feature_set.junk_class, none_weight, args.seed)
        log(JOB, f"forest prior: each 'none' image counts {none_weight:.2f} times ({len(labels):,} -> "
                 f"{len(rows):,} rows), so 'none' weighs what it does in the corpus (--wild-share)")
        inputs, labels = inputs[rows], labels[rows]
    forest_fit = {"images": fitted_images, "rows": int(len(labels)), "none_weight": round(none_weight, 3),
                  "none_share": round(float((labels == feature_set.junk_class).mean()), 4)
                  if feature_set.junk_class is not None else 0.0}

    engine = choose_engine(args.engine, inputs, args.broadcast_limit_mb)
    started = time.monotonic()
    if engine == "broadcast":
        forest = train_broadcast(spark, inputs, labels, n_classes, params, args.trees, args.seed)
    else:
        forest = train_spark_ml(spark, inputs, labels, n_classes, params, args.trees, args.seed, args.scratch)
    timings["forest"] = round(time.monotonic() - started, 2)
    timings["train"] = round(timings["features"] + timings["forest"], 2)
    tagger = Tagger(forest, feature_set)

    log(JOB, f"evaluating on {data.test.labels.size} test images and {args.junk_test_images:,} held-out junk images")
    started = time.monotonic()
    test = tagger.predict(data.test.pixels)
    figures = training.evaluate(test.vote_counts, test.label, data.test.labels, data.classes, forest.n_trees, test.junk)
    held_junk = (tagger.predict(junk_images(args.junk_test_images, args.seed + 7))
                 if args.junk_test_images else None)
    min_votes = min_votes_for(MIN_AGREEMENT, forest.n_trees)
    figures["junk"] = None if held_junk is None else {
        "images": args.junk_test_images,
        "kinds": list(JUNK_KINDS),
        "tagged": round(float((~held_junk.junk & (held_junk.votes >= min_votes)).mean()), 4),
        "real_called_junk": figures["real_called_junk"],
    }
    predictions = None
    if extra is not None:
        log(JOB, f"wild figures: held-out photos and kinds, expected precision at {args.wild_share:.0%} none")
        figures["expected_precision_cifar"] = figures["expected_precision"]
        figures["wild"], figures["expected_precision"], predictions = wild_evaluation(
            tagger, data.test.pixels, data.test.labels, pool, args.wild_share, MIN_AGREEMENT)
        figures["extra"] = {"sources": list(args.extra), "counts": extra.counts(), "kinds": len(extra.kind_names),
                            "holdout_share": args.holdout_share}
    if network_facts is not None:
        figures["network"] = network_facts
    figures["forest_fit"] = forest_fit
    timings["evaluate"] = round(time.monotonic() - started, 2)
    timings["job"] = round(time.monotonic() - began, 2)
    card = training.model_card(
        forest=forest, figures=figures, classes=data.classes, version=tagger.version,
        features={"name": feature_set.name, "version": feature_set.version, "dims": int(inputs.shape[1]),
                  "junk_class": feature_set.junk_class,
                  "file": features.FEATURES_FILE if feature_set.name != "pixels" else None},
        params={
            "trees": args.trees, "max_depth": params.max_depth, "max_bins": params.max_bins,
            "impurity": params.impurity, "seed": args.seed, "engine": engine, "features": args.features,
            "junk_images": args.junk_images if args.features != "pixels" else 0,
            "features_per_node": "sqrt", "bootstrap": params.bootstrap,
            "leaf_votes": "all training images" if engine == "broadcast" and params.relabel_leaves
            else "bootstrap sample",
        },
        source={"path": data.source, "format": data.format, "files": list(data.files)},
        n_train=data.train.labels.size, n_test=data.test.labels.size, timings=timings,
        spark_master=spark.sparkContext.master,
    )
    log(JOB, f"writing {model_dir}")
    write_model_dir(model_dir, Tagger(forest, feature_set, card), card, data.classes, predictions)
    return card


