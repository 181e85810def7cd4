"""Folder trees of photos -> packed Tiny-format shards, through the storage layer; the sidecar's readers.

``python -m jobs.shards pack`` (a process pool) and jobs/pack.py (Spark tasks) share all of this;
they differ only in the *decoder*: the function that turns the list of files to read into
``FileResult``s, in order. One run:

1. ``plan_pack``: claim ``--out`` (new, or a folder earlier packs wrote: ``_shards.json`` says
   ``"kind": "photos"``), read ``_sources.jsonl``, delete shards no sidecar line covers (a crashed
   run's; their files are packed again), walk the sources, and set aside every file whose path,
   size and mtime match a sidecar line: already packed, never read again.
2. ``pack``: the decoder reads, hashes and decodes the other files (tinytags/core/photos.py). A file
   whose SHA-256 is already packed is a duplicate; the rest fill shards of S images with ids from
   ``next_pack_shard`` on (tinytags/core/contract.py). Each shard is written under a temporary name,
   size-checked and renamed; *then* its lines are added to ``_sources.jsonl`` (rewritten
   atomically): that is the commit, so a crash loses at most the shard being filled.
3. ``_pack_errors.jsonl`` (every file of this run that could not be used, and why) and
   ``_shards.json`` (totals) are written last.

A bad file never stops a run: walking reports unreadable folders, broken links and symlink
loops, the decoder reports unreadable, empty, truncated, corrupt, non-image and too-large files.

The tag job reads only its block's lines of a sidecar (``read_sources``): lines are in id order,
so it bisects the file with a few small range reads (local or WebHDFS) instead of reading it all.
"""

from __future__ import annotations

import functools
import json
import multiprocessing
import os
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

from tinytags.core.contract import (
    PACK_ERRORS_NAME,
    PACK_KIND,
    PACK_SHARD_SIZE,
    SHARDS_INFO,
    SOURCES_NAME,
    InputError,
    next_pack_shard,
    shard_name,
    shard_number,
)
from tinytags.core.images import RECORD_BYTES
from tinytags.core.photos import (
    PhotoError,
    Source,
    content_hash,
    decode,
    error_line,
    is_photo_name,
    line_id,
    mtime_of,
    pack_progress_text,
    parse_source,
    to_record,
)
from tinytags.io.shard_files import _copy_shard, _write_info
from tinytags.io.spark import log
from tinytags.io.storage import FILE_ERRORS, Found, Storage, basename, kind, local_path

MAX_FILE_BYTES = 512 << 20  # larger files are refused unread: a photo is far smaller, a bomb is not worth the memory
PROBE_BYTES = 64 << 10      # one bisection step of read_sources: one range read of this size
READ_CHUNK = 4 << 20



@dataclass(frozen=True)
class FileResult:
    """One file after the decoder: its record and facts, or the reason it cannot be used."""

    path: str
    size: int
    mtime: float
    sha256: str | None = None
    record: bytes | None = None
    width: int = 0
    height: int = 0
    problem: str | None = None


Decoder = Callable[[Storage, list[Found]], Iterable[FileResult]]


@dataclass
class PackPlan:
    """What ``plan_pack`` found: the folder's state, the files to read and those set aside."""

    files: Storage
    out: str
    shard_size: int
    first_shard: int
    images_before: int
    last_id: int | None
    known_hashes: dict[str, int]
    todo: list[Found]
    already_packed: int = 0
    ignored: int = 0
    problems: list[tuple[str, str]] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)


# --- planning ---------------------------------------------------------------------------------------

TOOL = "pack"  # the progress lines' prefix


def sources_path(files: Storage, folder: str) -> str | None:
    """The folder's ``_sources.jsonl`` (or the whole spare an interrupted rewrite left), or None."""
    path = files.join(folder, SOURCES_NAME)
    for candidate in (path, path + ".tmp"):
        if files.status(candidate) is not None:
            return candidate
    return None


def _absolute(source: str) -> str:
    """Local sources as absolute paths (what the sidecar and the web app see); URIs as given."""
    return os.path.abspath(local_path(source)) if kind(source) == "local" else source.rstrip("/")


def _lines(reader, chunk_bytes: int = READ_CHUNK) -> Iterator[bytes]:
    rest = b""
    while chunk := reader.read(chunk_bytes):
        parts = (rest + chunk).split(b"\n")
        rest = parts.pop()
        yield from (part for part in parts if part)
    if rest:
        yield rest


