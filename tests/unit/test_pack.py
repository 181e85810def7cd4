"""python -m jobs.shards pack on local folder trees: what is packed, skipped, reported and resumed;
ids that never move; the sidecar the tag job reads (by bisection) and the lines it writes (no services).

Photos are real JPEG/PNG/WebP files made from CIFAR-10 test images (tests.helpers.make_photo_tree),
so each packed record is compared with the CIFAR image it was made from.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from jobs import shards as shards_cli
from tests.helpers import make_bad_files, make_photo_tree
from tinytags.core.contract import PACK_ERRORS_NAME, SHARDS_INFO, SOURCES_NAME, shard_name
from tinytags.core.images import RECORD_BYTES, cifar_to_hwc, tiny_to_cifar_layout
from tinytags.core.photos import Source
from tinytags.core.solr_docs import validate_line
from tinytags.core.tagging import LineFormat, tag_batch
from tinytags.io import cifar_files, photo_files
from tinytags.io.photo_files import local_decoder, pack, plan_pack, read_sources
from tinytags.io.storage import Storage

S = 16  # images per shard in these tests: 40 photos make shards of 16, 16 and 8


@pytest.fixture(scope="module")
def test_pixels(cifar_sample):
    return cifar_files.read_local(cifar_sample).test.pixels


def _run(sources, out, shard_size=S, workers=1):
    plan = plan_pack(Storage(), [str(s) for s in sources], str(out), shard_size)
    return pack(plan, local_decoder(workers))


def _sources(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / SOURCES_NAME).read_text().splitlines()]


def _record(out: Path, image_id: int, shard_size: int = S) -> np.ndarray:
    """A packed image read back by hand: shard id // S, record id % S, Tiny layout -> HWC."""
    shard, offset = divmod(image_id, shard_size)
    data = (out / shard_name(shard)).read_bytes()[offset * RECORD_BYTES:(offset + 1) * RECORD_BYTES]
    return cifar_to_hwc(tiny_to_cifar_layout(np.frombuffer(data, np.uint8)))[0].astype(int)


def _turns(hwc: np.ndarray) -> list[np.ndarray]:
    """The 7 wrong ways an orientation bug could show a picture."""
    return [np.rot90(hwc, k) for k in (1, 2, 3)] + [hwc[:, ::-1], hwc[::-1], hwc.transpose(1, 0, 2),
                                                    np.rot90(hwc, 1)[:, ::-1]]


