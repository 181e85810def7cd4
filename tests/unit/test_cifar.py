"""tinytags/core/cifar.py: every CIFAR-10 form (binary/python, archive/folder) read from files made here in
the real formats, the ../shared sample, and a clear error for each kind of bad input."""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest

from tinytags.core.cifar import (
    CifarError,
    members_of_archive,
    parse_members,
    read_binary_batch,
    read_python_batch,
)
from tinytags.core.contract import CLASSES
from tinytags.io.cifar_files import read_local

NAMES = ["plane", "car", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 3072), dtype=np.uint8), rng.integers(0, 10, n)


def _binary_batch(pixels: np.ndarray, labels: np.ndarray) -> bytes:
    """The official binary layout, written byte by byte: label, then 1024 R, 1024 G, 1024 B."""
    out = bytearray()
    for row, label in zip(pixels, labels):
        out.append(int(label))
        out += bytes(row)
    return bytes(out)


def _python_batch(pixels: np.ndarray, labels: np.ndarray) -> bytes:
    # The official pickles are Python 2 dicts with bytes keys, numpy data and a list of labels.
    return pickle.dumps({b"batch_label": b"testing batch", b"labels": [int(x) for x in labels],
                         b"data": pixels, b"filenames": [b"x.png"] * len(labels)}, protocol=2)


def _release(kind: str, train: list, test: tuple, names=NAMES) -> dict[str, bytes]:
    """{file name: bytes} of a release as its archive holds it."""
    if kind == "binary":
        files = {f"data_batch_{i + 1}.bin": _binary_batch(*b) for i, b in enumerate(train)}
        files["test_batch.bin"] = _binary_batch(*test)
        files["batches.meta.txt"] = ("\n".join(names) + "\n\n").encode()
        folder = "cifar-10-batches-bin"
    else:
        files = {f"data_batch_{i + 1}": _python_batch(*b) for i, b in enumerate(train)}
        files["test_batch"] = _python_batch(*test)
        files["batches.meta"] = pickle.dumps(
            {b"label_names": [n.encode() for n in names], b"num_cases_per_batch": 10}, protocol=2)
        folder = "cifar-10-batches-py"
    files["readme.html"] = b"<html>not a batch</html>"
    return {f"{folder}/{name}": data for name, data in files.items()}


