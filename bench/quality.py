"""Tag quality and cost per feature set and forest size, in one table from one run.

    .venv/bin/python -m bench.quality [--cifar cifar-10-binary.tar.gz] [--extra photos-32x32.tar.gz]
        [--features pixels,kmeans,cnn] [--images 200000] [--trees 10]

For each feature set (pixels, kmeans, cnn) and forest size, on the local stack (make up):
- ``bin/spark-submit jobs/train.py`` on the Spark standalone cluster: whole-job wall seconds and the
  card's test figures (test accuracy; coverage and precision at the 40% rule; synthetic junk tagged,
  real test images called junk);
- similar images: for each test image, the share of its 10 nearest training images (cosine, the
  model's similarity vector) that have its class;
- ``bin/spark-submit jobs/tag.py`` over a Tiny-format corpus of --images images in HDFS (CIFAR-10
  images cycled): the job's own images/s (the manifest's, tasks only) and the whole job's.
- in the wild (``--extra``, the labelled photos archive): the bench first sets aside its own
  evaluation photos, never given to training: a share of the "none" kinds whole and the same share
  of the photos of the ten. The rest goes to ``--extra`` (the learned feature sets train on it and
  hold out their own share, reported from the card as "seen"/"unseen" kinds). On the bench's photos:
  precision and coverage on photos of the ten, the share of none photos tagged, and the calibration
  of the card's ``expected_precision`` on a mix with ``--wild-share`` none photos;
- model size (the model dir's files) and the size of the framework the tag job needs.
The original approach's row: the raw-pixel forest fed Tiny Images bytes unconverted (every image
seen transposed), as the original project did, on the same test images and junk.

Data: the full CIFAR-10 training set (default: the development archive beside this checkout).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np

from bench.common import DEV, OUT, PHOTOS, machine
from tinytags.core import features, wild
from tinytags.core.contract import CLASSES, MIN_AGREEMENT, min_votes_for
from tinytags.core.images import cifar_to_tiny_layout
from tinytags.core.junk import junk_images
from tinytags.core.labelled import Labelled, hold_out
from tinytags.core.tagger import Tagger
from tinytags.io.cifar_files import read_local
from tinytags.io.extra_files import read_extra
from tinytags.io.shard_files import make_sample
from tinytags.io.storage import Storage
from tinytags.settings import stack_settings

ROOT = Path(__file__).resolve().parent.parent
QUALITY = OUT / "quality"
EVAL_SEED = 777  # the bench's own split of the photos, unlike any training seed
EVAL_SHARE = 0.15  # the share of the photos (and of their none kinds, whole) it keeps from training


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


def write_archive(data: Labelled, mask: np.ndarray, folder: Path) -> Path:
    """The chosen photos in the photos archive layout (what --extra reads), for the train job."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "images.bin").write_bytes(np.ascontiguousarray(data.pixels[mask]).tobytes())
    (folder / "labels.bin").write_bytes(data.labels[mask].astype(np.uint8).tobytes())
    (folder / "kinds.bin").write_bytes(data.kinds[mask].astype(np.uint8).tobytes())
    (folder / "kinds.txt").write_text("".join(f"{i}\tk{i}\t-\t{name}\n" for i, name in enumerate(data.kind_names)))
    return folder


def wild_row(tagger: Tagger, card: dict, data, photos: Labelled | None, split, share: float) -> dict:
    """On the bench's own held-out photos: photos of the ten, none photos tagged, calibration of the card."""
    if photos is None:
        return {}
    need = min_votes_for(MIN_AGREEMENT, tagger.n_trees)
    test = tagger.predict(data.test.pixels, vectors=False)
    sets = {name: tagger.predict(photos.pixels[mask], vectors=False) for name, mask in
            (("positive", split.held_positive), ("seen", split.held_seen), ("unseen", split.held_unseen))}
    positive = wild.positives_figures(sets["positive"].label, sets["positive"].votes, sets["positive"].junk,
                                      photos.labels[split.held_positive], need)
    row = {"photos_coverage": positive["coverage"], "photos_precision": positive["precision"],
           "none_tagged_bench_seen": wild.none_figures(sets["seen"].votes, sets["seen"].junk, need)["tagged"],
           "none_tagged_bench_unseen": wild.none_figures(sets["unseen"].votes, sets["unseen"].junk, need)["tagged"]}
    card_wild = card.get("wild") or {}
    row["none_tagged_card_seen"] = (card_wild.get("none_seen") or {}).get("tagged")
    row["none_tagged_card_unseen"] = (card_wild.get("none_unseen") or {}).get("tagged")
    table = card["expected_precision"]
    lookup = np.array([[np.nan if x is None else x for x in table[name]] for name in CLASSES], float)
    pos = tuple(np.concatenate([getattr(test, f), getattr(sets["positive"], f)]) for f in ("label", "votes", "junk"))
    pos = (*pos, np.concatenate([data.test.labels, photos.labels[split.held_positive]]))
    unseen = sets["unseen"]
    result = wild.calibration(lookup, pos, (unseen.label, unseen.votes, unseen.junk), share, need, CLASSES)
    row["mix_expected"], row["mix_measured"] = result["overall"]["expected"], result["overall"]["measured"]
    gaps = [abs(r["expected"] - r["measured"]) for r in result["per_tag"].values() if r["tags"] >= 20]
    row["mix_worst_tag_gap"] = round(max(gaps), 4) if gaps else None
    return row


