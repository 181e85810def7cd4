"""Train the random forest on CIFAR-10 and write the model dir that every later step uses.

    bin/spark-submit jobs/train.py --cifar SRC --model DIR [--features cnn|kmeans|pixels --extra SRC... --trees 10 --max-depth 10 --max-bins 50 --seed N]

SRC: cifar-10-binary.tar.gz or cifar-10-python.tar.gz, or either extracted folder, as a local
path or an hdfs:// URI. DIR (local) receives ``forest.npz`` (the flat forest, tinytags/core/forest.py),
``features.npz`` (the learned features, tinytags/core/features.py; not for ``--features pixels``),
``model_card.json`` (docs/models.md, "The model dir") and three plots, all at once: the dir is built
beside DIR and renamed into place, so a failed run never leaves a model that looks valid.

Features (``--features``): ``cnn`` (default) trains a small convolutional network here (Keras on
tensorflow-cpu, in the driver; tinytags/core/cnn.py) on most of the training images and feeds the
forest its logits and the leading components of its embedding for the rest, images it never saw.
``kmeans`` learns a k-means dictionary of 6x6 patches, pools its activations and projects
them with LDA to 10 numbers per image; Spark tasks sample the patches and encode the images, the
driver fits k-means and LDA. Both train an 11th class "none" from synthetic junk (noise, flat
colours, gradients, stripes) and from ``--extra`` photos of anything else, so the tag job refuses
what shows none of the ten. ``pixels`` trains on the raw 3,072 pixels.

``--extra SRC...`` adds labelled photos beside CIFAR-10 (a class-folder tree with ``none/`` for
anything else, packed shards with ``_labels.jsonl``, or the photos archive layout). A share of them
(``--holdout-share``), including whole "none" kinds, is held out: the card's ``wild`` figures say
how the model does on photos from elsewhere and on kinds it never saw, and its ``expected_precision``
holds on a corpus with ``--wild-share`` photos of none of the ten (``expected_precision_cifar`` keeps
the CIFAR-only table).

Engines (``--engine``): ``broadcast`` grows each tree in its own Spark task from a broadcast copy
of the binned training set (tinytags/core/training.py); ``spark-ml`` runs Spark ML's RandomForestClassifier,
for a training set too large to broadcast; ``auto`` (default) picks broadcast up to
``--broadcast-limit-mb``. Why: docs/models.md, "Why our own engine".
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from tinytags.core import cifar, training
from tinytags.core import forest as forest_io
from tinytags.core.contract import MIN_AGREEMENT
from tinytags.core.labelled import ExtraError
from tinytags.core.training import (
    IMPURITIES,
    TreeParams,
)
from tinytags.io import cifar_files
from tinytags.io.spark import spark_session
from tinytags.io.storage import kind, local_path
from tinytags.pipeline.train import FEATURE_SETS, TrainError, check_model_dir, run
from tinytags.settings import env


def _widths(text: str) -> list[int]:
    """``--cnn-widths``: three comma-separated channel counts."""
    try:
        widths = [int(w) for w in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected three whole numbers like 32,64,128, got {text!r}") from None
    if len(widths) != 3 or min(widths) < 1:
        raise argparse.ArgumentTypeError(f"expected three positive channel counts like 32,64,128, got {text!r}")
    return widths


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Flags, with defaults from TINYTAGS_* environment variables for paths, features and the network's size."""
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
    parser.add_argument("--features", choices=FEATURE_SETS, default=env("TINYTAGS_FEATURES", "cnn"),
                        help="cnn (default): a convolutional network trained here, its outputs under the forest; "
                             "kmeans: learned k-means patch features + LDA, faster to train and to tag; both with a "
                             "'none' class; pixels: the 3,072 raw pixels (fastest to tag) (env TINYTAGS_FEATURES)")
    parser.add_argument("--extra", nargs="+", default=[p for p in (env("TINYTAGS_EXTRA") or "").split(",") if p],
                        help="labelled photos to train beside CIFAR-10, 'none' for photos of anything else: class-"
                             "folder trees, packed shards with _labels.jsonl, or the photos archive layout "
                             "(env TINYTAGS_EXTRA, comma-separated)")
    parser.add_argument("--holdout-share", type=float, default=0.2,
                        help="share of the extra photos, and of their 'none' kinds whole, held out for the card's "
                             "wild figures")
    parser.add_argument("--wild-share", type=float, default=0.5,
                        help="share of photos showing none of the ten in the corpus that expected_precision is for")
    parser.add_argument("--none-weight", default="auto",
                        help="how many times the forest counts each 'none' image: auto (cnn with --extra 'none' photos: as "
                             "much as makes 'none' the --wild-share of the fit; else 1) or a number >= 1")
    parser.add_argument("--forest-share", type=float, default=0.2,
                        help="cnn: share of the training images kept from the network to fit the forest on")
    # String defaults go through ``type`` too, so a bad TINYTAGS_* value is refused like a bad flag.
    parser.add_argument("--cnn-widths", type=_widths, default=env("TINYTAGS_CNN_WIDTHS", "32,64,128"),
                        help="cnn: channels of the three blocks (default 32,64,128; env TINYTAGS_CNN_WIDTHS)")
    parser.add_argument("--cnn-epochs", type=int, default=env("TINYTAGS_CNN_EPOCHS", "20"),
                        help="cnn: passes over the training images (default 20; env TINYTAGS_CNN_EPOCHS)")
    parser.add_argument("--cnn-batch", type=int, default=512)
    parser.add_argument("--cnn-lr", type=float, default=0.2, help="cnn: peak learning rate of the one-cycle schedule")
    parser.add_argument("--cnn-precision", choices=("auto", "bf16", "fp32"), default="auto",
                        help="cnn: bf16 arithmetic where the CPU has it natively (auto), or force one")
    parser.add_argument("--cnn-no-flip", action="store_true",
                        help="cnn: do not average each image's outputs with its mirror image's (twice as fast to tag)")
    parser.add_argument("--cnn-forest-pcs", type=int, default=8,
                        help="cnn: principal components of the embedding the forest sees beside the logits")
    parser.add_argument("--junk-images", type=int, default=env("TINYTAGS_JUNK_IMAGES", "6000"),
                        help="synthetic junk images (noise, flat colours, gradients, stripes) trained as 'none' "
                             "(default 6000; env TINYTAGS_JUNK_IMAGES)")
    parser.add_argument("--junk-test-images", type=int, default=2000,
                        help="held-out synthetic junk images the card reports the junk rate on")
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
    if args.extra and args.features == "pixels":
        parser.error("--extra needs learned features (--features cnn or kmeans): raw pixels have no 'none' class")
    if len(args.cnn_widths) != 3 or min(args.cnn_widths) < 1:
        parser.error(f"--cnn-widths takes three positive numbers, got {args.cnn_widths}")
    if args.none_weight != "auto":
        try:
            weight = float(args.none_weight)
        except ValueError:
            weight = 0.0
        if not 1.0 <= weight <= 100.0:
            parser.error(f"--none-weight takes auto or a number between 1 and 100, got {args.none_weight!r}")
    for flag, value, low, high in (("--holdout-share", args.holdout_share, 0.01, 0.9),
                                   ("--wild-share", args.wild_share, 0.0, 0.99),
                                   ("--forest-share", args.forest_share, 0.05, 0.9)):
        if not low <= value <= high:
            parser.error(f"{flag} must be between {low} and {high}, got {value}")
    for flag, value, low, high in (("--trees", args.trees, 1, 1000), ("--max-depth", args.max_depth, 1, 30),
                                   ("--max-bins", args.max_bins, 2, 256), ("--cnn-epochs", args.cnn_epochs, 1, 500)):
        if not low <= value <= high:
            parser.error(f"{flag} must be between {low} and {high}, got {value}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    model_dir = Path(args.model)
    began = time.monotonic()
    try:
        if kind(args.model) != "local":
            raise TrainError(f"--model {args.model}: expected a local folder for the model dir")
        if kind(args.cifar) == "local" and not Path(local_path(args.cifar)).exists():
            cifar_files.read_local(local_path(args.cifar))  # fails with the reader's message, before Spark starts
        check_model_dir(model_dir)
        params = TreeParams(max_depth=args.max_depth, max_bins=args.max_bins, impurity=args.impurity)
    except (cifar.CifarError, TrainError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    spark = spark_session("tinytags-train")
    try:
        card = run(spark, args, params, model_dir, began)
    except (cifar.CifarError, TrainError, forest_io.ModelError, ExtraError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    finally:
        spark.stop()
    print(training.summary(card, str(model_dir), MIN_AGREEMENT))
    return 0


if __name__ == "__main__":
    sys.exit(main())


