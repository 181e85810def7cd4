"""``jobs/train.py --extra SRC``: labelled photos from any path the storage layer reaches, in three layouts.

Which layout a source is, is decided by what it holds (tinytags/core/labelled.py has the layouts):
an archive (``.tar``, ``.tar.gz``, ``.tgz``) or a folder holding ``images.bin`` + ``labels.bin``
(directly or one level down) is the photos archive layout; a folder with ``_labels.jsonl`` beside
``tiny_NNNNN.bin`` shards is a labelled pack; any other folder is a class-folder tree of image files.
"""

from __future__ import annotations

import io
import json
import tarfile
import zlib
from pathlib import PurePosixPath

import numpy as np

from tinytags.core.contract import SHARD_SIZE, SHARDS_INFO, SOURCES_NAME, first_id, shard_number
from tinytags.core.images import RECORD_BYTES, hwc_to_cifar, tiny_to_cifar_layout
from tinytags.core.labelled import (
    ARCHIVE_FILES,
    LABEL_NAMES,
    LABELS_NAME,
    ExtraError,
    Labelled,
    concat,
    folder_label,
    from_archive,
    from_records,
    labels_line,
    parse_labels,
    tree_label,
)
from tinytags.core.photos import PhotoError, decode, is_photo_name, parse_source
from tinytags.io.storage import Storage

ARCHIVE_ENDINGS = (".tar", ".tar.gz", ".tgz")


def read_extras(files: Storage, sources: list[str]) -> Labelled:
    """Every ``--extra`` source read and joined; an ExtraError names the first one that is unusable."""
    return concat([read_extra(files, source) for source in sources], ", ".join(sources))


def read_extra(files: Storage, source: str) -> Labelled:
    """One ``--extra`` source: an archive, a labelled pack folder, or a class-folder tree."""
    status = files.status(source)
    if status is None:
        raise ExtraError(f"--extra {source}: no such file or folder")
    if status[0] == "file":
        if not source.lower().endswith(ARCHIVE_ENDINGS):
            raise ExtraError(f"--extra {source}: a file, but not a .tar/.tar.gz archive; expected the photos archive, "
                             f"a class-folder tree or a labelled pack folder")
        return from_archive(_archive_members(files.read_bytes(source), source), source)
    entries = {e.name: e for e in files.list(source)}
    for folder in [source] + [files.join(source, e.name) for e in entries.values() if e.kind == "dir"]:
        names = {e.name for e in files.list(folder)} if folder != source else set(entries)
        if {"images.bin", "labels.bin"} <= names:
            return from_archive({name: files.read_bytes(files.join(folder, name)) for name in ARCHIVE_FILES
                                 if name in names}, folder)
    if LABELS_NAME in entries:
        return _read_pack(files, source, entries)
    return _read_tree(files, source, entries)


def _archive_members(data: bytes, source: str) -> dict[str, bytes]:
    """The layout's four files from a tar (gzipped or not), wherever they sit inside it."""
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as archive:
            return {PurePosixPath(m.name).name: archive.extractfile(m).read() for m in archive.getmembers()
                    if m.isfile() and PurePosixPath(m.name).name in ARCHIVE_FILES}
    except (tarfile.TarError, EOFError, OSError, ValueError, zlib.error) as error:
        raise ExtraError(f"--extra {source}: not a readable tar archive ({type(error).__name__}: {error})") from None


def _read_tree(files: Storage, root: str, entries: dict) -> Labelled:
    """A class-folder tree: every image file below ``root/<class>/``; unknown folders are refused."""
    root = root.rstrip("/")
    records = []
    for found in files.walk(root):
        if found.problem:
            raise ExtraError(f"--extra {found.path}: {found.problem}")
        relative = found.path[len(root) + 1:]
        if not is_photo_name(relative):
            continue  # README files, sidecars, .DS_Store: not photos, not an error
        label, kind = tree_label(relative, f"--extra {root}")
        try:
            hwc = decode(files.read_bytes(found.path)).hwc
        except PhotoError as error:
            raise ExtraError(f"--extra {found.path}: not a usable image ({error})") from None
        records.append((hwc_to_cifar(hwc[None])[0], label, kind))
    if not records:
        folders = sorted(name for name, e in entries.items() if e.kind == "dir")
        raise ExtraError(f"--extra {root}: no image files in class folders (found folders: "
                         f"{', '.join(folders) or 'none'}); expected {', '.join(LABEL_NAMES)} folders of photos")
    return from_records(records, root)


def _read_pack(files: Storage, folder: str, entries: dict) -> Labelled:
    """Packed shards (Tiny layout) with ``_labels.jsonl``: the labelled images only, in CIFAR layout."""
    labels = parse_labels(files.read_bytes(files.join(folder, LABELS_NAME)), files.join(folder, LABELS_NAME))
    shard_size = SHARD_SIZE
    if SHARDS_INFO in entries:
        shard_size = int(json.loads(files.read_bytes(files.join(folder, SHARDS_INFO)))["shard_size"])
    records = []
    for name, entry in sorted(entries.items()):
        number = shard_number(name)
        if number is None or entry.kind != "file":
            continue
        data = files.read_bytes(files.join(folder, name))
        if len(data) % RECORD_BYTES:
            raise ExtraError(f"--extra {files.join(folder, name)}: {len(data)} bytes is not a whole number of "
                             f"{RECORD_BYTES}-byte records")
        pixels = tiny_to_cifar_layout(np.frombuffer(data, np.uint8).reshape(-1, RECORD_BYTES))
        start = first_id(number, shard_size)
        for offset in range(pixels.shape[0]):
            if start + offset in labels:
                label, kind = labels[start + offset]
                records.append((pixels[offset], label, kind))
    if not records:
        raise ExtraError(f"--extra {folder}: {LABELS_NAME} names {len(labels)} images, none of them in the "
                         f"tiny_NNNNN.bin shards beside it")
    return from_records(records, folder)


def write_folder_labels(files: Storage, pack: str) -> dict[str, int]:
    """Write ``PACK/_labels.jsonl`` from ``PACK/_sources.jsonl``: each packed file labelled by its nearest
    folder named like a class (or ``none``); files under no such folder are left out. Returns counts."""
    sources_path = files.join(pack, SOURCES_NAME)
    if files.status(sources_path) is None:
        raise ExtraError(f"{pack}: no {SOURCES_NAME}; expected a folder made by python -m jobs.shards pack")
    lines, counts = [], {"unlabelled": 0}
    for number, text in enumerate(files.read_bytes(sources_path).splitlines(), 1):
        if not text.strip():
            continue
        source = parse_source(text, f"{sources_path}, line {number}")
        found = folder_label(source.path)
        if found is None:
            counts["unlabelled"] += 1
            continue
        lines.append(labels_line(source.id, *found))
        counts[found[0]] = counts.get(found[0], 0) + 1
    if not lines:
        raise ExtraError(f"{pack}: none of the {counts['unlabelled']} packed files is below a folder named like a "
                         f"class ({', '.join(LABEL_NAMES)})")
    files.write_atomic(files.join(pack, LABELS_NAME), "".join(lines))
    return counts
