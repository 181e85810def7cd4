"""What training needs besides Spark: the forest grower, the test-set figures, the model card, plots.

**Growing trees** — the algorithm of Spark MLlib's RandomForest (what the original project ran),
done in numpy one tree at a time so that Spark can grow many trees at once in parallel tasks over a
broadcast copy of the data (jobs/train.py):

- each feature's values are cut into at most ``max_bins`` bins at quantiles of a sample
  (``fit_bins``); a split is "bin <= k", i.e. "pixel <= cut k", so the tree lands in the flat forest
  format (tinytags/core/forest.py) with integer thresholds and evaluates exactly as it was trained;
- a tree sees a bootstrap sample (drawn with replacement, as counts), and each node considers
  ``sqrt(features)`` features drawn afresh (Spark's "auto" for classification forests);
- one level of the tree at a time, class histograms per (node, feature, bin) come from a single
  ``np.bincount``; cumulative sums give every split's impurity; a node takes its best split when it
  lowers impurity and both sides keep a sample, else it becomes a leaf;
- each leaf then votes for the majority class of all training images that reach it (ties to the
  lower class index), and keeps that class's share as its ``leaf_weight`` (the tie-breaker).

``forest_from_spark_ml`` turns the node table that Spark ML saves for a RandomForestClassificationModel
into the same flat format, for the Spark ML trainer kept for data too large to broadcast.

**Test-set figures** (``evaluate``) start from what the one forest evaluator gives
(``Evaluator.predict``), so the card describes exactly what the tag job does with the same model:
the predicted class is the top-voted one, and an image is kept when that class has at least
``min_votes`` votes. **Plots** are written with matplotlib's file-only Agg backend.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

from tinytags.core.forest import Forest, ModelError, concat

# --- growing trees --------------------------------------------------------------------------------

# Histogram cells (nodes x features x bins x classes) per chunk: bounds the memory of one level.
_CELLS_PER_CHUNK = 4_000_000
_BIN_SAMPLE = 10_000
IMPURITIES = ("gini", "entropy")  # images used to place the cuts (Spark uses max(maxBins^2, 10000))


@dataclass(frozen=True)
class TreeParams:
    """Hyper-parameters of every tree (the original project's defaults)."""

    max_depth: int = 10
    max_bins: int = 50
    features_per_node: int | None = None  # None: ceil(sqrt(features)), Spark's "auto"
    bootstrap: bool = True
    impurity: str = "gini"  # or "entropy"
    # Label each leaf by all training images that reach it, not only the bootstrap sample that
    # shaped the tree: the same trees, better-estimated votes (about +0.8 points on CIFAR-10).
    relabel_leaves: bool = True

    def __post_init__(self):
        if self.impurity not in IMPURITIES:
            raise ValueError(f"impurity must be one of {IMPURITIES}, got {self.impurity!r}")
        if self.max_depth < 0:
            raise ValueError(f"max_depth must be 0 or more, got {self.max_depth}")


@dataclass(frozen=True)
class Bins:
    """Per-feature cut points and the lookup pixel value -> bin, shared by every tree."""

    cuts: np.ndarray    # features x (max_bins - 1) uint8, sorted per feature; bin(x) = #cuts < x
    lookup: np.ndarray  # features x 256 uint8: the bin of each pixel value


def fit_bins(pixels: np.ndarray, max_bins: int, seed: int = 0) -> Bins:
    """Cut points at quantiles of (a sample of) the training pixels, at most max_bins bins per feature."""
    if not 2 <= max_bins <= 256:
        raise ValueError(f"max_bins must be between 2 and 256 (pixel values), got {max_bins}")
    rng = np.random.default_rng(seed)
    sample = pixels if pixels.shape[0] <= _BIN_SAMPLE else pixels[
        np.sort(rng.choice(pixels.shape[0], _BIN_SAMPLE, replace=False))]
    if max_bins == 256:  # every pixel value its own bin: exact splits
        cuts = np.broadcast_to(np.arange(255, dtype=np.uint8), (pixels.shape[1], 255)).copy()
    else:
        # The "lower" quantiles (a cut is always a pixel value seen): sort each feature's sample
        # (numpy radix-sorts uint8 with kind="stable") and read off the ranks.
        by_feature = np.ascontiguousarray(sample.T)
        by_feature.sort(axis=1, kind="stable")
        ranks = np.floor(np.linspace(0, 1, max_bins + 1)[1:-1] * (sample.shape[0] - 1)).astype(np.intp)
        cuts = by_feature[:, ranks]
    values = np.arange(256, dtype=np.uint8)
    lookup = np.stack([np.searchsorted(row, values, side="left") for row in cuts]).astype(np.uint8)
    return Bins(cuts=np.ascontiguousarray(cuts), lookup=lookup)


def bin_pixels(pixels: np.ndarray, bins: Bins) -> np.ndarray:
    """n x features uint8 pixels -> n x features uint8 bin numbers."""
    flat = bins.lookup.ravel()
    offsets = np.arange(pixels.shape[1], dtype=np.intp) * 256
    binned = np.empty_like(pixels)
    for start in range(0, pixels.shape[0], 1024):  # blocks keep the index array small
        np.take(flat, pixels[start:start + 1024] + offsets, out=binned[start:start + 1024])
    return binned


def grow_tree(binned: np.ndarray, labels: np.ndarray, n_classes: int, bins: Bins,
              params: TreeParams, seed: int) -> Forest:
    """Grow one tree on n x features binned data (bin_pixels); returns it as a one-tree Forest."""
    n, n_features = binned.shape
    rng = np.random.default_rng(seed)
    k = params.features_per_node or int(np.ceil(np.sqrt(n_features)))
    k = min(k, n_features)
    n_bins = bins.cuts.shape[1] + 1
    if params.bootstrap:
        weights = np.bincount(rng.integers(0, n, n), minlength=n)
    else:
        weights = np.ones(n, np.int64)
    rows = np.flatnonzero(weights)
    weight = weights[rows].astype(np.float64)
    label = labels[rows].astype(np.intp)
    local = np.zeros(rows.size, np.intp)  # index of each sample's node among the active nodes

    feature, threshold, left, right, leaf, purity = [0], [0.0], [0], [0], [-1], [0.0]
    split_bin = [0]
    active = np.array([0], np.intp)  # global ids of the nodes being grown at this level
    for depth in range(params.max_depth + 1):
        m = active.size
        counts = np.bincount(local * n_classes + label, weights=weight,
                             minlength=m * n_classes).reshape(m, n_classes)
        majority = counts.argmax(axis=1)
        share = counts.max(axis=1) / np.maximum(counts.sum(axis=1), 1e-12)
        for node, cls, p in zip(active.tolist(), majority.tolist(), share.tolist()):
            leaf[node], purity[node] = cls, p
        if depth == params.max_depth:
            break
        splittable = ((counts > 0).sum(axis=1) > 1) & (np.bincount(local, minlength=m) > 1)
        if not splittable.any():
            break
        candidates = np.argpartition(rng.random((m, n_features)), k - 1, axis=1)[:, :k]
        best_j, best_bin, gain = _best_splits(
            binned, rows, weight, label, local, counts, candidates, n_bins, params.impurity)
        split = splittable & (gain > 1e-9)
        if not split.any():
            break
        # New children get consecutive ids: left, right for each split node, in node order.
        split_nodes = np.flatnonzero(split)
        first_child = len(feature)
        child_local = np.full(m, -1, np.intp)
        child_local[split_nodes] = np.arange(split_nodes.size) * 2
        chosen_feature = candidates[split_nodes, best_j[split_nodes]]
        for i, (node, f, b) in enumerate(zip(active[split_nodes].tolist(), chosen_feature.tolist(),
                                             best_bin[split_nodes].tolist())):
            feature[node] = f
            split_bin[node] = b
            threshold[node] = float(bins.cuts[f, b])
            left[node] = first_child + 2 * i
            right[node] = first_child + 2 * i + 1
            leaf[node], purity[node] = -1, 0.0
        for i in range(2 * split_nodes.size):
            node = first_child + i
            feature.append(0), threshold.append(0.0), left.append(node), right.append(node)
            leaf.append(-1), purity.append(0.0), split_bin.append(0)
        # Route each sample of a split node to a child; samples of leaves are done.
        keep = split[local]
        rows, weight, label, local = rows[keep], weight[keep], label[keep], local[keep]
        f = candidates[local, best_j[local]]
        goes_right = binned[rows, f] > best_bin[local]
        local = child_local[local] + goes_right
        active = first_child + np.arange(2 * split_nodes.size, dtype=np.intp)

    leaf_class, leaf_weight = np.asarray(leaf, np.int16), np.asarray(purity, np.float32)
    if params.relabel_leaves:
        leaf_class, leaf_weight = _relabel(binned, labels, n_classes, np.asarray(feature),
                                           np.asarray(split_bin), np.asarray(left),
                                           np.asarray(right), leaf_class, params.max_depth)
    return Forest(
        feature=np.asarray(feature, np.int32), threshold=np.asarray(threshold, np.float32),
        left=np.asarray(left, np.int32), right=np.asarray(right, np.int32),
        leaf_class=leaf_class, roots=np.zeros(1, np.int32), n_classes=int(n_classes),
        leaf_weight=leaf_weight,
    )


def _relabel(binned, labels, n_classes, feature, split_bin, left, right, leaf_class, max_depth):
    """Each leaf's majority class and purity over every training image that reaches it."""
    n = binned.shape[0]
    images = np.arange(n)
    node = np.zeros(n, np.intp)
    for _ in range(max_depth):
        goes_left = binned[images, feature[node]] <= split_bin[node]
        node = np.where(goes_left, left[node], right[node])  # leaves point to themselves
    counts = np.bincount(node * n_classes + labels, minlength=left.size * n_classes)
    counts = counts.reshape(left.size, n_classes)
    is_leaf = leaf_class >= 0
    # Every leaf holds at least one bootstrap image, so it is reached by at least one image here.
    majority = np.where(is_leaf, counts.argmax(axis=1), -1).astype(np.int16)
    share = counts.max(axis=1) / np.maximum(counts.sum(axis=1), 1)
    return majority, np.where(is_leaf, share, 0.0).astype(np.float32)


def _best_splits(binned, rows, weight, label, local, counts, candidates, n_bins, impurity):
    """Per active node: the candidate feature (column in candidates), bin and impurity decrease of
    its best split.

    Both impurities come down to "maximise a score over the split's two sides", with the decrease
    (score - parent) / weight:
    gini: score = sum(l^2)/wL + sum(r^2)/wR, parent = sum(t^2)/W;
    entropy: score = sum(l ln l) + sum(r ln r) - wL ln wL - wR ln wR, parent = sum(t ln t) - W ln W.
    """
    m, k = candidates.shape
    n_classes = counts.shape[1]
    best_j = np.zeros(m, np.intp)
    best_bin = np.zeros(m, np.intp)
    gain = np.full(m, -np.inf)
    totals = counts.sum(axis=1)
    if impurity == "gini":
        parent = np.divide((counts ** 2).sum(axis=1), totals, out=np.zeros(m), where=totals > 0)
    else:
        parent = _xlogx(counts).sum(axis=1) - _xlogx(totals)
    order = np.argsort(local, kind="stable")
    bounds = np.searchsorted(local[order], np.arange(m + 1))
    per_chunk = max(1, _CELLS_PER_CHUNK // (k * n_bins * n_classes))
    for lo in range(0, m, per_chunk):
        hi = min(m, lo + per_chunk)
        idx = order[bounds[lo]:bounds[hi]]
        node = local[idx] - lo
        f = candidates[local[idx]].T                     # k x samples
        sample_bins = binned[rows[idx], f]
        cell = ((node * k + np.arange(k)[:, None]) * n_bins + sample_bins) * n_classes + label[idx]
        hist = np.bincount(cell.ravel(), weights=np.broadcast_to(weight[idx], cell.shape).ravel(),
                           minlength=(hi - lo) * k * n_bins * n_classes)
        left = np.cumsum(hist.reshape(hi - lo, k, n_bins, n_classes), axis=2)
        total = counts[lo:hi]
        w_left = left.sum(axis=3)
        w_right = totals[lo:hi, None, None] - w_left
        valid = (w_left > 0) & (w_right > 0)
        if impurity == "gini":
            # With r = t - l, sum(r^2) = sum(t^2) - 2 sum(t l) + sum(l^2): two passes, no right array.
            left_sq = np.einsum("nkbc,nkbc->nkb", left, left)
            cross = np.einsum("nkbc,nc->nkb", left, total)
            right_sq = (total ** 2).sum(axis=1)[:, None, None] - 2 * cross + left_sq
            with np.errstate(divide="ignore", invalid="ignore"):
                score = left_sq / w_left + right_sq / w_right
        else:
            right = total[:, None, None, :] - left
            score = (_xlogx(left).sum(axis=3) + _xlogx(right).sum(axis=3)
                     - _xlogx(w_left) - _xlogx(w_right))
        score = np.where(valid, score, -np.inf).reshape(hi - lo, k * n_bins)
        flat = score.argmax(axis=1)
        best_j[lo:hi], best_bin[lo:hi] = np.divmod(flat, n_bins)
        gain[lo:hi] = (score[np.arange(hi - lo), flat] - parent[lo:hi]) / np.maximum(totals[lo:hi], 1)
    return best_j, best_bin, gain


def _xlogx(x: np.ndarray) -> np.ndarray:
    """x ln x with 0 ln 0 = 0."""
    x = np.asarray(x, dtype=np.float64)
    return x * np.log(np.where(x > 0, x, 1.0))


def grow_trees(binned: np.ndarray, labels: np.ndarray, n_classes: int, bins: Bins,
               params: TreeParams, seed: int, tree_indices: Iterable[int]) -> Forest:
    """The trees with the given indices (tree i is seeded by (seed, i)), as one Forest."""
    return concat([
        grow_tree(binned, labels, n_classes, bins, params, tree_seed(seed, i)) for i in tree_indices
    ])


def tree_seed(seed: int, index: int) -> int:
    """Each tree's own seed, so any task can grow tree i and get the same tree."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def forest_from_spark_ml(nodes: Iterable[Mapping], n_trees: int, n_classes: int) -> Forest:
    """Spark ML's saved node table (rows of treeID and nodeData) -> a Forest.

    Spark numbers each tree's nodes from 0 in pre-order, marks leaves with leftChild = -1, keeps a
    continuous split's threshold in ``split.leftCategoriesOrThreshold[0]`` and goes left when
    ``value <= threshold`` — the same test as ours.
    """
    per_tree: dict[int, list] = {t: [] for t in range(n_trees)}
    for row in nodes:
        per_tree.setdefault(int(row["treeID"]), []).append(row["nodeData"])
    if sorted(per_tree) != list(range(n_trees)) or not all(per_tree.values()):
        raise ModelError(f"the Spark ML model has trees {sorted(per_tree)}, expected 0..{n_trees - 1}")
    trees = []
    for t in range(n_trees):
        data = sorted(per_tree[t], key=lambda d: d["id"])
        count = len(data)
        ids = np.array([d["id"] for d in data])
        if not np.array_equal(ids, np.arange(count)):
            raise ModelError(f"tree {t} of the Spark ML model does not number its nodes 0..{count - 1}")
        own = np.arange(count)
        left = np.array([d["leftChild"] for d in data])
        right = np.array([d["rightChild"] for d in data])
        is_leaf = left < 0
        split_feature = np.array([d["split"]["featureIndex"] if d["split"] else 0 for d in data])
        split_threshold = np.array([
            d["split"]["leftCategoriesOrThreshold"][0]
            if not is_leaf[i] and d["split"]["leftCategoriesOrThreshold"] else 0.0
            for i, d in enumerate(data)
        ])
        prediction = np.array([int(d["prediction"]) for d in data])
        stats = [np.asarray(d["impurityStats"] or [0.0], dtype=np.float64) for d in data]
        purity = np.array([s.max() / s.sum() if s.sum() > 0 else 0.0 for s in stats])
        trees.append(Forest(
            feature=np.where(is_leaf, 0, split_feature).astype(np.int32),
            threshold=np.where(is_leaf, 0.0, split_threshold).astype(np.float32),
            left=np.where(is_leaf, own, left).astype(np.int32),
            right=np.where(is_leaf, own, right).astype(np.int32),
            leaf_class=np.where(is_leaf, prediction, -1).astype(np.int16),
            roots=np.zeros(1, np.int32), n_classes=int(n_classes),
            leaf_weight=np.where(is_leaf, purity, 0.0).astype(np.float32),
        ))
    return concat(trees)


# --- test-set figures ---------------------------------------------------------------------------


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, n_classes: int) -> np.ndarray:
    """n_classes x n_classes counts: row = true class, column = predicted class."""
    keys = labels.astype(np.intp) * n_classes + predicted.astype(np.intp)
    return np.bincount(keys, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def per_class_scores(confusion: np.ndarray, classes: tuple[str, ...]) -> dict[str, dict]:
    """Precision, recall, f1 and support per class from a confusion matrix (0 where undefined)."""
    hits = np.diag(confusion).astype(np.float64)
    predicted = confusion.sum(axis=0)
    actual = confusion.sum(axis=1)
    precision = np.divide(hits, predicted, out=np.zeros_like(hits), where=predicted > 0)
    recall = np.divide(hits, actual, out=np.zeros_like(hits), where=actual > 0)
    both = precision + recall
    f1 = np.divide(2 * precision * recall, both, out=np.zeros_like(hits), where=both > 0)
    return {
        name: {"precision": round(float(precision[c]), 4), "recall": round(float(recall[c]), 4),
               "f1": round(float(f1[c]), 4), "support": int(actual[c])}
        for c, name in enumerate(classes)
    }


def agreement_table(top_class: np.ndarray, top_count: np.ndarray, labels: np.ndarray,
                    n_trees: int) -> list[dict]:
    """For k = 1..n_trees: the share of images whose top class has >= k votes, and their precision.

    Precision is None where no image has that many votes.
    """
    correct = top_class == labels
    # images_with[v] = images whose top class got exactly v votes; suffix sums give ">= k".
    images_with = np.bincount(top_count, minlength=n_trees + 1)[: n_trees + 1]
    correct_with = np.bincount(top_count, weights=correct, minlength=n_trees + 1)[: n_trees + 1]
    kept = np.cumsum(images_with[::-1])[::-1]
    kept_correct = np.cumsum(correct_with[::-1])[::-1]
    total = max(int(labels.size), 1)
    return [
        {
            "min_votes": k,
            "min_agreement": round(k / n_trees, 4),
            "coverage": round(float(kept[k]) / total, 4),
            "images": int(kept[k]),
            "precision": round(float(kept_correct[k]) / float(kept[k]), 4) if kept[k] else None,
        }
        for k in range(1, n_trees + 1)
    ]


def evaluate(vote_counts: np.ndarray, predicted: np.ndarray, labels: np.ndarray,
             classes: tuple[str, ...], n_trees: int | None = None, junk: np.ndarray | None = None) -> dict:
    """Vote counts (n x classes), predicted and true labels -> the card's test-set figures.

    ``junk`` marks images the model calls "none" (never tagged): they count as wrong in the
    accuracy, are left out of the confusion matrix, and are kept at no vote count.
    """
    n_trees = n_trees or (int(vote_counts[0].sum()) if len(vote_counts) else 0)
    junk = np.zeros(len(labels), bool) if junk is None else np.asarray(junk, bool)
    top = vote_counts[np.arange(len(vote_counts)), predicted].astype(np.intp)
    top = np.where(junk, 0, top)
    confusion = confusion_matrix(labels[~junk], predicted[~junk], len(classes))
    return {
        "test_accuracy": round(float(((predicted == labels) & ~junk).mean()), 4),
        "per_class": per_class_scores(confusion, classes),
        "confusion_matrix": confusion.tolist(),
        "agreement": agreement_table(predicted, top, labels, n_trees),
        "expected_precision": precision_table(predicted, top, labels, junk, classes, n_trees),
        "per_class_agreement": per_class_agreement(predicted, top, labels, junk, classes, n_trees),
        "real_called_junk": round(float(junk.mean()), 4),
    }


# Fewer held-out images than this at one (tag, votes): use the pooled ">= votes" precision instead.
MIN_CELL_IMAGES = 20


def precision_table(label: np.ndarray, votes: np.ndarray, truth: np.ndarray, junk: np.ndarray,
                    classes: tuple[str, ...], n_trees: int) -> dict[str, list[float | None]]:
    """Per class, for votes 0..n_trees: the precision of held-out images tagged so (not junk).

    A cell with fewer than MIN_CELL_IMAGES images takes the precision of all images of that tag
    with at least that many votes (None if there are none).
    """
    table = {}
    tagged = ~junk
    for c, name in enumerate(classes):
        mine = tagged & (label == c)
        row: list[float | None] = []
        for v in range(n_trees + 1):
            exact = mine & (votes == v)
            cell = exact if exact.sum() >= MIN_CELL_IMAGES else mine & (votes >= v)
            row.append(round(float((truth[cell] == c).mean()), 4) if cell.any() else None)
        table[name] = row
    return table


def per_class_agreement(label: np.ndarray, votes: np.ndarray, truth: np.ndarray, junk: np.ndarray,
                        classes: tuple[str, ...], n_trees: int) -> dict[str, list[dict]]:
    """Per class and minimum vote count k: held-out images given that tag with >= k votes, the
    share of the class's true images among them (recall), and their precision."""
    table = {}
    tagged = ~junk
    for c, name in enumerate(classes):
        rows = []
        actual = int((truth == c).sum())
        for k in range(1, n_trees + 1):
            kept = tagged & (label == c) & (votes >= k)
            hits = int((truth[kept] == c).sum())
            rows.append({"min_votes": k, "images": int(kept.sum()),
                         "recall": round(hits / actual, 4) if actual else None,
                         "precision": round(hits / int(kept.sum()), 4) if kept.any() else None})
        table[name] = rows
    return table


# --- plots ------------------------------------------------------------------------------------------

CONFUSION_PNG = "confusion_matrix.png"
AGREEMENT_PNG = "agreement.png"
PRECISION_COVERAGE_PNG = "precision_coverage.png"


def _pyplot():
    # Imported here, not at the top: Spark tasks import this module to grow trees and need no plots.
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on cluster nodes or in CI
    import matplotlib.pyplot as plt

    return plt


def plot_confusion(confusion: list[list[int]], classes: tuple[str, ...], path: Path) -> Path:
    """Row-normalised confusion matrix (colour = share of the true class), counts written in."""
    plt = _pyplot()
    counts = np.asarray(confusion)
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(7.5, 6.5), dpi=110)
    image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    accuracy = np.trace(counts) / max(counts.sum(), 1)
    ax.set_title(f"Confusion on the test set ({counts.sum()} images, accuracy {accuracy:.1%})")
    for (r, c), value in np.ndenumerate(counts):
        ax.text(c, r, str(value), ha="center", va="center", fontsize=7,
                color="white" if shares[r, c] > 0.5 else "black")
    fig.colorbar(image, ax=ax, label="share of the true class")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_agreement(agreement: list[dict], path: Path, min_agreement: float = 0.4) -> Path:
    """Coverage and precision of the kept images against the minimum share of agreeing trees."""
    plt = _pyplot()
    shares = [row["min_agreement"] for row in agreement]
    coverage = [row["coverage"] for row in agreement]
    precision = [np.nan if row["precision"] is None else row["precision"] for row in agreement]
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    ax.plot(shares, coverage, "o-", label="coverage (share of images kept)")
    ax.plot(shares, precision, "s-", label="precision of the kept images")
    ax.axvline(min_agreement, color="grey", linestyle="--", linewidth=1)
    cut = min((r for r in agreement if r["min_agreement"] >= min_agreement - 1e-9),
              key=lambda r: r["min_agreement"], default=None)
    if cut is not None:
        precision_text = "n/a" if cut["precision"] is None else f"{cut['precision']:.1%}"
        ax.annotate(f"≥ {cut['min_votes']} votes: keeps {cut['coverage']:.1%}\nat {precision_text} precision",
                    (min_agreement, cut["coverage"]), textcoords="offset points", xytext=(8, -30), fontsize=8)
    ax.set_xlabel("minimum agreement (share of trees voting for the top class)")
    ax.set_ylabel("share")
    ax.set_ylim(0, 1.02)
    ax.set_title("What an agreement cut buys on the test set")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_precision_coverage(per_class: dict[str, list[dict]], path: Path, min_agreement: float = 0.4) -> Path:
    """Per class: precision against recall as the minimum vote count rises, the tag job's cut marked."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 5.5), dpi=110)
    colours = plt.get_cmap("tab10")
    for index, (name, rows) in enumerate(per_class.items()):
        points = [(r["recall"], r["precision"], r["min_votes"]) for r in rows
                  if r["recall"] is not None and r["precision"] is not None]
        if not points:
            continue
        recall, precision, votes = zip(*points)
        ax.plot(recall, precision, "o-", markersize=3, color=colours(index % 10), label=name)
        trees = max(r["min_votes"] for r in rows)
        cut = max(1, int(np.ceil(min_agreement * trees - 1e-9)))
        for r, p, v in points:
            if v == cut:
                ax.plot([r], [p], "s", markersize=7, color=colours(index % 10), markeredgecolor="black")
    ax.set_xlabel("coverage of the class (share of its test images given the tag)")
    ax.set_ylabel("precision (share of the tagged that are right)")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.set_title(f"Precision against coverage per class; squares: the tag job's {min_agreement:.0%} cut")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


# --- model card -------------------------------------------------------------------------------


def model_card(*, forest: Forest, figures: dict, classes: tuple[str, ...], params: dict,
               source: dict, n_train: int, n_test: int, timings: dict, spark_master: str,
               version: str | None = None, features: dict | None = None) -> dict:
    """The model card: the contract's fields (docs/models.md, "The model dir") plus version, provenance, timings and file names."""
    from datetime import datetime, timezone

    from tinytags.core.contract import FOREST_FILE
    from tinytags.core.forest import FOREST_FORMAT

    return {
        "format": FOREST_FORMAT,
        "version": version or forest.version,
        "features": features or {"name": "pixels", "version": "pixels", "dims": 3072, "junk_class": None},
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "classes": list(classes),
        "params": params,
        "source": source,
        "n_train": int(n_train),
        "n_test": int(n_test),
        "train_seconds": timings["train"],
        "timings": timings,
        "spark_master": spark_master,
        "forest": {"file": FOREST_FILE, "nodes": int(forest.left.size), "depth": forest.depth,
                   "trees": forest.n_trees},
        "plots": {"confusion_matrix": CONFUSION_PNG, "agreement": AGREEMENT_PNG,
                  "precision_coverage": PRECISION_COVERAGE_PNG},
        **figures,
    }


def summary(card: dict, model_dir: str, min_agreement: float = 0.4) -> str:
    """One paragraph: what was trained, how fast, how good, and what the tag job's cut keeps."""
    p = card["params"]
    trees = p["trees"]
    cut = next(r for r in card["agreement"] if r["min_agreement"] >= min_agreement - 1e-9)
    precision = "no" if cut["precision"] is None else f"{cut['precision']:.1%}"
    features = (card.get("features") or {}).get("name", "pixels")
    junk = card.get("junk")
    junk_text = (f" Synthetic junk tagged: {junk['tagged']:.1%} of {junk['images']:,}; real test images "
                 f"called junk: {junk['real_called_junk']:.1%}." if junk else "")
    return (
        f"Trained {trees} trees (depth ≤ {p['max_depth']}, {p['max_bins']} bins, {p['impurity']}, "
        f"seed {p['seed']}) on {features} features with the {p['engine']} engine on {card['n_train']:,} CIFAR-10 images "
        f"from {card['source']['path']} in {card['train_seconds']:.1f} s on {card['spark_master']}; "
        f"test accuracy {card['test_accuracy']:.1%} on {card['n_test']:,} images, and at ≥ "
        f"{cut['min_votes']} of {trees} votes (the tag job's {min_agreement:.0%} cut) it keeps "
        f"{cut['coverage']:.1%} of the test images at {precision} precision. Model {card['version']} "
        f"is in {model_dir} (model_card.json, {card['forest']['file']}, {CONFUSION_PNG}, "
        f"{AGREEMENT_PNG}); the whole job took {card['timings']['job']:.1f} s.{junk_text}"
    )
