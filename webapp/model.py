"""The model a deployment points at (TINYTAGS_MODEL_DIR): its card for the pages, its forest for /api/classify.

The card (model_card.json, written by jobs/train.py) is read defensively: a missing or partial card
hides what it lacks instead of failing a page. The forest is the one format of jobs/core/forest.py,
evaluated by its one Evaluator; both are re-read only when their files change.
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
from PIL import Image, UnidentifiedImageError

from jobs.core import forest as forest_format
from jobs.core.contract import (
    CARD_FILE,
    CLASSES,
    FOREST_FILE,
    InputError,
    min_votes_for,
)
from jobs.core.images import SIDE, hwc_to_cifar

# Uploads are decoded only in these formats and up to this many pixels (a decompression bomb
# of a small file must not fill memory).
UPLOAD_FORMATS = {"PNG", "JPEG", "GIF", "BMP", "WEBP"}
MAX_UPLOAD_PIXELS = 4096 * 4096


class UploadError(ValueError):
    """An uploaded file that is not an image we can classify; the message says why."""


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def card_trees(card: dict[str, Any]) -> int | None:
    """How many trees vote, from whichever name the card's params use (or its agreement table)."""
    params = card.get("params") if isinstance(card.get("params"), dict) else {}
    for name in ("trees", "n_trees", "num_trees", "numTrees", "n_estimators"):
        value = params.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    rows = agreement_rows(card)
    return max(row["min_votes"] for row in rows) if rows else None


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
    stamp: tuple[float, int] | None = None
    value: Any = None
    problem: str | None = None


class Model:
    """A model directory: its card, its plots and (lazily) its forest's evaluator."""

    def __init__(self, model_dir: str | Path | None):
        self.dir = Path(model_dir) if model_dir else None
        self._lock = threading.Lock()
        self._card = _Cached()
        self._evaluator = _Cached()

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

    def evaluator(self) -> forest_format.Evaluator:
        """The forest's evaluator; ModelError when there is no usable forest."""
        if self.dir is None:
            raise forest_format.ModelError("no model directory is configured (TINYTAGS_MODEL_DIR)")
        stamp = self._stamp(self.dir / FOREST_FILE)
        with self._lock:
            if stamp is None or stamp != self._evaluator.stamp:
                self._evaluator = _Cached(stamp, forest_format.Evaluator(forest_format.load(self.dir)))
            return self._evaluator.value

    def classify(self, pixels: np.ndarray) -> dict[str, Any]:
        """One CIFAR-layout row -> votes per class, the winning tag and its agreement."""
        evaluator = self.evaluator()
        # predict: the same winner (and tie-break) as the tag job gives the indexed images.
        counts, label, votes = evaluator.predict(pixels.reshape(1, -1))
        counts, label, votes = counts[0], int(label[0]), int(votes[0])
        return {
            "label": label, "tag": CLASSES[label], "votes": votes, "trees": evaluator.n_trees,
            "agreement": votes / evaluator.n_trees, "vote_counts": [int(c) for c in counts],
            "model": evaluator.forest.version,
        }


def upload_to_pixels(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """An uploaded image file -> (32x32x3 uint8 image, its CIFAR-layout row).

    Not square: the centre square is kept (Tiny Images are whole scenes squeezed to 32x32; a crop
    keeps shapes undistorted). Larger than 32x32: area-averaged down, as the corpus was made.
    """
    try:
        image = Image.open(io.BytesIO(data))
        if image.format not in UPLOAD_FORMATS:
            raise UploadError(f"image: {image.format} files are not accepted; send PNG, JPEG, GIF, BMP or WebP")
        width, height = image.size
        if width * height > MAX_UPLOAD_PIXELS:
            raise UploadError(f"image: {width}x{height} is too large; at most {MAX_UPLOAD_PIXELS:,} pixels")
        image = image.convert("RGB")
    except UploadError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as error:
        raise UploadError(f"image: not a readable image file ({error.__class__.__name__})") from None
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    image = image.crop((left, top, left + side, top + side))
    if side != SIDE:
        image = image.resize((SIDE, SIDE), Image.Resampling.BOX)
    hwc = np.asarray(image, dtype=np.uint8)
    return hwc, hwc_to_cifar(hwc)[0]


def png_bytes(hwc: np.ndarray) -> bytes:
    """A 32x32x3 image -> PNG file bytes (the page enlarges it with nearest-neighbour CSS)."""
    buffer = io.BytesIO()
    Image.fromarray(hwc, "RGB").save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()
