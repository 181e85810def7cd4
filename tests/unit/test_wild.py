"""Wild figures: the mix table and calibration, checked against a corpus built for real by repeating the
none photos (an independent path), and the held-out predictions a train run saves."""

from __future__ import annotations

import numpy as np
import pytest

from tinytags.core import wild
from tinytags.core.contract import CLASSES

TREES = 10


def _predictions(n: int, seed: int, none: bool):
    rng = np.random.default_rng(seed)
    label = rng.integers(0, len(CLASSES), n)
    votes = rng.integers(1, TREES + 1, n)
    junk = rng.random(n) < 0.1
    truth = np.full(n, len(CLASSES)) if none else np.where(rng.random(n) < 0.6, label, rng.integers(0, 10, n))
    return label, votes, junk, truth


def _plain_precision(label, votes, junk, truth, c: int, v: int) -> float | None:
    cell = ~junk & (label == c) & (votes == v)
    if cell.sum() < wild.MIN_CELL_IMAGES:
        cell = ~junk & (label == c) & (votes >= v)
    return round(float((truth[cell] == c).mean()), 4) if cell.any() else None


@pytest.mark.parametrize("n_pos, n_none, share, copies", [(3000, 1500, 0.5, 2), (2000, 2000, 0.75, 3),
                                                          (4000, 1000, 0.2, 1)])
def test_the_mix_table_equals_precision_on_a_corpus_with_the_none_photos_repeated(n_pos, n_none, share, copies):
    pos = _predictions(n_pos, 1, none=False)
    none = _predictions(n_none, 2, none=True)
    assert wild.none_weight(n_pos, n_none, share) == pytest.approx(copies)
    table = wild.mix_precision_table(pos, none[:3], share, CLASSES, TREES)
    corpus = [np.concatenate([p] + [n] * copies) for p, n in zip(pos, none)]
    for c, name in enumerate(CLASSES):
        for v in range(TREES + 1):
            # The cell rule counts images, not weights, so the pooled fallback can differ only where a
            # cell is thin; compare where both paths use the exact cell.
            exact_pos = (~pos[2] & (pos[0] == c) & (pos[1] == v)).sum() + (~none[2] & (none[0] == c) & (none[1] == v)).sum()
            if exact_pos >= wild.MIN_CELL_IMAGES and (~corpus[2] & (corpus[0] == c) & (corpus[1] == v)).sum() >= wild.MIN_CELL_IMAGES:
                assert table[name][v] == pytest.approx(_plain_precision(*corpus, c, v), abs=1e-4), (name, v)


def test_calibration_promises_what_a_calibrated_table_measures():
    pos = _predictions(3000, 3, none=False)
    none = _predictions(1500, 4, none=True)
    table = wild.mix_precision_table(pos, none[:3], 0.5, CLASSES, TREES)
    lookup = np.array([[np.nan if x is None else x for x in table[name]] for name in CLASSES])
    result = wild.calibration(lookup, pos, none[:3], 0.5, 4, CLASSES)
    assert result["overall"]["tags"] == int((~pos[2] & (pos[1] >= 4)).sum() + (~none[2] & (none[1] >= 4)).sum())
    # Built from the same images, the table's promise matches its measurement (up to the thin-cell rule).
    assert result["overall"]["expected"] == pytest.approx(result["overall"]["measured"], abs=0.02)
    for name in CLASSES:
        row = result["per_tag"][name]
        assert row["expected"] == pytest.approx(row["measured"], abs=0.05), name
    # A table that promises 90% everywhere is caught.
    proud = wild.calibration(np.full_like(lookup, 0.9), pos, none[:3], 0.5, 4, CLASSES)
    assert proud["overall"]["expected"] == pytest.approx(0.9)
    assert proud["overall"]["measured"] < 0.5


def test_figures_and_capture_count_what_is_tagged():
    label = np.array([0, 0, 1, 2, 2, 2])
    votes = np.array([3, 4, 10, 4, 5, 1])
    junk = np.array([False, False, False, True, False, False])
    truth = np.array([0, 1, 1, 2, 2, 2])
    assert wild.positives_figures(label, votes, junk, truth, 4) == {"images": 6, "coverage": 0.5, "precision": 0.6667}
    assert wild.none_figures(votes, junk, 4) == {"images": 6, "tagged": 0.5}
    capture = wild.none_capture(label, votes, junk, CLASSES, TREES)
    assert capture["airplane"][:5] == [0.3333, 0.3333, 0.3333, 0.1667, 0.0]
    assert capture["bird"][3:6] == [0.1667, 0.1667, 0.0]
    with pytest.raises(ValueError, match="wild share"):
        wild.none_weight(10, 10, 1.0)


