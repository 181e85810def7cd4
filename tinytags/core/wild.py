"""Tag quality in the wild: held-out photos of the ten, photos of none of them, and a corpus that mixes both.

CIFAR-10's test set only holds photos of the ten classes, so its precision says nothing about a
corpus where most photos show something else. These figures use held-out labelled photos
(``--extra``, split by tinytags.core.labelled.hold_out):

- **positives**: held-out photos of the ten (CIFAR-10's test images and the extra photos' held-out
  share): how many get a tag at the agreement rule (coverage), and how many of those tags are right;
- **none, seen kinds / unseen kinds**: held-out "none" photos of kinds that trained, and of kinds
  that never did: the share that gets a tag anyway;
- **expected precision on a mix**: a corpus in which a share ``w`` of the photos show none of the
  ten (``--wild-share``, default 0.5). For a tag ``t`` at ``v`` votes, with ``n_pos`` positives and
  ``n_none`` none photos held out, each none photo stands for ``w / (1 - w) * n_pos / n_none``
  photos of the mix, so precision = right / (right + wrong positives + weight * none given ``t``).
  A cell with fewer than MIN_CELL_IMAGES images takes the pooled ">= v votes" figure, as the
  CIFAR-only table does;
- **none capture**: per tag and minimum vote count, the share of held-out none photos given that tag;
- **the forest's prior** (``none_repeats``): with ``--extra`` photos of "none", the forest is fitted
  with each "none" image counted ``none_weight`` times, so that "none" makes up the ``--wild-share``
  of the fit that it makes up of the corpus. A forest fitted on CIFAR-10's proportions (one image in
  five "none") learns that a photo is rarely none of the ten, and tags most of what it cannot place.

All functions take plain arrays (predicted label, top votes, junk flag, true label per image), so
the card's figures can be recomputed from saved predictions by anyone.
"""

from __future__ import annotations

import numpy as np

from tinytags.core.training import MIN_CELL_IMAGES

WILD_SHARE = 0.5


def prior_weight(labels: np.ndarray, none_label: int, share: float) -> float:
    """How many times to count each "none" image so that "none" is ``share`` of the weighted fit (>= 1)."""
    labels = np.asarray(labels)
    n_none = int((labels == none_label).sum())
    n_real = int(labels.size - n_none)
    if n_none == 0 or n_real == 0 or not 0.0 < share < 1.0:
        return 1.0
    return max(1.0, share / (1.0 - share) * n_real / n_none)


def repeat_rows(weights: np.ndarray, seed: int) -> np.ndarray:
    """Row indices with row i repeated ``weights[i]`` times on average, in row order.

    A fractional weight repeats a seeded random share of its rows once more, so that what is
    fitted stays whole images (a forest's bootstrap and leaf votes count rows).
    """
    weights = np.asarray(weights, np.float64)
    whole = np.floor(weights)
    extra = np.random.default_rng(seed).random(weights.size) < (weights - whole)
    return np.repeat(np.arange(weights.size), whole.astype(np.int64) + extra)


def none_repeats(labels: np.ndarray, none_label: int, weight: float, seed: int) -> np.ndarray:
    """Row indices of the weighted fit: every image once, each "none" image ``weight`` times on average."""
    labels = np.asarray(labels)
    if weight < 1.0:
        raise ValueError(f"the none weight must be 1 or more, got {weight}")
    return repeat_rows(np.where(labels == none_label, weight, 1.0), seed)


def tagged(votes: np.ndarray, junk: np.ndarray, min_votes: int) -> np.ndarray:
    """Which images the tag job keeps: not junk, and the winner has at least ``min_votes`` votes."""
    return ~np.asarray(junk, bool) & (np.asarray(votes) >= min_votes)


def positives_figures(label, votes, junk, truth, min_votes: int) -> dict:
    """Held-out photos of the ten: images, share tagged (coverage), precision of the tags."""
    kept = tagged(votes, junk, min_votes)
    right = int((kept & (np.asarray(label) == np.asarray(truth))).sum())
    return {"images": int(len(kept)), "coverage": _share(int(kept.sum()), len(kept)),
            "precision": _share(right, int(kept.sum()))}


def none_figures(votes, junk, min_votes: int) -> dict:
    """Held-out photos of none of the ten: images, and the share that gets a tag anyway."""
    kept = tagged(votes, junk, min_votes)
    return {"images": int(len(kept)), "tagged": _share(int(kept.sum()), len(kept))}


def none_weight(n_positive: int, n_none: int, share: float) -> float:
    """How many photos of the mix one held-out none photo stands for, relative to one positive."""
    if not 0 <= share < 1:
        raise ValueError(f"the wild share must be in [0, 1), got {share}")
    return share / (1 - share) * n_positive / n_none if n_none else 0.0


