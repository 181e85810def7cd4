"""The model a deployment points at (TINYTAGS_MODEL_DIR): its card for the pages, its Tagger for /api/classify.

The card (model_card.json, written by jobs/train.py) is read defensively: a missing or partial card
hides what it lacks instead of failing a page (cards of older models have no per-class tables, no
junk figures, no expected precision). Classification goes through tinytags/core/tagger.py's Tagger
(features, then the forest), the same code path the tag job uses, so an upload gets the votes,
junk verdict and similarity vector an indexed image would; card and Tagger are re-read only when
their files change.
"""

from __future__ import annotations

import io
import json
import math
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from tinytags.core.contract import (
    CARD_FILE,
    CLASSES,
    FOREST_FILE,
    InputError,
    min_votes_for,
)
from tinytags.core.features import FEATURES_FILE
from tinytags.core.forest import ModelError
from tinytags.core.images import hwc_to_cifar
from tinytags.core.photos import PhotoError, decode
from tinytags.core.tagger import Tagger

# Uploads are decoded only in these formats and up to this many pixels (a decompression bomb
# of a small file must not fill memory).
UPLOAD_FORMATS = frozenset({"PNG", "JPEG", "MPO", "GIF", "BMP", "WEBP"})  # MPO: many cameras' JPEGs
MAX_UPLOAD_PIXELS = 4096 * 4096


class UploadError(ValueError):
    """An uploaded file that is not an image we can classify; the message says why."""


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _share(value: Any) -> float | None:
    number = _number(value)
    return number if number is not None and 0.0 <= number <= 1.0 else None


