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

Paths are local or ``hdfs://namenode:port/...``. HDFS is reached over WebHDFS with HdfsCLI (also
from the tag job's Spark tasks, which read and write large byte ranges directly); its HTTP address
defaults to ``http://<namenode host>:9870`` (env TINYTAGS_WEBHDFS_URL overrides).
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import json
import os
import shutil
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Callable, Iterable, Iterator
from urllib.parse import urlsplit

import numpy as np
from hdfs.util import HdfsError

from jobs.images import RECORD_BYTES, cifar_to_tiny_layout
from jobs.runtime import env_default
from jobs.tagging import SHARD_SIZE, Shard, TagInputError, shard_name, shard_number

SHARDS_INFO = "_shards.json"
WEBHDFS_PORT = 9870
COPY_CHUNK = 1024 * RECORD_BYTES  # 3 MiB: whole records per read/write while copying
FILE_ERRORS = (OSError, HdfsError)  # what a file operation raises, locally or over WebHDFS


# --- files: local paths and hdfs:// through WebHDFS ------------------------------------------------


@dataclass(frozen=True)
class Files:
    """Local and hdfs:// file operations with one interface (small and picklable, for Spark tasks).

    ``webhdfs``: the WebHDFS URL for hdfs:// paths (default: the namenode's host, port 9870);
    ``user``: the HDFS user name.
    """

    webhdfs: str | None = None
    user: str | None = None

    # -- which side a path is on
    @staticmethod
    def is_hdfs(path: str) -> bool:
        """True for hdfs:// URIs."""
        return path.startswith("hdfs://")

    @staticmethod
    def local(path: str) -> str:
        """A local path without its file:// scheme."""
        return urlsplit(path).path if path.startswith("file:") else path

    def _client(self, path: str):
        from hdfs import InsecureClient  # imported here: local-only use needs no HDFS client

        parts = urlsplit(path)
        url = self.webhdfs or env_default("TINYTAGS_WEBHDFS_URL") or f"http://{parts.hostname}:{WEBHDFS_PORT}"
        return _cached_client(url, self.user or env_default("TINYTAGS_HDFS_USER") or
                              env_default("USER", "tinytags"), InsecureClient)

    @staticmethod
    def _hdfs_path(path: str) -> str:
        return urlsplit(path).path or "/"

    @staticmethod
    def join(folder: str, name: str) -> str:
        """folder/name for either kind of path."""
        return folder.rstrip("/") + "/" + name

    # -- reading
    def status(self, path: str) -> tuple[str, int] | None:
        """("file" | "dir", size in bytes) or None when nothing is there."""
        if self.is_hdfs(path):
            status = self._client(path).status(self._hdfs_path(path), strict=False)
            if status is None:
                return None
            return ("dir" if status["type"] == "DIRECTORY" else "file", int(status["length"]))
        local = self.local(path)
        if os.path.isdir(local):
            return ("dir", 0)
        if os.path.isfile(local):
            return ("file", os.path.getsize(local))
        return None

    def list(self, folder: str) -> list[tuple[str, str, int]]:
        """(name, "file" | "dir", size) of every entry of a folder, sorted by name."""
        if self.is_hdfs(folder):
            entries = self._client(folder).list(self._hdfs_path(folder), status=True)
            return sorted((name, "dir" if s["type"] == "DIRECTORY" else "file", int(s["length"]))
                          for name, s in entries)
        local = self.local(folder)
        return sorted((entry.name, "dir" if entry.is_dir() else "file",
                       entry.stat().st_size if entry.is_file() else 0) for entry in os.scandir(local))

    def read_bytes(self, path: str) -> bytes:
        """A whole (small) file."""
        if self.is_hdfs(path):
            with self._client(path).read(self._hdfs_path(path)) as reader:
                return reader.read()
        return Path(self.local(path)).read_bytes()

    @contextlib.contextmanager
    def open_range(self, path: str, offset: int, length: int) -> Iterator[IO[bytes]]:
        """A reader of ``length`` bytes from ``offset``: one seek (or one HTTP request) per range."""
        if self.is_hdfs(path):
            with self._client(path).read(self._hdfs_path(path), offset=offset, length=length) as reader:
                yield reader
        else:
            with open(self.local(path), "rb", buffering=0) as reader:
                reader.seek(offset)
                yield reader

    # -- writing
    def makedirs(self, folder: str) -> None:
        """Create a folder and its parents (no error if it exists)."""
        if self.is_hdfs(folder):
            self._client(folder).makedirs(self._hdfs_path(folder))
        else:
            os.makedirs(self.local(folder), exist_ok=True)

    def write(self, path: str, chunks: Iterable[bytes] | bytes) -> None:
        """Create or replace a file from bytes or an iterable of byte chunks (streamed)."""
        if isinstance(chunks, (bytes, bytearray, memoryview)):
            chunks = [bytes(chunks)]
        if self.is_hdfs(path):
            self._client(path).write(self._hdfs_path(path), data=iter(chunks), overwrite=True)
        else:
            with open(self.local(path), "wb") as out:
                for chunk in chunks:
                    out.write(chunk)

    def rename(self, source: str, target: str) -> None:
        """Move a file or folder to a path that does not exist yet (raises if it does)."""
        if self.is_hdfs(source):
            if self.status(target) is not None:  # WebHDFS would move the source *into* a folder
                raise FileExistsError(f"cannot rename {source} to {target}: it exists")
            self._client(source).rename(self._hdfs_path(source), self._hdfs_path(target))
        else:
            if os.path.exists(self.local(target)):
                raise FileExistsError(f"cannot rename {source} to {target}: it exists")
            os.rename(self.local(source), self.local(target))

    def delete(self, path: str) -> None:
        """Delete a file or a folder with its contents (no error if nothing is there)."""
        if self.is_hdfs(path):
            self._client(path).delete(self._hdfs_path(path), recursive=True)
        else:
            local = self.local(path)
            if os.path.isdir(local):
                shutil.rmtree(local, ignore_errors=True)
            elif os.path.lexists(local):
                os.remove(local)

    def write_atomic(self, path: str, chunks: Iterable[bytes] | bytes) -> None:
        """Write beside the target, then rename over it: readers see the old file or the whole new one."""
        spare = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
        self.write(spare, chunks)
        if self.status(path) is not None:
            self.delete(path)
        self.rename(spare, path)


