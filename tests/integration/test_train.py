"""jobs/train.py end to end: spark-submit on local[2] and on the standalone cluster (from HDFS), the
card against a recount from the saved forest, accuracy against scikit-learn, and bad input.

The raw-pixel model (--features pixels) is recounted tree by tree and compared with scikit-learn;
the learned k-means model is recounted from its saved features and forest; the default (cnn) model,
trained on the cluster from HDFS, is checked in test_cnn_pipeline.py."""

from __future__ import annotations

import io
import json
import tarfile
import time

import numpy as np
import pytest

from jobs import train
from tests.helpers import ROOT, SAMPLE_MODEL_SEED, spark_submit
from tinytags.core import forest as forest_io
from tinytags.core.cifar import CifarError
from tinytags.core.contract import CARD_FILE, CLASSES, FOREST_FILE
from tinytags.core.features import FEATURES_FILE
from tinytags.core.junk import junk_images
from tinytags.core.tagger import Tagger
from tinytags.io.cifar_files import read_local
from tinytags.pipeline import train as train_pipeline

TRAIN = ROOT / "jobs" / "train.py"
SEED = SAMPLE_MODEL_SEED


def _archive_batch(archive_path, name):
    """Pixels and labels of one batch, read straight from the archive (not through tinytags.core.cifar)."""
    with tarfile.open(archive_path) as archive:
        raw = np.frombuffer(archive.extractfile(f"cifar-10-batches-bin/{name}").read(), np.uint8)
    records = raw.reshape(-1, 3073)
    return records[:, 1:], records[:, 0].astype(int)


def _walk(forest, tree, row):
    node = int(forest.roots[tree])
    while forest.leaf_class[node] < 0:
        node = int(forest.left[node] if row[forest.feature[node]] <= forest.threshold[node] else forest.right[node])
    return node


@pytest.fixture(scope="module")
def local_run(tmp_path_factory, cifar_sample):
    model = tmp_path_factory.mktemp("models") / "m"
    result = spark_submit(TRAIN, "--cifar", str(cifar_sample), "--model", str(model), "--seed", SEED,
                          "--features", "pixels", master="local[2]")
    assert result.returncode == 0, result.stderr[-4000:]
    return result, model, json.loads((model / CARD_FILE).read_text())


@pytest.fixture(scope="module")
def learned_run(tmp_path_factory, cifar_sample):
    """The learned k-means features (+ LDA) with the junk class."""
    model = tmp_path_factory.mktemp("models") / "learned"
    result = spark_submit(TRAIN, "--cifar", str(cifar_sample), "--model", str(model), "--seed", SEED,
                          "--features", "kmeans", master="local[2]")
    assert result.returncode == 0, result.stderr[-4000:]
    return result, model, json.loads((model / CARD_FILE).read_text())


@pytest.mark.slow
def test_local_run_writes_the_model_dir_and_says_what_it_does(local_run, cifar_sample):
    result, model, card = local_run
    assert sorted(p.name for p in model.iterdir()) == sorted(
        [CARD_FILE, FOREST_FILE, "confusion_matrix.png", "agreement.png", "precision_coverage.png"])
    for png in ("confusion_matrix.png", "agreement.png", "precision_coverage.png"):
        assert (model / png).read_bytes()[:4] == b"\x89PNG"
    forest = forest_io.load(model)
    assert card["version"] == forest.version and forest.n_trees == 10 and forest.depth <= 10
    assert card["classes"] == ["airplane", "automobile", "bird", "cat", "deer",
                               "dog", "frog", "horse", "ship", "truck"]
    assert card["params"].items() >= {"trees": 10, "max_depth": 10, "max_bins": 50, "impurity": "gini",
                                      "seed": int(SEED), "engine": "broadcast"}.items()
    assert (card["n_train"], card["n_test"]) == (10_000, 5_000)
    assert 0 < card["train_seconds"] < 300
    # Progress lines, then one summary paragraph. (spark-submit's PythonRunner sends the driver's
    # stderr to its stdout, so both arrive there.)
    for line in ("reading CIFAR-10", "read 10000 training and 5000 test images", "trained 10/10 trees",
                 "evaluating on 5000 test images", f"writing {model}"):
        assert line in result.stdout
    summary = result.stdout.strip().splitlines()[-1]
    assert summary.startswith("Trained 10 trees") and f"{card['test_accuracy']:.1%}" in summary
    # Nothing left beside the model dir.
    assert [p.name for p in model.parent.iterdir()] == ["m"]


