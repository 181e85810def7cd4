"""jobs/tag.py: tagging Tiny-format shards of labelled CIFAR-10 test images gives the evaluator's own
predictions on the CIFAR layout; the manifest balances; blocks are atomic; bad input gets clear errors;
the job runs with spark-submit on local[2] and on the standalone cluster, reading the real HDFS."""

from __future__ import annotations

import base64
import json
import os
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from sklearn.ensemble import RandomForestClassifier

from jobs import tag as tag_module
from tests.helpers import HDFS_URI, ROOT, forest_from_sklearn, spark_submit
from tinytags.core import forest as forest_io
from tinytags.core.contract import (
    CARD_FILE,
    CLASSES,
    FOREST_FILE,
    MANIFEST_NAME,
    PART_NAME,
    RUN_NAME,
)
from tinytags.core.solr_docs import validate_line
from tinytags.io import cifar_files
from tinytags.io.shard_files import make_sample, upload
from tinytags.io.storage import Storage
from tinytags.pipeline import tag as tag_pipeline

SHARD_SIZE = 2000   # the 5,000 test images make shards of 2,000, 2,000 and 1,000 images
BLOCK_SIZE = 1500   # so blocks 1 and 2 each span two shards


@pytest.fixture(scope="module")
def cifar_data(cifar_sample):
    return cifar_files.read_local(cifar_sample)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, cifar_data):
    """A real model dir: scikit-learn's forest on the sample's 10,000 training images, flattened."""
    fitted = RandomForestClassifier(n_estimators=10, max_depth=10, random_state=0, n_jobs=2)
    fitted.fit(cifar_data.train.pixels, cifar_data.train.labels)
    forest = forest_from_sklearn(fitted.estimators_, len(CLASSES))
    folder = tmp_path_factory.mktemp("model")
    forest_io.save(forest, folder)
    card = {"classes": list(CLASSES), "version": forest.version, "format": forest_io.FOREST_FORMAT}
    (folder / CARD_FILE).write_text(json.dumps(card))
    return folder


@pytest.fixture(scope="module")
def expected(model_dir, cifar_data):
    """What the one evaluator says about the test images in CIFAR layout (the model's own view)."""
    forest = forest_io.load(model_dir)
    counts, labels, top = forest_io.Evaluator(forest).predict(cifar_data.test.pixels)
    return SimpleNamespace(forest=forest, counts=counts, labels=labels, top=top, pixels=cifar_data.test.pixels,
                           truth=cifar_data.test.labels)


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory, cifar_data):
    folder = tmp_path_factory.mktemp("shards") / "tiny"
    make_sample(Storage(), cifar_data.test.pixels, cifar_data.test.labels, str(folder), shard_size=SHARD_SIZE)
    return folder


def _options(model_dir, inputs, output, *extra):
    return tag_module.parse_args(["--model", str(model_dir), "--input", *map(str, inputs), "--output", str(output),
                                  "--block-size", str(BLOCK_SIZE), "--batch-size", "512", *extra])


class _Broadcast:
    """Stands in for a Spark broadcast in the Spark-free runs below."""

    def __init__(self, value):
        self.value = value


def _run_without_spark(options):
    """The job's own prepare / tag_block / finish, with the block tasks run in this process."""
    plan = tag_pipeline.prepare(options)
    context = tag_pipeline.task_context(plan, options)
    started = time.monotonic()
    results = plan.resumed + [tag_pipeline.tag_block(context, _Broadcast(plan.tagger), task) for task in plan.todo]
    return plan, tag_pipeline.finish(plan, results, time.monotonic() - started)


def _read_output(read_text, list_dir, output):
    """(manifest, {id: line}, {block: number of lines}) of a tag output."""
    manifest = json.loads(read_text(f"{output}/{MANIFEST_NAME}"))
    lines, per_block = {}, {}
    for name in list_dir(output):
        if name.startswith("block="):
            block = int(name.split("=")[1])
            text = read_text(f"{output}/{name}/{PART_NAME}")
            per_block[block] = 0
            for line in text.splitlines():
                record = json.loads(line)
                assert record["block"] == block
                lines[record["id"]] = record
                per_block[block] += 1
    return manifest, lines, per_block