_CLIENTS: dict[tuple[str, str], object] = {}


def _cached_client(url: str, user: str, factory):
    """One HdfsCLI client (and its HTTP connection pool) per WebHDFS URL and user, per process."""
    key = (url, user)
    if key not in _CLIENTS:
        _CLIENTS[key] = factory(url, user=user)
    return _CLIENTS[key]


# --- finding shards --------------------------------------------------------------------------------


def find_shards(files: Files, inputs: Iterable[str]) -> list[Shard]:
    """Shards named by ``inputs``: files, folders (their tiny_NNNNN.bin files) or globs in the last part.

    Raises TagInputError when an input matches nothing or names a file that is not tiny_NNNNN.bin
    (its name is what gives its images their ids).
    """
    shards: dict[str, Shard] = {}
    for raw in inputs:
        matched = _match(files, raw)
        if not matched:
            raise TagInputError(f"--input {raw}: no shards matched (expected tiny_NNNNN.bin files, "
                                "a folder holding them, or a glob such as .../tiny_000*.bin)")
        for path, size in matched:
            number = shard_number(path.rsplit("/", 1)[-1])
            if number is None:
                raise TagInputError(f"{path}: a shard's name must be tiny_NNNNN.bin (NNNNN x shard size "
                                    "is the id of its first image); rename it or split it with jobs.shards")
            shards[path] = Shard(path, number, size)
    return sorted(shards.values(), key=lambda s: (s.number, s.path))


def _match(files: Files, raw: str) -> list[tuple[str, int]]:
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


