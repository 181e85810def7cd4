"""CIFAR-10 readers: the binary and the python-pickle releases, archived (.tar.gz) or extracted.

One reader per format, both pure (bytes in, arrays out, no Spark, no file system):

- ``read_binary_batch``: records of 3073 bytes, 1 label byte then 3072 pixel bytes (CIFAR layout);
  class names in ``batches.meta.txt``, one a line.
- ``read_python_batch``: a pickled dict with ``b'data'`` (N x 3072 uint8) and ``b'labels'``;
  class names in ``batches.meta`` under ``b'label_names'``.

Containers only gather files: ``members_of_archive`` (a tar, gzipped or not) and
``members_of_folder`` (the ``cifar-10-batches-*`` folder or a folder holding it) both give
``{file name: bytes}``, and ``parse_members`` finds the format and calls its reader. ``read`` gathers
that mapping through the storage layer (local, hdfs://, other Hadoop schemes). Every error is a
CifarError that names the file and what was expected.
"""

from __future__ import annotations

import io
import pickle
import re
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Mapping

import numpy as np

from tinytags.core.contract import CLASSES
from tinytags.core.images import RECORD_BYTES

BINARY_RECORD_BYTES = 1 + RECORD_BYTES  # 3073: label byte + pixels
BINARY_META = "batches.meta.txt"
PYTHON_META = "batches.meta"
_TRAIN_NAME = re.compile(r"^data_batch_(\d+)(\.bin)?$")
_TEST_STEM = "test_batch"
# What a member's base name may be, so a folder read touches only CIFAR files.
_CIFAR_NAME = re.compile(r"^(data_batch_\d+|test_batch)(\.bin)?$|^batches\.meta(\.txt)?$")


class CifarError(ValueError):
    """Input that is not CIFAR-10 as documented; the message names the file and what was expected."""


@dataclass(frozen=True)
class Batch:
    """Images of one batch file: n x 3072 uint8 pixel rows (CIFAR layout) and n labels."""

    pixels: np.ndarray
    labels: np.ndarray


@dataclass(frozen=True)
class CifarData:
    """A training and a test set, the class names, and where they came from."""

    train: Batch
    test: Batch
    classes: tuple[str, ...]
    source: str
    format: str            # "binary" or "python"
    files: tuple[str, ...]  # the batch files read, training ones first


# --- the two readers ------------------------------------------------------------------------


def read_binary_batch(data: bytes, source: str, n_classes: int = len(CLASSES)) -> Batch:
    """Bytes of a binary batch (``data_batch_N.bin``, ``test_batch.bin``) -> Batch."""
    if len(data) % BINARY_RECORD_BYTES:
        whole = len(data) // BINARY_RECORD_BYTES
        raise CifarError(
            f"{source}: {len(data)} bytes is not a whole number of {BINARY_RECORD_BYTES}-byte "
            f"records (1 label byte + 3072 pixels); {whole} whole records and "
            f"{len(data) - whole * BINARY_RECORD_BYTES} bytes left over — truncated or not a CIFAR-10 binary batch"
        )
    records = np.frombuffer(data, np.uint8).reshape(-1, BINARY_RECORD_BYTES)
    labels = records[:, 0].astype(np.int64)
    _check_labels(labels, n_classes, source)
    return Batch(pixels=np.ascontiguousarray(records[:, 1:]), labels=labels)


def read_binary_meta(data: bytes, source: str) -> tuple[str, ...]:
    """Bytes of ``batches.meta.txt`` -> class names in label order."""
    try:
        names = tuple(line.strip() for line in data.decode("utf-8").splitlines() if line.strip())
    except UnicodeDecodeError as error:
        raise CifarError(f"{source}: expected class names as UTF-8 text, one a line ({error})") from error
    return _check_class_names(names, source)


