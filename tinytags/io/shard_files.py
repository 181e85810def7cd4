"""Tiny-format shard files through the storage layer: find them, read their ids, and write them.

A shard is a plain ``tiny_images.bin``-format file (3072-byte records, no header) named
``tiny_NNNNN.bin``; with shard size S it holds the images with global ids ``NNNNN*S`` onwards (the
last shard may be shorter). ``split`` and ``make_sample`` also write ``_shards.json`` next to the
shards (``{"shard_size": S, ...}``), which the tag job reads so that the ids cannot silently
change; ``upload`` copies it along. Every writer is resumable: a shard already at the target
with the right size is skipped, others are written to a temporary name, checked for size, then
renamed, so an interrupted copy never leaves a short shard under a shard's name.

The command line is jobs/shards.py (``python -m jobs.shards``).
"""

from __future__ import annotations

import fnmatch
import json
import uuid
from typing import Callable, Iterable

import numpy as np

from tinytags.core.contract import (
    SHARD_SIZE,
    SHARDS_INFO,
    InputError,
    shard_name,
    shard_number,
)
from tinytags.core.images import RECORD_BYTES, cifar_to_tiny_layout
from tinytags.core.tagging import Shard
from tinytags.io.spark import log
from tinytags.io.storage import Storage

COPY_CHUNK = 1024 * RECORD_BYTES  # 3 MiB: whole records per read/write while copying


# --- finding shards --------------------------------------------------------------------------------

TOOL = "shards"  # the progress lines' prefix


def find_shards(files: Storage, inputs: Iterable[str]) -> list[Shard]:
    """Shards named by ``inputs``: files, folders (their tiny_NNNNN.bin files) or globs in the last part.

    Raises InputError when an input matches nothing or names a file that is not tiny_NNNNN.bin
    (its name is what gives its images their ids).
    """
    shards: dict[str, Shard] = {}
    for raw in inputs:
        matched = _match(files, raw)
        if not matched:
            raise InputError(f"--input {raw}: no shards matched (expected tiny_NNNNN.bin files, "
                                "a folder holding them, or a glob such as .../tiny_000*.bin)")
        for path, size in matched:
            number = shard_number(path.rsplit("/", 1)[-1])
            if number is None:
                raise InputError(f"{path}: a shard's name must be tiny_NNNNN.bin (NNNNN x shard size "
                                    "is the id of its first image); rename it or split it with jobs.shards")
            shards[path] = Shard(path, number, size)
    return sorted(shards.values(), key=lambda s: (s.number, s.path))


def _match(files: Storage, raw: str) -> list[tuple[str, int]]:
    path = raw.rstrip("/") or raw
    status = files.status(path) if not any(c in path for c in "*?[") else None
    if status and status[0] == "file":
        return [(path, status[1])]
    if status and status[0] == "dir":
        return [(files.join(path, name), size) for name, kind, size in files.list(path)
                if kind == "file" and shard_number(name) is not None]
    folder, _, pattern = path.rpartition("/")
    if not pattern or not any(c in pattern for c in "*?["):
        return []
    folder_status = files.status(folder or "/")
    if not folder_status or folder_status[0] != "dir":
        return []
    return [(files.join(folder, name), size) for name, kind, size in files.list(folder or "/")
            if kind == "file" and fnmatch.fnmatchcase(name, pattern)]


def shard_size_of(files: Storage, shards: Iterable[Shard]) -> int | None:
    """The shard size recorded in _shards.json beside the shards (None if there is none).

    Raises InputError when folders disagree or a record is malformed.
    """
    sizes: dict[int, str] = {}
    for folder in sorted({s.path.rsplit("/", 1)[0] for s in shards}):
        info_path = files.join(folder, SHARDS_INFO)
        if files.status(info_path) is None:
            continue
        try:
            size = json.loads(files.read_bytes(info_path))["shard_size"]
        except (ValueError, KeyError, TypeError) as error:
            raise InputError(f"{info_path}: expected JSON with an integer 'shard_size' ({error})") from error
        if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
            raise InputError(f"{info_path}: 'shard_size' should be a positive integer, got {size!r}")
        sizes[size] = info_path
    if len(sizes) > 1:
        (a, path_a), (b, path_b) = list(sizes.items())[:2]
        raise InputError(f"shards of different shard sizes: {path_a} says {a:,}, {path_b} says {b:,}; "
                            "tag them in separate runs")
    return next(iter(sizes), None)


# --- split, upload, make-sample --------------------------------------------------------------------



def _copy_shard(files: Storage, chunks: Iterable[bytes], target: str, size: int) -> None:
    """Write a shard under a temporary name, check its size, rename it into place."""
    spare = f"{target}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        files.write(spare, chunks)
        status = files.status(spare)
        if status is None or status[1] != size:
            raise OSError(f"{spare}: wrote {status[1] if status else 0:,} bytes, expected {size:,}")
        if files.status(target) is not None:
            files.delete(target)
        files.rename(spare, target)
    finally:
        if files.status(spare) is not None:
            files.delete(spare)


def _already_there(files: Storage, target: str, size: int) -> bool:
    status = files.status(target)
    return status is not None and status == ("file", size)


def _write_info(files: Storage, folder: str, info: dict) -> None:
    path = files.join(folder, SHARDS_INFO)
    if files.status(path) is not None:
        try:
            old = json.loads(files.read_bytes(path))
        except ValueError:
            old = {}
        if old.get("shard_size") not in (None, info["shard_size"]):
            raise InputError(f"{path} says shard size {old['shard_size']:,}, this run uses "
                                f"{info['shard_size']:,}: use another --out folder")
    files.write_atomic(path, (json.dumps(info, indent=2) + "\n").encode())


