"""One forest format and one vectorised evaluator, shared by training, tagging, the web app and benches.

A forest is flat arrays over the nodes of all its trees (trees concatenated):
``feature`` and ``threshold`` of each split (go left when ``x[feature] <= threshold``), ``left`` and
``right`` child indices (global), ``leaf_class`` (the class a leaf votes for, -1 on splits) and
``roots`` (each tree's first node). Leaves point to themselves, so every tree can be stepped the
same number of times (its depth) over a whole batch without branching per image.

Optionally ``leaf_weight``: per leaf, the share of its training samples that are of its class
(0 on splits). It never changes a vote; it only breaks ties between classes with the same top vote
count (``Evaluator.predict``), which with 10 trees and 10 classes happens for about a fifth of
images — lowest-index tie-breaking costs about a point of accuracy there.

On disk: ``<model dir>/forest.npz`` with those arrays, plus ``format`` and ``n_classes``. The model
version is a content hash of the arrays, so the same forest always has the same version.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tinytags.core.contract import FOREST_FILE

FOREST_FORMAT = "tinytags-forest/1"


class ModelError(ValueError):
    """A model directory that is missing, unreadable or of another format version."""


@dataclass(frozen=True)
class Forest:
    """A random forest as flat node arrays (see the module docstring)."""

    feature: np.ndarray      # int32, per node (0 on leaves)
    threshold: np.ndarray    # float32, per node
    left: np.ndarray         # int32, per node (self on leaves)
    right: np.ndarray        # int32, per node (self on leaves)
    leaf_class: np.ndarray   # int16, per node (-1 on splits)
    roots: np.ndarray        # int32, per tree
    n_classes: int
    leaf_weight: np.ndarray | None = None  # float32, per node (0 on splits); breaks vote ties

    @property
    def n_trees(self) -> int:
        """How many trees vote."""
        return int(self.roots.size)

    @property
    def depth(self) -> int:
        """Steps needed from a root to reach any leaf (the deepest tree's depth)."""
        return _depth(self.left, self.right, self.roots)

    @property
    def version(self) -> str:
        """Content hash of the arrays: the model version stamped on every tag."""
        digest = hashlib.sha256()
        for name in ("feature", "threshold", "left", "right", "leaf_class", "roots", "leaf_weight"):
            array = getattr(self, name)
            if array is None:
                continue
            digest.update(name.encode())
            digest.update(np.ascontiguousarray(array).tobytes())
        digest.update(str(self.n_classes).encode())
        return digest.hexdigest()[:12]


def _depth(left: np.ndarray, right: np.ndarray, roots: np.ndarray) -> int:
    frontier = roots.astype(np.int64)
    depth = 0
    while True:
        is_split = (left[frontier] != frontier) | (right[frontier] != frontier)
        if not is_split.any():
            return depth
        frontier = np.concatenate([left[frontier[is_split]], right[frontier[is_split]]])
        depth += 1


def concat(forests: list[Forest]) -> Forest:
    """One forest holding the trees of several (e.g. trained in separate Spark tasks), in order."""
    if not forests:
        raise ModelError("nothing to concatenate")
    n_classes = {f.n_classes for f in forests}
    if len(n_classes) != 1:
        raise ModelError(f"forests disagree on the number of classes: {sorted(n_classes)}")
    shifted_left, shifted_right, roots = [], [], []
    offset = 0
    for forest in forests:
        shifted_left.append(forest.left + offset)
        shifted_right.append(forest.right + offset)
        roots.append(forest.roots + offset)
        offset += forest.left.size
    return Forest(
        feature=np.concatenate([f.feature for f in forests]),
        threshold=np.concatenate([f.threshold for f in forests]),
        left=np.concatenate(shifted_left).astype(np.int32),
        right=np.concatenate(shifted_right).astype(np.int32),
        leaf_class=np.concatenate([f.leaf_class for f in forests]),
        roots=np.concatenate(roots).astype(np.int32),
        n_classes=n_classes.pop(),
        leaf_weight=(np.concatenate([f.leaf_weight for f in forests])
                     if all(f.leaf_weight is not None for f in forests) else None),
    )


class Evaluator:
    """Evaluates every tree of a forest over a batch of uint8 pixel rows at once.

    Pixels are integers, so ``x <= threshold`` is the same test as ``x <= floor(threshold)``:
    comparing small integers is cheaper than converting every pixel to float.
    """

    def __init__(self, forest: Forest):
        self.forest = forest
        self.n_trees = forest.n_trees
        self.n_classes = forest.n_classes
        self._depth = forest.depth
        self._feature = forest.feature.astype(np.intp)
        self._threshold = np.clip(np.floor(forest.threshold), -1, 255).astype(np.int16)
        self._left = forest.left.astype(np.intp)
        self._right = forest.right.astype(np.intp)
        self._leaf_class = forest.leaf_class
        self._leaf_weight = forest.leaf_weight
        self._roots = forest.roots.astype(np.intp)

    def tree_predictions(self, pixels: np.ndarray) -> np.ndarray:
        """n x 3072 uint8 rows (CIFAR layout) -> n x trees array of the class each tree votes for."""
        return self._leaf_class[self._leaves(pixels)]

    def votes(self, pixels: np.ndarray) -> np.ndarray:
        """n x 3072 uint8 rows -> n x classes vote counts (each row sums to the number of trees)."""
        return count_votes(self.tree_predictions(pixels), self.n_classes)

    def predict(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """n x 3072 uint8 rows -> (vote counts, winning class, its vote count) per image.

        The winner is the class with most votes; among classes tied on votes, the one whose trees'
        leaves were purer (summed leaf_weight) wins, then the lower class index.
        """
        leaves = self._leaves(pixels)
        counts = count_votes(self._leaf_class[leaves], self.n_classes)
        if self._leaf_weight is None:
            label, top = top_votes(counts)
            return counts, label, top
        n = leaves.shape[0]
        keys = (self._leaf_class[leaves].astype(np.intp)
                + (np.arange(n, dtype=np.intp) * self.n_classes)[:, None]).ravel()
        confidence = np.bincount(keys, weights=self._leaf_weight[leaves].ravel(),
                                 minlength=n * self.n_classes).reshape(n, self.n_classes)
        # Summed leaf weights of a class are at most its vote count <= trees, so dividing by
        # trees + 1 keeps the tie-breaker below one vote: it never overturns a vote count.
        label = (counts + confidence / (self.n_trees + 1)).argmax(axis=1)
        return counts, label, counts[np.arange(n), label]

    def _leaves(self, pixels: np.ndarray) -> np.ndarray:
        """n x trees array of the leaf node each image reaches in each tree."""
        pixels = np.ascontiguousarray(pixels)
        if pixels.ndim != 2:
            raise ValueError(f"expected a 2-d batch of pixel rows, got shape {pixels.shape}")
        n = pixels.shape[0]
        flat = pixels.reshape(-1)
        row_base = (np.arange(n, dtype=np.intp) * pixels.shape[1])[:, None]
        node = np.broadcast_to(self._roots, (n, self.n_trees)).copy()
        for _ in range(self._depth):
            values = flat[row_base + self._feature[node]]
            node = np.where(values <= self._threshold[node], self._left[node], self._right[node])
        return node


def count_votes(tree_predictions: np.ndarray, n_classes: int) -> np.ndarray:
    """n x trees class predictions -> n x classes counts."""
    n = tree_predictions.shape[0]
    keys = tree_predictions.astype(np.intp) + (np.arange(n, dtype=np.intp) * n_classes)[:, None]
    return np.bincount(keys.ravel(), minlength=n * n_classes).reshape(n, n_classes).astype(np.int16)


def top_votes(vote_counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vote counts -> (winning class, its vote count) per row; ties go to the lower class index."""
    label = vote_counts.argmax(axis=1)
    return label, vote_counts[np.arange(vote_counts.shape[0]), label]


def save(forest: Forest, model_dir: str | Path) -> Path:
    """Write ``forest.npz`` into model_dir; returns its path."""
    path = Path(model_dir) / FOREST_FILE
    buffer = io.BytesIO()
    np.savez(
        buffer, format=np.array(FOREST_FORMAT), n_classes=np.array(forest.n_classes),
        feature=forest.feature, threshold=forest.threshold, left=forest.left,
        right=forest.right, leaf_class=forest.leaf_class, roots=forest.roots,
        **({} if forest.leaf_weight is None else {"leaf_weight": forest.leaf_weight}),
    )
    path.write_bytes(buffer.getvalue())
    return path


def load(model_dir: str | Path) -> Forest:
    """Read ``forest.npz`` from a model dir; a ModelError says what is missing or mismatched."""
    path = Path(model_dir) / FOREST_FILE
    if not path.is_file():
        raise ModelError(
            f"no model at {model_dir}: {FOREST_FILE} is missing (train one with jobs/train.py)"
        )
    return loads(path.read_bytes(), source=str(path))


def loads(data: bytes, source: str = "forest") -> Forest:
    """Parse the bytes of a ``forest.npz`` (e.g. read from HDFS)."""
    try:
        arrays = np.load(io.BytesIO(data), allow_pickle=False)
        found = str(arrays["format"]) if "format" in arrays.files else "none"
    except (OSError, ValueError) as error:
        raise ModelError(f"{source} is not a readable forest file: {error}") from error
    if found != FOREST_FORMAT:
        raise ModelError(f"{source} has forest format {found!r}, expected {FOREST_FORMAT!r}; retrain the model")
    return Forest(
        feature=arrays["feature"], threshold=arrays["threshold"], left=arrays["left"],
        right=arrays["right"], leaf_class=arrays["leaf_class"], roots=arrays["roots"],
        n_classes=int(arrays["n_classes"]),
        leaf_weight=arrays["leaf_weight"] if "leaf_weight" in arrays.files else None,
    )