def _read_info(files: Storage, out: str) -> dict | None:
    text = files.read_text(files.join(out, SHARDS_INFO))
    if text is None:
        return None
    try:
        info = json.loads(text)
    except ValueError as error:
        raise InputError(f"{files.join(out, SHARDS_INFO)} is not valid JSON ({error})") from None
    return info if isinstance(info, dict) else {}


def plan_pack(files: Storage, sources: list[str], out: str, shard_size: int | None = None) -> PackPlan:
    """Claim ``out``, read what earlier runs packed, drop an unfinished run's shards, walk the sources."""
    if not sources:
        raise InputError("pack needs at least one folder or file to pack")
    roots = [_absolute(source) for source in sources]
    for root in roots:
        if kind(root) == "hadoop":
            raise InputError(f"{root}: pack reads local and hdfs:// paths (the decoder reads files outside the JVM)")
        if files.status(root) is None:
            raise InputError(f"{root}: no such file or folder")
    out = _absolute(out)
    status = files.status(out)
    if status is not None and status[0] != "dir":
        raise InputError(f"--out {out} is a file, expected a folder")
    names = [entry.name for entry in files.list(out)] if status else []
    info = _read_info(files, out)
    shards_there = sorted(n for n in map(shard_number, names) if n is not None)
    if info is None and shards_there:
        raise InputError(f"--out {out} holds shards but no {SHARDS_INFO}: no pack wrote them; choose another folder")
    if info is not None and info.get("kind") != PACK_KIND:
        raise InputError(f"--out {out} holds Tiny Images shards, not packed photos ({SHARDS_INFO} has no "
                         f"\"kind\": \"{PACK_KIND}\"); pack into a folder of its own")
    recorded = info.get("shard_size") if info else None
    if shard_size and recorded and shard_size != recorded:
        raise InputError(f"--shard-size {shard_size:,}, but {out} was packed with {recorded:,} images per shard")
    shard_size = shard_size or recorded or PACK_SHARD_SIZE
    if isinstance(shard_size, bool) or not isinstance(shard_size, int) or shard_size <= 0:
        raise InputError(f"the shard size must be a positive number of images, got {shard_size!r}")
    files.makedirs(out)
    sidecar = _settle_sidecar(files, out)
    last_id, images, known_files, known_hashes = _read_sidecar(files, sidecar) if sidecar else (None, 0, set(), {})
    first_shard = next_pack_shard(last_id, shard_size)
    for number in shards_there:
        if number >= first_shard:  # written, never committed: its images are packed again below
            log(TOOL, f"removing {shard_name(number)}: a pack run that did not finish wrote it")
            files.delete(files.join(out, shard_name(number)))
    _write_info(files, out, _info(shard_size, images, last_id))
    plan = PackPlan(files, out, shard_size, first_shard, images, last_id, known_hashes, [], sources=roots)
    seen: set[str] = set()
    for root in roots:
        for found in files.walk(root):
            if found.path in seen:  # sources that overlap
                continue
            seen.add(found.path)
            if found.problem is not None:
                if found.kind == "dir" or is_photo_name(found.path):
                    plan.problems.append((found.path, found.problem))
            elif not is_photo_name(basename(found.path)):
                plan.ignored += 1
            elif (found.path, found.size, mtime_of(found.mtime)) in known_files:
                plan.already_packed += 1
            else:
                plan.todo.append(found)
    return plan


def _info(shard_size: int, images: int, last_id: int | None) -> dict:
    return {"shard_size": shard_size, "kind": PACK_KIND, "source": "photos", "images": images, "last_id": last_id}


def _settle_sidecar(files: Storage, out: str) -> str | None:
    """The sidecar's path; a whole spare left by an interrupted rewrite is renamed into place first."""
    found = sources_path(files, out)
    if found is not None and found.endswith(".tmp"):
        files.rename(found, files.join(out, SOURCES_NAME))
        return files.join(out, SOURCES_NAME)
    return found


def _read_sidecar(files: Storage, path: str) -> tuple[int | None, int, set, dict[str, int]]:
    """(last id, images, {(path, bytes, mtime)}, {sha256: id}) of a sidecar; InputError if it is damaged."""
    last_id, images, known_files, known_hashes = None, 0, set(), {}
    with files.open_range(path, 0, None) as reader:
        for number, text in enumerate(_lines(reader), start=1):
            source = parse_source(text, f"{path} line {number}")
            if last_id is not None and source.id <= last_id:
                raise InputError(f"{path} line {number}: id {source.id} after id {last_id}: lines must be in id order")
            last_id = source.id
            images += 1
            known_files.add(source.file_key)
            known_hashes.setdefault(source.sha256, source.id)
    return last_id, images, known_files, known_hashes