def split(files: Storage, source: str, out: str, shard_size: int = SHARD_SIZE, allow_partial: bool = False) -> list[str]:
    """Cut a tiny_images.bin-format file into shards of shard_size images in ``out``; returns their paths."""
    status = files.status(source)
    if status is None or status[0] != "file":
        raise InputError(f"{source}: no such file")
    if shard_size <= 0:
        raise InputError(f"--shard-size must be positive, got {shard_size}")
    size = status[1]
    records, tail = divmod(size, RECORD_BYTES)
    if tail and not allow_partial:
        raise InputError(f"{source}: {size:,} bytes is not a multiple of {RECORD_BYTES} (32x32x3 records): "
                            f"the last record is cut off after {tail:,} bytes; pass --allow-partial to drop it")
    if tail:
        log(TOOL, f"warning: {source}: dropping the last {tail:,} bytes (a cut-off record)")
    files.makedirs(out)
    _write_info(files, out, {"shard_size": shard_size, "source": source.rsplit("/", 1)[-1],
                             "source_bytes": size, "records": records,
                             "shards": -(-records // shard_size)})
    def chunks(first: int, count: int) -> Iterable[bytes]:
        with files.open_range(source, first * RECORD_BYTES, count * RECORD_BYTES) as reader:
            left = count * RECORD_BYTES
            while left:
                chunk = reader.read(min(COPY_CHUNK, left))
                if not chunk:
                    raise OSError(f"{source}: ended early while reading images {first:,}..{first + count - 1:,}")
                left -= len(chunk)
                yield chunk

    return _write_shards(files, out, records, shard_size, chunks)


def _write_shards(files: Storage, out: str, records: int, shard_size: int,
                  chunks: Callable[[int, int], Iterable[bytes]],
                  written_one: Callable[[str, int, int], None] | None = None) -> list[str]:
    """Write ``records`` images as shards of ``shard_size`` into ``out``; returns their paths.

    ``chunks(first, count)`` yields the Tiny-layout bytes of images first..first+count-1. A shard
    already there with the right size is skipped (resumable); ``written_one(target, first, count)``
    runs after each shard written.
    """
    written = []
    for number, first in enumerate(range(0, records, shard_size)):
        count = min(shard_size, records - first)
        target = files.join(out, shard_name(number))
        written.append(target)
        if _already_there(files, target, count * RECORD_BYTES):
            log(TOOL, f"{target}: already there ({count:,} images), skipped")
            continue
        _copy_shard(files, chunks(first, count), target, count * RECORD_BYTES)
        if written_one is not None:
            written_one(target, first, count)
        log(TOOL, f"{target}: {count:,} images (ids {first:,}..{first + count - 1:,})")
    return written


def upload(files: Storage, sources: Iterable[str], to: str) -> list[str]:
    """Copy local shards (files or folders of tiny_NNNNN.bin) into ``to``; returns the target paths."""
    shards = find_shards(files, sources)
    files.makedirs(to)
    for folder in sorted({s.path.rsplit("/", 1)[0] for s in shards}):
        info = files.join(folder, SHARDS_INFO)
        if files.status(info) is not None:
            _write_info(files, to, json.loads(files.read_bytes(info)))
    targets = []
    for shard in shards:
        target = files.join(to, shard_name(shard.number))
        targets.append(target)
        if _already_there(files, target, shard.size):
            log(TOOL, f"{target}: already there ({shard.size:,} bytes), skipped")
            continue

        def chunks(shard=shard):
            with files.open_range(shard.path, 0, shard.size) as reader:
                while chunk := reader.read(COPY_CHUNK):
                    yield chunk

        _copy_shard(files, chunks(), target, shard.size)
        log(TOOL, f"{target}: uploaded {shard.size:,} bytes from {shard.path}")
    return targets


def make_sample(files: Storage, pixels: np.ndarray, labels: np.ndarray | None, out: str, count: int | None = None,
                shard_size: int | None = None) -> list[str]:
    """Write CIFAR-layout images as Tiny Images shards (column-major planes) in ``out``.

    ``count`` images are taken in order, cycling through ``pixels`` when more are asked for than
    there are (a large synthetic corpus for benchmarks). With labels, each shard gets a
    ``tiny_NNNNN.labels`` file beside it: one label byte per image, for measuring tag quality.
    """
    count = len(pixels) if count is None else count
    if count <= 0 or not len(pixels):
        raise InputError(f"make-sample needs at least one image, got count={count} of {len(pixels)}")
    shard_size = shard_size or count
    files.makedirs(out)
    _write_info(files, out, {"shard_size": shard_size, "source": "cifar-10 sample", "records": count,
                             "shards": -(-count // shard_size)})
    tiny = cifar_to_tiny_layout(pixels)

    def chunks(first: int, count: int) -> Iterable[bytes]:
        for start in range(first, first + count, 1024):
            index = np.arange(start, min(start + 1024, first + count)) % len(tiny)
            yield tiny[index].tobytes()

    def write_labels(target: str, first: int, count: int) -> None:
        index = np.arange(first, first + count) % len(labels)
        files.write_atomic(target[:-len(".bin")] + ".labels", labels[index].astype(np.uint8).tobytes())

    return _write_shards(files, out, count, shard_size, chunks,
                         write_labels if labels is not None else None)


