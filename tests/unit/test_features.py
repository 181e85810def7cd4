"""jobs/features.py: shapes and dtypes, determinism, save/load, batching invariance, the encoder's
algebra against a direct computation, LDA against its definition, and junk rejection."""

from __future__ import annotations

import numpy as np
import pytest

from tinytags.core import features as F
from tinytags.core.forest import Evaluator
from tinytags.core.junk import EXTRA_JUNK_KINDS, junk_images
from tinytags.core.training import TreeParams, bin_pixels, fit_bins, grow_trees

SMALL = F.Config(centroids=16, whiten_dims=20, grid=2, activation="relu", power=0.5,
                 kmeans_patches=5000, kmeans_iters=5, embed_dims=12)


def photos(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Smooth random 'photos' of 3 classes told apart by colour and layout (not junk-like)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    small = rng.uniform(40, 200, (n, 3, 8, 8))
    small[labels == 0, 0] += 50
    small[labels == 1, :, :4] -= 40
    small[labels == 2, 2] += 50
    img = np.repeat(np.repeat(small, 4, axis=2), 4, axis=3) + rng.normal(0, 12, (n, 3, 32, 32))
    return np.clip(img, 0, 255).astype(np.uint8).reshape(n, 3072), labels


@pytest.fixture(scope="module")
def fitted():
    pixels, labels = photos(600, 1)
    return F.FeatureSet(SMALL).fit(pixels, labels, seed=3, junk=300), pixels, labels


def test_shapes_and_dtypes(fitted):
    fs, pixels, _ = fitted
    x, v, junk = fs.encode_all(pixels[:50])
    assert x.shape == (50, 3) and x.dtype == np.uint8          # LDA: 4 classes (3 + none) - 1
    assert v.shape == (50, 12) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)
    assert junk.dtype == bool and junk.shape == (50,)
    assert fs.pooled(pixels[:5]).shape == (5, 4 * 16)
    assert fs.forest_classes == 4 and fs.junk_class == 3
    assert fs.name == "kmeans16-lda"


def test_same_seed_same_model_other_seed_differs():
    pixels, labels = photos(300, 2)
    a = F.FeatureSet(SMALL).fit(pixels, labels, seed=5, junk=100)
    b = F.FeatureSet(SMALL).fit(pixels, labels, seed=5, junk=100)
    c = F.FeatureSet(SMALL).fit(pixels, labels, seed=6, junk=100)
    assert a.version == b.version != c.version
    np.testing.assert_array_equal(a.transform(pixels), b.transform(pixels))


def test_save_load_round_trip(fitted, tmp_path):
    fs, pixels, _ = fitted
    path = fs.save(tmp_path)
    assert path.name == F.FEATURES_FILE
    again = F.FeatureSet.load(tmp_path)
    assert again.version == fs.version and again.config == fs.config
    for a, b in zip(fs.encode_all(pixels[:100]), again.encode_all(pixels[:100])):
        np.testing.assert_array_equal(a, b)
    with np.load(path, allow_pickle=False) as arrays:  # no pickled objects inside
        assert "meta" in arrays.files


def test_load_errors(tmp_path):
    with pytest.raises(F.FeatureError, match="missing"):
        F.FeatureSet.load(tmp_path)
    (tmp_path / F.FEATURES_FILE).write_bytes(b"not a zip")
    with pytest.raises(F.FeatureError, match="not a readable"):
        F.FeatureSet.load(tmp_path)


def test_batching_invariant(fitted):
    fs, pixels, _ = fitted
    whole = fs.encode_all(pixels[:70])
    parts = [fs.encode_all(pixels[lo:min(lo + 23, 70)]) for lo in range(0, 70, 23)]
    np.testing.assert_array_equal(whole[0], np.concatenate([p[0] for p in parts]))
    np.testing.assert_allclose(whole[1], np.concatenate([p[1] for p in parts]), atol=1e-5)
    np.testing.assert_array_equal(whole[2], np.concatenate([p[2] for p in parts]))


@pytest.mark.parametrize("activation", ["triangle", "relu"])
def test_encoder_matches_direct_computation(activation):
    """The folded algebra (normalise inside the product, squared distances by one sgemm) equals
    extracting each patch, normalising, whitening and measuring distances one at a time."""
    pixels, _ = photos(3, 4)
    cfg = F.Config(centroids=8, whiten_dims=30, activation=activation, stride=3, grid=2)
    rng = np.random.default_rng(0)
    dictionary = F.Dictionary(mean=rng.normal(0, 0.1, 108).astype(np.float32),
                              whiten=rng.normal(0, 0.2, (108, 30)).astype(np.float32),
                              centroids=rng.normal(0, 1, (8, 30)).astype(np.float32))
    got = F.encode(pixels, dictionary, cfg)
    planes = pixels.reshape(-1, 3, 32, 32).astype(np.float64)
    p, s, n_pos = cfg.patch, cfg.stride, cfg.positions
    edges = np.linspace(0, n_pos, 3).round().astype(int)
    expected = np.zeros((3, 4, 8))
    for i in range(3):
        for r in range(n_pos):
            for c in range(n_pos):
                x = planes[i, :, r * s:r * s + p, c * s:c * s + p].ravel()
                x = (x - x.mean()) / np.sqrt(x.var() + 10)
                y = (x - dictionary.mean) @ dictionary.whiten
                d2 = ((y - dictionary.centroids) ** 2).sum(axis=1)
                if activation == "triangle":
                    z = np.sqrt(d2)
                    act = np.maximum(0, z.mean() - z)
                else:
                    act = np.maximum(0, d2.mean() - d2)
                cell = (np.searchsorted(edges, r, side="right") - 1) * 2 + np.searchsorted(edges, c, side="right") - 1
                expected[i, cell] += act
    np.testing.assert_allclose(got, expected.reshape(3, -1), rtol=2e-3, atol=2e-3)


