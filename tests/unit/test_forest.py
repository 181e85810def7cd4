"""tinytags/core/forest.py: the flat forest format and its vectorised evaluator vs scikit-learn's own trees."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.ensemble import RandomForestClassifier

from tests.helpers import forest_from_sklearn
from tinytags.core import forest as forest_module
from tinytags.core.forest import Evaluator, ModelError, count_votes, top_votes


@pytest.fixture(scope="module")
def fitted():
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (600, 3072), dtype=np.uint8)
    # Labels that depend on a few pixels, so the trees have real structure to learn.
    labels = (pixels[:, 5].astype(int) + pixels[:, 1000] + pixels[:, 2047]) % 10
    model = RandomForestClassifier(n_estimators=7, max_depth=8, random_state=0).fit(pixels, labels)
    return model, rng.integers(0, 256, (400, 3072), dtype=np.uint8)


def test_each_tree_votes_like_scikit_learns_own_predict(fitted):
    model, pixels = fitted
    evaluator = Evaluator(forest_from_sklearn(model.estimators_, 10))
    ours = evaluator.tree_predictions(pixels)
    for t, tree in enumerate(model.estimators_):
        expected = model.classes_[tree.predict(pixels.astype(np.float32)).astype(int)]
        np.testing.assert_array_equal(ours[:, t], expected)


def test_vote_counts_match_a_recount_and_sum_to_trees(fitted):
    model, pixels = fitted
    evaluator = Evaluator(forest_from_sklearn(model.estimators_, 10))
    votes = evaluator.votes(pixels)
    per_tree = np.stack([model.classes_[t.predict(pixels.astype(np.float32)).astype(int)]
                         for t in model.estimators_], axis=1)
    for i in range(0, len(pixels), 37):
        assert votes[i].tolist() == [int((per_tree[i] == c).sum()) for c in range(10)]
    assert (votes.sum(axis=1) == 7).all()


def test_depth_is_the_deepest_tree(fitted):
    model, _ = fitted
    forest = forest_from_sklearn(model.estimators_, 10)
    assert forest.depth == max(t.get_depth() for t in model.estimators_)


def test_concat_keeps_every_tree_in_order(fitted):
    model, pixels = fitted
    a = forest_from_sklearn(model.estimators_[:3], 10)
    b = forest_from_sklearn(model.estimators_[3:], 10)
    whole = forest_module.concat([a, b])
    np.testing.assert_array_equal(
        Evaluator(whole).tree_predictions(pixels),
        Evaluator(forest_from_sklearn(model.estimators_, 10)).tree_predictions(pixels),
    )


def test_save_load_round_trip_keeps_the_version(fitted, tmp_path):
    model, pixels = fitted
    forest = forest_from_sklearn(model.estimators_, 10)
    forest_module.save(forest, tmp_path)
    loaded = forest_module.load(tmp_path)
    assert loaded.version == forest.version
    np.testing.assert_array_equal(Evaluator(loaded).votes(pixels), Evaluator(forest).votes(pixels))
    other = forest_from_sklearn(model.estimators_[:6], 10)
    assert other.version != forest.version


def test_load_names_a_missing_or_foreign_model(tmp_path):
    with pytest.raises(ModelError, match="forest.npz is missing"):
        forest_module.load(tmp_path)
    np.savez(tmp_path / "forest.npz", format=np.array("tinytags-forest/0"))
    with pytest.raises(ModelError, match="expected 'tinytags-forest/1'"):
        forest_module.load(tmp_path)
    (tmp_path / "forest.npz").write_bytes(b"not a zip")
    with pytest.raises(ModelError, match="not a readable forest"):
        forest_module.load(tmp_path)


@pytest.mark.parametrize(
    "predictions, expected_counts, expected_label, expected_top",
    [
        ([[3, 3, 1]], [0, 1, 0, 2, 0, 0, 0, 0, 0, 0], 3, 2),
        ([[9, 9, 9]], [0] * 9 + [3], 9, 3),
        ([[2, 5, 0]], [1, 0, 1, 0, 0, 1, 0, 0, 0, 0], 0, 1),  # a tie goes to the lowest class
    ],
)
def test_count_and_top_votes(predictions, expected_counts, expected_label, expected_top):
    counts = count_votes(np.array(predictions), 10)
    assert counts[0].tolist() == expected_counts
    label, top = top_votes(counts)
    assert (label[0], top[0]) == (expected_label, expected_top)
