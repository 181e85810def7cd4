"""Choose the network by validation on training data: train on part of CIFAR-10's training set (plus the
extra photos), measure on the rest. The 5,000 test images are never looked at here.

    .venv/bin/python -m bench.cnn --cifar cifar-10-dev-binary.tar.gz --extra photos-32x32.tar.gz \\
        --widths 64,128,128 --epochs 12 [--batch 512 --precision auto --validation 10000]

Prints, per configuration: validation accuracy on held-out CIFAR-10 training images (with and
without test-time flips), on held-out photos of the ten from the other collection, the share of
held-out "none" photos (seen kinds, unseen kinds) the network calls one of the ten, training seconds
and images/s, and the embedding's images/s in onnxruntime (1 and 2 threads).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from bench.common import SHARED, machine
from bench.quality import EVAL_SEED
from bench.quality import EVAL_SHARE as QUALITY_EVAL_SHARE
from tinytags.core import cnn, cnn_training
from tinytags.core.contract import CLASSES
from tinytags.core.junk import junk_images
from tinytags.core.labelled import NONE_LABEL, hold_out
from tinytags.core.wild import repeat_rows
from tinytags.io.cifar_files import read_local
from tinytags.io.extra_files import read_extra
from tinytags.io.storage import Storage


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cifar", default=str(SHARED / "cifar-10-dev-binary.tar.gz"))
    parser.add_argument("--extra", default=str(SHARED / "photos-32x32.tar.gz"))
    parser.add_argument("--widths", default="64,128,128", help="one or more ';'-separated width triples")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--lr", type=float, default=0.2)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--validation", type=int, default=10000, help="CIFAR-10 training images held out")
    parser.add_argument("--train-images", type=int, default=0, help="use only this many training images (0: all)")
    parser.add_argument("--junk", type=int, default=2000, help="synthetic junk images trained as none")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--photo-repeats", default="1",
                        help="';'-separated: how many times each extra photo is seen per epoch, one run each")
    args = parser.parse_args()

    data = read_local(args.cifar)
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(data.train.labels.size)
    val, fit = order[:args.validation], order[args.validation:]
    if args.train_images:
        fit = fit[:args.train_images]
    extra = read_extra(Storage(), args.extra) if args.extra else None
    pixels, labels = data.train.pixels[fit], data.train.labels[fit]
    if extra is not None:
        # Never the photos bench.quality keeps for its own figures: choose on the rest only.
        extra = extra.subset(hold_out(extra, QUALITY_EVAL_SHARE, EVAL_SEED).train)
        split = hold_out(extra, 0.2, args.seed)
        pixels = np.concatenate([pixels, extra.pixels[split.train]])
        labels = np.concatenate([labels, extra.labels[split.train]])
    if args.junk:
        pixels = np.concatenate([pixels, junk_images(args.junk, args.seed)])
        labels = np.concatenate([labels, np.full(args.junk, NONE_LABEL, labels.dtype)])
    print(f"machine: {machine()}; training on {len(labels):,} images, validating on {len(val):,} CIFAR-10 "
          f"training images{' and held-out photos' if extra is not None else ''}", flush=True)

    n_photos = int(split.train.sum()) if extra is not None else 0
    runs = [(w, float(r)) for w in args.widths.split(";") for r in args.photo_repeats.split(";")]
    for widths, repeats in runs:
        shape = cnn.Shape(widths=tuple(int(w) for w in widths.split(",")))
        epochs = args.epochs
        rows = np.arange(len(labels))
        if repeats != 1 and n_photos:
            photo_rows = np.arange(len(fit), len(fit) + n_photos)
            rows = np.concatenate([rows, photo_rows[repeat_rows(np.full(n_photos, repeats - 1.0), args.seed)]])
            # The same images seen in all: fewer epochs over the longer epoch.
            epochs = max(1, round(args.epochs * len(labels) / len(rows)))
        recipe = cnn_training.Recipe(epochs=epochs, batch=args.batch, peak_lr=args.lr, precision=args.precision)
        weights, facts, _ = cnn_training.train(pixels[rows], labels[rows], shape, recipe, args.seed,
                                               log=lambda line: print("  " + line, flush=True))
        network = cnn.Network(cnn.onnx_graph(shape, weights), threads=2)
        row = {"widths": widths, "photo_repeats": repeats, **facts,
               "train_images_per_s": round(facts["images"] * facts["epochs"] / facts["seconds"])}
        _, logits = network.run(data.train.pixels[val])
        _, logits_flip = network.run(cnn.mirrored(data.train.pixels[val]))
        truth = data.train.labels[val]
        row["val_accuracy"] = round(float((logits[:, :len(CLASSES)].argmax(1) == truth).mean()), 4)
        row["val_accuracy_flip_tta"] = round(float(((logits + logits_flip)[:, :len(CLASSES)].argmax(1) == truth).mean()), 4)
        row["val_called_none"] = round(float((logits.argmax(1) == NONE_LABEL).mean()), 4)
        if extra is not None:
            _, held = network.run(extra.pixels)
            said = held.argmax(1)
            positive = split.held_positive
            kept = positive & (said != NONE_LABEL)
            row["photos_of_ten_tagged"] = round(float(kept.sum() / positive.sum()), 4)
            row["photos_of_ten_precision"] = round(float((said[kept] == extra.labels[kept]).mean()), 4)
            row["none_seen_tagged"] = round(float((said[split.held_seen] != NONE_LABEL).mean()), 4)
            row["none_unseen_tagged"] = round(float((said[split.held_unseen] != NONE_LABEL).mean()), 4)
        for threads in (1, 2):
            timed = cnn.Network(network.graph, threads=threads)
            timed.run(data.test.pixels[:256])
            started = time.monotonic()
            timed.run(data.test.pixels)
            row[f"embed_images_per_s_{threads}t"] = round(len(data.test.pixels) / (time.monotonic() - started))
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
