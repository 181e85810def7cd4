"""tinytags/core/training.py: binning, the histogram tree grower against brute force and an independent tree
walk, the Spark ML conversion against Spark's own trees, tie-breaking, and the card's figures
against a recount."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tinytags.core.forest import Evaluator, Forest, count_votes
from tinytags.core.training import (
    TreeParams,
    agreement_table,
    bin_pixels,
    evaluate,
    fit_bins,
    forest_from_spark_ml,
    grow_tree,
    grow_trees,
    model_card,
    plot_agreement,
    plot_confusion,
    summary,
    tree_seed,
)


def walk(forest: Forest, tree: int, row: np.ndarray) -> int:
    """The class one tree votes for, by following its nodes one at a time (no vectorisation)."""
    node = int(forest.roots[tree])
    while forest.leaf_class[node] < 0:
        go_left = float(row[forest.feature[node]]) <= float(forest.threshold[node])
        node = int(forest.left[node] if go_left else forest.right[node])
    return int(forest.leaf_class[node])


def walk_leaf(forest: Forest, tree: int, row: np.ndarray) -> int:
    node = int(forest.roots[tree])
    while forest.leaf_class[node] < 0:
        node = int(forest.left[node] if row[forest.feature[node]] <= forest.threshold[node] else forest.right[node])
    return node


@pytest.fixture(scope="module")
def learnable():
    """Pixels whose class depends on a few of them, plus noise: trees have structure to find."""
    rng = np.random.default_rng(5)
    pixels = rng.integers(0, 256, (1500, 3072), dtype=np.uint8)
    score = pixels[:, 10].astype(int) + pixels[:, 2000] // 2 + rng.integers(0, 60, 1500)
    labels = np.minimum(score // 40, 9)
    return pixels, labels


# --- bins -------------------------------------------------------------------------------------


@pytest.mark.parametrize("max_bins", [2, 7, 50, 255])
def test_bins_are_lower_quantiles_and_bin_le_k_means_pixel_le_cut_k(learnable, max_bins):
    pixels, _ = learnable
    bins = fit_bins(pixels, max_bins)
    assert bins.cuts.shape == (3072, max_bins - 1)
    expected = np.quantile(pixels, np.linspace(0, 1, max_bins + 1)[1:-1], axis=0, method="lower").T
    np.testing.assert_array_equal(bins.cuts, expected)
    for f in (0, 10, 3071):
        for value in range(256):
            for k in range(max_bins - 1):
                assert (bins.lookup[f, value] <= k) == (value <= bins.cuts[f, k])


def test_256_bins_give_every_pixel_value_its_own_bin(learnable):
    bins = fit_bins(learnable[0], 256)
    assert (bins.lookup == np.arange(256)).all()


@pytest.mark.parametrize("max_bins", [1, 257])
def test_max_bins_out_of_range(learnable, max_bins):
    with pytest.raises(ValueError, match="max_bins must be between 2 and 256"):
        fit_bins(learnable[0], max_bins)


def test_bin_pixels_is_the_lookup(learnable):
    pixels, _ = learnable
    bins = fit_bins(pixels, 50)
    binned = bin_pixels(pixels[:20], bins)
    assert binned.shape == (20, 3072)
    for i, f in [(0, 0), (3, 10), (19, 3071)]:
        assert binned[i, f] == bins.lookup[f, pixels[i, f]]


# --- growing trees ----------------------------------------------------------------------------


def _gain(labels, goes_left, impurity):
    def impurity_of(y):
        p = np.bincount(y, minlength=10) / len(y)
        return 1 - (p ** 2).sum() if impurity == "gini" else -(p[p > 0] * np.log(p[p > 0])).sum()
    left, right = labels[goes_left], labels[~goes_left]
    if not len(left) or not len(right):
        return -np.inf
    n = len(labels)
    return impurity_of(labels) - (len(left) * impurity_of(left) + len(right) * impurity_of(right)) / n


@pytest.mark.parametrize("impurity", ["gini", "entropy"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_root_split_is_the_brute_force_best(impurity, seed):
    rng = np.random.default_rng(seed)
    pixels = np.zeros((60, 3072), np.uint8)
    pixels[:, :6] = rng.integers(0, 12, (60, 6)) * 20
    labels = (pixels[:, 1] > 100).astype(int) + (pixels[:, 4] > 60) + rng.integers(0, 2, 60)
    bins = fit_bins(pixels, 256)
    params = TreeParams(max_depth=1, features_per_node=3072, bootstrap=False, impurity=impurity,
                        relabel_leaves=False)
    tree = grow_tree(bin_pixels(pixels, bins), labels, 10, bins, params, seed)
    best = max(_gain(labels, pixels[:, f] <= t, impurity) for f in range(6) for t in range(256))
    root = tree.roots[0]
    chosen = _gain(labels, pixels[:, tree.feature[root]] <= tree.threshold[root], impurity)
    assert chosen == pytest.approx(best, abs=1e-12)
    # Its leaves vote for the majority of their side.
    left_side = pixels[:, tree.feature[root]] <= tree.threshold[root]
    assert tree.leaf_class[tree.left[root]] == np.bincount(labels[left_side]).argmax()
    assert tree.leaf_class[tree.right[root]] == np.bincount(labels[~left_side]).argmax()


def test_vote_evaluator_matches_an_independent_walk_of_each_tree(learnable):
    pixels, labels = learnable
    bins = fit_bins(pixels, 50)
    forest = grow_trees(bin_pixels(pixels, bins), labels, 10, bins, TreeParams(max_depth=6), 3, range(4))
    test = np.random.default_rng(9).integers(0, 256, (150, 3072), dtype=np.uint8)
    per_tree = Evaluator(forest).tree_predictions(test)
    expected = np.array([[walk(forest, t, row) for t in range(forest.n_trees)] for row in test])
    np.testing.assert_array_equal(per_tree, expected)
    votes = Evaluator(forest).votes(test)
    for i in range(0, 150, 17):
        assert votes[i].tolist() == [int((expected[i] == c).sum()) for c in range(10)]


def test_leaves_vote_for_the_majority_of_all_training_images_reaching_them(learnable):
    pixels, labels = learnable
    bins = fit_bins(pixels, 50)
    forest = grow_trees(bin_pixels(pixels, bins), labels, 10, bins, TreeParams(max_depth=5), 11, range(2))
    for t in range(forest.n_trees):
        reached = np.array([walk_leaf(forest, t, row) for row in pixels])
        for leaf in np.unique(reached):
            counts = np.bincount(labels[reached == leaf], minlength=10)
            assert forest.leaf_class[leaf] == counts.argmax()
            assert forest.leaf_weight[leaf] == pytest.approx(counts.max() / counts.sum(), rel=1e-6)


def test_trees_respect_max_depth_and_learn(learnable):
    pixels, labels = learnable
    bins = fit_bins(pixels, 50)
    forest = grow_trees(bin_pixels(pixels, bins), labels, 10, bins,
                        TreeParams(max_depth=4, features_per_node=3072), 0, range(3))
    assert forest.depth <= 4
    _, predicted, _ = Evaluator(forest).predict(pixels)
    majority_share = np.bincount(labels).max() / labels.size
    assert (predicted == labels).mean() > majority_share + 0.2


def test_same_seed_same_tree_and_each_index_its_own_tree(learnable):
    pixels, labels = learnable
    bins = fit_bins(pixels, 50)
    binned = bin_pixels(pixels, bins)
    one = grow_trees(binned, labels, 10, bins, TreeParams(max_depth=5), 7, [0, 1])
    again = grow_trees(binned, labels, 10, bins, TreeParams(max_depth=5), 7, [0, 1])
    assert one.version == again.version
    separately = [grow_trees(binned, labels, 10, bins, TreeParams(max_depth=5), 7, [i]) for i in (0, 1)]
    np.testing.assert_array_equal(
        Evaluator(one).tree_predictions(pixels[:50]),
        np.hstack([Evaluator(f).tree_predictions(pixels[:50]) for f in separately]),
    )
    assert tree_seed(7, 0) != tree_seed(7, 1) != tree_seed(8, 1)


def test_a_pure_training_set_gives_a_single_leaf():
    pixels = np.random.default_rng(0).integers(0, 256, (40, 3072), dtype=np.uint8)
    labels = np.full(40, 6)
    bins = fit_bins(pixels, 50)
    tree = grow_tree(bin_pixels(pixels, bins), labels, 10, bins, TreeParams(), 0)
    assert tree.leaf_class.tolist() == [6] and tree.depth == 0


@pytest.mark.parametrize("bad, message", [({"impurity": "variance"}, "impurity must be one of"),
                                          ({"max_depth": -1}, "max_depth must be 0 or more")])
def test_tree_params_are_checked(bad, message):
    with pytest.raises(ValueError, match=message):
        TreeParams(**bad)


# --- tie-breaking -------------------------------------------------------------------------------


def _stump_forest(classes: list[int], weights: list[float]) -> Forest:
    """One-leaf trees voting for the given classes with the given leaf weights."""
    n = len(classes)
    own = np.arange(n, dtype=np.int32)
    return Forest(feature=np.zeros(n, np.int32), threshold=np.zeros(n, np.float32), left=own, right=own,
                  leaf_class=np.array(classes, np.int16), roots=own, n_classes=10,
                  leaf_weight=np.array(weights, np.float32))


@pytest.mark.parametrize(
    "classes, weights, expected_label, expected_top",
    [
        ([3, 3, 1, 1], [0.2, 0.2, 0.9, 0.9], 1, 2),     # tie on votes: purer leaves win
        ([3, 3, 1, 1], [0.9, 0.9, 0.2, 0.2], 3, 2),
        ([3, 3, 3, 1], [0.1, 0.1, 0.1, 1.0], 3, 3),     # never overturns a vote count
        ([5, 2, 2, 5], [0.5, 0.5, 0.5, 0.5], 2, 2),     # tie on both: lower class index
    ],
)
def test_predict_breaks_vote_ties_by_leaf_weight_only(classes, weights, expected_label, expected_top):
    counts, label, top = Evaluator(_stump_forest(classes, weights)).predict(np.zeros((1, 3072), np.uint8))
    assert counts[0].tolist() == count_votes(np.array([classes]), 10)[0].tolist()
    assert (label[0], top[0]) == (expected_label, expected_top)


def test_predict_without_leaf_weights_ties_to_the_lower_class():
    forest = _stump_forest([4, 4, 2, 2], [0.0] * 4)
    forest = Forest(**{**forest.__dict__, "leaf_weight": None})
    _, label, top = Evaluator(forest).predict(np.zeros((1, 3072), np.uint8))
    assert (label[0], top[0]) == (2, 2)


# --- Spark ML's trees -----------------------------------------------------------------------------


def test_forest_from_a_spark_ml_node_table():
    def node(i, prediction, left=-1, right=-1, feature=0, threshold=None, stats=(1.0, 1.0)):
        split = {"featureIndex": feature, "leftCategoriesOrThreshold": [threshold] if threshold is not None else [],
                 "numCategories": -1}
        return {"id": i, "prediction": prediction, "impurity": 0.0, "impurityStats": list(stats),
                "rawCount": 1, "gain": 0.0, "leftChild": left, "rightChild": right, "split": split}
    rows = [  # tree 0: x[7] <= 99.5 ? class 2 : (x[9] <= 10.5 ? class 4 : class 1); tree 1: class 8
        {"treeID": 0, "nodeData": node(0, 2.0, left=1, right=2, feature=7, threshold=99.5)},
        {"treeID": 0, "nodeData": node(1, 2.0, stats=(0, 0, 3, 1))},
        {"treeID": 0, "nodeData": node(2, 1.0, left=3, right=4, feature=9, threshold=10.5)},
        {"treeID": 0, "nodeData": node(3, 4.0)},
        {"treeID": 0, "nodeData": node(4, 1.0)},
        {"treeID": 1, "nodeData": node(0, 8.0)},
    ]
    forest = forest_from_spark_ml(rows, 2, 10)
    pixels = np.zeros((3, 3072), np.uint8)
    pixels[1, 7] = 100
    pixels[2, 7], pixels[2, 9] = 100, 11
    assert Evaluator(forest).tree_predictions(pixels).tolist() == [[2, 8], [4, 8], [1, 8]]
    assert forest.leaf_weight[1] == pytest.approx(0.75)
    with pytest.raises(Exception, match="expected 0..2"):
        forest_from_spark_ml(rows, 3, 10)


@pytest.mark.slow
def test_spark_ml_trees_convert_to_the_same_votes(spark, learnable):
    from pyspark.ml.classification import RandomForestClassifier
    from pyspark.ml.linalg import Vectors

    from tinytags.pipeline.train import spark_ml_forest

    pixels, labels = learnable
    pixels, labels = pixels[:300, :64].copy(), labels[:300]  # 64 features keep Spark quick
    frame = spark.createDataFrame(
        [(float(y), Vectors.dense(row.astype(float))) for row, y in zip(pixels, labels)], ["label", "features"])
    model = RandomForestClassifier(numTrees=3, maxDepth=4, maxBins=16, seed=1).fit(frame)
    forest = spark_ml_forest(spark, model, 10)
    ours = Evaluator(forest).tree_predictions(np.pad(pixels, ((0, 0), (0, 3072 - 64))))
    for t, tree in enumerate(model.trees):  # each Spark tree's own predict, image by image
        theirs = [int(tree.predict(Vectors.dense(row.astype(float)))) for row in pixels[:80]]
        assert ours[:80, t].tolist() == theirs


# --- the card's figures -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def voted():
    rng = np.random.default_rng(21)
    per_tree = rng.integers(0, 10, (500, 7))
    labels = np.where(rng.random(500) < 0.5, per_tree[:, 0], rng.integers(0, 10, 500))
    counts = count_votes(per_tree, 10)
    predicted = counts.argmax(axis=1)
    return counts, predicted, labels


def test_card_figures_match_a_recount(voted):
    counts, predicted, labels = voted
    classes = tuple(f"c{i}" for i in range(10))
    figures = evaluate(counts, predicted, labels, classes)
    n = len(labels)
    assert figures["test_accuracy"] == round(sum(int(p == y) for p, y in zip(predicted, labels)) / n, 4)
    confusion = [[0] * 10 for _ in range(10)]
    for y, p in zip(labels, predicted):
        confusion[y][p] += 1
    assert figures["confusion_matrix"] == confusion
    for c, name in enumerate(classes):
        tp = confusion[c][c]
        predicted_c = sum(confusion[r][c] for r in range(10))
        actual_c = sum(confusion[c])
        precision = tp / predicted_c if predicted_c else 0.0
        recall = tp / actual_c if actual_c else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        assert figures["per_class"][name] == {"precision": round(precision, 4), "recall": round(recall, 4),
                                              "f1": round(f1, 4), "support": actual_c}
    assert [row["min_votes"] for row in figures["agreement"]] == list(range(1, 8))
    for row in figures["agreement"]:
        kept = [i for i in range(n) if counts[i][predicted[i]] >= row["min_votes"]]
        assert row["images"] == len(kept)
        assert row["coverage"] == round(len(kept) / n, 4)
        right = sum(int(predicted[i] == labels[i]) for i in kept)
        assert row["precision"] == (round(right / len(kept), 4) if kept else None)
        assert row["min_agreement"] == round(row["min_votes"] / 7, 4)


def test_agreement_with_no_image_at_a_level_has_no_precision():
    table = agreement_table(np.array([1, 2]), np.array([1, 2]), np.array([1, 0]), 3)
    assert [(r["coverage"], r["precision"]) for r in table] == [(1.0, 0.5), (0.5, 0.0), (0.0, None)]


def test_card_summary_and_plots(voted, tmp_path):
    counts, predicted, labels = voted
    classes = tuple(f"c{i}" for i in range(10))
    figures = evaluate(counts, predicted, labels, classes)
    forest = _stump_forest([1, 2, 3], [1, 1, 1])
    card = model_card(
        forest=forest, figures=figures, classes=classes,
        params={"trees": 7, "max_depth": 10, "max_bins": 50, "impurity": "gini", "seed": 1, "engine": "broadcast"},
        source={"path": "x.tar.gz", "format": "binary", "files": []}, n_train=9, n_test=500,
        timings={"read": 1.0, "train": 2.5, "evaluate": 0.1, "job": 4.0}, spark_master="local[2]",
    )
    for field in ("classes", "params", "n_train", "n_test", "train_seconds", "test_accuracy", "per_class",
                  "confusion_matrix", "agreement", "version", "format"):
        assert field in card
    assert card["version"] == forest.version and card["train_seconds"] == 2.5
    json.dumps(card)  # plain JSON types only
    text = summary(card, "/models/m")
    cut = next(r for r in figures["agreement"] if r["min_votes"] == 3)  # 3/7 is the first >= 40%
    assert "at ≥ 3 of 7 votes" in text and f"{cut['coverage']:.1%}" in text and "/models/m" in text
    for plot, path in ((plot_confusion, tmp_path / "c.png"), (plot_agreement, tmp_path / "a.png")):
        plot(figures["confusion_matrix"] if plot is plot_confusion else figures["agreement"],
             *((classes,) if plot is plot_confusion else ()), path)
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000


def test_auto_none_weight_is_the_wild_prior_for_cnn_with_none_photos_only():
    from tinytags.core.labelled import NONE_LABEL, Labelled
    from tinytags.pipeline.train import forest_none_weight

    labels = np.array([0] * 700 + [NONE_LABEL] * 300)  # 30% none; a 50% mix asks 700/300 times each
    photos = Labelled(np.zeros((2, 3072), np.uint8), np.array([1, NONE_LABEL]), np.zeros(2, int), ("a",), "x")
    no_none = Labelled(np.zeros((1, 3072), np.uint8), np.array([1]), np.zeros(1, int), ("a",), "x")
    assert forest_none_weight("auto", labels, NONE_LABEL, photos, 0.5, "cnn") == pytest.approx(700 / 300)
    assert forest_none_weight("auto", labels, NONE_LABEL, photos, 0.5, "kmeans") == 1.0
    assert forest_none_weight("auto", labels, NONE_LABEL, None, 0.5, "cnn") == 1.0
    assert forest_none_weight("auto", labels, NONE_LABEL, no_none, 0.5, "cnn") == 1.0
    assert forest_none_weight("2.5", labels, NONE_LABEL, None, 0.5, "kmeans") == 2.5
    assert forest_none_weight("2.5", labels, None, photos, 0.5, "pixels") == 1.0  # no none class at all


@pytest.mark.parametrize("value", ["0.5", "heavy", "101"])
def test_the_train_job_refuses_a_none_weight_it_cannot_use(value, capsys):
    from jobs import train as train_job

    with pytest.raises(SystemExit) as stop:
        train_job.parse_args(["--cifar", "c", "--model", "m", "--none-weight", value])
    assert stop.value.code == 2
    assert f"--none-weight takes auto or a number between 1 and 100, got {value!r}" in capsys.readouterr().err


def test_the_train_job_takes_auto_or_a_number_as_none_weight():
    from jobs import train as train_job

    assert train_job.parse_args(["--cifar", "c", "--model", "m"]).none_weight == "auto"
    assert train_job.parse_args(["--cifar", "c", "--model", "m", "--none-weight", "3"]).none_weight == "3"
