"""The model as every stage uses it: features, then the forest's votes, then the agreement rule.

A model dir holds ``forest.npz``, ``model_card.json`` and, for learned features, ``features.npz``
(tinytags/core/features.py). ``Tagger`` is the one code path from CIFAR-layout pixels to a tag: the
tag job, the web app's classify, the benchmarks and the tests all call ``Tagger.predict``, so an
image gets the same features, votes and similarity vector wherever it is evaluated.

Junk: a learned feature set trains the forest with an extra class "none" (synthetic noise, flat
colours, gradients, stripes) and flags outliers of its pooled features. An image whose winning
class is "none", or that is flagged, is junk: never tagged, and counted apart (``none``).
Vote counts keep the contract's ten classes; a "none" vote counts among the trees (agreement is
votes / all trees).

Expected precision: the card's ``expected_precision[tag][votes]`` is the share of held-out test
images with that tag and that many votes whose tag was right (tinytags/core/training.py); the tag
lines and Solr documents carry it, so "cat with 6 votes" says how often that is a cat.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from dataclasses import dataclass
from typing import Any

import numpy as np

from tinytags.core.cnn import CNN_FORMAT, CnnFeatures, NetworkError
from tinytags.core.contract import CLASSES
from tinytags.core.features import FEATURES_FILE, FeatureError, FeatureSet, PixelFeatures
from tinytags.core.forest import Evaluator, Forest, ModelError


@dataclass
class Prediction:
    """What the model says about a batch: per image votes, winner, junk flag, similarity vector."""

    vote_counts: np.ndarray  # n x 10 int16: votes per real class
    label: np.ndarray        # n: winning real class (meaningless where junk)
    votes: np.ndarray        # n: the winner's votes
    junk: np.ndarray         # n bool: "none" won, or the features flag an outlier
    vectors: np.ndarray | None  # n x 48 float32, unit length: the similarity vector


class Tagger:
    """Forest + features of one model dir (see the module docstring)."""

    def __init__(self, forest: Forest, features: FeatureSet | CnnFeatures | PixelFeatures | None = None,
                 card: dict[str, Any] | None = None):
        self.forest = forest
        self.features = features or PixelFeatures()
        self.card = card or {}
        self.evaluator = Evaluator(forest)
        self.n_trees = forest.n_trees
        self.junk_class = getattr(self.features, "junk_class", None)
        expected = len(CLASSES) + (self.junk_class is not None)
        if forest.n_classes != expected:
            raise ModelError(f"the forest votes for {forest.n_classes} classes, but its features expect "
                             f"{expected} ({len(CLASSES)} CIFAR-10 classes"
                             f"{' + none' if self.junk_class is not None else ''}); retrain the model")
        self._precision = _precision_lookup(self.card.get("expected_precision"), self.n_trees)

    @property
    def version(self) -> str:
        """The model version stamped on every tag: the forest's hash, with the features' when learned."""
        return model_version(self.forest, self.features)

    @property
    def features_name(self) -> str:
        """The feature set's name (``pixels``, ``kmeans256-lda``)."""
        return self.features.name

    @property
    def writes_vectors(self) -> bool:
        """Whether tag lines carry the vector: learned ones do; the colour layout of a raw-pixel
        model is left to the indexer, which computes it from the pixels (the fast path stays fast)."""
        return self.features.name != "pixels"

    def predict(self, pixels: np.ndarray, vectors: bool = True) -> Prediction:
        """n x 3072 CIFAR-layout uint8 rows -> Prediction (``vectors=False``: raw-pixel models skip them)."""
        inputs, vectors, outlier = self.features.encode_all(pixels, vectors=vectors)
        counts, label, top = self.evaluator.predict(inputs)
        junk = outlier.copy()
        real = counts[:, :len(CLASSES)]
        if self.junk_class is not None:
            none = label == self.junk_class
            junk |= none
            # Where "none" won, name the best real class anyway (never used as a tag: junk is set).
            label = np.where(none, real.argmax(axis=1), label)
            top = np.where(none, real.max(axis=1), top)
        return Prediction(vote_counts=real, label=label, votes=top, junk=junk, vectors=vectors)

    def use_threads(self, threads: int) -> None:
        """Threads the feature set may use per call (a network's); others compute on one thread."""
        network = getattr(self.features, "network", None)
        if network is not None:
            network.use_threads(threads)

    def expected_precision(self, label: np.ndarray, votes: np.ndarray) -> np.ndarray | None:
        """Held-out precision of each (tag, votes) pair, or None when the card has no table."""
        if self._precision is None:
            return None
        return self._precision[np.clip(label, 0, len(CLASSES) - 1), np.clip(votes, 0, self.n_trees)]

    @classmethod
    def from_files(cls, forest_bytes: bytes, features_bytes: bytes | None, card: dict[str, Any],
                   source: str = "model dir") -> "Tagger":
        """A Tagger from a model dir's file contents (read locally or from HDFS)."""
        from tinytags.core import forest as forest_format

        forest = forest_format.loads(forest_bytes, source=f"{source}/forest.npz")
        wanted = (card.get("features") or {}).get("name", "pixels")
        if wanted != "pixels" and features_bytes is None:
            raise ModelError(f"{source}: the card says features {wanted!r} but {FEATURES_FILE} is missing")
        features = (load_features(features_bytes, f"{source}/{FEATURES_FILE}")
                    if features_bytes is not None else PixelFeatures())
        return cls(forest, features, card)


def load_features(data: bytes, source: str) -> FeatureSet | CnnFeatures:
    """A ``features.npz`` of either learned kind (k-means or network), by its recorded format.

    Raises ModelError naming the file when it is unreadable, of an unknown format, or (a network)
    does not load in onnxruntime: tagging stops before any output.
    """
    try:
        arrays = np.load(io.BytesIO(data), allow_pickle=False)
        meta = json.loads(str(arrays["meta"]))
        if meta.get("format") == CNN_FORMAT:
            return CnnFeatures.from_arrays(arrays, meta, source)
        return FeatureSet.from_arrays(arrays, meta, source)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:  # FeatureError and NetworkError are ValueErrors
        if isinstance(error, (FeatureError, NetworkError)):
            raise ModelError(str(error)) from error
        raise ModelError(f"{source} is not a readable feature file: {type(error).__name__}: {error}") from error


def model_version(forest: Forest, features) -> str:
    """Content hash of what decides a tag: the forest alone for raw pixels, else forest + features."""
    if features is None or features.name == "pixels":
        return forest.version
    return hashlib.sha256(f"{forest.version}:{features.version}".encode()).hexdigest()[:12]


def _precision_lookup(table: Any, n_trees: int) -> np.ndarray | None:
    if not isinstance(table, dict) or any(not isinstance(table.get(name), list) for name in CLASSES):
        return None
    lookup = np.full((len(CLASSES), n_trees + 1), np.nan, np.float64)
    for c, name in enumerate(CLASSES):
        for v, value in enumerate(table[name][: n_trees + 1]):
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                lookup[c, v] = value
    return lookup


def card_json(data: bytes, source: str) -> dict[str, Any]:
    """A model card's bytes -> dict; ModelError names the file when it is not a JSON object."""
    try:
        card = json.load(io.BytesIO(data))
    except ValueError as error:
        raise ModelError(f"{source}: not valid JSON ({error})") from error
    if not isinstance(card, dict):
        raise ModelError(f"{source}: expected a JSON object")
    return card