@pytest.mark.slow
def test_card_numbers_match_a_recount_from_the_saved_forest(local_run, cifar_sample):
    _, model, card = local_run
    forest = forest_io.load(model)
    pixels, labels = _archive_batch(cifar_sample, "test_batch.bin")
    # Walk every tree image by image; break ties like the card says (leaf weights, then lower class).
    leaves = np.array([[_walk(forest, t, row) for t in range(forest.n_trees)] for row in pixels])
    votes = np.zeros((len(pixels), 10))
    weight = np.zeros((len(pixels), 10))
    for i in range(len(pixels)):
        for leaf in leaves[i]:
            votes[i, forest.leaf_class[leaf]] += 1
            weight[i, forest.leaf_class[leaf]] += forest.leaf_weight[leaf]
    predicted = np.array([max(range(10), key=lambda c: (votes[i, c], weight[i, c], -c)) for i in range(len(pixels))])
    top = votes[np.arange(len(pixels)), predicted]
    assert card["test_accuracy"] == round(float((predicted == labels).mean()), 4)
    confusion = np.zeros((10, 10), int)
    np.add.at(confusion, (labels, predicted), 1)
    assert card["confusion_matrix"] == confusion.tolist()
    for row in card["agreement"]:
        kept = top >= row["min_votes"]
        assert row["coverage"] == round(float(kept.mean()), 4)
        assert row["precision"] == (round(float((predicted[kept] == labels[kept]).mean()), 4) if kept.any() else None)
    cat = card["per_class"]["cat"]
    assert cat["recall"] == round(confusion[3, 3] / confusion[3].sum(), 4)
    assert cat["precision"] == round(confusion[3, 3] / confusion[:, 3].sum(), 4)


@pytest.mark.slow
def test_the_learned_model_dir_and_card_match_a_recount_from_its_saved_files(learned_run, cifar_sample):
    result, model, card = learned_run
    assert sorted(p.name for p in model.iterdir()) == sorted(
        [CARD_FILE, FOREST_FILE, FEATURES_FILE, "confusion_matrix.png", "agreement.png", "precision_coverage.png"])
    assert card["features"]["name"] == "kmeans256-lda" and card["features"]["junk_class"] == 10
    assert card["params"]["features"] == "kmeans" and "on kmeans256-lda features" in result.stdout
    tagger = Tagger.from_files((model / FOREST_FILE).read_bytes(), (model / FEATURES_FILE).read_bytes(), card)
    assert tagger.version == card["version"] != forest_io.load(model).version
    pixels, labels = _archive_batch(cifar_sample, "test_batch.bin")
    prediction = tagger.predict(pixels)
    correct = (prediction.label == labels) & ~prediction.junk
    assert card["test_accuracy"] == round(float(correct.mean()), 4)
    assert card["real_called_junk"] == round(float(prediction.junk.mean()), 4)
    votes = np.where(prediction.junk, 0, prediction.votes)
    for row in card["agreement"]:
        kept = votes >= row["min_votes"]
        assert row["coverage"] == round(float(kept.mean()), 4)
        assert row["precision"] == (round(float(correct[kept].mean()), 4) if kept.any() else None)
    for c, name in enumerate(CLASSES):  # the per-class table, recounted at every vote count
        for row in card["per_class_agreement"][name]:
            kept = (prediction.label == c) & (votes >= row["min_votes"])
            assert row["images"] == int(kept.sum())
            assert row["precision"] == (round(float((labels[kept] == c).mean()), 4) if kept.any() else None)
    # The learned features beat raw pixels by far on the same sample (raw pixels: about 33%).
    assert card["test_accuracy"] > 0.5
    junk = tagger.predict(junk_images(card["junk"]["images"], int(SEED) + 7))
    assert card["junk"]["tagged"] == round(float((~junk.junk & (junk.votes >= 4)).mean()), 4) <= 0.02


@pytest.mark.slow
def test_accuracy_matches_scikit_learns_same_size_forest(local_run, cifar_sample):
    from sklearn.ensemble import RandomForestClassifier

    _, _, card = local_run
    train_pixels, train_labels = _archive_batch(cifar_sample, "data_batch_1.bin")
    test_pixels, test_labels = _archive_batch(cifar_sample, "test_batch.bin")
    reference = RandomForestClassifier(n_estimators=10, max_depth=10, n_jobs=2, random_state=int(SEED))
    accuracy = (reference.fit(train_pixels, train_labels).predict(test_pixels) == test_labels).mean()
    assert abs(card["test_accuracy"] - accuracy) <= 0.02, (card["test_accuracy"], accuracy)
    assert card["test_accuracy"] > 0.28  # about 33% on this sample (bench/RESULTS.md)


@pytest.mark.integration
@pytest.mark.slow
def test_cluster_run_from_hdfs_reads_the_same_images_as_a_local_run(stack, cluster_model, learned_run):
    card, local = cluster_model["card"], learned_run[2]
    assert card["spark_master"] == stack["spark"]
    assert card["source"]["path"].startswith("hdfs://")
    assert card["params"]["features"] == "cnn" != local["params"]["features"]
    # The same archive, read through WebHDFS by the cluster and from disk by local[2].
    assert (card["n_train"], card["n_test"]) == (local["n_train"], local["n_test"]) == (10_000, 5_000)
    assert (card["source"]["format"], card["source"]["files"]) == (local["source"]["format"], local["source"]["files"])


