"""tinytags/io/storage.py on local paths (hdfs:// is covered by the integration tests)."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from tinytags.io.storage import Storage, StorageError, join, kind, local_path


def test_local_files_write_read_list_rename_delete(tmp_path):
    files = Storage()
    folder = str(tmp_path / "a")
    files.makedirs(folder)
    files.write(f"{folder}/x.bin", (b"abc", b"def"))
    assert files.status(f"{folder}/x.bin") == ("file", 6)
    assert files.status(folder) == ("dir", 0)
    assert files.status(f"{folder}/nope") is None
    with files.open_range(f"{folder}/x.bin", 2, 3) as reader:
        assert reader.read(3) == b"cde"
    files.write_atomic(f"{folder}/x.bin", b"new")
    assert files.read_bytes(f"file://{folder}/x.bin") == b"new"
    assert [entry.name for entry in files.list(folder)] == ["x.bin"]  # no temporary file left
    files.write(f"{folder}/y.bin", b"y")
    with pytest.raises(FileExistsError):
        files.rename(f"{folder}/x.bin", f"{folder}/y.bin")
    files.rename(f"{folder}/x.bin", f"{folder}/z.bin")
    assert files.list(folder) == [("y.bin", "file", 1), ("z.bin", "file", 3)]
    files.delete(folder)
    files.delete(folder)  # deleting nothing is fine
    assert files.status(folder) is None


def test_atomic_writes_survive_a_crash_between_delete_and_rename(tmp_path):
    files = Storage()
    target = str(tmp_path / "_index_ledger.json")
    assert files.read_text(target) is None
    files.write_atomic(target, "one")
    files.write_atomic(target, "two")
    assert Path(target).read_text() == "two" and not Path(target + ".tmp").exists()
    Path(target).rename(target + ".tmp")  # the state a crash between write_atomic's two steps leaves
    assert files.read_text(target) == "two"


@pytest.mark.parametrize("path, expected", [
    ("/data/x", "local"), ("data/x", "local"), ("file:///data/x", "local"), ("file:/data/x", "local"),
    ("hdfs://nn:9000/x", "hdfs"), ("s3a://bucket/x", "hadoop"), ("abfs://c@a.dfs.core.windows.net/x", "hadoop"),
])
def test_every_path_has_one_kind(path, expected):
    assert kind(path) == expected


def test_local_paths_lose_their_scheme_and_join_with_one_slash():
    assert local_path("file:///data/x") == "/data/x" and local_path("/data/x") == "/data/x"
    assert join("hdfs://nn:9000/a/", "b") == "hdfs://nn:9000/a/b" and join("/a", "b") == "/a/b"


def test_other_hadoop_schemes_need_the_spark_driver():
    with pytest.raises(StorageError, match=r"s3a:// paths are reached through Hadoop's FileSystem"):
        Storage().status("s3a://bucket/cifar.tar.gz")


def test_storage_pickles_without_its_spark_handle(tmp_path):
    storage = Storage(webhdfs="http://nn:9870", user="u", spark=object())
    copy = pickle.loads(pickle.dumps(storage))
    assert copy.spark is None and (copy.webhdfs, copy.user) == ("http://nn:9870", "u")


def test_qualify_makes_local_paths_absolute_uris(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert Storage().qualify("out") == f"file:{tmp_path}/out"
    assert Storage().qualify("hdfs://nn:9000/out/") == "hdfs://nn:9000/out"


def test_copy_file_streams_and_checks_the_size(tmp_path):
    source = tmp_path / "a.bin"
    source.write_bytes(bytes(range(256)) * 1000)
    assert Storage().copy_file(str(source), str(tmp_path / "b.bin"), chunk_bytes=1000) == 256_000
    assert (tmp_path / "b.bin").read_bytes() == source.read_bytes()
    with pytest.raises(FileNotFoundError):
        Storage().copy_file(str(tmp_path / "none"), str(tmp_path / "c.bin"))


def test_walk_lists_a_tree_depth_first_in_name_order_and_reports_what_it_cannot_follow(tmp_path):
    import os

    from tinytags.io.storage import Found

    (tmp_path / "b" / "deep").mkdir(parents=True)
    (tmp_path / "a.jpg").write_bytes(b"12345")
    (tmp_path / "b" / "deep" / "c.png").write_bytes(b"1")
    (tmp_path / "b" / "z.gif").write_bytes(b"")
    (tmp_path / "b" / "up").symlink_to("..")              # a loop back to the top
    (tmp_path / "b" / "me.jpg").symlink_to("me.jpg")      # a link to itself
    (tmp_path / "b" / "gone.jpg").symlink_to("nothing")   # a broken link
    (tmp_path / "c").symlink_to("b/deep")                 # a link to a folder: followed
    found = list(Storage().walk(str(tmp_path)))
    top = str(tmp_path)
    assert [(f.path[len(top):], f.size, f.problem is not None, f.kind) for f in found] == [
        ("/a.jpg", 5, False, "file"),
        ("/b/gone.jpg", 0, True, "file"),
        ("/b/me.jpg", 0, True, "file"),
        ("/b/up", 0, True, "dir"),
        ("/b/z.gif", 0, False, "file"),
        ("/b/deep/c.png", 1, False, "file"),
        ("/c/c.png", 1, False, "file"),
    ]
    problems = {f.path[len(top):]: f.problem for f in found if f.problem}
    assert problems["/b/up"] == f"symlink loop: leads back to {top}"
    assert problems["/b/me.jpg"].startswith("symlink loop") and problems["/b/gone.jpg"].startswith("broken symlink")
    assert found[0].mtime == os.stat(tmp_path / "a.jpg").st_mtime
    assert list(Storage().walk(str(tmp_path / "a.jpg"))) == [Found(str(tmp_path / "a.jpg"), 5, found[0].mtime)]
    assert list(Storage().walk(str(tmp_path / "none")))[0].problem == "No such file or directory"


@pytest.mark.parametrize("root, path, inside", [
    ("{tmp}/photos", "{tmp}/photos/a/b.jpg", True),
    ("{tmp}/photos/", "{tmp}/photos/b.jpg", True),
    ("{tmp}/photos", "{tmp}/photos/../secret.jpg", False),
    ("{tmp}/photos", "{tmp}/photos-2/b.jpg", False),
    ("{tmp}/photos", "{tmp}/photos/escape/passwd", False),  # a symlink inside that points outside
    ("{tmp}/photos", "hdfs://nn:9000{tmp}/photos/b.jpg", False),
    ("hdfs://nn:9000/photos", "hdfs://nn:9000/photos/2019/b.jpg", True),
    ("hdfs://nn:9000/photos", "hdfs://nn:9000/photos/../etc/b.jpg", False),
    ("hdfs://nn:9000/photos", "hdfs://other:9000/photos/b.jpg", False),
    ("hdfs://nn:9000/photos", "hdfs://nn:9000/photosets/b.jpg", False),
])
def test_within_confines_paths_to_a_root(tmp_path, root, path, inside):
    from tinytags.io.storage import within

    (tmp_path / "photos" / "a").mkdir(parents=True)
    (tmp_path / "photos" / "escape").symlink_to("/etc")
    assert within(root.format(tmp=tmp_path), path.format(tmp=tmp_path)) is inside