def test_a_tree_is_packed_upright_with_its_sources_and_every_bad_file_reported(tmp_path, test_pixels):
    photos = make_photo_tree(tmp_path / "photos", test_pixels, 40)
    bad = make_bad_files(tmp_path / "photos")
    root_reads_locked = os.geteuid() == 0  # root reads a chmod 000 file: then it is a good photo
    summary = _run([tmp_path / "photos"], tmp_path / "out")
    good = len(photos) + root_reads_locked + 0
    assert summary["packed"] == good and summary["errors"] == len(bad)
    assert summary["ignored"] == 1  # readme.txt
    assert summary["shards"] == ["tiny_00000.bin", "tiny_00001.bin", "tiny_00002.bin"][: -(-good // S)]
    errors = {e["path"]: e["reason"] for e in map(json.loads, (tmp_path / "out" / PACK_ERRORS_NAME).read_text().splitlines())}
    assert set(errors) == set(bad)
    for path, words in bad.items():
        assert words in errors[path], (path, errors[path])
    sources = {line["path"]: line for line in _sources(tmp_path / "out")}
    assert [line["id"] for line in _sources(tmp_path / "out")] == list(range(good))  # walk order, no gaps
    for photo in photos:
        line = sources[str(photo.path)]
        assert (line["width"], line["height"]) == (photo.width, photo.height)
        assert line["bytes"] == photo.path.stat().st_size
        got, want = _record(tmp_path / "out", line["id"]), cifar_to_hwc(test_pixels[photo.index])[0].astype(int)
        error = np.abs(got - want).mean()
        assert error < 10, (photo.path, error)
        assert error < min(np.abs(got - turned).mean() for turned in _turns(want)), (photo.path, photo.orientation)
    info = json.loads((tmp_path / "out" / SHARDS_INFO).read_text())
    assert info["kind"] == "photos" and info["shard_size"] == S and info["images"] == good


def test_packing_the_same_tree_twice_adds_nothing_and_ten_more_files_add_exactly_ten_ids(tmp_path, test_pixels):
    make_photo_tree(tmp_path / "photos", test_pixels, 20)
    out = tmp_path / "out"
    first = _run([tmp_path / "photos"], out)
    assert first["packed"] == 20 and first["shards"] == ["tiny_00000.bin", "tiny_00001.bin"]
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    again = _run([tmp_path / "photos"], out)
    assert (again["packed"], again["already_packed"], again["shards"]) == (0, 20, [])
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.name != PACK_ERRORS_NAME} == \
        {name: data for name, data in before.items() if name != PACK_ERRORS_NAME}
    make_photo_tree(tmp_path / "photos", test_pixels, 10, seed=9, first=100)  # 10 new photos in the same folders
    more = _run([tmp_path / "photos"], out)
    assert (more["packed"], more["already_packed"]) == (10, 20)
    # The new images start a new shard after the last one (ids 32..41); the old shards are untouched.
    assert more["shards"] == ["tiny_00002.bin"] and (more["first_id"], more["last_id"]) == (32, 41)
    lines = _sources(out)
    assert [line["id"] for line in lines] == list(range(20)) + list(range(32, 42))
    for name in ("tiny_00000.bin", "tiny_00001.bin"):
        assert (out / name).read_bytes() == before[name]
    new = {line["path"] for line in lines[20:]}
    assert new == {str(p) for p in (tmp_path / "photos").rglob("IMG_001*")}


def test_a_moved_copy_is_a_duplicate_and_a_changed_file_is_packed_anew(tmp_path, test_pixels):
    photos = make_photo_tree(tmp_path / "photos", test_pixels, 4)
    out = tmp_path / "out"
    _run([tmp_path / "photos"], out)
    (tmp_path / "photos" / "copies").mkdir()
    (tmp_path / "photos" / "copies" / "same.png").write_bytes(photos[1].path.read_bytes())
    make_photo_tree(tmp_path / "elsewhere", test_pixels, 1, first=3)  # photo 3 once more, re-encoded the same
    photos[0].path.write_bytes(make_photo_tree(tmp_path / "other", test_pixels, 1, first=7)[0].path.read_bytes())
    summary = _run([tmp_path / "photos"], out)
    assert (summary["packed"], summary["duplicates"], summary["already_packed"]) == (1, 1, 3)
    assert _sources(out)[-1]["path"] == str(photos[0].path)


def test_a_run_that_died_after_writing_a_shard_is_redone_and_a_half_rewritten_sidecar_recovered(tmp_path, test_pixels):
    make_photo_tree(tmp_path / "photos", test_pixels, 20)
    out = tmp_path / "out"
    _run([tmp_path / "photos"], out)
    # A crash after shard 2 was written but before its lines were committed; and one during a
    # sidecar rewrite, after the old sidecar was deleted and before its whole spare was renamed.
    (out / "tiny_00002.bin").write_bytes(b"\0" * RECORD_BYTES * 3)
    (out / SOURCES_NAME).rename(out / (SOURCES_NAME + ".tmp"))
    new = make_photo_tree(tmp_path / "photos", test_pixels, 3, first=50)
    summary = _run([tmp_path / "photos"], out)
    assert (summary["packed"], summary["already_packed"], summary["shards"]) == (3, 20, ["tiny_00002.bin"])
    assert not (out / (SOURCES_NAME + ".tmp")).exists()
    assert (out / "tiny_00002.bin").stat().st_size == 3 * RECORD_BYTES
    ids = {line["path"]: line["id"] for line in _sources(out)}
    assert sorted(ids[str(photo.path)] for photo in new) == [32, 33, 34]
    for photo in new:
        assert np.abs(_record(out, ids[str(photo.path)]) - cifar_to_hwc(test_pixels[photo.index])[0].astype(int)).mean() < 10


def test_a_pool_of_workers_packs_the_same_bytes(tmp_path, test_pixels):
    make_photo_tree(tmp_path / "photos", test_pixels, 12)
    _run([tmp_path / "photos"], tmp_path / "one", workers=1)
    _run([tmp_path / "photos"], tmp_path / "two", workers=2)
    for name in ("tiny_00000.bin", SOURCES_NAME):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()


def test_cli_exit_codes_and_summary(tmp_path, capsys, test_pixels):
    make_bad_files(tmp_path / "junk")
    (tmp_path / "junk" / "bad" / "locked.jpg").unlink()  # root could read it
    assert shards_cli.main(["pack", str(tmp_path / "junk"), "--out", str(tmp_path / "out"), "--workers", "1"]) == 1
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["packed"] == 0 and summary["errors"] == 9
    assert shards_cli.main(["pack", str(tmp_path / "missing"), "--out", str(tmp_path / "out")]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    make_photo_tree(tmp_path / "junk", test_pixels, 2)
    assert shards_cli.main(["pack", str(tmp_path / "junk"), "--out", str(tmp_path / "out"), "--workers", "1"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["packed"] == 2


def test_a_folder_of_tiny_images_shards_is_never_packed_into(tmp_path, capsys, test_pixels):
    from tinytags.io.shard_files import make_sample

    make_sample(Storage(), test_pixels[:4], None, str(tmp_path / "tiny"))
    make_photo_tree(tmp_path / "photos", test_pixels, 1)
    assert shards_cli.main(["pack", str(tmp_path / "photos"), "--out", str(tmp_path / "tiny")]) == 2
    assert "holds Tiny Images shards, not packed photos" in capsys.readouterr().err
    _run([tmp_path / "photos"], tmp_path / "out")
    assert shards_cli.main(["pack", str(tmp_path / "photos"), "--out", str(tmp_path / "out"),
                            "--shard-size", "99"]) == 2
    assert "was packed with 16 images per shard" in capsys.readouterr().err


def _sidecar(path: Path, ids) -> dict[int, Source]:
    sources = {i: Source(i, f"/p/{i % 7}/photo {i}.jpg", 1000 + i, 1.5 * i, 10 + i % 5, 20, f"{i:064x}") for i in ids}
    path.write_text("".join(s.line() for s in sources.values()))
    return sources


@pytest.mark.parametrize("first, end", [(0, 1), (0, 400), (399, 400), (1000, 1400), (1150, 1170), (2500, 2600),
                                        (5000, 5400), (6790, 9000), (99_999, 100_100), (200_000, 300_000)])
def test_the_tag_job_reads_exactly_its_ids_from_the_sidecar(tmp_path, monkeypatch, first, end):
    # Three pack runs with gaps between them (shards of 400), and a probe small enough to bisect many times.
    ids = list(range(0, 1170)) + list(range(1200, 2410)) + list(range(6400, 6790)) + [100_000]
    sources = _sidecar(tmp_path / SOURCES_NAME, ids)
    monkeypatch.setattr(photo_files, "PROBE_BYTES", 512)
    reads = []
    real = Storage.open_range

    def counted(self, path, offset, length):
        reads.append(length)
        return real(self, path, offset, length)

    monkeypatch.setattr(Storage, "open_range", counted)
    size = (tmp_path / SOURCES_NAME).stat().st_size
    got = read_sources(Storage(), str(tmp_path / SOURCES_NAME), size, first, end)
    assert got == {i: s for i, s in sources.items() if first <= i < end}
    assert len(reads) <= 2 + int(np.log2(size / 512)) + 1  # a bisection, then one read of the lines


def test_tag_lines_of_packed_photos_carry_their_source_before_pixels_and_vector_last(tmp_path, test_pixels):
    from sklearn.tree import DecisionTreeClassifier

    from tests.helpers import forest_from_sklearn
    from tinytags.core.images import cifar_to_tiny_layout
    from tinytags.core.photos import line_fields
    from tinytags.core.tagger import Tagger

    labels = np.arange(64) % 10
    trees = [DecisionTreeClassifier(max_depth=3, random_state=s).fit(test_pixels[:64], labels) for s in range(3)]
    from tinytags.core import forest as forest_io

    forest_io.save(forest_from_sklearn(trees, 10), tmp_path)
    tagger = Tagger.from_files((tmp_path / "forest.npz").read_bytes(), None, {"classes": None})
    sources = {40 + i: Source(40 + i, f"/photos/a {i}.jpg", 1, 1.0, 640 + i, 480, "0" * 64) for i in range(0, 8, 2)}
    extras = {i: line_fields(s) for i, s in sources.items()}
    result = tag_batch(tagger, cifar_to_tiny_layout(test_pixels[:8]), 40, 2, 0, 1, LineFormat("m" * 12, 3, 100), extras)
    lines = result.lines.decode().splitlines()
    assert len(lines) == 8
    for text in lines:
        line = json.loads(text)
        validate_line(line)
        keys = [k for k in line if k != "vector"]
        assert keys[-1] == "pixels" and list(line)[-1] in ("pixels", "vector")  # a vector, if any, is last
        if line["id"] in sources:
            assert (line["source"], line["width"], line["height"]) == \
                (sources[line["id"]].path, sources[line["id"]].width, 480)
            assert keys.index("source") < keys.index("pixels")
        else:
            assert "source" not in line