@pytest.mark.integration
def test_hdfs_folder_reads_like_the_local_archive(stack, spark, hdfs_client, hdfs_dir, cifar_sample_dir,
                                                  cifar_sample):
    # The parent of cifar-10-batches-bin/, as a user who ran `hdfs dfs -put` on the extracted folder.
    hdfs_client.upload(f"{hdfs_dir}/cifar/cifar-10-batches-bin", str(cifar_sample_dir))
    remote = train_pipeline.read_cifar(spark, f"{stack['hdfs']}{hdfs_dir}/cifar")
    local = read_local(cifar_sample)
    assert remote.classes == local.classes
    np.testing.assert_array_equal(remote.train.pixels, local.train.pixels)
    np.testing.assert_array_equal(remote.test.labels, local.test.labels)
    with pytest.raises(CifarError, match=rf"{hdfs_dir}/nothing: no such file or folder"):
        train_pipeline.read_cifar(spark, f"{stack['hdfs']}{hdfs_dir}/nothing")


# --- bad input: clear errors, and no model dir that looks valid -----------------------------------


def test_missing_source_fails_clearly_before_spark_starts(tmp_path, capsys):
    model = tmp_path / "m"
    assert train.main(["--cifar", str(tmp_path / "absent.tar.gz"), "--model", str(model)]) == 2
    assert (f"error: {tmp_path / 'absent.tar.gz'}: no such file or folder; expected a CIFAR-10 archive"
            in capsys.readouterr().err)
    assert list(tmp_path.iterdir()) == []


@pytest.fixture()
def truncated_archive(tmp_path, cifar_sample):
    path = tmp_path / "truncated.tar.gz"
    with tarfile.open(cifar_sample) as source, tarfile.open(path, "w:gz") as target:
        for member in source.getmembers():
            data = source.extractfile(member).read() if member.isfile() else None
            if member.name.endswith("data_batch_1.bin"):
                data = data[:-1000]
                member.size = len(data)
            target.addfile(member, None if data is None else io.BytesIO(data))
    return path


def test_a_failed_run_keeps_the_previous_model(spark, tmp_path, truncated_archive, local_run):
    _, good_model, card = local_run
    model = tmp_path / "m"
    model.mkdir()
    for item in good_model.iterdir():
        (model / item.name).write_bytes(item.read_bytes())
    args = train.parse_args(["--cifar", str(truncated_archive), "--model", str(model)])
    with pytest.raises(CifarError, match=r"truncated.tar.gz:cifar-10-batches-bin/data_batch_1.bin: "
                                         r"30729000 bytes is not a whole number of 3073-byte records"):
        train_pipeline.run(spark, args, train_pipeline.TreeParams(), model, time.monotonic())
    assert json.loads((model / CARD_FILE).read_text())["version"] == card["version"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m", "truncated.tar.gz"]


def test_writing_fails_midway_leaves_no_partial_model(tmp_path, monkeypatch, local_run):
    forest = forest_io.load(local_run[1])

    def broken_plot(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(train_pipeline.training, "plot_agreement", broken_plot)
    with pytest.raises(OSError, match="disk full"):
        train_pipeline.write_model_dir(tmp_path / "m", Tagger(forest), local_run[2], tuple(local_run[2]["classes"]))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda p: p.write_text("x"), "is a file; expected a folder"),
        (lambda p: (p.mkdir(), (p / "notes.txt").write_text("mine")), "holds no model .* refusing to replace it"),
    ],
)
def test_model_dir_that_is_something_else_is_refused(tmp_path, setup, message):
    target = tmp_path / "m"
    setup(target)
    with pytest.raises(train_pipeline.TrainError, match=message):
        train_pipeline.check_model_dir(target)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--model", "/tmp/x"], "--cifar required"),
        (["--cifar", "a", "--model", "b", "--trees", "0"], "--trees must be between 1 and 1000"),
        (["--cifar", "a", "--model", "b", "--max-bins", "300"], "--max-bins must be between 2 and 256"),
    ],
)
def test_bad_flags(argv, message, capsys, monkeypatch):
    monkeypatch.delenv("TINYTAGS_CIFAR", raising=False)
    monkeypatch.delenv("TINYTAGS_MODEL_DIR", raising=False)
    with pytest.raises(SystemExit):
        train.parse_args(argv)
    assert message in capsys.readouterr().err


def test_engine_choice_by_size(cifar_sample):
    pixels = read_local(cifar_sample).train.pixels  # 10,000 x 3072 bytes = 30.7 MB
    assert train_pipeline.choose_engine("auto", pixels, 100) == "broadcast"
    assert train_pipeline.choose_engine("auto", pixels, 10) == "spark-ml"
    assert train_pipeline.choose_engine("spark-ml", pixels, 100) == "spark-ml"