def read_python_batch(data: bytes, source: str, n_classes: int = len(CLASSES)) -> Batch:
    """Bytes of a pickled batch (``data_batch_N``, ``test_batch``) -> Batch."""
    batch = _unpickle(data, source)
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        keys = sorted(batch) if isinstance(batch, dict) else type(batch).__name__
        raise CifarError(f"{source}: expected a pickled dict with b'data' and b'labels', found {keys}")
    pixels = np.asarray(batch[b"data"])
    if pixels.dtype != np.uint8 or pixels.ndim != 2 or pixels.shape[1] != RECORD_BYTES:
        raise CifarError(
            f"{source}: expected b'data' to be an N x {RECORD_BYTES} uint8 array, "
            f"found {pixels.dtype} {pixels.shape}"
        )
    try:
        labels = np.asarray(batch[b"labels"], dtype=np.int64).reshape(-1)
    except (TypeError, ValueError) as error:
        raise CifarError(f"{source}: expected b'labels' to be a list of integers ({error})") from error
    if labels.size != pixels.shape[0]:
        raise CifarError(
            f"{source}: b'data' has {pixels.shape[0]} images but b'labels' has {labels.size} labels"
        )
    _check_labels(labels, n_classes, source)
    return Batch(pixels=np.ascontiguousarray(pixels), labels=labels)


def read_python_meta(data: bytes, source: str) -> tuple[str, ...]:
    """Bytes of the pickled ``batches.meta`` -> class names in label order."""
    meta = _unpickle(data, source)
    names = meta.get(b"label_names") if isinstance(meta, dict) else None
    if not isinstance(names, (list, tuple)):
        raise CifarError(f"{source}: expected a pickled dict with b'label_names' (a list of class names)")
    decoded = tuple(n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names)
    return _check_class_names(decoded, source)


# --- containers -----------------------------------------------------------------------------


def members_of_archive(data: bytes, source: str) -> dict[str, bytes]:
    """The CIFAR files inside a tar archive (gzipped or not), keyed by their path in the archive."""
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as archive:
            return {
                member.name: archive.extractfile(member).read()
                for member in archive.getmembers()
                if member.isfile() and _CIFAR_NAME.match(PurePosixPath(member.name).name)
            }
    except (tarfile.TarError, EOFError, OSError, ValueError, zlib.error) as error:
        # tarfile's own message lists every compression it tried; what it found says more.
        found = "an empty file" if not data else (
            "a gzip stream that ends early or is corrupt" if data[:2] == b"\x1f\x8b"
            else f"{len(data)} bytes starting {data[:8]!r}")
        raise CifarError(
            f"{source}: not a readable tar archive ({found}); expected the official "
            f"cifar-10-binary.tar.gz or cifar-10-python.tar.gz, or its extracted folder"
        ) from error


def members_of_folder(entries, read_files, folder: str) -> dict[str, bytes]:
    """The CIFAR files of a ``cifar-10-batches-*`` folder, or of the first subfolder holding them.

    ``entries(folder)`` lists a folder as (path, is a folder) pairs and ``read_files(paths)`` gives
    {path: bytes}, so the same rule serves local folders and hdfs:// ones. Keys are the paths
    relative to ``folder``.
    """
    listing = sorted(entries(folder))
    for candidate, children in [(folder, listing)] + [
        (path, None) for path, is_folder in listing if is_folder
    ]:
        children = sorted(entries(candidate)) if children is None else children
        wanted = [path for path, is_folder in children
                  if not is_folder and _CIFAR_NAME.match(PurePosixPath(path).name)]
        if wanted:
            prefix = folder.rstrip("/") + "/"
            return {
                (path[len(prefix):] if path.startswith(prefix) else PurePosixPath(path).name): data
                for path, data in read_files(wanted).items()
            }
    return {}


def read(storage, source: str) -> CifarData:
    """CIFAR-10 from any path the storage layer reaches (local, hdfs://, ...), archive or folder.

    ``storage`` is a tinytags.io.storage.Storage (anything with its status/list/read_bytes).
    """
    status = storage.status(source)
    if status is None:
        raise CifarError(
            f"{source}: no such file or folder; expected a CIFAR-10 archive "
            f"(cifar-10-binary.tar.gz, cifar-10-python.tar.gz) or its extracted folder"
        )
    if status[0] == "file":
        return parse_members(members_of_archive(storage.read_bytes(source), source), source)

    def entries(folder: str) -> list[tuple[str, bool]]:
        return [(storage.join(folder, e.name), e.kind == "dir") for e in storage.list(folder)]

    def read_files(paths: list[str]) -> dict[str, bytes]:
        return {path: storage.read_bytes(path) for path in paths}

    return parse_members(members_of_folder(entries, read_files, source.rstrip("/")), source)


