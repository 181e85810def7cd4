"""Labelled photos for ``jobs/train.py --extra``: the ten classes and "none of the ten", from three layouts.

Pure code (bytes in, arrays out; no files, no Spark). The io layer (tinytags/io/extra_files.py)
finds which layout a source is and hands its bytes here:

- **A folder tree** (as Keras' ``image_dataset_from_directory`` expects): one subfolder per class
  name (``cat/``, ``truck/``, ...) and ``none/`` for photos of anything else. A folder below a class
  folder names a *kind* (``none/food/``, ``none/bridges/``): kinds let training hold out whole kinds
  and measure how well "none" generalises to kinds it never saw. Photos are decoded like ``pack``
  does (tinytags/core/photos.py: upright centre square, box-averaged to 32x32).
- **Packed shards with labels** (``python -m jobs.shards pack``, then a ``_labels.jsonl`` sidecar
  beside the shards: ``{"id": N, "label": "cat"}`` a line, optional ``"kind"``). ``python -m
  jobs.shards labels PACK`` writes it from the packed files' paths, by the same folder rule as the
  tree (``folder_label``), or write your own.
- **The photos archive layout** (``photos-32x32/``): ``images.bin`` (records of 3072 bytes in CIFAR
  layout, no label byte), ``labels.bin`` (one byte per image: 0-9 a class, 10 none of the ten),
  ``kinds.bin`` (one byte per image: its kind) and ``kinds.txt`` (``index<TAB>id<TAB>name<TAB>words``).

Every problem is an ``ExtraError`` naming the file or folder and what was expected.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Iterable, Mapping

import numpy as np

from tinytags.core.contract import CLASSES
from tinytags.core.images import RECORD_BYTES

NONE = "none"                 # the folder / label name of photos that show none of the ten classes
NONE_LABEL = len(CLASSES)     # its label number, next after the classes (the junk class of the forest)
LABEL_NAMES = (*CLASSES, NONE)
ARCHIVE_FILES = ("images.bin", "labels.bin", "kinds.bin", "kinds.txt")
LABELS_NAME = "_labels.jsonl"  # beside packed shards: {"id": N, "label": NAME[, "kind": KIND]} a line


class ExtraError(ValueError):
    """Labelled photos that cannot be used; the message names the source and what was expected."""


@dataclass(frozen=True)
class Labelled:
    """Labelled photos: pixels (n x 3072, CIFAR layout), labels (0-9, or NONE_LABEL), kinds, source."""

    pixels: np.ndarray
    labels: np.ndarray
    kinds: np.ndarray               # index into kind_names per image
    kind_names: tuple[str, ...]
    source: str

    def __len__(self) -> int:
        return int(self.labels.size)

    def counts(self) -> dict[str, int]:
        """Images per label name (only the names present)."""
        numbers = np.bincount(self.labels, minlength=len(LABEL_NAMES))
        return {LABEL_NAMES[i]: int(n) for i, n in enumerate(numbers) if n}

    def subset(self, mask: np.ndarray) -> "Labelled":
        """The images where ``mask`` is true (kind names kept, so kind numbers keep their meaning)."""
        return Labelled(self.pixels[mask], self.labels[mask], self.kinds[mask], self.kind_names, self.source)


def label_number(name: str, where: str) -> int:
    """A class folder's or sidecar label's number; ExtraError naming it when it is not one of ours."""
    key = name.strip().lower()
    if key in LABEL_NAMES:
        return LABEL_NAMES.index(key)
    raise ExtraError(f"{where}: {name!r} is not a class name; expected one of {', '.join(LABEL_NAMES)} "
                     f"({NONE!r} for photos of anything else)")


def concat(parts: Iterable[Labelled], source: str) -> Labelled:
    """Several labelled sets as one; kinds are renumbered into one list of names."""
    parts = list(parts)
    if not parts:
        raise ExtraError(f"{source}: no labelled photos")
    names: list[str] = []
    kinds = []
    for part in parts:
        mapping = np.array([_intern(names, name) for name in part.kind_names] or [0], np.int32)
        kinds.append(mapping[part.kinds] if part.kind_names else np.zeros(len(part), np.int32))
    return Labelled(np.concatenate([p.pixels for p in parts]), np.concatenate([p.labels for p in parts]),
                    np.concatenate(kinds), tuple(names), source)


def _intern(names: list[str], name: str) -> int:
    if name not in names:
        names.append(name)
    return names.index(name)


# --- the archive layout -------------------------------------------------------------------------


def from_archive(members: Mapping[str, bytes], source: str) -> Labelled:
    """``{file name: bytes}`` of the photos archive layout (images/labels/kinds .bin, kinds.txt) -> Labelled."""
    missing = [name for name in ARCHIVE_FILES if name not in members]
    if missing:
        raise ExtraError(f"{source}: {', '.join(missing)} missing; the photos layout needs {', '.join(ARCHIVE_FILES)}")
    images = members["images.bin"]
    if not images:
        raise ExtraError(f"{source}/images.bin: empty; expected records of {RECORD_BYTES} bytes")
    if len(images) % RECORD_BYTES:
        raise ExtraError(f"{source}/images.bin: {len(images)} bytes is not a whole number of {RECORD_BYTES}-byte "
                         f"records (32x32 RGB planes, no label byte); {len(images) % RECORD_BYTES} bytes left over")
    n = len(images) // RECORD_BYTES
    labels = np.frombuffer(members["labels.bin"], np.uint8)
    kinds = np.frombuffer(members["kinds.bin"], np.uint8)
    for name, values in (("labels.bin", labels), ("kinds.bin", kinds)):
        if values.size != n:
            raise ExtraError(f"{source}/{name}: {values.size} bytes for {n} images in images.bin; expected one byte per image")
    if labels.max() > NONE_LABEL:
        raise ExtraError(f"{source}/labels.bin: label {int(labels.max())} found; expected 0-9 (a class) or "
                         f"{NONE_LABEL} (none of the ten)")
    kind_names = _kind_names(members["kinds.txt"], f"{source}/kinds.txt")
    if kinds.max() >= len(kind_names):
        raise ExtraError(f"{source}/kinds.bin: kind {int(kinds.max())} found, but kinds.txt lists {len(kind_names)}")
    pixels = np.frombuffer(images, np.uint8).reshape(n, RECORD_BYTES)
    return Labelled(pixels, labels.astype(np.int64), kinds.astype(np.int32), kind_names, source)


def _kind_names(data: bytes, where: str) -> tuple[str, ...]:
    """kinds.txt: ``index<TAB>id<TAB>label[<TAB>words]`` lines, indexes 0..n-1 in order -> kind names.

    A kind's name is its first word (``goldfish``), else its id: the label column is the class.
    """
    names = []
    for number, line in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 3 or not fields[0].isdigit() or int(fields[0]) != len(names):
            raise ExtraError(f"{where}, line {number}: expected 'index<TAB>id<TAB>label<TAB>words', indexes from 0 in order; "
                             f"got {line[:80]!r}")
        words = fields[3].split(",")[0].strip() if len(fields) > 3 else ""
        names.append(words or fields[1])
    return tuple(names)


# --- folder trees and sidecars ----------------------------------------------------------------


def tree_label(relative: str, where: str) -> tuple[int, str]:
    """A photo's path below the tree's root -> (label number, kind name: its folders joined by '/')."""
    parts = [p for p in relative.replace("\\", "/").split("/") if p]
    if len(parts) < 2:
        raise ExtraError(f"{where}/{relative}: a photo at the top of the tree has no label; put it in a "
                         f"folder named after its class ({', '.join(LABEL_NAMES)})")
    return label_number(parts[0], f"{where}/{parts[0]}"), "/".join(parts[:-1]).lower()


def folder_label(path: str) -> tuple[str, str] | None:
    """A packed file's source path -> (label name, kind) by its nearest folder named like a label.

    ``/photos/none/food/x.jpg`` -> ("none", "none/food"); ``/a/Cat/b.png`` -> ("cat", "cat"); None
    when no folder of the path is a class name or ``none``.
    """
    folders = [p for p in path.replace("\\", "/").split("/")[:-1] if p]
    for index in range(len(folders) - 1, -1, -1):
        if folders[index].strip().lower() in LABEL_NAMES:
            return folders[index].strip().lower(), "/".join(folders[index:]).lower()
    return None


def from_records(records: list[tuple[np.ndarray, int, str]], source: str) -> Labelled:
    """(CIFAR-layout pixels, label, kind name) per photo -> Labelled."""
    if not records:
        raise ExtraError(f"{source}: no photos found; expected class folders ({', '.join(LABEL_NAMES)}) "
                         f"holding image files")
    names: list[str] = []
    kinds = np.array([_intern(names, kind) for _, _, kind in records], np.int32)
    return Labelled(np.stack([pixels for pixels, _, _ in records]).astype(np.uint8),
                    np.array([label for _, label, _ in records], np.int64), kinds, tuple(names), source)


def parse_labels(text: bytes, where: str) -> dict[int, tuple[int, str]]:
    """``_labels.jsonl`` -> {image id: (label number, kind name)}; ExtraError naming the line."""
    out: dict[int, tuple[int, str]] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            image_id, label = int(item["id"]), str(item["label"])
        except (ValueError, KeyError, TypeError) as error:
            raise ExtraError(f"{where}, line {number}: expected {{\"id\": N, \"label\": NAME}}; "
                             f"{type(error).__name__}: {error}") from None
        label_no = label_number(label, f"{where}, line {number}")
        out[image_id] = (label_no, str(item.get("kind") or LABEL_NAMES[label_no]).lower())
    if not out:
        raise ExtraError(f"{where}: no labels")
    return out


def labels_line(image_id: int, label: str, kind: str) -> str:
    """One ``_labels.jsonl`` line."""
    return json.dumps({"id": image_id, "label": label, "kind": kind}, separators=(",", ":")) + "\n"


# --- held-out kinds ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Split:
    """Which images train, and which are held out: photos of the ten, "none" of seen kinds, of unseen kinds."""

    train: np.ndarray          # bool per image
    held_positive: np.ndarray  # held-out photos of the ten classes
    held_seen: np.ndarray      # held-out "none" photos of kinds that also train
    held_unseen: np.ndarray    # "none" photos of kinds that never train


def hold_out(data: Labelled, share: float, seed: int) -> Split:
    """Hold out ``share`` of the "none" kinds whole, and ``share`` of the other images at random.

    Kinds are drawn, not images, for the unseen set: the figure then says how well "none" carries to
    kinds of things the model never saw, which is what a corpus of 75,000 kinds asks of it.
    """
    rng = np.random.default_rng(seed)
    none = data.labels == NONE_LABEL
    none_kinds = np.unique(data.kinds[none])
    n_unseen = int(round(share * none_kinds.size)) if none_kinds.size > 1 else 0
    unseen_kinds = rng.choice(none_kinds, n_unseen, replace=False) if n_unseen else np.array([], np.int32)
    unseen = none & np.isin(data.kinds, unseen_kinds)
    held = (rng.random(len(data)) < share) & ~unseen
    return Split(train=~held & ~unseen, held_positive=held & ~none, held_seen=held & none, held_unseen=unseen)
