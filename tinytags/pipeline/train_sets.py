"""The train job's data beyond CIFAR-10: ``--extra`` photos, held-out kinds, the network's fit and the wild figures.

- **Training pool**: CIFAR-10's training images plus the extra photos that are not held out
  (tinytags.core.labelled.hold_out: a share of the "none" kinds whole, and the same share of the
  other photos at random), plus synthetic junk as "none".
- **The network** (``--features cnn``) trains on most of the pool; the forest is fitted on the
  network's outputs for the rest (``--forest-share``), images the network never trained on, so the
  trees learn how far the network's scores can be trusted instead of trusting them blindly.
- **Wild figures**: the held-out photos, CIFAR-10's test set and the mix table of tinytags/core/wild.py;
  the predictions behind them are saved in the model dir (``wild_predictions.npz``), so anyone can
  recompute the card's table.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

from tinytags.core import cnn, cnn_training, wild
from tinytags.core.contract import CLASSES, VECTOR_DIMS, min_votes_for
from tinytags.core.features import quantise
from tinytags.core.junk import junk_images
from tinytags.core.labelled import NONE_LABEL, Labelled, Split, hold_out
from tinytags.core.tagger import Tagger

PREDICTIONS_FILE = "wild_predictions.npz"
# Which set an image of wild_predictions.npz belongs to.
SETS = ("cifar_test", "photos_positive", "none_seen", "none_unseen")


@dataclass(frozen=True)
class Pool:
    """What trains: pixels and labels (NONE_LABEL for none), and the held-out split of the extra photos."""

    pixels: np.ndarray
    labels: np.ndarray
    extra: Labelled | None
    split: Split | None


def training_pool(train_pixels: np.ndarray, train_labels: np.ndarray, extra: Labelled | None,
                  holdout_share: float, seed: int) -> Pool:
    """CIFAR-10's training images plus the extra photos not held out."""
    if extra is None:
        return Pool(train_pixels, np.asarray(train_labels, np.int64), None, None)
    split = hold_out(extra, holdout_share, seed)
    return Pool(np.concatenate([train_pixels, extra.pixels[split.train]]),
                np.concatenate([np.asarray(train_labels, np.int64), extra.labels[split.train]]), extra, split)


def fit_cnn(pool: Pool, shape: cnn.Shape, recipe: cnn_training.Recipe, junk: int, forest_share: float,
            forest_pcs: int, seed: int, log) -> tuple[cnn.CnnFeatures, np.ndarray, np.ndarray, dict]:
    """Train the network on most of the pool, fit the head and return the forest's inputs for the rest.

    Returns (feature set, forest inputs n x D uint8, their labels, facts about the network's training).
    """
    pixels, labels = pool.pixels, pool.labels
    if junk:
        pixels = np.concatenate([pixels, junk_images(junk, seed + 1)])
        labels = np.concatenate([labels, np.full(junk, NONE_LABEL, labels.dtype)])
    order = np.random.default_rng(seed).permutation(len(labels))
    held = int(round(forest_share * len(labels)))
    forest_part, net_part = np.sort(order[:held]), np.sort(order[held:])
    log(f"cnn: training the network {'-'.join(map(str, shape.widths))} on {len(net_part):,} images "
        f"({recipe.epochs} epochs); the forest gets the other {len(forest_part):,}")
    weights, facts, _ = cnn_training.train(pixels[net_part], labels[net_part], shape, recipe, seed, log)
    network = cnn.Network(cnn.onnx_graph(shape, weights), "network", threads=_driver_threads())
    features = cnn.CnnFeatures(shape, network)
    embedding, logits = features.outputs(pixels[forest_part])  # the path tagging takes (flips included)
    features.head = cnn.fit_head(embedding, logits, forest_pcs, VECTOR_DIMS)
    inputs = quantise(features.forest_values(embedding, logits), features.head.cuts)
    facts["network_images"], facts["forest_images"] = int(len(net_part)), int(len(forest_part))
    return features, inputs, labels[forest_part], facts


def _driver_threads() -> int:
    import os

    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def wild_evaluation(tagger: Tagger, test_pixels: np.ndarray, test_labels: np.ndarray, pool: Pool,
                    share: float, min_agreement: float) -> tuple[dict, dict, bytes]:
    """(wild figures for the card, the mix expected-precision table, wild_predictions.npz bytes)."""
    extra, split = pool.extra, pool.split
    sets = [test_pixels, extra.pixels[split.held_positive], extra.pixels[split.held_seen],
            extra.pixels[split.held_unseen]]
    truths = [np.asarray(test_labels, np.int64), extra.labels[split.held_positive],
              extra.labels[split.held_seen], extra.labels[split.held_unseen]]
    predictions = [tagger.predict(p, vectors=False) for p in sets]
    min_votes = min_votes_for(min_agreement, tagger.n_trees)
    figures = {"share": share, "min_votes": min_votes, "holdout_kinds": sorted(
        {extra.kind_names[k] for k in np.unique(extra.kinds[split.held_unseen])})}
    for name, prediction, truth in zip(SETS, predictions, truths):
        if name.startswith("none"):
            figures[name] = wild.none_figures(prediction.votes, prediction.junk, min_votes)
        else:
            figures[name] = wild.positives_figures(prediction.label, prediction.votes, prediction.junk, truth, min_votes)
            figures[name]["called_none"] = round(float(prediction.junk.mean()), 4) if len(truth) else None
    positives = [np.concatenate([getattr(predictions[i], f) for i in (0, 1)]) for f in ("label", "votes", "junk")]
    positives.append(np.concatenate([truths[0], truths[1]]))
    unseen = predictions[3]
    table = wild.mix_precision_table(tuple(positives), (unseen.label, unseen.votes, unseen.junk), share,
                                     CLASSES, tagger.n_trees)
    figures["none_capture"] = wild.none_capture(unseen.label, unseen.votes, unseen.junk, CLASSES, tagger.n_trees)
    none_sets = (unseen.label, unseen.votes, unseen.junk)
    figures["at_rule"] = {"mix": wild.rule_precision(tuple(positives), none_sets, share, min_votes, CLASSES),
                          "positives": wild.rule_precision(tuple(positives), none_sets, 0.0, min_votes, CLASSES)}
    buffer = io.BytesIO()
    np.savez_compressed(
        buffer, set=np.concatenate([np.full(len(t), i, np.int8) for i, t in enumerate(truths)]),
        label=np.concatenate([p.label for p in predictions]).astype(np.int16),
        votes=np.concatenate([p.votes for p in predictions]).astype(np.int16),
        junk=np.concatenate([p.junk for p in predictions]), truth=np.concatenate(truths).astype(np.int16))
    return figures, table, buffer.getvalue()
