"""``--extra`` labelled photos: the archive layout, class-folder trees and labelled packs are read to the
same pixels and labels, and each kind of bad source is refused with an error naming it."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tinytags.core.contract import CLASSES, SHARDS_INFO, shard_name
from tinytags.core.images import cifar_to_hwc, cifar_to_tiny_layout
from tinytags.core.labelled import LABELS_NAME, NONE_LABEL, ExtraError, hold_out, labels_line
from tinytags.io.extra_files import read_extra, read_extras
from tinytags.io.storage import Storage


def _pixels(n: int, seed: int) -> np.ndarray:
    """Smooth random pictures (PNG round trips are exact; a 32x32 image stays 32x32 through decode)."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 3072), dtype=np.uint8)


def _archive_files(folder: Path, pixels: np.ndarray, labels: list[int], kinds: list[int], kind_lines: list[str]) -> Path:
    folder.mkdir(parents=True)
    (folder / "images.bin").write_bytes(pixels.tobytes())
    (folder / "labels.bin").write_bytes(bytes(labels))
    (folder / "kinds.bin").write_bytes(bytes(kinds))
    (folder / "kinds.txt").write_text("".join(f"{line}\n" for line in kind_lines))
    return folder


KIND_LINES = ["0\tn001\tnone\tgoldfish, Carassius", "1\tn002\tcat\ttabby, tabby cat", "2\tn003\tnone\tbridge"]


@pytest.fixture()
def archive(tmp_path) -> tuple[Path, np.ndarray]:
    pixels = _pixels(6, 1)
    folder = _archive_files(tmp_path / "photos-32x32", pixels, [10, 3, 10, 3, 10, 10], [0, 1, 2, 1, 0, 2], KIND_LINES)
    target = tmp_path / "photos.tar.gz"
    with tarfile.open(target, "w:gz") as tar:
        tar.add(folder, arcname="photos-32x32")
    return target, pixels


def test_archive_and_its_folder_give_the_same_labelled_photos(archive):
    target, pixels = archive
    for source in (str(target), str(target.parent / "photos-32x32"), str(target.parent)):
        data = read_extra(Storage(), source)
        assert np.array_equal(data.pixels, pixels)
        assert data.labels.tolist() == [NONE_LABEL, 3, NONE_LABEL, 3, NONE_LABEL, NONE_LABEL]
        assert [data.kind_names[k] for k in data.kinds] == ["goldfish", "tabby", "bridge", "tabby", "goldfish", "bridge"]
        assert data.counts() == {"cat": 2, "none": 4}


@pytest.mark.parametrize("change, message", [
    (lambda f: (f / "images.bin").write_bytes((f / "images.bin").read_bytes()[:-5]), "not a whole number of 3072-byte"),
    (lambda f: (f / "images.bin").write_bytes(b""), "images.bin: empty"),
    (lambda f: (f / "labels.bin").write_bytes(bytes([1, 2])), "labels.bin: 2 bytes for 6 images"),
    (lambda f: (f / "labels.bin").write_bytes(bytes([11] * 6)), "label 11 found"),
    (lambda f: (f / "kinds.bin").write_bytes(bytes([7] * 6)), "kind 7 found, but kinds.txt lists 3"),
    (lambda f: (f / "kinds.txt").unlink(), "kinds.txt missing"),
    (lambda f: (f / "kinds.txt").write_text("zero\tx\n"), "kinds.txt, line 1"),
])
def test_a_bad_archive_folder_is_refused_naming_the_file(tmp_path, change, message):
    folder = _archive_files(tmp_path / "p", _pixels(6, 2), [10] * 6, [0] * 6, KIND_LINES)
    change(folder)
    with pytest.raises(ExtraError, match=message):
        read_extra(Storage(), str(tmp_path / "p"))


def _tree(root: Path, pixels: np.ndarray, layout: list[str]) -> None:
    for hwc, relative in zip(cifar_to_hwc(pixels), layout):
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(hwc).save(path)