def shard_size_of(files: Files, shards: Iterable[Shard]) -> int | None:
    """The shard size recorded in _shards.json beside the shards (None if there is none).

    Raises TagInputError when folders disagree or a record is malformed.
    """
    sizes: dict[int, str] = {}
    for folder in sorted({s.path.rsplit("/", 1)[0] for s in shards}):
        info_path = files.join(folder, SHARDS_INFO)
        if files.status(info_path) is None:
            continue
        try:
            size = json.loads(files.read_bytes(info_path))["shard_size"]
        except (ValueError, KeyError, TypeError) as error:
            raise TagInputError(f"{info_path}: expected JSON with an integer 'shard_size' ({error})") from error
        if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
            raise TagInputError(f"{info_path}: 'shard_size' should be a positive integer, got {size!r}")
        sizes[size] = info_path
    if len(sizes) > 1:
        (a, path_a), (b, path_b) = list(sizes.items())[:2]
        raise TagInputError(f"shards of different shard sizes: {path_a} says {a:,}, {path_b} says {b:,}; "
                            "tag them in separate runs")
    return next(iter(sizes), None)


# --- split, upload, make-sample --------------------------------------------------------------------


def _log(message: str) -> None:
    print(f"[shards] {message}", file=sys.stderr, flush=True)


def _copy_shard(files: Files, chunks: Iterable[bytes], target: str, size: int) -> None:
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


def _already_there(files: Files, target: str, size: int) -> bool:
    status = files.status(target)
    return status is not None and status == ("file", size)


def _write_info(files: Files, folder: str, info: dict) -> None:
    path = files.join(folder, SHARDS_INFO)
    if files.status(path) is not None:
        try:
            old = json.loads(files.read_bytes(path))
        except ValueError:
            old = {}
        if old.get("shard_size") not in (None, info["shard_size"]):
            raise TagInputError(f"{path} says shard size {old['shard_size']:,}, this run uses "
                                f"{info['shard_size']:,}: use another --out folder")
    files.write_atomic(path, (json.dumps(info, indent=2) + "\n").encode())


def split(files: Files, source: str, out: str, shard_size: int = SHARD_SIZE, allow_partial: bool = False) -> list[str]:
    """Cut a tiny_images.bin-format file into shards of shard_size images in ``out``; returns their paths."""
    status = files.status(source)
    if status is None or status[0] != "file":
        raise TagInputError(f"{source}: no such file")
    if shard_size <= 0:
        raise TagInputError(f"--shard-size must be positive, got {shard_size}")
    size = status[1]
    records, tail = divmod(size, RECORD_BYTES)
    if tail and not allow_partial:
        raise TagInputError(f"{source}: {size:,} bytes is not a multiple of {RECORD_BYTES} (32x32x3 records): "
                            f"the last record is cut off after {tail:,} bytes; pass --allow-partial to drop it")
    if tail:
        _log(f"warning: {source}: dropping the last {tail:,} bytes (a cut-off record)")
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