def parse_members(members: Mapping[str, bytes], source: str) -> CifarData:
    """``{file name: bytes}`` of one release (binary or python) -> CifarData."""
    by_name: dict[str, tuple[str, bytes]] = {}
    for name, data in members.items():
        base = PurePosixPath(name).name
        if not _CIFAR_NAME.match(base):
            continue
        if base in by_name:
            raise CifarError(
                f"{source}: holds two copies of {base} ({by_name[base][0]} and {name}); "
                f"expected one CIFAR-10 release"
            )
        by_name[base] = (name, data)

    has_binary = f"{_TEST_STEM}.bin" in by_name or any(n.endswith(".bin") for n in by_name)
    has_python = _TEST_STEM in by_name or any(_TRAIN_NAME.match(n) and not n.endswith(".bin") for n in by_name)
    if has_binary and has_python:
        raise CifarError(f"{source}: holds both binary (*.bin) and python batches; expected one release")
    if not (has_binary or has_python):
        listed = ", ".join(sorted(members)[:5]) or "no CIFAR files"
        raise CifarError(
            f"{source}: no CIFAR-10 batches found ({listed}); expected data_batch_1..5(.bin), "
            f"test_batch(.bin) and batches.meta(.txt) as in cifar-10-binary.tar.gz or cifar-10-python.tar.gz"
        )
    kind = "binary" if has_binary else "python"
    suffix = ".bin" if has_binary else ""
    read_batch = read_binary_batch if has_binary else read_python_batch
    meta_name = BINARY_META if has_binary else PYTHON_META

    if meta_name in by_name:
        path, data = by_name[meta_name]
        reader = read_binary_meta if has_binary else read_python_meta
        classes = reader(data, f"{source}:{path}")
    else:  # the class names are CIFAR-10's own; the meta file only repeats them
        classes = CLASSES
    train_names = sorted(
        (n for n in by_name if _TRAIN_NAME.match(n) and n.endswith(".bin") == has_binary),
        key=lambda n: int(_TRAIN_NAME.match(n).group(1)),
    )
    test_name = _TEST_STEM + suffix
    if test_name not in by_name:
        raise CifarError(f"{source}: {test_name} is missing; expected the test batch beside the training batches")
    if not train_names:
        raise CifarError(f"{source}: no training batches; expected data_batch_1{suffix} … data_batch_5{suffix}")

    def batch(name: str) -> Batch:
        path, data = by_name[name]
        return read_batch(data, f"{source}:{path}", len(classes))

    train_batches = [batch(n) for n in train_names]
    train = Batch(
        pixels=np.concatenate([b.pixels for b in train_batches]),
        labels=np.concatenate([b.labels for b in train_batches]),
    )
    test = batch(test_name)
    if train.labels.size == 0:
        raise CifarError(
            f"{source}: the training set is empty ({', '.join(train_names)} hold no images); "
            f"expected at least one {BINARY_RECORD_BYTES if has_binary else RECORD_BYTES}-byte image"
        )
    if test.labels.size == 0:
        raise CifarError(f"{source}: {test_name} holds no images; expected a test set to evaluate on")
    return CifarData(
        train=train, test=test, classes=classes, source=source, format=kind,
        files=tuple(by_name[n][0] for n in (*train_names, test_name)),
    )


# --- checks ---------------------------------------------------------------------------------


def _check_labels(labels: np.ndarray, n_classes: int, source: str) -> None:
    bad = np.flatnonzero((labels < 0) | (labels >= n_classes))
    if bad.size:
        raise CifarError(
            f"{source}: label {int(labels[bad[0]])} of image {int(bad[0])} is out of range "
            f"({bad.size} such images); expected labels 0..{n_classes - 1}"
        )


def _check_class_names(names: tuple[str, ...], source: str) -> tuple[str, ...]:
    if len(names) < 2 or len(set(names)) != len(names):
        raise CifarError(f"{source}: expected at least two distinct class names, found {list(names)}")
    return names


class _ArraysOnly(pickle.Unpickler):
    """Unpickles dicts, lists, strings, numbers and numpy arrays, and nothing that could run code."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"),  # how Python 2 pickles carry bytes
        ("__builtin__", "bytes"), ("builtins", "bytes"),  # ... and empty bytes
    }

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _unpickle(data: bytes, source: str):
    try:
        return _ArraysOnly(io.BytesIO(data), encoding="bytes").load()
    except Exception as error:
        raise CifarError(
            f"{source}: not a CIFAR-10 python batch ({type(error).__name__}: {error}); "
            f"expected a pickle from cifar-10-python.tar.gz"
        ) from error
