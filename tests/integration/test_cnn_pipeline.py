"""The default, ``--features cnn``, with ``--extra``: spark-submit trains a (tiny) network beside the
forest on the cluster, on CIFAR-10 from HDFS plus the labelled photos; the card's wild figures are
recomputed from the saved predictions by an independent path; the tag job's executors run the
network and tag exactly what the model says in-process; a broken network file stops the tag job
before any output, naming the file."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from tests.helpers import ROOT, spark_submit
from tinytags.core.contract import CLASSES, MANIFEST_NAME, MIN_AGREEMENT, min_votes_for
from tinytags.core.features import FEATURES_FILE
from tinytags.core.tagger import Tagger
from tinytags.io.cifar_files import read_local
from tinytags.io.shard_files import make_sample
from tinytags.io.storage import Storage
from tinytags.pipeline.train_sets import PREDICTIONS_FILE, SETS

TAG = ROOT / "jobs" / "tag.py"


@pytest.fixture(scope="module")
def cnn_model(cluster_model):
    """The default model: trained on the cluster with the photos as --extra (conftest.py)."""
    model = cluster_model["model"]
    card = cluster_model["card"]
    tagger = Tagger.from_files((model / "forest.npz").read_bytes(), (model / FEATURES_FILE).read_bytes(), card)
    return model, card, tagger, cluster_model["result"]


@pytest.mark.slow
def test_the_card_describes_the_network_the_photos_and_the_wild(cnn_model):
    model, card, tagger, result = cnn_model
    assert card["features"]["name"] == "cnn8-16-16" and tagger.forest.n_classes == len(CLASSES) + 1
    assert card["params"]["features"] == "cnn"  # the default: the fixture names no --features
    assert card["network"]["epochs"] == 1 and card["network"]["network_images"] > card["network"]["forest_images"] > 0
    # 10,000 CIFAR images + 500 junk + the photos not held out: 14 of the 71 none kinds whole (2,800
    # photos), then 20% of the other 16,650 at random (about 3,330); 20% of the pool fits the forest.
    pool = card["network"]["network_images"] + card["network"]["forest_images"]
    assert 12_800 < pool - 10_500 < 13_800
    wild = card["wild"]
    assert wild["cifar_test"]["images"] == 5000 and wild["share"] == 0.5
    assert wild["photos_positive"]["images"] + wild["none_seen"]["images"] + wild["none_unseen"]["images"] > 3000
    assert len(wild["holdout_kinds"]) == round(0.2 * 71)
    assert set(card["expected_precision"]) == set(card["expected_precision_cifar"]) == set(CLASSES)
    assert set(wild["at_rule"]["mix"]) == set(wild["at_rule"]["positives"]) == set(CLASSES)
    assert card["extra"]["counts"]["none"] == 14_200
    # The forest's prior (--none-weight auto): "none" counted so that it is the --wild-share of the fit.
    fit = card["forest_fit"]
    assert fit["images"] == card["network"]["forest_images"] and fit["none_weight"] > 1
    assert fit["none_share"] == pytest.approx(wild["share"], abs=0.01) and fit["rows"] > fit["images"]
    output = result.stdout + result.stderr  # spark-submit merges the driver's stderr into its stdout
    assert "cnn epoch 1/1" in output and "wild figures" in output


def _independent_mix_table(saved, share: float, trees: int) -> dict:
    """The mix table by another road: each none photo repeated as rows with a weight, plain loops."""
    positive = np.isin(saved["set"], [SETS.index("cifar_test"), SETS.index("photos_positive")])
    none = saved["set"] == SETS.index("none_unseen")
    weight = share / (1 - share) * positive.sum() / none.sum()
    rows = [(int(l), int(v), bool(j), int(t), 1.0) for l, v, j, t in zip(
        saved["label"][positive], saved["votes"][positive], saved["junk"][positive], saved["truth"][positive])]
    rows += [(int(l), int(v), bool(j), -1, weight) for l, v, j in zip(
        saved["label"][none], saved["votes"][none], saved["junk"][none])]
    table = {}
    for c, name in enumerate(CLASSES):
        row = []
        for v in range(trees + 1):
            cell = [r for r in rows if not r[2] and r[0] == c and r[1] == v]
            if len(cell) < 20:
                cell = [r for r in rows if not r[2] and r[0] == c and r[1] >= v]
            total = sum(r[4] for r in cell)
            row.append(round(sum(r[4] for r in cell if r[3] == c) / total, 4) if total else None)
        table[name] = row
    return table


@pytest.mark.slow
def test_the_cards_wild_table_is_recomputed_from_the_saved_predictions(cnn_model, cifar_sample):
    model, card, tagger, _ = cnn_model
    saved = dict(np.load(io.BytesIO((model / PREDICTIONS_FILE).read_bytes())))
    recomputed = _independent_mix_table(saved, card["wild"]["share"], tagger.n_trees)
    for name in CLASSES:
        assert card["expected_precision"][name] == pytest.approx(recomputed[name], abs=1e-4), name
    # The saved CIFAR-test predictions are what the model says about those images now.
    test = read_local(cifar_sample).test
    again = tagger.predict(test.pixels, vectors=False)
    first = saved["set"] == SETS.index("cifar_test")
    assert np.array_equal(saved["label"][first], again.label) and np.array_equal(saved["votes"][first], again.votes)
    need = min_votes_for(MIN_AGREEMENT, tagger.n_trees)
    kept = ~again.junk & (again.votes >= need)
    assert card["wild"]["cifar_test"]["coverage"] == pytest.approx(kept.mean(), abs=1e-4)


@pytest.mark.slow
def test_executors_run_the_network_and_tag_what_the_model_says(cnn_model, cifar_sample, tmp_path):
    model, card, tagger, _ = cnn_model
    test = read_local(cifar_sample).test
    shards = tmp_path / "shards"
    make_sample(Storage(), test.pixels[:3000], test.labels[:3000], str(shards), shard_size=1000)
    out = tmp_path / "tags"
    result = spark_submit(TAG, "--model", str(model), "--input", str(shards), "--output", str(out),
                          "--block-size", "1000", master="local[2]")
    assert result.returncode == 0, result.stderr[-4000:]
    lines = [json.loads(line) for part in sorted(out.glob("block=*/part-*")) for line in part.read_text().splitlines()]
    expected = tagger.predict(test.pixels[:3000], vectors=False)
    need = min_votes_for(MIN_AGREEMENT, tagger.n_trees)
    kept = np.flatnonzero(~expected.junk & (expected.votes >= need))
    assert sorted(line["id"] for line in lines) == kept.tolist()
    for line in lines:
        assert line["vote_counts"] == expected.vote_counts[line["id"]].tolist()
        assert line["expected_precision"] == card["expected_precision"][line["tag"]][line["votes"]]
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    assert manifest["totals"]["kept"] == len(lines) and manifest["features"] == "cnn8-16-16"


def test_a_broken_network_file_stops_tagging_before_any_output(cnn_model, cifar_sample, tmp_path):
    model, _, _, _ = cnn_model
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in model.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    arrays = dict(np.load(io.BytesIO((model / FEATURES_FILE).read_bytes())))
    arrays["network"] = arrays["network"][: len(arrays["network"]) // 3]
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    (broken / FEATURES_FILE).write_bytes(buffer.getvalue())
    shards = tmp_path / "shards"
    make_sample(Storage(), read_local(cifar_sample).test.pixels[:100], None, str(shards), shard_size=100)
    out = tmp_path / "tags"
    result = spark_submit(TAG, "--model", str(broken), "--input", str(shards), "--output", str(out),
                          master="local[2]")
    assert result.returncode == 2
    assert f"{broken}/{FEATURES_FILE}: not a usable network" in result.stdout + result.stderr
    assert not out.exists()