def sizes(model: Path, feature_set: str) -> dict:
    """Model dir bytes, and the installed size of the framework the tag job needs for these features."""
    import importlib.util

    def folder_bytes(package: str) -> int:
        spec = importlib.util.find_spec(package)
        root = Path(spec.origin).parent if spec and spec.origin else None
        return sum(f.stat().st_size for f in root.rglob("*") if f.is_file()) if root else 0

    model_bytes = sum(f.stat().st_size for f in model.glob("*.npz") if f.name != "wild_predictions.npz")
    runtime = folder_bytes("onnxruntime") if feature_set == "cnn" else 0
    training = folder_bytes("tensorflow") + folder_bytes("keras") if feature_set == "cnn" else 0
    return {"model_mb": round(model_bytes / 1e6, 2), "tag_framework_mb": round(runtime / 1e6, 1),
            "train_framework_mb": round(training / 1e6, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cifar", default=str(DEV), help="CIFAR-10 archive or folder (default: the dev archive)")
    parser.add_argument("--images", type=int, default=200_000, help="images in the tagging corpus")
    parser.add_argument("--trees", default="10", help="forest sizes, comma-separated")
    parser.add_argument("--features", default="pixels,kmeans,cnn", help="feature sets, comma-separated")
    parser.add_argument("--extra", default=str(PHOTOS) if PHOTOS.exists() else "",
                        help="labelled photos (the photos archive; default beside this checkout); '' for none")
    parser.add_argument("--eval-share", type=float, default=EVAL_SHARE,
                        help="share of the photos (and of their none kinds, whole) the bench keeps from training")
    parser.add_argument("--wild-share", type=float, default=0.5)
    parser.add_argument("--train-args", default="", help="more flags for jobs/train.py, e.g. '--cnn-epochs 12'")
    parser.add_argument("--master", default=os.environ.get("TINYTAGS_SPARK_MASTER", stack_settings().spark_master))
    parser.add_argument("--hdfs", default=os.environ.get("TINYTAGS_HDFS_URI", stack_settings().hdfs_uri))
    args = parser.parse_args()
    QUALITY.mkdir(parents=True, exist_ok=True)
    data = read_local(args.cifar)
    photos = read_extra(Storage(), args.extra) if args.extra else None
    split = hold_out(photos, args.eval_share, EVAL_SEED) if photos is not None else None
    extra_flags = []
    if photos is not None:
        extra_flags = ["--extra", str(write_archive(photos, split.train, QUALITY / "extra-train")),
                       "--wild-share", str(args.wild_share)]
        print(f"photos: {int(split.train.sum()):,} to --extra, {int(split.held_positive.sum()):,} of the ten, "
              f"{int(split.held_seen.sum()):,} none of seen kinds and {int(split.held_unseen.sum()):,} of "
              f"{len(np.unique(photos.kinds[split.held_unseen]))} unseen kinds kept for the bench", flush=True)
    junk = junk_images(2000, seed=12345)  # a seed no model trained on
    storage = Storage()
    corpus = f"{args.hdfs}/tinytags-bench/quality-{args.images}"
    pixels = np.concatenate([data.train.pixels, data.test.pixels])
    print(f"corpus: {args.images:,} images in {corpus} (written once, then reused)", flush=True)
    make_sample(storage, pixels, None, corpus, count=args.images, shard_size=args.images)

    rows = []
    for feature_set in args.features.split(","):
        for trees in map(int, args.trees.split(",")):
            name = f"{feature_set} x {trees} trees"
            model = QUALITY / f"model-{feature_set}-{trees}"
            print(f"== {name}: train", flush=True)
            flags = (extra_flags + args.train_args.split()) if feature_set != "pixels" else []
            train_seconds, _ = submit(args.master, "jobs/train.py", "--cifar", args.cifar, "--model", str(model),
                                      "--features", feature_set, "--trees", str(trees), *flags)
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
                **wild_row(tagger, card, data, photos, split, args.wild_share), **sizes(model, feature_set),
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

    where = machine()
    (QUALITY / "results.json").write_text(json.dumps({"machine": where, "cifar": args.cifar, "extra": args.extra,
                                                     "rows": rows}, indent=1))
    print(f"\nQuality at the {MIN_AGREEMENT:.0%} rule on the {len(data.test.labels):,} test images "
          f"({len(data.train.labels):,} training images); junk = 2,000 synthetic non-photos; {where}")
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
    if photos is not None:
        print(f"\nIn the wild, on the bench's own held-out photos (never trained on; mix = {args.wild_share:.0%} none "
              f"photos of unseen kinds):")
        print("| model | photos of the ten: coverage | precision | none tagged, seen kinds (card / bench) | "
              "unseen kinds (card / bench) | mix: promised | measured | worst tag gap | model MB | tag framework MB |")
        print("|" + "---|" * 10)
        for r in rows:
            if "photos_precision" not in r:
                continue
            print(f"| {r['name']} | {cell(r['photos_coverage'])} | {cell(r['photos_precision'])} | "
                  f"{cell(r['none_tagged_card_seen'])} / {cell(r['none_tagged_bench_seen'])} | "
                  f"{cell(r['none_tagged_card_unseen'])} / {cell(r['none_tagged_bench_unseen'])} | "
                  f"{cell(r['mix_expected'])} | {cell(r['mix_measured'])} | {cell(r['mix_worst_tag_gap'])} | "
                  f"{r['model_mb']} | {r['tag_framework_mb']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