def _check_against_the_evaluator(manifest, lines, per_block, expected, min_votes=4):
    """Every image read once; kept exactly when the evaluator's top votes reach min_votes; same votes."""
    n = len(expected.pixels)
    keep = expected.top >= min_votes
    assert manifest["model"] == expected.forest.version and manifest["min_agreement"] == 0.4
    assert manifest["totals"] == {"blocks": -(-n // BLOCK_SIZE), "read": n, "kept": int(keep.sum()),
                                  "dropped": int((~keep).sum()), "none": 0, "partial_records": 0}
    for block, counts in manifest["blocks"].items():
        ids = range(int(block) * BLOCK_SIZE, min((int(block) + 1) * BLOCK_SIZE, n))
        assert counts["read"] == len(ids) == counts["kept"] + counts["dropped"]
        assert counts["kept"] == int(keep[ids.start:ids.stop].sum()) == per_block.get(int(block), 0)
    assert sorted(lines) == np.flatnonzero(keep).tolist()
    for image_id, line in lines.items():
        assert line["vote_counts"] == expected.counts[image_id].tolist()
        assert line["label"] == expected.labels[image_id] and line["tag"] == CLASSES[line["label"]]
        assert line["votes"] == expected.top[image_id] and line["agreement"] == line["votes"] / 10
        assert (line["shard"], line["offset"]) == divmod(image_id, SHARD_SIZE)
        assert base64.b64decode(line["pixels"]) == expected.pixels[image_id].tobytes()
        validate_line(line)


def _local_text(path):
    return Path(path).read_text()


# --- the per-block code, without Spark -----------------------------------------------------------------


def test_tagging_tiny_shards_gives_the_evaluators_predictions_on_cifar_layout(tmp_path, model_dir, shard_dir, expected):
    output = tmp_path / "tags"
    _, manifest = _run_without_spark(_options(model_dir, [shard_dir], output))
    manifest, lines, per_block = _read_output(_local_text, os.listdir, output)
    _check_against_the_evaluator(manifest, lines, per_block, expected)
    # The layout conversion matters: the same bytes read as if they were CIFAR layout vote differently.
    tiny = np.fromfile(shard_dir / "tiny_00000.bin", np.uint8).reshape(-1, 3072)
    unconverted = forest_io.Evaluator(expected.forest).votes(tiny)
    assert (unconverted != expected.counts[:len(tiny)]).any(axis=1).mean() > 0.5
    # Tag quality, reported like bench/RESULTS.md's figures: precision of kept tags against the true labels.
    kept_ids = np.array(sorted(lines))
    precision = (expected.labels[kept_ids] == expected.truth[kept_ids]).mean()
    assert 0.3 < precision < 0.8 and 0.4 < len(kept_ids) / len(expected.pixels) < 0.95
    assert sorted(os.listdir(output)) == [MANIFEST_NAME, RUN_NAME] + [f"block={b}" for b in range(4)]


def test_rerun_replaces_blocks_and_resume_keeps_finished_ones(tmp_path, model_dir, shard_dir, expected):
    output = tmp_path / "tags"
    _, first = _run_without_spark(_options(model_dir, [shard_dir], output))
    kept_part = output / "block=0" / PART_NAME
    stamp = kept_part.stat().st_mtime_ns
    # A crash that lost block 2 (and the manifest): --resume redoes only block 2.
    (output / MANIFEST_NAME).unlink()
    for child in (output / "block=2").iterdir():
        child.unlink()
    (output / "block=2").rmdir()
    plan, second = _run_without_spark(_options(model_dir, [shard_dir], output, "--resume"))
    assert [t.block for t in plan.todo] == [2]
    assert kept_part.stat().st_mtime_ns == stamp
    assert second["blocks"] == first["blocks"] and second["resumed_blocks"] == 3
    # A plain re-run of the same run redoes every block and ends with the same books.
    plan, third = _run_without_spark(_options(model_dir, [shard_dir], output))
    assert len(plan.todo) == 4 and third["blocks"] == first["blocks"]
    _check_against_the_evaluator(*_read_output(_local_text, os.listdir, output), expected)


def test_a_block_that_fails_midway_never_appears(tmp_path, model_dir, cifar_data):
    shards = tmp_path / "shards"
    make_sample(Storage(), cifar_data.test.pixels[:3000], None, str(shards), shard_size=3000)
    output = tmp_path / "tags"
    options = _options(model_dir, [shards], output)
    plan = tag_pipeline.prepare(options)
    os.truncate(shards / "tiny_00000.bin", 2000 * 3072)  # the shard shrinks after planning
    context = tag_pipeline.task_context(plan, options)
    finished = tag_pipeline.tag_block(context, _Broadcast(plan.tagger), plan.todo[0])
    with pytest.raises(OSError, match=r"block 1: .*tiny_00000.bin records 1,500..2,011: ended after"):
        tag_pipeline.tag_block(context, _Broadcast(plan.tagger), plan.todo[1])
    assert finished.read == 1500
    assert sorted(os.listdir(output)) == ["_run.json", "_temporary", "block=0"]  # no block=1, no manifest
    (shards / "tiny_00000.bin").unlink()  # the shard is restored ...
    make_sample(Storage(), cifar_data.test.pixels[:3000], None, str(shards), shard_size=3000)
    tag_pipeline.prepare(options)  # ... and the next attempt clears what the failed one left half-built
    assert sorted(os.listdir(output)) == ["_run.json", "block=0"]


# --- bad input: exit code 2 before Spark starts, with a message naming the file or flag ---------------------


def _main_error(capsys, *argv):
    code = tag_module.main(list(map(str, argv)))
    return code, capsys.readouterr().err


def test_a_cut_off_shard_is_refused_naming_it_or_dropped_with_allow_partial(tmp_path, capsys, model_dir, cifar_data):
    shards = tmp_path / "shards"
    make_sample(Storage(), cifar_data.test.pixels[:100], None, str(shards))
    with open(shards / "tiny_00000.bin", "ab") as shard:
        shard.write(b"\0" * 1000)
    code, err = _main_error(capsys, "--model", model_dir, "--input", shards, "--output", tmp_path / "out")
    assert code == 2
    assert f"tiny_00000.bin: {100 * 3072 + 1000:,} bytes is not a multiple of 3072" in err and "--allow-partial" in err
    _, manifest = _run_without_spark(_options(model_dir, [shards], tmp_path / "out", "--allow-partial"))
    assert manifest["totals"]["read"] == 100 and manifest["totals"]["partial_records"] == 1
    assert manifest["partial"][0]["bytes_dropped"] == 1000


def test_no_shards_matched(tmp_path, capsys, model_dir):
    code, err = _main_error(capsys, "--model", model_dir, "--input", tmp_path / "tiny_*.bin", "--output", tmp_path / "o")
    assert code == 2 and "no shards matched" in err and "tiny_*.bin" in err


def test_a_model_of_another_format_is_refused(tmp_path, capsys, model_dir, shard_dir):
    old = tmp_path / "old-model"
    old.mkdir()
    arrays = dict(np.load(model_dir / FOREST_FILE))
    arrays["format"] = np.array("tinytags-forest/0")
    np.savez(old / FOREST_FILE, **arrays)
    (old / CARD_FILE).write_text((model_dir / CARD_FILE).read_text())
    code, err = _main_error(capsys, "--model", old, "--input", shard_dir, "--output", tmp_path / "o")
    assert code == 2 and "has forest format 'tinytags-forest/0'" in err
    code, err = _main_error(capsys, "--model", tmp_path / "none", "--input", shard_dir, "--output", tmp_path / "o")
    assert code == 2 and "forest.npz is missing" in err


def test_a_model_with_other_classes_is_refused(tmp_path, capsys, model_dir, shard_dir):
    other = tmp_path / "other-model"
    other.mkdir()
    (other / FOREST_FILE).write_bytes((model_dir / FOREST_FILE).read_bytes())
    (other / CARD_FILE).write_text(json.dumps({"classes": list(reversed(CLASSES))}))
    code, err = _main_error(capsys, "--model", other, "--input", shard_dir, "--output", tmp_path / "o")
    assert code == 2 and "are not the CIFAR-10 classes" in err


def test_an_output_folder_of_another_run_or_other_files_is_refused(tmp_path, capsys, model_dir, shard_dir):
    output = tmp_path / "tags"
    _run_without_spark(_options(model_dir, [shard_dir], output))
    code, err = _main_error(capsys, "--model", model_dir, "--input", shard_dir, "--output", output,
                            "--block-size", BLOCK_SIZE, "--min-agreement", "0.5")
    assert code == 2 and "holds a different tag run: min_agreement 0.4 (there) vs 0.5 (this run)" in err
    assert (output / MANIFEST_NAME).exists()  # the other run is left untouched
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "thesis.tex").write_text("precious")
    code, err = _main_error(capsys, "--model", model_dir, "--input", shard_dir, "--output", busy)
    assert code == 2 and "is not empty and holds no tag run" in err


