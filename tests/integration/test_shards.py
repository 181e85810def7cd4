"""jobs/shards.py: local and HDFS files, finding shards, split / upload / make-sample (resumable, verified)."""

from __future__ import annotations

import json
import os
import tarfile

import numpy as np
import pytest

from jobs import shards as shards_module
from tests.helpers import HDFS_URI
from tinytags.core.contract import SHARDS_INFO, InputError
from tinytags.core.tagging import Shard
from tinytags.io.shard_files import (
    find_shards,
    make_sample,
    shard_size_of,
    split,
    upload,
)
from tinytags.io.storage import Storage

R = 3072


def _records(n, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, R), dtype=np.uint8)


# --- finding shards ----------------------------------------------------------------------------------


def _shard_folder(tmp_path, sizes):
    folder = tmp_path / "shards"
    folder.mkdir()
    for number, records in sizes.items():
        (folder / f"tiny_{number:05d}.bin").write_bytes(_records(records, number).tobytes())
    (folder / "notes.txt").write_text("not a shard")
    return folder


def test_find_shards_in_a_folder_a_glob_and_a_file(tmp_path):
    folder = _shard_folder(tmp_path, {0: 3, 1: 2, 12: 1})
    files = Storage()
    by_folder = find_shards(files, [str(folder)])
    assert [(s.number, s.size) for s in by_folder] == [(0, 3 * R), (1, 2 * R), (12, R)]
    assert by_folder[2].path == f"{folder}/tiny_00012.bin"
    assert [s.number for s in find_shards(files, [f"{folder}/tiny_0000*.bin"])] == [0, 1]
    assert [s.number for s in find_shards(files, [f"{folder}/tiny_00012.bin", str(folder)])] == [0, 1, 12]


@pytest.mark.parametrize("pattern", ["missing_folder", "shards/tiny_9*.bin", "shards/none.bin"])
def test_no_shards_matched_is_an_error_naming_the_input(tmp_path, pattern):
    _shard_folder(tmp_path, {0: 1})
    with pytest.raises(InputError, match="no shards matched"):
        find_shards(Storage(), [str(tmp_path / pattern)])


def test_a_file_not_named_like_a_shard_is_refused(tmp_path):
    folder = _shard_folder(tmp_path, {0: 1})
    with pytest.raises(InputError, match="notes.txt: a shard's name must be tiny_NNNNN.bin"):
        find_shards(Storage(), [str(folder / "notes.txt")])


def test_shard_size_comes_from_shards_json(tmp_path):
    folder = _shard_folder(tmp_path, {0: 1})
    shards = find_shards(Storage(), [str(folder)])
    assert shard_size_of(Storage(), shards) is None
    (folder / SHARDS_INFO).write_text(json.dumps({"shard_size": 5000}))
    assert shard_size_of(Storage(), shards) == 5000
    (folder / SHARDS_INFO).write_text(json.dumps({"shard_size": "big"}))
    with pytest.raises(InputError, match="'shard_size' should be a positive integer"):
        shard_size_of(Storage(), shards)


