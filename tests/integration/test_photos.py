"""Your own photos, end to end on the local stack: a folder tree of real JPEG/PNG/WebP files (and
every kind of bad file) -> ``python -m jobs.shards pack`` into HDFS -> tag with the session's
default model -> index (each with spark-submit) -> /api/search with each image's source path, the folder filter, the image
page and its preview; jobs/pack.py's Spark tasks pack the same bytes as the local command; previews
never read outside their root.

The expectation is computed apart from the pipeline: each good file decoded here, the model
(network and forest) evaluated on it in-process with the agreement rule written out, and the
file's path and shown size known from how the tree was made.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers import (
    ROOT,
    Loaded,
    load_documents,
    make_bad_files,
    make_lines,
    make_photo_tree,
    spark_submit,
)
from tinytags.core.contract import CLASSES, PACK_ERRORS_NAME, SOURCES_NAME
from tinytags.core.features import FEATURES_FILE
from tinytags.core.images import hwc_to_cifar
from tinytags.core.photos import decode
from tinytags.core.tagger import Tagger
from tinytags.io import cifar_files

pytestmark = [pytest.mark.integration]

PHOTOS = 240


def _ok(result, what: str) -> None:
    assert result.returncode == 0, f"{what} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"


def _hdfs_lines(hdfs_client, path: str) -> list[dict]:
    with hdfs_client.read(path) as reader:
        return [json.loads(line) for line in reader.read().decode().splitlines()]


def _all_results(client, **params) -> list[dict]:
    found, cursor = [], "*"
    while cursor:
        body = client.get("/api/search", query_string={**params, "rows": 200, "cursor": cursor}).get_json()
        found.extend(body["results"])
        cursor = body["next_cursor"]
    return found


@pytest.mark.slow
def test_photos_packed_tagged_indexed_and_found_by_source(stack, hdfs_client, hdfs_dir, solr_core, cifar_sample,
                                                          cluster_model, tmp_path):
    from webapp import create_app

    pixels = cifar_files.read_local(cifar_sample).test.pixels
    root = tmp_path / "photos"
    photos = make_photo_tree(root, pixels, PHOTOS)
    bad = make_bad_files(root)
    packed = f"{stack['hdfs']}{hdfs_dir}/photos"
    result = subprocess.run([sys.executable, "-m", "jobs.shards", "pack", str(root), "--out", packed],
                            capture_output=True, text=True, cwd=ROOT, timeout=300)
    _ok(result, "pack")
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    good = {str(p.path): p for p in photos}
    locked_is_good = os.geteuid() == 0  # root reads a chmod 000 file: then it is one more good photo
    assert (summary["errors"], summary["packed"]) == (len(bad), len(good) + locked_is_good)
    errors = {e["path"]: e["reason"] for e in _hdfs_lines(hdfs_client, f"{hdfs_dir}/photos/{PACK_ERRORS_NAME}")}
    assert set(errors) == set(bad) and all(words in errors[path] for path, words in bad.items())
    sources = {line["id"]: line for line in _hdfs_lines(hdfs_client, f"{hdfs_dir}/photos/{SOURCES_NAME}")}
    assert {line["path"] for line in sources.values()} >= set(good)

    order = sorted(good)
    records = np.concatenate([hwc_to_cifar(decode(Path(p).read_bytes()).hwc) for p in order])
    # local[2]: the cluster's executors take ~10 s more per job to start; test_readme.py tags photos on the cluster.
    model = cluster_model["model"]  # the default model, trained once for the session (conftest.py)
    tags = f"{stack['hdfs']}{hdfs_dir}/tags"
    _ok(spark_submit(ROOT / "jobs" / "tag.py", "--model", str(model), "--input", packed, "--output", tags,
                     master="local[2]"), "tag")
    _ok(spark_submit(ROOT / "jobs" / "index.py", "--input", tags, "--solr", solr_core, master="local[2]"), "index")

    # What the model says about each good file, decoded here and evaluated in-process.
    card = json.loads((model / "model_card.json").read_text())
    tagger = Tagger.from_files((model / "forest.npz").read_bytes(), (model / FEATURES_FILE).read_bytes(), card)
    ids = {line["path"]: image_id for image_id, line in sources.items()}
    prediction = tagger.predict(records)
    keep = ~prediction.junk & (prediction.votes / tagger.n_trees >= 0.4 - 1e-9)
    expected = {str(ids[p]): p for p, kept in zip(order, keep) if kept}
    assert expected

    client = create_app({"SOLR_URL": solr_core, "MODEL_DIR": str(model), "SEARCH_CACHE_SECONDS": 0,
                         "SOURCE_ROOT": str(root)}).test_client()
    results = {r["id"]: r for r in _all_results(client) if r["source"] in good}
    assert set(results) == set(expected)
    for image_id, item in results.items():
        photo = good[expected[image_id]]
        assert (item["source"], item["width"], item["height"]) == (str(photo.path), photo.width, photo.height)
        assert item["tag"] == CLASSES[int(prediction.label[order.index(expected[image_id])])]
    # The folder filter: exactly the kept images under that folder (one shared prefix, then a deeper one).
    for prefix in (f"{root}/2019/", f"{root}/2019/summer/", f"{root}/scans"):
        found = {r["id"] for r in _all_results(client, source_prefix=prefix)}
        assert found == {i for i, p in expected.items() if p.startswith(prefix)} and found
    # The image page shows where the photo came from, and a preview made from the original.
    image_id, path = next(iter(expected.items()))
    page = client.get(f"/images/{image_id}")
    assert page.status_code == 200 and path.encode() in page.data
    assert f"{good[path].width} × {good[path].height}".encode() in page.data
    assert f"/api/images/{image_id}/preview.jpg".encode() in page.data
    preview = client.get(f"/api/images/{image_id}/preview.jpg")
    assert preview.status_code == 200 and preview.mimetype == "image/jpeg" and preview.data[:2] == b"\xff\xd8"


def test_spark_tasks_pack_the_same_bytes_as_the_local_command(spark, stack, hdfs_dir, cifar_sample, tmp_path):
    from tinytags.io.photo_files import local_decoder, pack, plan_pack
    from tinytags.io.storage import Storage
    from tinytags.pipeline.pack import spark_decoder

    pixels = cifar_files.read_local(cifar_sample).test.pixels
    make_photo_tree(tmp_path / "photos", pixels, 24)
    make_bad_files(tmp_path / "photos")
    files = Storage()
    local = pack(plan_pack(files, [str(tmp_path / "photos")], str(tmp_path / "local"), 10), local_decoder(1))
    out = f"{stack['hdfs']}{hdfs_dir}/spark"
    # Waves of 8 files in tasks of 3: several Spark jobs, their results in order.
    spread = pack(plan_pack(files, [str(tmp_path / "photos")], out, 10), spark_decoder(spark.sparkContext, 3, 8))
    for key in ("packed", "errors", "shards", "first_id", "last_id"):
        assert spread[key] == local[key], key
    for name in [*local["shards"], SOURCES_NAME, PACK_ERRORS_NAME]:
        assert files.read_bytes(f"{out}/{name}") == (tmp_path / "local" / name).read_bytes(), name


def _photo_lines(folder: Path) -> list[dict]:
    """Tag lines of made-up photos: one inside the preview root, the others pointing out of it or nowhere."""
    lines = make_lines(6)
    folder.mkdir(parents=True)
    (folder / "in").mkdir()
    Image.new("RGB", (900, 600), (200, 30, 30)).save(folder / "in" / "red.jpg")
    (tmp_outside := folder.parent / "outside.jpg").write_bytes((folder / "in" / "red.jpg").read_bytes())
    (folder / "in" / "link.jpg").symlink_to(tmp_outside)
    paths = [folder / "in" / "red.jpg", folder / "in" / ".." / ".." / "outside.jpg", folder / "in" / "link.jpg",
             folder / "in" / "missing.jpg", tmp_outside, folder / "in" / "red.jpg"]
    for line, path in zip(lines, paths):
        line.update(source=str(path), width=900, height=600)
    del lines[5]["source"]  # a Tiny Images document: no source at all
    return lines


def test_previews_only_of_originals_inside_the_root_and_the_folder_filter(solr_core, tmp_path):
    lines = _photo_lines(tmp_path / "photos")
    load_documents(solr_core, lines)
    loaded = Loaded(solr_core, lines, SOURCE_ROOT=str(tmp_path / "photos"), PREVIEW_SIDE=300,
                    SEARCH_CACHE_SECONDS=0)
    ok, body = loaded.get(f"/api/images/{lines[0]['id']}/preview.jpg")
    assert ok.status_code == 200 and ok.mimetype == "image/jpeg"
    assert Image.open(io.BytesIO(ok.data)).size == (300, 200)  # capped at PREVIEW_SIDE, shape kept
    assert loaded.get(f"/api/images/{lines[0]['id']}/preview.jpg")[0].headers["ETag"] == ok.headers["ETag"]
    # Out through "..", out through a symlink, missing, outside, no source: all 404, nothing read.
    for line in lines[1:]:
        response, body = loaded.get(f"/api/images/{line['id']}/preview.jpg")
        assert response.status_code == 404 and "no preview" in body["error"]
    page = loaded.client.get(f"/images/{lines[1]['id']}")
    assert page.status_code == 200 and b"preview.jpg" not in page.data and b"900 \xc3\x97 600" in page.data
    # Without a root, no previews at all.
    bare = Loaded(solr_core, lines)
    assert bare.get(f"/api/images/{lines[0]['id']}/preview.jpg")[0].status_code == 404
    # The folder filter, with a value full of Solr syntax that must stay text.
    response, body = loaded.get("/api/search", source_prefix=str(tmp_path / "photos" / "in"), rows="10")
    assert response.status_code == 200
    assert {r["id"] for r in body["results"]} == {str(l["id"]) for l in lines if l.get("source", "").startswith(
        str(tmp_path / "photos" / "in"))}
    response, body = loaded.get("/api/search", source_prefix='*:* OR id:[* TO *] "}{!', rows="10")
    assert response.status_code == 200 and body["numFound"] == 0
    response, body = loaded.get("/api/search", source_prefix="/a\x01b")
    assert response.status_code == 400 and "source_prefix" in body["error"]