def test_a_shard_size_that_contradicts_shards_json_is_refused(tmp_path, capsys, model_dir, shard_dir):
    code, err = _main_error(capsys, "--model", model_dir, "--input", shard_dir, "--output", tmp_path / "o",
                            "--shard-size", "1000000")
    assert code == 2 and "_shards.json beside the shards says 2,000" in err


# --- the real job: spark-submit, HDFS input ----------------------------------------------------------------


@pytest.fixture()
def hdfs_shards(hdfs_dir, shard_dir):
    target = f"{HDFS_URI}{hdfs_dir}/tiny"
    upload(Storage(), [str(shard_dir)], target)
    return target


def _submitted(result):
    """The job's own log lines (spark-submit's Python runner sends the driver's stderr to stdout)."""
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    return [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("[tag ")]


@pytest.mark.integration
@pytest.mark.slow
def test_job_on_local2_reads_hdfs(tmp_path, model_dir, hdfs_shards, expected):
    output = tmp_path / "tags"
    result = spark_submit(ROOT / "jobs" / "tag.py", "--model", str(model_dir), "--input", hdfs_shards,
                          "--output", str(output), "--block-size", str(BLOCK_SIZE), "--progress-seconds", "1",
                          master="local[2]")
    log = _submitted(result)
    assert any("4 blocks of 1,500" in line and "(5,000 images)" in line for line in log)
    assert "done: 5,000 images in 4 blocks" in log[-1] and "images/s" in log[-1]
    _check_against_the_evaluator(*_read_output(_local_text, os.listdir, output), expected)


@pytest.mark.integration
@pytest.mark.slow
def test_job_on_the_standalone_cluster_hdfs_to_hdfs(stack, hdfs_client, hdfs_dir, model_dir, hdfs_shards, expected):
    output = f"{HDFS_URI}{hdfs_dir}/tags"
    result = spark_submit(ROOT / "jobs" / "tag.py", "--model", str(model_dir), "--input", hdfs_shards,
                          "--output", output, "--block-size", str(BLOCK_SIZE), master=stack["spark"])
    log = _submitted(result)
    assert "done: 5,000 images in 4 blocks" in log[-1]

    def read_text(uri):
        with hdfs_client.read(uri[len(HDFS_URI):]) as reader:
            return reader.read().decode()

    _check_against_the_evaluator(*_read_output(read_text, lambda uri: hdfs_client.list(uri[len(HDFS_URI):]), output),
                                 expected)
    assert "_temporary" not in hdfs_client.list(f"{hdfs_dir}/tags")