def test_shards_of_two_sizes_cannot_be_mixed(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for folder, size in ((a, 10), (b, 20)):
        folder.mkdir()
        (folder / SHARDS_INFO).write_text(json.dumps({"shard_size": size}))
    shards = [Shard(f"{a}/tiny_00000.bin", 0, R), Shard(f"{b}/tiny_00001.bin", 1, R)]
    with pytest.raises(InputError, match="different shard sizes"):
        shard_size_of(Storage(), shards)


# --- split -------------------------------------------------------------------------------------------


def test_split_cuts_records_into_numbered_shards_and_resumes(tmp_path, capsys):
    records = _records(25)
    source = tmp_path / "tiny_images.bin"
    source.write_bytes(records.tobytes())
    out = tmp_path / "out"
    paths = split(Storage(), str(source), str(out), shard_size=10)
    assert [os.path.basename(p) for p in paths] == ["tiny_00000.bin", "tiny_00001.bin", "tiny_00002.bin"]
    for number, path in enumerate(paths):
        assert open(path, "rb").read() == records[10 * number:10 * (number + 1)].tobytes()
    assert json.loads((out / SHARDS_INFO).read_text())["shard_size"] == 10
    # An interrupted run leaves a wrong-sized shard: the next run redoes only that one.
    (out / "tiny_00001.bin").write_bytes(b"half")
    before = os.stat(out / "tiny_00000.bin").st_mtime_ns
    capsys.readouterr()
    split(Storage(), str(source), str(out), shard_size=10)
    log = capsys.readouterr().err
    assert "tiny_00000.bin: already there" in log and "tiny_00002.bin: already there" in log
    assert os.stat(out / "tiny_00000.bin").st_mtime_ns == before
    assert (out / "tiny_00001.bin").read_bytes() == records[10:20].tobytes()
    assert sorted(os.listdir(out)) == [SHARDS_INFO, "tiny_00000.bin", "tiny_00001.bin", "tiny_00002.bin"]


def test_split_refuses_a_cut_off_source_unless_allowed(tmp_path):
    source = tmp_path / "tiny_images.bin"
    source.write_bytes(_records(3).tobytes() + b"x" * 100)
    with pytest.raises(InputError, match=f"{3 * R + 100:,} bytes is not a multiple of 3072"):
        split(Storage(), str(source), str(tmp_path / "out"), shard_size=2)
    paths = split(Storage(), str(source), str(tmp_path / "out2"), shard_size=2, allow_partial=True)
    assert [os.path.getsize(p) for p in paths] == [2 * R, R]


def test_split_into_a_folder_of_another_shard_size_is_refused(tmp_path):
    source = tmp_path / "tiny_images.bin"
    source.write_bytes(_records(4).tobytes())
    split(Storage(), str(source), str(tmp_path / "out"), shard_size=2)
    with pytest.raises(InputError, match="shard size 2"):
        split(Storage(), str(source), str(tmp_path / "out"), shard_size=3)


def test_cli_reports_bad_input_with_exit_code_2(tmp_path, capsys):
    code = shards_module.main(["split", str(tmp_path / "nope.bin"), "--out", str(tmp_path / "o")])
    assert code == 2
    assert "nope.bin: no such file" in capsys.readouterr().err


# --- make-sample -------------------------------------------------------------------------------------


def _cifar_test_batch(archive_path):
    """Independent reader for the test: label byte + 3072 pixel bytes per record."""
    with tarfile.open(archive_path) as archive:
        member = next(m for m in archive.getmembers() if m.name.endswith("test_batch.bin"))
        raw = np.frombuffer(archive.extractfile(member).read(), np.uint8).reshape(-1, 1 + R)
    return raw[:, 1:], raw[:, 0]


def test_make_sample_writes_cifar_images_in_tiny_layout(tmp_path, cifar_sample):
    pixels, labels = _cifar_test_batch(cifar_sample)
    out = tmp_path / "sample"
    code = shards_module.main(["make-sample", "--cifar", str(cifar_sample), "--out", str(out),
                               "--count", "1200", "--shard-size", "500"])
    assert code == 0
    names = sorted(os.listdir(out))
    assert names == [SHARDS_INFO, "tiny_00000.bin", "tiny_00000.labels", "tiny_00001.bin", "tiny_00001.labels",
                     "tiny_00002.bin", "tiny_00002.labels"]
    tiny = np.concatenate([np.fromfile(out / f"tiny_0000{n}.bin", np.uint8) for n in range(3)]).reshape(-1, R)
    assert len(tiny) == 1200
    for i in (0, 1, 499, 500, 1199):
        # The Tiny Images layout: a record reshaped (32, 32, 3) column-major is the HWC image.
        hwc_from_tiny = tiny[i].reshape(32, 32, 3, order="F")
        hwc_from_cifar = pixels[i].reshape(3, 32, 32).transpose(1, 2, 0)
        np.testing.assert_array_equal(hwc_from_tiny, hwc_from_cifar)
    assert not np.array_equal(tiny[0], pixels[0])  # the layouts really differ
    got_labels = np.concatenate([np.fromfile(out / f"tiny_0000{n}.labels", np.uint8) for n in range(3)])
    np.testing.assert_array_equal(got_labels, labels[:1200])
    assert json.loads((out / SHARDS_INFO).read_text())["shard_size"] == 500


def test_make_sample_cycles_through_the_images_for_large_counts(tmp_path):
    pixels = _records(3, seed=9)
    make_sample(Storage(), pixels, None, str(tmp_path / "s"), count=7)
    tiny = np.fromfile(tmp_path / "s" / "tiny_00000.bin", np.uint8).reshape(-1, R)
    expected = [pixels[i % 3].reshape(3, 32, 32).transpose(1, 2, 0) for i in range(7)]
    for got, want in zip(tiny, expected):
        np.testing.assert_array_equal(got.reshape(32, 32, 3, order="F"), want)


# --- HDFS --------------------------------------------------------------------------------------------


@pytest.mark.integration
def test_upload_to_hdfs_is_verified_and_resumable(tmp_path, hdfs_client, hdfs_dir, capsys):
    folder = _shard_folder(tmp_path, {0: 4, 1: 3})
    (folder / SHARDS_INFO).write_text(json.dumps({"shard_size": 4}))
    target = f"{HDFS_URI}{hdfs_dir}/tiny"
    upload(Storage(), [str(folder)], target)
    assert sorted(hdfs_client.list(f"{hdfs_dir}/tiny")) == [SHARDS_INFO, "tiny_00000.bin", "tiny_00001.bin"]
    for number, count in ((0, 4), (1, 3)):
        with hdfs_client.read(f"{hdfs_dir}/tiny/tiny_0000{number}.bin") as reader:
            assert reader.read() == _records(count, number).tobytes()
    # A shard of the wrong size (an older, interrupted copy) is replaced; the right one is skipped.
    hdfs_client.write(f"{hdfs_dir}/tiny/tiny_00001.bin", data=b"short", overwrite=True)
    capsys.readouterr()
    upload(Storage(), [str(folder)], target)
    log = capsys.readouterr().err
    assert "tiny_00000.bin: already there" in log and "tiny_00001.bin: uploaded" in log
    assert hdfs_client.status(f"{hdfs_dir}/tiny/tiny_00001.bin")["length"] == 3 * R
    # The uploaded folder is found like a local one, shard size included.
    shards = find_shards(Storage(), [target])
    assert [(s.number, s.size) for s in shards] == [(0, 4 * R), (1, 3 * R)]
    assert shard_size_of(Storage(), shards) == 4
    assert [s.number for s in find_shards(Storage(), [f"{target}/tiny_*1.bin"])] == [1]


@pytest.mark.integration
def test_split_straight_into_hdfs_and_read_ranges_back(tmp_path, hdfs_client, hdfs_dir):
    records = _records(9, seed=5)
    source = tmp_path / "tiny_images.bin"
    source.write_bytes(records.tobytes())
    target = f"{HDFS_URI}{hdfs_dir}/split"
    split(Storage(), str(source), target, shard_size=4)
    assert sorted(hdfs_client.list(f"{hdfs_dir}/split")) == [SHARDS_INFO, "tiny_00000.bin", "tiny_00001.bin",
                                                             "tiny_00002.bin"]
    with Storage().open_range(f"{target}/tiny_00001.bin", R, 2 * R) as reader:
        assert reader.read(2 * R) == records[5:7].tobytes()
    files = Storage()
    files.write_atomic(f"{target}/x.json", b"{}")
    with pytest.raises(FileExistsError):
        files.rename(f"{target}/x.json", f"{target}/tiny_00000.bin")


@pytest.mark.integration
def test_make_sample_reads_cifar_from_hdfs(tmp_path, hdfs_client, hdfs_dir, cifar_sample):
    hdfs_client.upload(f"{hdfs_dir}/cifar.tar.gz", str(cifar_sample))
    out = f"{HDFS_URI}{hdfs_dir}/sample"
    code = shards_module.main(["make-sample", "--cifar", f"{HDFS_URI}{hdfs_dir}/cifar.tar.gz", "--out", out,
                               "--count", "300"])
    assert code == 0
    pixels, labels = _cifar_test_batch(cifar_sample)
    with hdfs_client.read(f"{hdfs_dir}/sample/tiny_00000.bin") as reader:
        tiny = np.frombuffer(reader.read(), np.uint8).reshape(-1, R)
    assert len(tiny) == 300
    np.testing.assert_array_equal(tiny[123].reshape(32, 32, 3, order="F"), pixels[123].reshape(3, 32, 32).transpose(1, 2, 0))
    with hdfs_client.read(f"{hdfs_dir}/sample/tiny_00000.labels") as reader:
        assert reader.read() == labels[:300].tobytes()


def test_make_sample_names_a_missing_cifar_source(tmp_path, capsys):
    code = shards_module.main(["make-sample", "--cifar", str(tmp_path / "none.tar.gz"), "--out", str(tmp_path / "o")])
    assert code == 2 and "none.tar.gz: no such file or folder" in capsys.readouterr().err