# --- decoding (runs in pool workers or Spark tasks) ----------------------------------------------------


def decode_file(files: Storage, found: Found) -> FileResult:
    """Read, hash and decode one file; every failure becomes the result's ``problem``, never an exception."""
    facts = (found.path, found.size, mtime_of(found.mtime))
    try:
        if found.size > MAX_FILE_BYTES:
            return FileResult(*facts, problem=f"{found.size:,} bytes: larger than the {MAX_FILE_BYTES:,} bytes a photo may have")
        data = files.read_bytes(found.path)
        if len(data) != found.size:
            return FileResult(*facts, problem=f"changed while packing: listed with {found.size:,} bytes, read {len(data):,}")
        decoded = decode(data)
        return FileResult(*facts, sha256=content_hash(data), record=to_record(decoded.hwc),
                          width=decoded.width, height=decoded.height)
    except PhotoError as error:
        return FileResult(*facts, problem=str(error))
    except FILE_ERRORS as error:
        return FileResult(*facts, problem=f"cannot read: {getattr(error, 'strerror', None) or error}")
    except Exception as error:  # noqa: BLE001 - a bad file must never stop a pack (MemoryError included)
        return FileResult(*facts, problem=f"{type(error).__name__}: {error}")


def local_decoder(workers: int) -> Decoder:
    """Decode in this process (workers <= 1) or in a pool of ``workers`` processes, results in order."""

    def run(files: Storage, todo: list[Found]) -> Iterator[FileResult]:
        if workers <= 1 or len(todo) < 2:
            yield from (decode_file(files, found) for found in todo)
            return
        # spawn, not fork: a forked child would share the parent's WebHDFS connections.
        with multiprocessing.get_context("spawn").Pool(min(workers, len(todo))) as pool:
            yield from pool.imap(functools.partial(decode_file, files), todo, chunksize=4)

    return run


# --- packing ----------------------------------------------------------------------------------------


class _ShardWriter:
    """Fills shards of S records from ``first_shard`` on; after each shard, commits its sidecar lines."""

    def __init__(self, plan: PackPlan):
        self.plan, self.files = plan, plan.files
        self.shard = plan.first_shard
        self.records: list[bytes] = []
        self.lines: list[str] = []
        self.written: list[str] = []
        self.images = plan.images_before
        self.first_id: int | None = None
        self.last_id: int | None = None
        self.sidecar = self.files.join(plan.out, SOURCES_NAME)

    def add(self, result: FileResult) -> int:
        """Place one image; returns its id."""
        image_id = self.shard * self.plan.shard_size + len(self.records)
        self.records.append(result.record)
        self.lines.append(Source(image_id, result.path, result.size, result.mtime, result.width, result.height,
                                 result.sha256).line())
        if self.first_id is None:
            self.first_id = image_id
        self.last_id = image_id
        if len(self.records) == self.plan.shard_size:
            self.flush()
        return image_id

    def flush(self) -> None:
        """Write the shard being filled, then commit its lines to the sidecar."""
        if not self.records:
            return
        target = self.files.join(self.plan.out, shard_name(self.shard))
        _copy_shard(self.files, [b"".join(self.records)], target, len(self.records) * RECORD_BYTES)
        old = self.sidecar if self.files.status(self.sidecar) is not None else None
        new = "".join(self.lines).encode()

        def chunks():
            if old is not None:
                with self.files.open_range(old, 0, None) as reader:
                    while chunk := reader.read(READ_CHUNK):
                        yield chunk
            yield new

        self.files.write_atomic(self.sidecar, chunks())
        first = self.shard * self.plan.shard_size
        log(TOOL, f"{target}: {len(self.records):,} images (ids {first:,}..{first + len(self.records) - 1:,})")
        self.images += len(self.records)
        self.written.append(target)
        self.shard += 1
        self.records, self.lines = [], []