def test_lda_separates_and_matches_generalised_eigenproblem():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, 900)
    x = rng.normal(0, 1, (900, 6)).astype(np.float32)
    x[:, 0] += 3 * labels
    x[:, 1] -= 2 * (labels == 1)
    lda, pca, variances = F.fit_lda_pca(x, labels, 2, 3)
    assert lda.shape == (6, 2) and pca.shape == (6, 3) and variances[0] >= variances[1]
    # each direction w solves Sb w = lambda Sw w
    means = np.stack([x[labels == c].mean(0) for c in range(3)])
    within = sum(np.cov(x[labels == c].T, bias=True) * (labels == c).sum() for c in range(3)) / 900
    between = sum((labels == c).sum() * np.outer(means[c] - x.mean(0), means[c] - x.mean(0))
                  for c in range(3)) / 900
    for w in lda.T.astype(np.float64):
        ratio = (w @ between @ w) / (w @ within @ w)
        np.testing.assert_allclose(between @ w, ratio * within @ w, rtol=1e-2, atol=1e-3)


def test_kmeans_finds_separated_clusters():
    rng = np.random.default_rng(2)
    centres = np.array([[0, 0], [10, 0], [0, 10]], np.float32)
    x = (centres[rng.integers(0, 3, 3000)] + rng.normal(0, 0.5, (3000, 2))).astype(np.float32)
    found = F.kmeans(x, 3, 10, seed=0)
    assert np.abs(np.sort(found[:, 0] + 100 * found[:, 1]) - np.sort(centres[:, 0] + 100 * centres[:, 1])).max() < 0.5 * 101


def test_quantiser_spreads_levels():
    values = np.random.default_rng(0).normal(size=(10000, 2)).astype(np.float32)
    q = F.quantise(values, F.fit_quantiser(values))
    counts = np.bincount(q[:, 0], minlength=256)
    assert q.dtype == np.uint8 and counts.min() > 20 and counts.max() < 60


def test_junk_images_are_deterministic_and_varied():
    a = junk_images(60, 9)
    np.testing.assert_array_equal(a, junk_images(60, 9))
    assert a.shape == (60, 3072) and a.dtype == np.uint8
    assert not np.array_equal(a, junk_images(60, 10))
    assert junk_images(10, 1, EXTRA_JUNK_KINDS).shape == (10, 3072)


def test_junk_is_rejected_and_photos_are_not(fitted):
    """With the forest's "none" class and the outlier cut, fresh junk (another seed) is not tagged."""
    fs, pixels, labels = fitted
    train_pixels = np.concatenate([pixels, junk_images(300, 100)])
    train_labels = np.concatenate([labels, np.full(300, fs.junk_class)])
    x = fs.transform(train_pixels)
    bins = fit_bins(x, 50, 0)
    ev = Evaluator(grow_trees(bin_pixels(x, bins), train_labels, fs.forest_classes, bins,
                              TreeParams(), 0, range(10)))
    junk = junk_images(60, 4242)
    jx, _, jflag = fs.encode_all(junk)
    _, jlabel, _ = ev.predict(jx)
    assert ((jlabel < fs.n_classes) & ~jflag).mean() <= 0.1
    test_pixels, test_labels = photos(200, 77)
    tx, _, tflag = fs.encode_all(test_pixels)
    _, tlabel, _ = ev.predict(tx)
    assert ((tlabel == fs.junk_class) | tflag).mean() <= 0.05
    assert (tlabel == test_labels).mean() > 0.8


def test_pixel_features_pass_through():
    pixels, _ = photos(4, 0)
    pf = F.PixelFeatures().fit(pixels, None)
    assert pf.transform(pixels) is not None and np.array_equal(pf.transform(pixels), pixels)
    assert pf.vectors(pixels).shape == (4, 48)
    with pytest.raises(F.FeatureError):
        pf.transform(pixels.astype(np.int16))


def test_on_real_sample(cifar_sample):
    """On the real CIFAR-10 sample: a small dictionary still gives a forest well above chance."""
    from tinytags.io.cifar_files import read_local
    data = read_local(cifar_sample)
    cfg = F.Config(centroids=32, whiten_dims=30, activation="relu", power=0.5, kmeans_patches=20000,
                   kmeans_iters=5)
    xtr, ytr = data.train.pixels[:3000], data.train.labels[:3000]
    fs = F.FeatureSet(cfg).fit(xtr, ytr, seed=0, junk=500)
    x = fs.transform(np.concatenate([xtr, junk_images(500, 1)]))
    labels = np.concatenate([ytr, np.full(500, 10)])
    bins = fit_bins(x, 50, 0)
    ev = Evaluator(grow_trees(bin_pixels(x, bins), labels, 11, bins, TreeParams(), 0, range(10)))
    tx, _, flag = fs.encode_all(data.test.pixels[:1000])
    _, label, _ = ev.predict(tx)
    assert (label == data.test.labels[:1000]).mean() > 0.3
    assert ((label == 10) | flag).mean() < 0.03
