"""Tiny Images shards: split tiny_images.bin, upload shards to HDFS, make a sample shard from CIFAR-10.

    .venv/bin/python -m jobs.shards split tiny_images.bin --out hdfs://127.0.0.1:9000/tiny [--shard-size 1000000]
    .venv/bin/python -m jobs.shards upload ./shards --to hdfs://127.0.0.1:9000/tiny
    .venv/bin/python -m jobs.shards make-sample --cifar cifar-10-binary.tar.gz --out ./sample [--count 10000]

A shard is a plain ``tiny_images.bin``-format file (3072-byte records, no header) named
``tiny_NNNNN.bin``; with shard size S it holds the images with global ids ``NNNNN*S`` onwards (the
last shard may be shorter). ``split`` and ``make-sample`` also write ``_shards.json`` next to the
shards (``{"shard_size": S, ...}``), which jobs/tag.py reads so that the ids cannot silently
change; ``upload`` copies it along. Every command is resumable: a shard already at the target
with the right size is skipped, others are written to a temporary name, checked for size, then
renamed, so an interrupted copy never leaves a short shard under a shard's name. ``make-sample``
(CIFAR-10 archive or folder, local or hdfs://) also writes ``tiny_NNNNN.labels``, one label byte
per image, to measure tag quality; more images than the source has are taken by cycling.

Paths are local or ``hdfs://namenode:port/...`` (jobs/infra/storage.py; WebHDFS at
``http://<namenode host>:9870`` unless TINYTAGS_WEBHDFS_URL says otherwise). The work is done by
jobs/infra/shard_files.py; this module is only the command line.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from jobs.core import cifar
from jobs.core.contract import SHARD_SIZE, InputError
from jobs.infra.settings import env
from jobs.infra.shard_files import make_sample, split, upload
from jobs.infra.storage import FILE_ERRORS, Storage


def _log(message: str) -> None:
    print(f"[shards] {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    """CLI: split | upload | make-sample (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m jobs.shards", description=__doc__.splitlines()[0])
    parser.add_argument("--webhdfs", default=env("TINYTAGS_WEBHDFS_URL"),
                        help="WebHDFS URL for hdfs:// paths (env TINYTAGS_WEBHDFS_URL; default namenode host:9870)")
    parser.add_argument("--hdfs-user", default=env("TINYTAGS_HDFS_USER"),
                        help="HDFS user (env TINYTAGS_HDFS_USER, else $USER)")
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
    options = parser.parse_args(argv)
    files = Storage(webhdfs=options.webhdfs, user=options.hdfs_user)
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
        _log(f"error: {error}")
        return 2
    _log(f"done: {len(paths)} shard(s) in {options.out if options.command != 'upload' else options.to}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
