"""Tiny Images shards: split tiny_images.bin, upload shards to HDFS, make a sample shard from CIFAR-10, pack photos.

    .venv/bin/python -m jobs.shards split tiny_images.bin --out hdfs://127.0.0.1:9000/tiny [--shard-size 1000000]
    .venv/bin/python -m jobs.shards upload ./shards --to hdfs://127.0.0.1:9000/tiny
    .venv/bin/python -m jobs.shards make-sample --cifar cifar-10-binary.tar.gz --out ./sample [--count 10000]
    .venv/bin/python -m jobs.shards pack ~/Pictures /mnt/scans --out hdfs://127.0.0.1:9000/photos [--workers 2]
    .venv/bin/python -m jobs.shards labels hdfs://127.0.0.1:9000/photos

A shard is a plain ``tiny_images.bin``-format file (3072-byte records, no header) named
``tiny_NNNNN.bin``; with shard size S it holds the images with global ids ``NNNNN*S`` onwards (the
last shard may be shorter). ``split`` and ``make-sample`` also write ``_shards.json`` next to the
shards (``{"shard_size": S, ...}``), which jobs/tag.py reads so that the ids cannot silently
change; ``upload`` copies it along. Every command is resumable: a shard already at the target
with the right size is skipped, others are written to a temporary name, checked for size, then
renamed, so an interrupted copy never leaves a short shard under a shard's name. ``make-sample``
(CIFAR-10 archive or folder, local or hdfs://) also writes ``tiny_NNNNN.labels``, one label byte
per image, to measure tag quality; more images than the source has are taken by cycling.

``pack`` walks folder trees of JPEG, PNG, WebP, GIF, BMP and TIFF files and appends them to a
shards folder as 32x32 Tiny Images records, with ``_sources.jsonl`` (id -> file, size, mtime,
width x height, SHA-256) and ``_pack_errors.jsonl`` (the files it could not use, and why) beside
them. Each run adds new shards after the existing ones (ids are never renumbered; see
tinytags/core/contract.py) and skips files already packed; ``--workers`` processes decode (default:
every core). For trees too large for one machine, jobs/pack.py does the same with Spark tasks.
Its exit code is 0 unless nothing could be packed (1), or 2 for bad input; the last stdout line
is a JSON summary.

``labels`` writes ``_labels.jsonl`` beside a pack's shards, so that ``jobs/train.py --extra PACK``
can train on it: each packed file is labelled by the nearest folder of its path named like a class
(``cat/``, ``truck/``) or ``none/``, and the folders below that name its kind (``none/food``).

Paths are local or ``hdfs://namenode:port/...`` (tinytags/io/storage.py; WebHDFS at
``http://<namenode host>:9870`` unless TINYTAGS_WEBHDFS_URL says otherwise). The work is done by
tinytags/io/shard_files.py and tinytags/io/photo_files.py; this module is only the command line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

from tinytags.core import cifar
from tinytags.core.contract import PACK_SHARD_SIZE, SHARD_SIZE, InputError
from tinytags.core.labelled import ExtraError
from tinytags.core.photos import pack_exit_code
from tinytags.io.extra_files import write_folder_labels
from tinytags.io.photo_files import local_decoder, pack, pack_summary_text, plan_pack
from tinytags.io.shard_files import make_sample, split, upload
from tinytags.io.spark import log
from tinytags.io.storage import FILE_ERRORS, Storage
from tinytags.settings import add_hdfs_flags, env

TOOL = "shards"  # the progress lines' prefix


def main(argv: list[str] | None = None) -> int:
    """CLI: split | upload | make-sample | pack | labels (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m jobs.shards", description=__doc__.splitlines()[0])
    add_hdfs_flags(parser)
    commands = parser.add_subparsers(dest="command", required=True)
    cut = commands.add_parser("split", help="cut a tiny_images.bin-format file into shards")
    cut.add_argument("source", help="the .bin file (local or hdfs://)")
    cut.add_argument("--out", default=env("TINYTAGS_SHARDS"), required=env("TINYTAGS_SHARDS") is None,
                     help="folder for the shards, local or hdfs:// (env TINYTAGS_SHARDS)")
    cut.add_argument("--shard-size", type=int, default=int(env("TINYTAGS_SHARD_SIZE", str(SHARD_SIZE))),
                     help="images per shard (env TINYTAGS_SHARD_SIZE, default 1,000,000)")
    cut.add_argument("--allow-partial", action="store_true", help="drop a cut-off last record instead of failing")
    send = commands.add_parser("upload", help="copy shards into HDFS (skips shards already there)")
    send.add_argument("sources", nargs="+", help="shard files or folders of tiny_NNNNN.bin")
    send.add_argument("--to", default=env("TINYTAGS_SHARDS"), required=env("TINYTAGS_SHARDS") is None,
                      help="target folder, e.g. hdfs://127.0.0.1:9000/tiny (env TINYTAGS_SHARDS)")
    sample = commands.add_parser("make-sample", help="write Tiny-format shards from CIFAR-10 images")
    sample.add_argument("--cifar", default=env("TINYTAGS_CIFAR"), required=env("TINYTAGS_CIFAR") is None,
                        help="CIFAR-10 archive or folder, local or hdfs:// (env TINYTAGS_CIFAR)")
    sample.add_argument("--out", required=True, help="folder for the shards, local or hdfs://")
    sample.add_argument("--split", choices=("test", "train", "all"), default="test", help="which CIFAR-10 images")
    sample.add_argument("--count", type=int, help="images to write (default: all of the split; more cycle)")
    sample.add_argument("--shard-size", type=int, help="images per shard (default: all in one shard)")
    photos = commands.add_parser("pack", help="append folder trees of photos to a shards folder (resumable)")
    photos.add_argument("sources", nargs="+", help="folders or image files, local or hdfs://")
    photos.add_argument("--out", required=True, help="the pack folder, local or hdfs:// (new, or an earlier pack's)")
    photos.add_argument("--shard-size", type=int,
                        help=f"images per shard of a new pack folder (default {PACK_SHARD_SIZE:,}; an existing one keeps its own)")
    photos.add_argument("--workers", type=int, default=int(env("TINYTAGS_PACK_WORKERS", "0")) or os.cpu_count() or 1,
                        help="decoding processes (env TINYTAGS_PACK_WORKERS; default: every core)")
    photos.add_argument("--progress-seconds", type=float, default=10.0, help="seconds between progress lines")
    label = commands.add_parser("labels", help="write _labels.jsonl for a pack from its files' class folders")
    label.add_argument("pack", help="a folder made by pack, local or hdfs://")
    options = parser.parse_args(argv)
    files = Storage(webhdfs=options.webhdfs, user=options.hdfs_user)
    if options.command == "pack":
        return _pack(files, options)
    if options.command == "labels":
        try:
            counts = write_folder_labels(files, options.pack)
        except (ExtraError, *FILE_ERRORS) as error:
            log(TOOL, f"error: {error}")
            return 2
        log(TOOL, f"done: {options.pack}/_labels.jsonl: " + ", ".join(f"{k} {n:,}" for k, n in counts.items()))
        return 0
    try:
        if options.command == "split":
            paths = split(files, options.source, options.out, options.shard_size, options.allow_partial)
        elif options.command == "upload":
            paths = upload(files, options.sources, options.to)
        else:
            data = cifar.read(files, options.cifar)
            parts = {"test": [data.test], "train": [data.train], "all": [data.train, data.test]}[options.split]
            pixels = np.concatenate([p.pixels for p in parts])
            labels = np.concatenate([p.labels for p in parts])
            paths = make_sample(files, pixels, labels, options.out, options.count, options.shard_size)
    except (InputError, ValueError, *FILE_ERRORS) as error:  # CifarError is a ValueError
        log(TOOL, f"error: {error}")
        return 2
    log(TOOL, f"done: {len(paths)} shard(s) in {options.out if options.command != 'upload' else options.to}")
    return 0


def _pack(files: Storage, options: argparse.Namespace) -> int:
    """pack: 2 for bad input, 1 when writing failed midway (committed shards stay) or nothing could be packed."""
    try:
        plan = plan_pack(files, options.sources, options.out, options.shard_size)
    except (InputError, *FILE_ERRORS) as error:
        log(TOOL, f"error: {error}")
        return 2
    try:
        summary = pack(plan, local_decoder(options.workers), options.progress_seconds)
    except (InputError, *FILE_ERRORS) as error:
        log(TOOL, f"failed: {error}; committed shards stay in {plan.out}, run again to do the rest")
        return 1
    log(TOOL, pack_summary_text(summary))
    print(json.dumps(summary), flush=True)
    return pack_exit_code(summary)


if __name__ == "__main__":
    sys.exit(main())