def _write_shards(files: Files, out: str, records: int, shard_size: int,
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
            _log(f"{target}: already there ({count:,} images), skipped")
            continue
        _copy_shard(files, chunks(first, count), target, count * RECORD_BYTES)
        if written_one is not None:
            written_one(target, first, count)
        _log(f"{target}: {count:,} images (ids {first:,}..{first + count - 1:,})")
    return written


def upload(files: Files, sources: Iterable[str], to: str) -> list[str]:
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
            _log(f"{target}: already there ({shard.size:,} bytes), skipped")
            continue

        def chunks(shard=shard):
            with files.open_range(shard.path, 0, shard.size) as reader:
                while chunk := reader.read(COPY_CHUNK):
                    yield chunk

        _copy_shard(files, chunks(), target, shard.size)
        _log(f"{target}: uploaded {shard.size:,} bytes from {shard.path}")
    return targets


def make_sample(files: Files, pixels: np.ndarray, labels: np.ndarray | None, out: str, count: int | None = None,
                shard_size: int | None = None) -> list[str]:
    """Write CIFAR-layout images as Tiny Images shards (column-major planes) in ``out``.

    ``count`` images are taken in order, cycling through ``pixels`` when more are asked for than
    there are (a large synthetic corpus for benchmarks). With labels, each shard gets a
    ``tiny_NNNNN.labels`` file beside it: one label byte per image, for measuring tag quality.
    """
    count = len(pixels) if count is None else count
    if count <= 0 or not len(pixels):
        raise TagInputError(f"make-sample needs at least one image, got count={count} of {len(pixels)}")
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


def read_cifar(files: Files, source: str):
    """CIFAR-10 (archive or extracted folder) from a local path or hdfs://, through jobs/cifar.py's readers."""
    from jobs import cifar

    if not files.is_hdfs(source):
        return cifar.read_local(files.local(source))
    status = files.status(source)
    if status is None:
        raise TagInputError(f"{source}: no such file or folder (expected a CIFAR-10 archive or its folder)")
    if status[0] == "file":
        members = cifar.members_of_archive(files.read_bytes(source), source)
    else:
        members = cifar.members_of_folder(
            lambda folder: [(files.join(folder, name), kind == "dir") for name, kind, _ in files.list(folder)],
            lambda paths: {path: files.read_bytes(path) for path in paths}, source.rstrip("/"))
    return cifar.parse_members(members, source)


def main(argv: list[str] | None = None) -> int:
    """CLI: split | upload | make-sample (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m jobs.shards", description=__doc__.splitlines()[0])
    parser.add_argument("--webhdfs", default=env_default("TINYTAGS_WEBHDFS_URL"),
                        help="WebHDFS URL for hdfs:// paths (env TINYTAGS_WEBHDFS_URL; default namenode host:9870)")
    parser.add_argument("--hdfs-user", default=env_default("TINYTAGS_HDFS_USER"),
                        help="HDFS user (env TINYTAGS_HDFS_USER, else $USER)")
    commands = parser.add_subparsers(dest="command", required=True)
    cut = commands.add_parser("split", help="cut a tiny_images.bin-format file into shards")
    cut.add_argument("source", help="the .bin file (local or hdfs://)")
    cut.add_argument("--out", default=env_default("TINYTAGS_SHARDS"), required=env_default("TINYTAGS_SHARDS") is None,
                     help="folder for the shards, local or hdfs:// (env TINYTAGS_SHARDS)")
    cut.add_argument("--shard-size", type=int, default=int(env_default("TINYTAGS_SHARD_SIZE", str(SHARD_SIZE))),
                     help="images per shard (env TINYTAGS_SHARD_SIZE, default 1,000,000)")
    cut.add_argument("--allow-partial", action="store_true", help="drop a cut-off last record instead of failing")
    send = commands.add_parser("upload", help="copy shards into HDFS (skips shards already there)")
    send.add_argument("sources", nargs="+", help="shard files or folders of tiny_NNNNN.bin")
    send.add_argument("--to", default=env_default("TINYTAGS_SHARDS"), required=env_default("TINYTAGS_SHARDS") is None,
                      help="target folder, e.g. hdfs://127.0.0.1:9000/tiny (env TINYTAGS_SHARDS)")
    sample = commands.add_parser("make-sample", help="write Tiny-format shards from CIFAR-10 images")
    sample.add_argument("--cifar", default=env_default("TINYTAGS_CIFAR"), required=env_default("TINYTAGS_CIFAR") is None,
                        help="CIFAR-10 archive or folder, local or hdfs:// (env TINYTAGS_CIFAR)")
    sample.add_argument("--out", required=True, help="folder for the shards, local or hdfs://")
    sample.add_argument("--split", choices=("test", "train", "all"), default="test", help="which CIFAR-10 images")
    sample.add_argument("--count", type=int, help="images to write (default: all of the split; more cycle)")
    sample.add_argument("--shard-size", type=int, help="images per shard (default: all in one shard)")
    options = parser.parse_args(argv)
    files = Files(webhdfs=options.webhdfs, user=options.hdfs_user)
    try:
        if options.command == "split":
            paths = split(files, options.source, options.out, options.shard_size, options.allow_partial)
        elif options.command == "upload":
            paths = upload(files, options.sources, options.to)
        else:
            data = read_cifar(files, options.cifar)
            parts = {"test": [data.test], "train": [data.train], "all": [data.train, data.test]}[options.split]
            pixels = np.concatenate([p.pixels for p in parts])
            labels = np.concatenate([p.labels for p in parts])
            paths = make_sample(files, pixels, labels, options.out, options.count, options.shard_size)
    except (TagInputError, ValueError, *FILE_ERRORS) as error:  # CifarError is a ValueError
        _log(f"error: {error}")
        return 2
    _log(f"done: {len(paths)} shard(s) in {options.out if options.command != 'upload' else options.to}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