def _write_archive(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def _write_folder(root: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


@pytest.fixture(scope="module")
def batches():
    return [_images(7, 1), _images(5, 2)], _images(4, 3)


@pytest.mark.parametrize("kind", ["binary", "python"])
@pytest.mark.parametrize("container", ["archive", "folder", "parent folder"])
def test_every_form_reads_the_same_images(tmp_path, batches, kind, container):
    train, test = batches
    files = _release(kind, train, test)
    if container == "archive":
        source = _write_archive(tmp_path / f"cifar-10-{kind}.tar.gz", files)
    elif container == "parent folder":
        source = _write_folder(tmp_path, files)
    else:
        source = _write_folder(tmp_path, files) / next(iter(files)).split("/")[0]
    data = read_local(source)
    assert data.format == kind
    assert data.classes == tuple(NAMES)  # from the meta file, not the built-in list
    np.testing.assert_array_equal(data.train.pixels, np.vstack([train[0][0], train[1][0]]))
    np.testing.assert_array_equal(data.train.labels, np.concatenate([train[0][1], train[1][1]]))
    np.testing.assert_array_equal(data.test.pixels, test[0])
    np.testing.assert_array_equal(data.test.labels, test[1])
    assert [Path(f).name for f in data.files][-1] in ("test_batch.bin", "test_batch")


def test_binary_record_layout_is_label_then_red_green_blue():
    record = bytes([7]) + bytes([10] * 1024) + bytes([20] * 1024) + bytes([30] * 1024)
    batch = read_binary_batch(record * 2, "two.bin")
    assert batch.labels.tolist() == [7, 7]
    assert batch.pixels.shape == (2, 3072)
    assert (batch.pixels[:, :1024] == 10).all() and (batch.pixels[:, 2048:] == 30).all()


def test_training_batches_are_read_in_numeric_order(tmp_path):
    batches = [_images(2, seed) for seed in range(11)]  # data_batch_10 must follow data_batch_9
    files = {f"b/data_batch_{i + 1}.bin": _binary_batch(*b) for i, b in enumerate(batches)}
    files["b/test_batch.bin"] = _binary_batch(*_images(1, 99))
    data = parse_members(files, "mem")
    np.testing.assert_array_equal(data.train.labels, np.concatenate([b[1] for b in batches]))


def test_without_a_meta_file_the_class_names_are_cifar_10s(batches):
    train, test = batches
    files = {k: v for k, v in _release("binary", train, test).items() if "meta" not in k}
    assert parse_members(files, "mem").classes == CLASSES


def test_the_shared_sample(cifar_sample):
    data = read_local(cifar_sample)
    assert data.format == "binary"
    assert data.classes == CLASSES
    assert data.train.pixels.shape == (10_000, 3072) and data.test.pixels.shape == (5_000, 3072)
    # An independent look at the archive: the label byte of every 3073-byte record.
    with tarfile.open(cifar_sample) as archive:
        raw = archive.extractfile("cifar-10-batches-bin/test_batch.bin").read()
    expected = np.frombuffer(raw, np.uint8)[::3073]
    np.testing.assert_array_equal(data.test.labels, expected)
    assert set(np.unique(data.train.labels)) == set(range(10))


# --- bad input: each a clear error naming the file and what was expected ----------------------


def test_missing_path_names_it(tmp_path):
    with pytest.raises(CifarError, match=rf"{tmp_path / 'nope.tar.gz'}: no such file or folder; expected"):
        read_local(tmp_path / "nope.tar.gz")


def test_truncated_batch_names_the_file_and_the_record_size(tmp_path, batches):
    train, test = batches
    files = _release("binary", train, test)
    files["cifar-10-batches-bin/data_batch_2.bin"] = files["cifar-10-batches-bin/data_batch_2.bin"][:-100]
    archive = _write_archive(tmp_path / "cut.tar.gz", files)
    with pytest.raises(CifarError) as error:
        read_local(archive)
    message = str(error.value)
    assert "data_batch_2.bin" in message and "3073-byte records" in message
    assert f"{5 * 3073 - 100} bytes" in message


@pytest.mark.parametrize(
    "content, expected",
    [
        (b"PK\x03\x04 a zip, not a tar", "not a readable tar archive"),
        (b"", "not a readable tar archive"),
    ],
)
def test_a_file_that_is_no_archive(tmp_path, content, expected):
    path = tmp_path / "cifar.tar.gz"
    path.write_bytes(content)
    with pytest.raises(CifarError, match=rf"{path}: {expected}.*cifar-10-binary.tar.gz"):
        read_local(path)


def test_an_archive_of_something_else(tmp_path):
    archive = _write_archive(tmp_path / "photos.tar.gz", {"photos/a.jpg": b"\xff\xd8", "photos/b.txt": b"x"})
    with pytest.raises(CifarError, match=r"photos.tar.gz: no CIFAR-10 batches found.*expected data_batch_1"):
        read_local(archive)


def test_a_gzip_cut_short(tmp_path, batches):
    whole = _write_archive(tmp_path / "whole.tar.gz", _release("binary", *batches)).read_bytes()
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(CifarError, match=r"cut.tar.gz: not a readable tar archive"):
        read_local(cut)


@pytest.mark.parametrize("kind", ["binary", "python"])
def test_labels_out_of_range(batches, kind):
    train, test = batches
    bad_labels = test[1].copy()
    bad_labels[2] = 12
    files = _release(kind, train, (test[0], bad_labels))
    with pytest.raises(CifarError, match=r"test_batch(\.bin)?: label 12 of image 2 is out of range.*0\.\.9"):
        parse_members(files, "mem")


def test_labels_are_checked_against_the_meta_files_classes(batches):
    train, test = batches  # labels go up to 9, but this meta file names only 5 classes
    with pytest.raises(CifarError, match=r"expected labels 0\.\.4"):
        parse_members(_release("binary", train, test, names=NAMES[:5]), "mem")


@pytest.mark.parametrize("kind", ["binary", "python"])
def test_empty_training_set(batches, kind):
    empty = (np.zeros((0, 3072), np.uint8), np.zeros(0, np.int64))
    files = _release(kind, [empty], batches[1])
    with pytest.raises(CifarError, match=r"mem: the training set is empty \(data_batch_1(\.bin)? hold"):
        parse_members(files, "mem")


def test_missing_test_batch(batches):
    files = {k: v for k, v in _release("binary", *batches).items() if "test_batch" not in k}
    with pytest.raises(CifarError, match="test_batch.bin is missing"):
        parse_members(files, "mem")


def test_two_releases_mixed_are_refused(batches):
    files = {**_release("binary", *batches), **_release("python", *batches)}
    with pytest.raises(CifarError, match="both binary"):
        parse_members(files, "mem")


@pytest.mark.parametrize(
    "payload, expected",
    [
        (pickle.dumps([1, 2, 3]), "expected a pickled dict with b'data' and b'labels'"),
        (pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}), r"N x 3072 uint8 array"),
        (pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}), "2 images but b'labels' has 1"),
        (b"not a pickle", "not a CIFAR-10 python batch"),
        # A pickle that would run code when loaded is refused, not executed.
        (b"cos\nsystem\n(S'echo pwned'\ntR.", r"refusing to load os.system"),
    ],
)
def test_python_batch_errors(payload, expected):
    with pytest.raises(CifarError, match=rf"data_batch_1: .*{expected}"):
        read_python_batch(payload, "data_batch_1")


def test_members_of_archive_keeps_only_cifar_files(batches):
    files = _release("python", *batches)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    members = members_of_archive(buffer.getvalue(), "mem")
    assert sorted(members) == sorted(k for k in files if not k.endswith("readme.html"))