def test_a_class_folder_tree_reads_every_photo_with_its_folder_as_label_and_kind(tmp_path):
    pixels = _pixels(4, 3)
    _tree(tmp_path / "tree", pixels, ["cat/a.png", "Truck/b.png", "none/food/c.png", "none/bridges/d.png"])
    (tmp_path / "tree" / "README.txt").write_text("not a photo, not an error")
    data = read_extra(Storage(), str(tmp_path / "tree"))
    got = {data.kind_names[k]: (data.labels[i], data.pixels[i]) for i, k in enumerate(data.kinds)}
    assert len(data) == 4
    expected = {"cat": (CLASSES.index("cat"), pixels[0]), "truck": (CLASSES.index("truck"), pixels[1]),
                "none/food": (NONE_LABEL, pixels[2]), "none/bridges": (NONE_LABEL, pixels[3])}
    assert set(got) == set(expected)
    for kind, (label, image) in expected.items():
        assert got[kind][0] == label and np.array_equal(got[kind][1], image), kind


@pytest.mark.parametrize("layout, extra, message", [
    (["kitten/a.png"], None, "'kitten' is not a class name"),
    (["a.png"], None, "has no label"),
    ([], "cat/notes.txt", "no image files in class folders"),
    ([], "cat/broken.jpg", "not a usable image"),
])
def test_a_bad_tree_is_refused_naming_the_folder_or_file(tmp_path, layout, extra, message):
    root = tmp_path / "tree"
    root.mkdir()
    _tree(root, _pixels(len(layout), 4), layout)
    if extra:
        (root / extra).parent.mkdir(parents=True, exist_ok=True)
        (root / extra).write_bytes(b"\xff\xd8 this is not really a JPEG")
    with pytest.raises(ExtraError, match=message):
        read_extra(Storage(), str(root))


def test_a_labelled_pack_reads_the_labelled_images_in_cifar_layout(tmp_path):
    pixels = _pixels(5, 5)
    pack = tmp_path / "pack"
    pack.mkdir()
    (pack / shard_name(1)).write_bytes(cifar_to_tiny_layout(pixels).tobytes())
    (pack / SHARDS_INFO).write_text(json.dumps({"shard_size": 10}))
    (pack / LABELS_NAME).write_text(labels_line(10, "dog", "dog") + labels_line(13, "none", "none/tools"))
    data = read_extra(Storage(), str(pack))
    assert data.labels.tolist() == [CLASSES.index("dog"), NONE_LABEL]
    assert np.array_equal(data.pixels, pixels[[0, 3]])
    both = read_extras(Storage(), [str(pack), str(pack)])
    assert len(both) == 4 and both.kind_names == ("dog", "none/tools")


def test_a_pack_whose_labels_name_no_image_or_bad_lines_is_refused(tmp_path):
    pack = tmp_path / "pack"
    pack.mkdir()
    (pack / shard_name(0)).write_bytes(bytes(3072 * 2))
    (pack / LABELS_NAME).write_text(labels_line(99, "cat", "cat"))
    with pytest.raises(ExtraError, match="none of them in the"):
        read_extra(Storage(), str(pack))
    (pack / LABELS_NAME).write_text('{"id": 0}\n')
    with pytest.raises(ExtraError, match=r"_labels.jsonl, line 1"):
        read_extra(Storage(), str(pack))
    (pack / LABELS_NAME).write_text(labels_line(0, "cat", "cat"))
    (pack / shard_name(0)).write_bytes(bytes(3072 * 2 + 7))
    with pytest.raises(ExtraError, match="not a whole number of 3072-byte"):
        read_extra(Storage(), str(pack))


def test_missing_sources_and_plain_files_are_refused(tmp_path):
    with pytest.raises(ExtraError, match="no such file or folder"):
        read_extra(Storage(), str(tmp_path / "nope"))
    (tmp_path / "x.bin").write_bytes(b"1234")
    with pytest.raises(ExtraError, match="not a .tar/.tar.gz archive"):
        read_extra(Storage(), str(tmp_path / "x.bin"))
    (tmp_path / "x.tar.gz").write_bytes(b"\x1f\x8b not gzip")
    with pytest.raises(ExtraError, match="not a readable tar archive"):
        read_extra(Storage(), str(tmp_path / "x.tar.gz"))