def test_the_stats_page_figures_take_the_cards_wild_tables_at_the_rule():
    from webapp.model import wild_figures

    trees = 10
    card = {"params": {"trees": trees},
            "agreement": [{"min_votes": v, "coverage": 0.5, "precision": 0.5} for v in range(1, trees + 1)],
            "expected_precision": {name: [round(0.05 * v, 4) for v in range(trees + 1)] for name in CLASSES},
            "expected_precision_cifar": {name: [0.9] * (trees + 1) for name in CLASSES},
            "wild": {"share": 0.5, "min_votes": 4, "holdout_kinds": ["pizza", 7],
                     "cifar_test": {"images": 5000, "coverage": 0.93, "precision": 0.8, "called_none": 0.02},
                     "photos_positive": {"images": 1000, "coverage": 0.6, "precision": 0.85},
                     "none_seen": {"images": 2000, "tagged": 0.03}, "none_unseen": {"images": 0},
                     "none_capture": {name: [0.1 * k for k in range(1, trees + 1)] for name in CLASSES},
                     "at_rule": {"mix": {"cat": 0.7}, "positives": {"cat": 0.8}}}}
    figures = wild_figures(card)
    assert [row["key"] for row in figures["sets"]] == ["cifar_test", "photos_positive", "none_seen"]
    assert figures["sets"][2]["tagged"] == 0.03 and figures["kinds"] == ["pizza"]
    cat = next(row for row in figures["tags"] if row["tag"] == "cat")
    # At the rule (4 votes): the card's at-rule precision on the mix and alone, capture at ">= 4" (index 3).
    assert cat == {"tag": "cat", "mix": 0.7, "cifar": 0.8, "captured": pytest.approx(0.4)}
    assert wild_figures({"params": {"trees": 10}}) is None


def test_rule_precision_equals_precision_on_the_repeated_corpus():
    pos = _predictions(3000, 5, none=False)
    none = _predictions(1500, 6, none=True)
    mix = wild.rule_precision(pos, none[:3], 0.5, 4, CLASSES)
    alone = wild.rule_precision(pos, none[:3], 0.0, 4, CLASSES)
    corpus = [np.concatenate([p, n, n]) for p, n in zip(pos, none)]  # weight 2: each none photo twice
    for c, name in enumerate(CLASSES):
        kept = ~corpus[2] & (corpus[1] >= 4) & (corpus[0] == c)
        assert mix[name] == pytest.approx((corpus[3][kept] == c).mean(), abs=1e-4)
        kept_pos = ~pos[2] & (pos[1] >= 4) & (pos[0] == c)
        assert alone[name] == pytest.approx((pos[3][kept_pos] == c).mean(), abs=1e-4)
        assert mix[name] < alone[name]


def test_the_forest_prior_makes_none_the_wild_share_of_the_fit():
    labels = np.array([0] * 600 + [3] * 200 + [10] * 200)
    weight = wild.prior_weight(labels, 10, 0.5)
    assert weight == pytest.approx(4.0)  # 800 real against 200 none counted 4 times: half and half
    rows = wild.none_repeats(labels, 10, weight, seed=1)
    assert (labels[rows] == 10).mean() == pytest.approx(0.5)
    assert np.array_equal(np.bincount(rows, minlength=labels.size)[:800], np.ones(800))  # real images once
    # A share the data already has, or more none than the share asks for, weighs nothing extra.
    assert wild.prior_weight(labels, 10, 0.2) == 1.0
    assert wild.prior_weight(labels, 10, 0.1) == 1.0
    assert wild.prior_weight(np.zeros(5, int), 10, 0.5) == 1.0


def test_a_fractional_none_weight_repeats_a_seeded_share_once_more():
    labels = np.array([1] * 3000 + [10] * 3000)
    rows = wild.none_repeats(labels, 10, 2.25, seed=7)
    per_image = np.bincount(rows, minlength=labels.size)
    assert set(np.unique(per_image[3000:])) == {2, 3}
    assert abs(per_image[3000:].mean() - 2.25) < 0.03
    assert np.array_equal(rows, wild.none_repeats(labels, 10, 2.25, seed=7))
    assert np.array_equal(np.sort(rows), rows)  # the fit keeps the images' order
    with pytest.raises(ValueError, match="1 or more"):
        wild.none_repeats(labels, 10, 0.5, seed=7)


@pytest.mark.parametrize("weight, low, high", [(0.0, 0, 0), (0.4, 0, 1), (1.0, 1, 1), (2.5, 2, 3)])
def test_repeat_rows_repeats_each_row_its_weight_on_average(weight, low, high):
    rows = wild.repeat_rows(np.full(4000, weight), seed=3)
    per_row = np.bincount(rows, minlength=4000)
    assert per_row.min() >= low and per_row.max() <= high
    assert abs(per_row.mean() - weight) < 0.03
    assert np.array_equal(np.sort(rows), rows)