def pack(plan: PackPlan, decoder: Decoder, progress_seconds: float = 10.0) -> dict:
    """Decode the plan's files, fill and commit shards, write the error list and the totals; returns the summary."""
    files = plan.files
    started = last_line = time.monotonic()
    problems = list(plan.problems)
    known = dict(plan.known_hashes)
    writer = _ShardWriter(plan)
    done = duplicates = 0
    total = len(plan.todo)
    log(TOOL, f"{total:,} files to read ({plan.already_packed:,} already packed, {plan.ignored:,} other files, "
         f"{len(plan.problems):,} unreadable entries) -> {plan.out}, ids from shard {plan.first_shard:,}")
    for result in decoder(files, plan.todo):
        done += 1
        if result.problem is not None:
            problems.append((result.path, result.problem))
        elif result.sha256 in known:
            duplicates += 1
        else:
            known[result.sha256] = writer.add(result)
        now = time.monotonic()
        if now - last_line >= progress_seconds:
            last_line = now
            log(TOOL, pack_progress_text(done, total, writer.images - plan.images_before + len(writer.records),
                                    len(problems) - len(plan.problems), now - started))
    writer.flush()
    seconds = time.monotonic() - started
    files.write_atomic(files.join(plan.out, PACK_ERRORS_NAME), "".join(error_line(p, r) for p, r in problems))
    last_id = writer.last_id if writer.last_id is not None else plan.last_id
    _write_info(files, plan.out, _info(plan.shard_size, writer.images, last_id))
    unreadable = sum(1 for path, _ in plan.problems if is_photo_name(path))  # photo files the walk could not stat
    return {
        "out": plan.out, "files": total + plan.already_packed + unreadable,
        "packed": writer.images - plan.images_before, "already_packed": plan.already_packed,
        "duplicates": duplicates, "errors": len(problems), "ignored": plan.ignored,
        "shards": [basename(path) for path in writer.written], "first_id": writer.first_id, "last_id": writer.last_id,
        "images": writer.images, "seconds": round(seconds, 3),
        "images_per_second": round(done / seconds, 1) if seconds > 0 else None,
    }


def pack_summary_text(summary: dict) -> str:
    """The end-of-run line."""
    ids = f", ids {summary['first_id']:,}..{summary['last_id']:,}" if summary["packed"] else ""
    return (f"done: {summary['packed']:,} images packed into {len(summary['shards'])} new shard(s){ids}; "
            f"{summary['already_packed']:,} already packed, {summary['duplicates']:,} duplicates, "
            f"{summary['errors']:,} errors (listed in {summary['out']}/{PACK_ERRORS_NAME}), "
            f"{summary['ignored']:,} other files; {summary['images']:,} images in {summary['out']}; "
            f"{summary['seconds']:,.1f} s, {summary['images_per_second'] or 0:,.1f} images/s")


# --- the sidecar for the tag job --------------------------------------------------------------------


def sidecars(files: Storage, folders: Iterable[str]) -> dict[str, tuple[str, int]]:
    """{folder: (sidecar path, bytes)} for the folders that hold a ``_sources.jsonl``."""
    found = {}
    for folder in sorted(set(folders)):
        path = sources_path(files, folder)
        if path is not None:
            found[folder] = (path, files.status(path)[1])
    return found


def read_sources(files: Storage, path: str, size: int, first_id: int, end_id: int) -> dict[int, Source]:
    """The sidecar lines of ids first_id..end_id-1: a bisection of range reads, then one read of those lines."""
    found: dict[int, Source] = {}
    with files.open_range(path, _bisect(files, path, size, first_id), None) as reader:
        for text in _lines(reader, PROBE_BYTES):
            image_id = line_id(text)
            if image_id is None:
                raise InputError(f"{path}: a line does not start with {{\"id\": ({text[:40]!r})")
            if image_id >= end_id:
                break
            if image_id >= first_id:
                found[image_id] = parse_source(text, f"{path} (id {image_id})")
    return found


def _bisect(files: Storage, path: str, size: int, wanted: int) -> int:
    """A line start at or before the first line with an id >= wanted (lo only ever moves past smaller ids)."""
    lo, hi = 0, size
    while hi - lo > PROBE_BYTES:
        mid = (lo + hi) // 2
        with files.open_range(path, mid, PROBE_BYTES) as reader:
            window = reader.read(PROBE_BYTES)
        newline = window.find(b"\n")
        image_id = line_id(window[newline + 1:]) if newline >= 0 else None
        if image_id is None:  # no whole line starts in the window: search the lower half
            hi = mid
        elif image_id < wanted:
            lo = mid + newline + 1
        else:
            hi = mid
    return lo