def test_hold_out_keeps_whole_none_kinds_unseen_and_splits_the_rest():
    rng = np.random.default_rng(0)
    kinds = np.repeat(np.arange(20), 50)
    labels = np.where(kinds < 15, NONE_LABEL, 3)
    from tinytags.core.labelled import Labelled
    data = Labelled(np.zeros((1000, 3072), np.uint8), labels, kinds.astype(np.int32), tuple(map(str, range(20))), "t")
    split = hold_out(data, 0.2, seed=int(rng.integers(100)))
    unseen_kinds = set(kinds[split.held_unseen])
    assert len(unseen_kinds) == 3 and unseen_kinds <= set(range(15))
    assert not set(kinds[split.train]) & unseen_kinds  # a held-out kind never trains
    masks = [split.train, split.held_positive, split.held_seen, split.held_unseen]
    assert (np.sum(masks, axis=0) == 1).all()  # each image in exactly one set
    assert (labels[split.held_positive] != NONE_LABEL).all() and (labels[split.held_seen] == NONE_LABEL).all()
    assert 0.1 < split.held_positive.sum() / 250 < 0.3


def test_the_archive_file_inside_a_tar_may_sit_at_any_depth(tmp_path):
    pixels = _pixels(2, 9)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in (("images.bin", pixels.tobytes()), ("labels.bin", bytes([0, 10])),
                           ("kinds.bin", bytes([0, 1])), ("kinds.txt", b"0\ta\tairplane\tjet\n1\tb\tnone\tchair\n")):
            info = tarfile.TarInfo(f"deep/down/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    (tmp_path / "p.tar").write_bytes(buffer.getvalue())
    data = read_extra(Storage(), str(tmp_path / "p.tar"))
    assert data.labels.tolist() == [0, NONE_LABEL] and data.kind_names == ("jet", "chair")


def test_a_packed_tree_labelled_by_its_folders_reads_like_the_tree(tmp_path):
    from jobs import shards

    pixels = _pixels(5, 11)
    _tree(tmp_path / "tree", pixels, ["cat/a.png", "dog/b.png", "none/food/c.png", "none/food/d.png", "misc/e.png"])
    pack = tmp_path / "pack"
    assert shards.main(["pack", str(tmp_path / "tree"), "--out", str(pack), "--workers", "1"]) == 0
    assert shards.main(["labels", str(pack)]) == 0
    packed = read_extra(Storage(), str(pack))
    tree_photos = {relative: image for relative, image in zip(
        ["cat/a.png", "dog/b.png", "none/food/c.png", "none/food/d.png"], pixels[:4])}
    # Four labelled photos (misc/ is no class folder), each with its folder's label and kind.
    assert len(packed) == 4 and packed.counts() == {"cat": 1, "dog": 1, "none": 2}
    by_kind = sorted((packed.kind_names[k], packed.pixels[i].tobytes()) for i, k in enumerate(packed.kinds))
    expected = sorted((relative.rsplit("/", 1)[0], image.tobytes()) for relative, image in tree_photos.items())
    assert by_kind == expected


def test_labels_refuses_a_folder_that_is_no_pack_or_has_no_class_folders(tmp_path):
    from jobs import shards

    (tmp_path / "empty").mkdir()
    assert shards.main(["labels", str(tmp_path / "empty")]) == 2
    _tree(tmp_path / "tree", _pixels(2, 12), ["holiday/a.png", "b/c.png"])
    assert shards.main(["pack", str(tmp_path / "tree"), "--out", str(tmp_path / "pack"), "--workers", "1"]) == 0
    assert shards.main(["labels", str(tmp_path / "pack")]) == 2
    assert not (tmp_path / "pack" / LABELS_NAME).exists()
