"""What the tag job does besides Spark and files: plan shards into blocks, tag a batch, keep the books.

Pure code (numpy, no Spark, no file system), unit-tested in tests/unit/test_tagging.py:

- **Ids and blocks.** Shard ``tiny_NNNNN.bin`` of a run with shard size S holds the images with
  global ids ``NNNNN*S + offset``, offset being the record's index in the shard (byte ``3072*offset``);
  ``block = id // block_size``. ``plan_tag_blocks`` turns shards into one task per block, each a list
  of contiguous byte ranges (a block spans two shards only when S is not a multiple of the block
  size), so a task reads its records as a few large buffers instead of one Python object each.
- **Tagging a batch.** ``tag_batch`` converts Tiny records (column-major planes) to the CIFAR layout
  the model was trained on, evaluates every tree over the whole batch (the shared
  ``tinytags.core.forest.Evaluator``) and encodes the kept images as JSON lines. Per-record Python work is
  one short f-string: the pixels of all kept images are base64-encoded in one call (pybase64's
  SIMD encoder, several times faster than binascii; 3072 bytes always encode to exactly 4096 characters, so image
  j is characters ``4096*j`` to ``4096*(j+1)``) and the lines are joined from memoryview slices of
  that buffer, one copy per byte.
- **The books.** ``run_identity`` (what makes two runs the same), ``build_manifest`` (per block and
  in total: read = kept + dropped, checked against the plan), ``progress_text``, ``failure_reason``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

import numpy as np
import pybase64

from tinytags.core.contract import CLASSES, VECTOR_B64, VECTOR_DIMS, InputError, min_votes_for
from tinytags.core.images import RECORD_BYTES, tiny_to_cifar_layout
from tinytags.core.tagger import Tagger

BATCH_SIZE = 2048  # images read and evaluated at once: amortises numpy calls, stays cache-friendly
B64_BYTES = RECORD_BYTES // 3 * 4  # 4096: base64 of one image, never padded (3072 = 3 * 1024)


@dataclass(frozen=True)
class Shard:
    """One shard file: where it is, its number (from its name) and its size in bytes."""

    path: str
    number: int
    size: int

    @property
    def records(self) -> int:
        """Whole 3072-byte records in the file."""
        return self.size // RECORD_BYTES

    @property
    def tail_bytes(self) -> int:
        """Bytes after the last whole record (a truncated record), normally 0."""
        return self.size % RECORD_BYTES


def check_shards(shards: Sequence[Shard], shard_size: int, allow_partial: bool, packed: bool = False) -> list[str]:
    """Refuse shards whose ids would be wrong or that end in a cut record; returns warnings.

    Errors: a size that is not a multiple of 3072 (unless allow_partial: then a warning, and the
    tail is dropped), more records than shard_size (its ids would run into the next shard's), and
    two files with the same shard number. A short shard that is not the last one is a warning,
    except in photo packs (``packed``), where every pack run ends with one by design.
    """
    if shard_size <= 0:
        raise InputError(f"--shard-size must be a positive number of images, got {shard_size}")
    warnings = []
    seen: dict[int, str] = {}
    for shard in sorted(shards, key=lambda s: s.number):
        if shard.number in seen:
            raise InputError(f"{shard.path} and {seen[shard.number]} are both shard {shard.number}: "
                                "their images would get the same ids")
        seen[shard.number] = shard.path
        if shard.tail_bytes:
            message = (f"{shard.path}: {shard.size:,} bytes is not a multiple of {RECORD_BYTES} "
                       f"(32x32x3 records): {shard.records:,} whole records and {shard.tail_bytes:,} bytes "
                       "of a cut-off last record")
            if not allow_partial:
                raise InputError(message + "; pass --allow-partial to tag the whole records and drop the rest")
            warnings.append(message + "; dropping those bytes (--allow-partial)")
        if shard.records > shard_size:
            raise InputError(f"{shard.path} holds {shard.records:,} images, more than the shard size "
                                f"{shard_size:,}: its ids would overlap shard {shard.number + 1}'s; "
                                "pass the --shard-size the shards were split with")
    numbers = sorted(seen)
    short = [s for s in shards if s.records < shard_size and s.number != numbers[-1]] if numbers and not packed else []
    for shard in sorted(short, key=lambda s: s.number):
        warnings.append(f"{shard.path} holds {shard.records:,} images, fewer than the shard size "
                        f"{shard_size:,}, and is not the last shard: ids {shard.number * shard_size + shard.records:,}"
                        f" to {(shard.number + 1) * shard_size - 1:,} will be missing")
    return warnings


@dataclass(frozen=True)
class Range:
    """Contiguous records of one shard: ``count`` records from record ``first_record``."""

    path: str
    shard: int
    first_record: int
    count: int
    first_id: int

    @property
    def byte_offset(self) -> int:
        """Where the range starts in the shard file."""
        return self.first_record * RECORD_BYTES


@dataclass(frozen=True)
class BlockTask:
    """Everything one Spark task tags: the ranges of one block, in id order."""

    block: int
    ranges: tuple[Range, ...]

    @property
    def images(self) -> int:
        """Images the task reads."""
        return sum(r.count for r in self.ranges)


def plan_tag_blocks(shards: Iterable[Shard], shard_size: int, block_size: int) -> list[BlockTask]:
    """One task per block holding images, its ranges cut at block and shard boundaries, by block."""
    if block_size <= 0:
        raise InputError(f"--block-size must be a positive number of images, got {block_size}")
    ranges: dict[int, list[Range]] = {}
    for shard in shards:
        base = shard.number * shard_size
        record = 0
        while record < shard.records:
            image_id = base + record
            block = image_id // block_size
            count = min(shard.records - record, (block + 1) * block_size - image_id)
            ranges.setdefault(block, []).append(Range(shard.path, shard.number, record, count, image_id))
            record += count
    return [BlockTask(block, tuple(sorted(parts, key=lambda r: r.first_id)))
            for block, parts in sorted(ranges.items())]


def batches(task_range: Range, batch_size: int) -> list[tuple[int, int]]:
    """(first record, count) of each batch of a range: reads of at most batch_size records."""
    if batch_size <= 0:
        raise InputError(f"--batch-size must be a positive number of images, got {batch_size}")
    end = task_range.first_record + task_range.count
    return [(start, min(batch_size, end - start)) for start in range(task_range.first_record, end, batch_size)]


# --- votes and JSON lines -------------------------------------------------------------------------


@dataclass(frozen=True)
class LineFormat:
    """The constant parts of a run's JSON lines, formatted once per task instead of once per image.

    ``expected_precision``: the model card's table {tag: [precision at 0..trees votes]} (or None).
    """

    model: str
    trees: int
    block_size: int
    expected_precision: dict | None = None
    agreement: tuple[str, ...] = field(init=False)  # JSON text of votes / trees for every vote count
    precision: tuple[tuple[str, ...], ...] = field(init=False)  # JSON text per (class, votes)
    tags: tuple[str, ...] = field(init=False)
    model_json: str = field(init=False)

    def __post_init__(self):
        # repr of a float is its shortest round-trip text, so json.loads gives back votes / trees exactly.
        object.__setattr__(self, "agreement", tuple(repr(v / self.trees) for v in range(self.trees + 1)))
        table = self.expected_precision or {}

        def text(name: str, votes: int) -> str:
            row = table.get(name) or []
            value = row[votes] if votes < len(row) else None
            return "null" if not isinstance(value, (int, float)) or isinstance(value, bool) else repr(float(value))

        object.__setattr__(self, "precision", tuple(tuple(text(name, v) for v in range(self.trees + 1))
                                                    for name in CLASSES))
        object.__setattr__(self, "tags", CLASSES)
        object.__setattr__(self, "model_json", json.dumps(self.model))  # quoted (and escaped) once


@dataclass
class BatchResult:
    """One batch: its JSON lines (bytes, newline-terminated), images read, kept (per class) and junk."""

    lines: bytes
    read: int
    kept: int
    kept_per_class: np.ndarray
    none: int = 0


def tag_batch(tagger: Tagger, tiny: np.ndarray, first_id: int, shard: int, first_offset: int,
              min_votes: int, fmt: LineFormat, extras: Mapping[int, str] | None = None) -> BatchResult:
    """Tiny Images records (n x 3072, consecutive ids from first_id) -> JSON lines of the kept images.

    An image is kept when the model does not call it junk and its top class has at least
    min_votes of the trees' votes. Its line holds id, block, label, tag, votes, agreement,
    vote_counts, model, shard, offset (its record index in the shard), expected_precision, then
    ``extras[id]`` when given (JSON text such as ``,"source":...,"width":...,"height":...`` for
    packed photos), pixels (base64 of the 3072 bytes in CIFAR layout) and, last, vector (base64 of
    48 float16).
    """
    pixels = tiny_to_cifar_layout(tiny)
    prediction = tagger.predict(pixels, vectors=tagger.writes_vectors)
    counts, labels, top = prediction.vote_counts, prediction.label, prediction.votes
    kept = np.flatnonzero(~prediction.junk & (top >= min_votes))
    none = int(prediction.junk.sum())
    per_class = np.bincount(labels[kept], minlength=len(CLASSES))
    if not kept.size:
        return BatchResult(b"", len(pixels), 0, per_class, none)
    encoded = memoryview(pybase64.b64encode(pixels[kept]))
    agreement, precision, tags, model = fmt.agreement, fmt.precision, fmt.tags, fmt.model_json
    block_size = fmt.block_size
    ids = (kept + first_id).tolist()
    more = [extras.get(i, "") for i in ids] if extras else [""] * len(ids)
    heads = [f'{{"id":{i},"block":{i // block_size},"label":{label},"tag":"{tags[label]}","votes":{votes},'
             f'"agreement":{agreement[votes]},"vote_counts":{row},"model":{model},"shard":{shard},'
             f'"offset":{offset},"expected_precision":{precision[label][votes]}{extra},"pixels":"'.encode()
             for i, label, votes, row, offset, extra in zip(
                 ids, labels[kept].tolist(), top[kept].tolist(),
                 counts[kept].tolist(), (kept + first_offset).tolist(), more)]
    n = len(heads)
    pixel_texts = [encoded[start:start + B64_BYTES] for start in range(0, B64_BYTES * n, B64_BYTES)]
    if prediction.vectors is None:  # head, pixels, tail for each line; bytes.join copies each piece once
        parts = [b'"}\n'] * (3 * n)
        parts[0::3], parts[1::3] = heads, pixel_texts
    else:  # head, pixels, middle, vector, tail
        if prediction.vectors.shape[1] != VECTOR_DIMS:  # the lines would be cut at the wrong places
            raise ValueError(f"model {tagger.version}: its similarity vectors have {prediction.vectors.shape[1]} "
                             f"numbers; a tag line holds {VECTOR_DIMS}")
        vectors = memoryview(pybase64.b64encode(prediction.vectors[kept].astype("<f2").tobytes()))
        parts = [b'","vector":"'] * (5 * n)
        parts[0::5], parts[1::5] = heads, pixel_texts
        parts[3::5] = [vectors[start:start + VECTOR_B64] for start in range(0, VECTOR_B64 * n, VECTOR_B64)]
        parts[4::5] = [b'"}\n'] * n
    return BatchResult(b"".join(parts), len(pixels), int(kept.size), per_class, none)


# --- run identity, manifest, progress --------------------------------------------------------------


@dataclass
class TaggedBlock:
    """What one task reports for its block (also stored as the block folder's _block.json)."""

    block: int
    read: int
    kept: int
    dropped: int
    kept_per_class: list[int]
    seconds: float = 0.0
    resumed: bool = False
    none: int = 0  # of the dropped, the images the model called junk ("none")

    def as_dict(self) -> dict:
        """The JSON form kept in the block folder."""
        return {"block": self.block, "read": self.read, "kept": self.kept, "dropped": self.dropped,
                "none": self.none, "kept_per_class": self.kept_per_class, "seconds": round(self.seconds, 3)}

    @classmethod
    def from_dict(cls, data: dict, source: str) -> "TaggedBlock":
        """Parse a block folder's _block.json; InputError names the source and the field."""
        values = {}
        for name in ("block", "read", "kept", "dropped"):
            value = data.get(name) if isinstance(data, dict) else None
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InputError(f"{source}: field {name!r} should be a non-negative integer, got {value!r}")
            values[name] = value
        per_class = data.get("kept_per_class")
        if not isinstance(per_class, list) or len(per_class) != len(CLASSES):
            raise InputError(f"{source}: field 'kept_per_class' should be {len(CLASSES)} integers")
        if values["kept"] + values["dropped"] != values["read"]:
            raise InputError(f"{source}: kept {values['kept']} + dropped {values['dropped']} != read {values['read']}")
        none = data.get("none", 0)
        if isinstance(none, bool) or not isinstance(none, int) or not 0 <= none <= values["dropped"]:
            raise InputError(f"{source}: field 'none' should be an integer from 0 to dropped, got {none!r}")
        return cls(**values, kept_per_class=per_class, seconds=float(data.get("seconds", 0.0)), resumed=True,
                   none=none)


def run_identity(model: str, min_agreement: float, block_size: int, shard_size: int,
                 shards: Sequence[Shard]) -> dict:
    """What makes two runs the same: the model, the threshold, the id scheme and the input files.

    Inputs are compared by shard number, name and size (not by full path, so the same shards
    reached through another URI still match).
    """
    return {
        "model": model, "min_agreement": min_agreement, "block_size": block_size, "shard_size": shard_size,
        "inputs": [{"shard": s.number, "name": s.path.rstrip("/").rsplit("/", 1)[-1], "bytes": s.size}
                   for s in sorted(shards, key=lambda s: s.number)],
    }


def identity_differences(old: dict, new: dict) -> list[str]:
    """Human-readable differences between two run identities (empty when they are the same run)."""
    differences = []
    for key in ("model", "min_agreement", "block_size", "shard_size"):
        if old.get(key) != new.get(key):
            differences.append(f"{key} {old.get(key)!r} (there) vs {new.get(key)!r} (this run)")
    if old.get("inputs") != new.get("inputs"):
        def describe(inputs):
            inputs = inputs or []
            names = ", ".join(f"{i.get('name')} ({i.get('bytes'):,} B)" for i in inputs[:3])
            return f"{len(inputs)} shards: {names}{', ...' if len(inputs) > 3 else ''}"
        differences.append(f"inputs {describe(old.get('inputs'))} (there) vs {describe(new.get('inputs'))} (this run)")
    return differences


def build_manifest(identity: dict, tasks: Sequence[BlockTask], results: Iterable[TaggedBlock],
                   shards: Sequence[Shard], trees: int, seconds: float) -> dict:
    """The run's _manifest.json; raises ValueError if any block is missing or does not balance.

    Every image read is accounted for: per block and in total, read = kept + dropped, and each
    block's read equals the images planned for it. Bytes dropped from cut-off shards
    (--allow-partial) are listed under ``partial``. The rate counts only the blocks this run
    tagged (not those --resume kept from an earlier attempt).
    """
    by_block = {r.block: r for r in results}
    planned = {t.block: t.images for t in tasks}
    missing = sorted(set(planned) - set(by_block))
    if missing:
        raise ValueError(f"no result for block {missing[0]} ({len(missing)} blocks missing)")
    blocks = {}
    for block in sorted(planned):
        result = by_block[block]
        if result.read != planned[block] or result.kept + result.dropped != result.read:
            raise ValueError(f"block {block} does not balance: planned {planned[block]}, read {result.read}, "
                             f"kept {result.kept} + dropped {result.dropped}")
        blocks[str(block)] = {"read": result.read, "kept": result.kept, "dropped": result.dropped,
                              "none": result.none}
    per_class = np.sum([by_block[b].kept_per_class for b in planned], axis=0, dtype=np.int64) \
        if planned else np.zeros(len(CLASSES), np.int64)
    read = sum(v["read"] for v in blocks.values())
    kept = sum(v["kept"] for v in blocks.values())
    tagged = sum(by_block[b].read for b in planned if not by_block[b].resumed)  # by this run, for its rate
    partial = [{"path": s.path, "records": s.records, "bytes_dropped": s.tail_bytes}
               for s in sorted(shards, key=lambda s: s.number) if s.tail_bytes]
    return {
        "model": identity["model"], "min_agreement": identity["min_agreement"],
        "block_size": identity["block_size"], "shard_size": identity["shard_size"], "trees": trees,
        "min_votes": min_votes_for(identity["min_agreement"], trees),
        "classes": list(CLASSES), "inputs": identity["inputs"],
        "blocks": blocks,
        "totals": {"blocks": len(blocks), "read": read, "kept": kept, "dropped": read - kept,
                   "none": sum(v["none"] for v in blocks.values()),
                   "partial_records": len(partial)},
        "kept_per_tag": {tag: int(n) for tag, n in zip(CLASSES, per_class)},
        "partial": partial,
        "resumed_blocks": sum(1 for b in planned if by_block[b].resumed),
        "seconds": round(seconds, 3),
        "images_per_second": round(tagged / seconds, 1) if seconds > 0 else None,
    }


def manifest_text(manifest: dict) -> str:
    """The manifest as JSON text, one line per top-level field and per block (readable, diffable)."""
    lines = []
    for key, value in manifest.items():
        if key == "blocks" and value:
            inner = ",\n".join(f"  {json.dumps(block)}: {json.dumps(counts)}" for block, counts in value.items())
            lines.append(f' "blocks": {{\n{inner}\n }}')
        else:
            lines.append(f" {json.dumps(key)}: {json.dumps(value)}")
    return "{\n" + ",\n".join(lines) + "\n}\n"


_EXCEPTION_LINE = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception)): (.+)$")


def failure_reason(text: str) -> str:
    """The Python exception a Spark task died of, from the text of the driver's error.

    Spark wraps a task's traceback in Java and Py4J layers; the last ``SomeError: message`` line
    that is not a Java class is the task's own. Falls back to the first line of the text.
    """
    reasons = [line.strip() for line in text.splitlines()
               if (match := _EXCEPTION_LINE.match(line.strip())) and not match.group(1).startswith(("org.", "java.", "py4j."))]
    if reasons:
        return reasons[-1]
    return next((line.strip() for line in text.splitlines() if line.strip()), "unknown error")


def progress_text(blocks_done: int, blocks_total: int, images_done: int, images_total: int,
                  seconds: float) -> str:
    """One progress line: blocks and images done, rate, and time left at that rate."""
    rate = images_done / seconds if seconds > 0 else 0.0
    left = (images_total - images_done) / rate if rate > 0 else float("nan")
    eta = f", ~{left:,.0f} s left" if rate > 0 and images_done < images_total else ""
    return (f"blocks {blocks_done:,}/{blocks_total:,} done, images {images_done:,}/{images_total:,} "
            f"({rate:,.0f} images/s{eta})")