def mix_precision_table(pos: tuple, none: tuple, share: float, classes: tuple[str, ...],
                        n_trees: int) -> dict[str, list[float | None]]:
    """Per tag, for votes 0..n_trees: precision on a mix with ``share`` none photos.

    ``pos`` is (label, votes, junk, truth) of held-out positives; ``none`` is (label, votes, junk).
    """
    p_label, p_votes, p_junk, p_truth = (np.asarray(a) for a in pos)
    n_label, n_votes, n_junk = (np.asarray(a) for a in none)
    weight = none_weight(len(p_label), len(n_label), share)
    table = {}
    for c, name in enumerate(classes):
        mine_p = ~p_junk.astype(bool) & (p_label == c)
        mine_n = ~n_junk.astype(bool) & (n_label == c)
        row: list[float | None] = []
        for v in range(n_trees + 1):
            cell_p, cell_n = mine_p & (p_votes == v), mine_n & (n_votes == v)
            if cell_p.sum() + cell_n.sum() < MIN_CELL_IMAGES:
                cell_p, cell_n = mine_p & (p_votes >= v), mine_n & (n_votes >= v)
            right = float((p_truth[cell_p] == c).sum())
            total = float(cell_p.sum()) + weight * float(cell_n.sum())
            row.append(round(right / total, 4) if total else None)
        table[name] = row
    return table


def rule_precision(pos: tuple, none: tuple, share: float, min_votes: int,
                   classes: tuple[str, ...]) -> dict[str, float | None]:
    """Per tag: the precision of everything the tag job keeps with that tag (>= ``min_votes``) on the mix.

    ``share`` 0 gives the figure on the positives alone. Arguments as in mix_precision_table.
    """
    p_label, p_votes, p_junk, p_truth = (np.asarray(a) for a in pos)
    n_label, n_votes, n_junk = (np.asarray(a) for a in none)
    weight = none_weight(len(p_label), len(n_label), share)
    kept_p, kept_n = tagged(p_votes, p_junk, min_votes), tagged(n_votes, n_junk, min_votes)
    out = {}
    for c, name in enumerate(classes):
        mine_p, mine_n = kept_p & (p_label == c), kept_n & (n_label == c)
        total = float(mine_p.sum()) + weight * float(mine_n.sum())
        out[name] = round(float((p_truth[mine_p] == c).sum()) / total, 4) if total else None
    return out


def none_capture(label, votes, junk, classes: tuple[str, ...], n_trees: int) -> dict[str, list[float]]:
    """Per tag and minimum vote count k = 1..n_trees: the share of none photos given that tag with >= k votes."""
    label, votes, junk = np.asarray(label), np.asarray(votes), np.asarray(junk, bool)
    n = max(1, len(label))
    return {name: [round(float((~junk & (label == c) & (votes >= k)).sum()) / n, 4) for k in range(1, n_trees + 1)]
            for c, name in enumerate(classes)}


def calibration(expected: np.ndarray, pos: tuple, none: tuple, share: float, min_votes: int,
                classes: tuple[str, ...]) -> dict:
    """Promised against measured precision of the kept tags on a mix, overall and per tag.

    ``expected`` is a (classes x votes) lookup (the card's table); ``pos`` / ``none`` as in
    mix_precision_table. Means are weighted as the mix weighs the images.
    """
    p_label, p_votes, p_junk, p_truth = (np.asarray(a) for a in pos)
    n_label, n_votes, n_junk = (np.asarray(a) for a in none)
    weight = none_weight(len(p_label), len(n_label), share)
    kept_p, kept_n = tagged(p_votes, p_junk, min_votes), tagged(n_votes, n_junk, min_votes)

    def figures(mask_p, mask_n) -> dict:
        w = np.concatenate([np.ones(int(mask_p.sum())), np.full(int(mask_n.sum()), weight)])
        if not w.sum():
            return {"tags": 0, "expected": None, "measured": None}
        promised = np.concatenate([expected[p_label[mask_p], p_votes[mask_p]], expected[n_label[mask_n], n_votes[mask_n]]])
        right = np.concatenate([(p_truth[mask_p] == p_label[mask_p]).astype(float), np.zeros(int(mask_n.sum()))])
        return {"tags": int(len(w)), "expected": round(float(np.nansum(promised * w) / w.sum()), 4),
                "measured": round(float((right * w).sum() / w.sum()), 4)}

    out = {"share": share, "overall": figures(kept_p, kept_n), "per_tag": {}}
    for c, name in enumerate(classes):
        out["per_tag"][name] = figures(kept_p & (p_label == c), kept_n & (n_label == c))
    return out


def _share(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None