def _count(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value


def card_trees(card: dict[str, Any]) -> int | None:
    """How many trees vote, from whichever name the card's params use (or its agreement tables)."""
    params = card.get("params") if isinstance(card.get("params"), dict) else {}
    for name in ("trees", "n_trees", "num_trees", "numTrees", "n_estimators"):
        value = params.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    # Both tables have a row for every k = 1..trees.
    votes = [row["min_votes"] for row in agreement_rows(card)]
    votes += [row["min_votes"] for rows in per_class_rows(card).values() for row in rows]
    return max(votes) if votes else None


def agreement_rows(card: dict[str, Any]) -> list[dict[str, float]]:
    """The card's coverage/precision table, keeping only well-formed rows, by min_votes."""
    rows = []
    for row in card.get("agreement") or []:
        if not isinstance(row, dict):
            continue
        votes, coverage, precision = row.get("min_votes"), _number(row.get("coverage")), _number(row.get("precision"))
        if isinstance(votes, int) and not isinstance(votes, bool) and votes > 0 and coverage is not None:
            rows.append({"min_votes": votes, "coverage": coverage, "precision": precision})
    return sorted(rows, key=lambda row: row["min_votes"])


def precision_at(card: dict[str, Any] | None, min_agreement: float) -> dict[str, Any] | None:
    """The card's row for "at least min_agreement of the trees agree", with the trees it assumes."""
    if not card:
        return None
    trees = card_trees(card)
    rows = agreement_rows(card)
    if not trees or not rows:
        return None
    # A tag with agreement a has votes = a * trees: the filter agreement >= m keeps the contract's votes.
    try:
        needed = min_votes_for(min_agreement, trees)
    except InputError:
        return None
    for row in rows:
        if row["min_votes"] == needed:
            return {**row, "trees": trees}
    return None


def per_class_rows(card: dict[str, Any] | None) -> dict[str, list[dict[str, Any]]]:
    """The card's per_class_agreement, well-formed rows only, by min_votes; {} for older cards."""
    table = card.get("per_class_agreement") if card else None
    if not isinstance(table, dict):
        return {}
    found = {}
    for name in CLASSES:
        rows = []
        for row in table.get(name) if isinstance(table.get(name), list) else []:
            if not isinstance(row, dict):
                continue
            votes, images = _count(row.get("min_votes")), _count(row.get("images"))
            if votes and images is not None:
                rows.append({"min_votes": votes, "images": images, "precision": _share(row.get("precision")),
                             "recall": _share(row.get("recall"))})
        if rows:
            found[name] = sorted(rows, key=lambda row: row["min_votes"])
    return found


def tag_precision(card: dict[str, Any] | None, min_agreement: float,
                  tags: tuple[str, ...] | list[str] = ()) -> dict[str, dict[str, Any]]:
    """Per tag (all ten when none are given): the card's held-out figures for images given that tag
    by at least the votes ``min_agreement`` needs. Tags the card has no row for are left out."""
    table = per_class_rows(card)
    trees = card_trees(card) if table else None
    if not trees:
        return {}
    try:
        needed = min_votes_for(min_agreement, trees)
    except InputError:
        return {}
    found = {}
    for name in tags or CLASSES:
        row = next((row for row in table.get(name, ()) if row["min_votes"] == needed), None)
        if row is not None:
            found[name] = {**row, "trees": trees}
    return found


WILD_SETS = (("cifar_test", "CIFAR-10 test images"), ("photos_positive", "held-out photos of the ten"),
             ("none_seen", "none of the ten, kinds it trained on"), ("none_unseen", "none of the ten, kinds it never saw"))


def wild_figures(card: dict[str, Any] | None) -> dict[str, Any] | None:
    """The card's wild figures, well-formed parts only: per held-out set its coverage/precision or
    share tagged, and per tag at the tag job's rule its precision on the mix and on photos of the ten
    alone, and the share of none photos it captures. None for cards without ``--extra``."""
    wild = card.get("wild") if card and isinstance(card.get("wild"), dict) else None
    trees = card_trees(card) if wild else None
    if not wild or not trees:
        return None
    needed = _count(wild.get("min_votes")) or 1
    sets = []
    for key, label in WILD_SETS:
        row = wild.get(key) if isinstance(wild.get(key), dict) else {}
        values = {name: _share(row.get(name)) for name in ("coverage", "precision", "tagged", "called_none")}
        if _count(row.get("images")):
            sets.append({"key": key, "label": label, "images": _count(row.get("images")), **values})
    at_rule = wild.get("at_rule") if isinstance(wild.get("at_rule"), dict) else {}
    mix, alone = at_rule.get("mix"), at_rule.get("positives")
    capture = wild.get("none_capture") if isinstance(wild.get("none_capture"), dict) else {}
    tags = []
    for name in CLASSES:
        row = capture.get(name)
        captured = _share(row[needed - 1]) if isinstance(row, list) and len(row) >= needed else None
        tags.append({"tag": name, "mix": _share(mix.get(name)) if isinstance(mix, dict) else None,
                     "cifar": _share(alone.get(name)) if isinstance(alone, dict) else None, "captured": captured})
    share = _share(wild.get("share"))
    kinds = [k for k in wild.get("holdout_kinds", []) if isinstance(k, str)]
    return {"sets": sets, "tags": tags, "share": share, "min_votes": needed, "trees": trees, "kinds": kinds}


def junk_figures(card: dict[str, Any] | None) -> dict[str, Any] | None:
    """The card's junk figures (synthetic junk images, share of them tagged, share of real test
    images called junk) that are present and well-formed; None when there are none."""
    if not card:
        return None
    junk = card.get("junk") if isinstance(card.get("junk"), dict) else {}
    figures = {"images": _count(junk.get("images")), "tagged": _share(junk.get("tagged")),
               # Some cards keep this one at the top level, beside the other test-set figures.
               "real_called_junk": _share(junk.get("real_called_junk", card.get("real_called_junk")))}
    figures = {key: value for key, value in figures.items() if value is not None}
    return figures or None


def features_info(card: dict[str, Any] | None) -> dict[str, Any] | None:
    """The card's feature set (name, version, dims, junk_class) when it names one."""
    features = card.get("features") if card else None
    if not isinstance(features, dict) or not isinstance(features.get("name"), str):
        return None
    return {"name": features["name"],
            "version": features.get("version") if isinstance(features.get("version"), str) else None,
            "dims": _count(features.get("dims")),
            "junk_class": _count(features.get("junk_class"))}


def confusion(card: dict[str, Any]) -> list[list[int]] | None:
    """The card's confusion matrix when it is a square table of counts over the classes."""
    matrix = card.get("confusion_matrix")
    if not isinstance(matrix, list) or len(matrix) != len(CLASSES):
        return None
    if not all(isinstance(row, list) and len(row) == len(CLASSES) and all(_number(v) is not None for v in row)
               for row in matrix):
        return None
    return [[int(v) for v in row] for row in matrix]


@dataclass
class _Cached:
    stamp: Any = None
    value: Any = None
    problem: str | None = None


class Model:
    """A model directory: its card, its plots and (lazily) its Tagger."""

    def __init__(self, model_dir: str | Path | None):
        self.dir = Path(model_dir) if model_dir else None
        self._lock = threading.Lock()
        self._card = _Cached()
        self._tagger = _Cached()

    @staticmethod
    def _stamp(path: Path) -> tuple[float, int] | None:
        try:
            status = path.stat()
        except OSError:
            return None
        return status.st_mtime, status.st_size

    def card(self) -> tuple[dict[str, Any] | None, str | None]:
        """(card, None) or (None, why there is none); re-read when the file changes."""
        if self.dir is None:
            return None, "no model directory is configured (TINYTAGS_MODEL_DIR)"
        path = self.dir / CARD_FILE
        stamp = self._stamp(path)
        with self._lock:
            if stamp is None:
                return None, f"{path} does not exist (yet)"
            if stamp != self._card.stamp:
                try:
                    card = json.loads(path.read_text())
                    if not isinstance(card, dict):
                        raise ValueError("expected a JSON object")
                    self._card = _Cached(stamp, card, None)
                except (OSError, ValueError) as error:
                    self._card = _Cached(stamp, None, f"{path} is not readable: {error}")
            return self._card.value, self._card.problem

    def plots(self) -> list[str]:
        """Names of the PNG plots the training job left in the model directory."""
        if self.dir is None or not self.dir.is_dir():
            return []
        return sorted(path.name for path in self.dir.glob("*.png") if path.is_file())

    def tagger(self) -> Tagger:
        """The model dir's Tagger (forest, features when learned, card); ModelError when unusable."""
        if self.dir is None:
            raise ModelError("no model directory is configured (TINYTAGS_MODEL_DIR)")
        # The card is part of the Tagger (its expected-precision table), so any of the three
        # files changing makes a new one. Stamps first: a file replaced while we read shows up
        # as a changed stamp on the next call instead of being cached under the new one.
        paths = [self.dir / FOREST_FILE, self.dir / FEATURES_FILE, self.dir / CARD_FILE]
        stamp = tuple(self._stamp(path) for path in paths)
        card = self.card()[0] or {}
        with self._lock:
            if stamp[0] is None:
                raise ModelError(f"no model at {self.dir}: {FOREST_FILE} is missing (train one with jobs/train.py)")
            if stamp != self._tagger.stamp:
                try:
                    forest_bytes = paths[0].read_bytes()
                    features_bytes = paths[1].read_bytes() if stamp[1] is not None else None
                except OSError as error:
                    raise ModelError(f"{self.dir} is not readable: {error}") from error
                self._tagger = _Cached(stamp, Tagger.from_files(forest_bytes, features_bytes, card, str(self.dir)))
            return self._tagger.value

    def classify(self, pixels: np.ndarray) -> tuple[dict[str, Any], np.ndarray]:
        """One CIFAR-layout row -> (votes per class, tag, agreement, junk verdict, expected precision,
        model version; the upload's similarity vector)."""
        tagger = self.tagger()
        # predict: the same features, winner (and tie-break) and junk test as the tag job's.
        prediction = tagger.predict(pixels.reshape(1, -1))
        counts = [int(c) for c in prediction.vote_counts[0]]
        label, votes, junk = int(prediction.label[0]), int(prediction.votes[0]), bool(prediction.junk[0])
        answer: dict[str, Any] = {
            "junk": junk, "label": None, "tag": None, "votes": votes, "trees": tagger.n_trees,
            "agreement": None, "vote_counts": counts,
            # Trees that voted for the learned features' "none" class (never one of the ten).
            "none_votes": tagger.n_trees - sum(counts),
            "expected_precision": None, "model": tagger.version, "features": tagger.features_name,
        }
        if not junk:
            precision = tagger.expected_precision(prediction.label[:1], prediction.votes[:1])
            answer.update(label=label, tag=CLASSES[label], agreement=votes / tagger.n_trees,
                          expected_precision=_number(float(precision[0])) if precision is not None else None)
        return answer, prediction.vectors[0]


def upload_to_pixels(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """An uploaded image file -> (32x32x3 uint8 image, its CIFAR-layout row).

    Decoded exactly as packed photos are (tinytags/core/photos.py ``decode``): EXIF orientation
    applied, the centre square kept (Tiny Images are whole scenes squeezed to 32x32; a crop keeps
    shapes undistorted) and area-averaged down to 32x32, as the corpus was made.
    """
    try:
        hwc = decode(data, UPLOAD_FORMATS, MAX_UPLOAD_PIXELS).hwc
    except PhotoError as error:
        if error.code in ("format", "too_large"):
            raise UploadError(f"image: {error}") from None
        raise UploadError(f"image: not a readable image file ({error})") from None
    return hwc, hwc_to_cifar(hwc)[0]


def png_bytes(hwc: np.ndarray) -> bytes:
    """A 32x32x3 image -> PNG file bytes (the page enlarges it with nearest-neighbour CSS)."""
    buffer = io.BytesIO()
    Image.fromarray(hwc, "RGB").save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()
