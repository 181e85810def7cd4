"""The contract every stage keeps: classes, file names, the id and block scheme, the agreement rule.

Jobs, the web app, the benchmarks and the tests import these names instead of writing them again,
so a file name, an id or a threshold means the same thing everywhere.

- **Classes**, in label order: CIFAR-10's ten.
- **Shards**: ``tiny_NNNNN.bin`` (Tiny Images layout, 3072-byte records, no header). With shard
  size S, record r of shard NNNNN is the image with global id ``NNNNN*S + r``; ``block = id //
  block_size``. ``_shards.json`` beside the shards records S.
- **Photo packs** (``python -m jobs.shards pack``, jobs/pack.py): a folder of shards that only ever
  grows. Each pack run writes *new* shards, starting with the one after the shard that holds the
  last id in ``_sources.jsonl`` (``next_pack_shard``), so run k's images get ids
  ``first_shard*S, first_shard*S + 1, ...`` in walk order and no shard is ever rewritten. A run's
  last shard may be short; the ids after it are never used, so an id is never given twice and
  tag outputs and Solr documents of earlier runs stay valid. S defaults to ``PACK_SHARD_SIZE`` (the
  block size: one shard per block). ``_sources.jsonl`` maps ids to their files (one JSON line per
  image, in id order); ``_pack_errors.jsonl`` lists the files the last run could not use.
- **Model dir**: ``forest.npz`` and ``model_card.json`` (plus plots and learned features).
- **Tag output**: ``OUT/block=<n>/part-00000.jsonl`` (one JSON line per kept image, fields in
  ``LINE_FIELDS``), ``OUT/block=<n>/_block.json`` (that block's counts), ``OUT/_run.json`` (which run
  the folder belongs to, written first) and ``OUT/_manifest.json`` (written last). The indexer
  adds ``OUT/_index_ledger.json`` and ``OUT/_index_dead_letters.jsonl``. Underscore names are
  skipped by Hadoop input formats, so they are never read as tag lines.
- **The agreement rule**: an image is tagged when its top class has at least
  ``min_votes_for(min_agreement, trees)`` of the trees' votes (0.4 by default).
"""

from __future__ import annotations

import math
import re

CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)

# --- ids, shards, blocks ---------------------------------------------------------------------------

SHARD_SIZE = 1_000_000  # images per shard, as the original project split tiny_images.bin
BLOCK_SIZE = 20_000     # images per output block: 79.3M Tiny Images -> 3,966 blocks
SHARD_PATTERN = re.compile(r"^tiny_(\d+)\.bin$")
BLOCK_FOLDER = re.compile(r"^block=(\d+)$")

# --- file and folder names -------------------------------------------------------------------------

SHARDS_INFO = "_shards.json"        # beside the shards: {"shard_size": S, ...}
FOREST_FILE = "forest.npz"          # in the model dir
CARD_FILE = "model_card.json"       # in the model dir
RUN_NAME = "_run.json"              # tag output: which run the folder belongs to (written first)
MANIFEST_NAME = "_manifest.json"    # tag output: per block read/kept/dropped (written last)
BLOCK_INFO_NAME = "_block.json"     # inside each block folder: its counts (lets --resume skip it)
PART_NAME = "part-00000.jsonl"      # inside each block folder: its JSON lines
STAGING_NAME = "_temporary"         # tag output: blocks being built, renamed into place when whole
LEDGER_NAME = "_index_ledger.json"  # indexer: blocks verified in Solr, per collection
DEAD_LETTERS_NAME = "_index_dead_letters.jsonl"  # indexer: lines that could not be indexed
SOURCES_NAME = "_sources.jsonl"         # beside packed shards: id -> source file, size, mtime, width, height, sha256
PACK_ERRORS_NAME = "_pack_errors.jsonl"  # beside packed shards: {path, reason} per file the last pack run could not use
PACK_KIND = "photos"                     # _shards.json's "kind" in a pack folder (it may only grow)
PACK_SHARD_SIZE = BLOCK_SIZE             # images per packed shard: one shard per tag block

# --- the agreement rule ----------------------------------------------------------------------------

MIN_AGREEMENT = 0.4

# --- one JSON line per kept image ------------------------------------------------------------------

# Required fields and the Python types they must have once decoded.
LINE_FIELDS = {
    "id": int, "block": int, "label": int, "tag": str, "votes": int,
    "agreement": (int, float), "vote_counts": list, "model": str, "pixels": str,
}
# Written by the tag job, not needed by every reader. ``expected_precision``: the model card's
# held-out precision for this tag and vote count (null when the card has none); ``vector``: the
# similarity vector, base64 of VECTOR_DIMS little-endian float16 (absent: computed from the pixels).
# ``source``, ``width``, ``height``: packed photos only (the file, its size as shown), from _sources.jsonl.
OPTIONAL_LINE_FIELDS = {"shard": int, "offset": int, "expected_precision": (int, float, type(None)),
                        "source": str, "width": int, "height": int, "vector": str}
VECTOR_DIMS = 48
VECTOR_B64 = 128  # base64 characters of the vector: 48 float16 = 96 bytes, never padded


class InputError(ValueError):
    """Input a job cannot use as given; the message names the file, field or flag and what was expected."""


def shard_name(number: int) -> str:
    """Shard number -> its file name (``tiny_00042.bin``)."""
    if number < 0:
        raise ValueError(f"a shard number is >= 0, got {number}")
    return f"tiny_{number:05d}.bin"


def shard_number(name: str) -> int | None:
    """``tiny_00042.bin`` -> 42; None for any other file name."""
    match = SHARD_PATTERN.match(name)
    return int(match.group(1)) if match else None


def first_id(shard: int, shard_size: int) -> int:
    """The global id of a shard's first image."""
    return shard * shard_size


def next_pack_shard(last_id: int | None, shard_size: int) -> int:
    """The first shard a pack run writes: the one after the shard holding the last packed id (0 if none)."""
    return 0 if last_id is None else last_id // shard_size + 1


def block_of(image_id: int, block_size: int = BLOCK_SIZE) -> int:
    """The block an image id belongs to."""
    return image_id // block_size


def block_folder(block: int) -> str:
    """Block number -> its folder name in a tag output (``block=12``)."""
    return f"block={int(block)}"


def block_number(name: str) -> int | None:
    """``block=12`` -> 12; None for any other name."""
    match = BLOCK_FOLDER.match(name)
    return int(match.group(1)) if match else None


def min_votes_for(min_agreement: float, trees: int) -> int:
    """Fewest top votes that reach the threshold: the least v >= 1 with v / trees >= min_agreement.

    A top class always has at least one vote, so a threshold of 0 keeps everything (v = 1).
    Computed with a small tolerance so that 0.4 x 10 trees is 4 votes, not 5 (0.4 * 10 is
    4.000000000000001 in floating point).
    """
    if math.isnan(min_agreement) or not 0.0 <= min_agreement <= 1.0:
        raise InputError(f"--min-agreement must be within [0, 1], got {min_agreement}")
    if trees <= 0:
        raise InputError(f"the model has no trees ({trees})")
    return max(1, math.ceil(min_agreement * trees - 1e-9))
