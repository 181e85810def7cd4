"""tinytags/core/tagger.py with learned features: one code path at train time and tag time, in both layouts.

A small feature set (32 centroids) and forest are fitted on real CIFAR-10 sample images plus
synthetic junk; then the features the training path computes (Encoder -> project -> quantise, what
jobs/train.py's Spark tasks and driver do) are compared with what the tag job's batch tagger gets
from Tiny-layout bytes, and junk is checked to be refused and counted.
"""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from tinytags.core import features
from tinytags.core.contract import CLASSES
from tinytags.core.images import cifar_to_tiny_layout
from tinytags.core.junk import junk_images
from tinytags.core.tagger import Tagger, model_version
from tinytags.core.tagging import LineFormat, tag_batch
from tinytags.core.training import TreeParams, bin_pixels, evaluate, fit_bins, grow_trees
from tinytags.io.cifar_files import read_local

TREES = 10
CONFIG = features.Config(centroids=32, kmeans_patches=20_000, kmeans_iters=8)


@pytest.fixture(scope="module")
def fitted(cifar_sample):
    """(tagger, the training-path forest inputs of the test images, the test images, their labels)."""
    data = read_local(cifar_sample)
    train, labels = data.train.pixels[:3000], data.train.labels[:3000]
    junk = junk_images(1000, seed=11)
    pixels = np.concatenate([train, junk])
    all_labels = np.concatenate([labels, np.full(1000, len(CLASSES))])
    patches = features.sample_patches(train, CONFIG.kmeans_patches, 5, CONFIG.patch)
    dictionary = features.fit_dictionary(patches, CONFIG, 5)
    encoder = features.Encoder(dictionary, CONFIG)
    pooled = np.concatenate([encoder(pixels[i:i + 700]) for i in range(0, len(pixels), 700)])  # as tasks would
    feature_set = features.FeatureSet(CONFIG).fit_from_pooled(dictionary, pooled, all_labels, len(CLASSES), len(CLASSES))
    inputs = features.quantise(feature_set.project(pooled), feature_set.head.cuts)
    params = TreeParams(max_depth=8, max_bins=32)
    bins = fit_bins(inputs, params.max_bins, 1)
    forest = grow_trees(bin_pixels(inputs, bins), all_labels, len(CLASSES) + 1, bins, params, 1, range(TREES))
    test = data.test.pixels[:1500]
    test_inputs = features.quantise(feature_set.project(encoder(test)), feature_set.head.cuts)
    return Tagger(forest, feature_set), test_inputs, test, data.test.labels[:1500]


def test_tag_time_features_are_the_training_paths_features(fitted):
    tagger, training_inputs, test, _ = fitted
    tag_inputs, vectors, _ = tagger.features.encode_all(test)
    assert np.array_equal(tag_inputs, training_inputs)
    assert vectors.shape == (len(test), 48) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)


def test_tiny_layout_lines_hold_exactly_what_the_model_says_of_the_cifar_layout(fitted):
    tagger, _, test, _ = fitted
    prediction = tagger.predict(test)  # CIFAR layout, in-process
    fmt = LineFormat(tagger.version, TREES, 1000)
    result = tag_batch(tagger, cifar_to_tiny_layout(test), 0, 0, 0, 4, fmt)  # the tag job's path
    lines = {line["id"]: line for line in map(json.loads, result.lines.decode().splitlines())}
    keep = ~prediction.junk & (prediction.votes >= 4)
    assert sorted(lines) == np.flatnonzero(keep).tolist()
    assert result.none == int(prediction.junk.sum())
    for i, line in lines.items():
        assert line["vote_counts"] == prediction.vote_counts[i].tolist()
        assert line["tag"] == CLASSES[prediction.label[i]]
        vector = np.frombuffer(base64.b64decode(line["vector"]), "<f2").astype(np.float32)
        assert np.allclose(vector, prediction.vectors[i], atol=2e-3)  # float16 of the same vector


def test_learned_features_beat_chance_well_on_real_images(fitted):
    tagger, _, test, truth = fitted
    prediction = tagger.predict(test)
    figures = evaluate(prediction.vote_counts, prediction.label, truth, CLASSES, TREES, prediction.junk)
    # 3,000 training images, 32 centroids: far from the full model, far above 10% chance.
    assert figures["test_accuracy"] > 0.35
    assert figures["real_called_junk"] < 0.05


def test_junk_is_refused_and_counted(fitted):
    tagger, _, _, _ = fitted
    junk = junk_images(300, seed=777)  # another seed than the training junk
    result = tag_batch(tagger, cifar_to_tiny_layout(junk), 0, 0, 0, 4, LineFormat("m", TREES, 1000))
    tagged = result.lines.count(b"\n")
    assert result.read == 300 and tagged + result.none <= 300
    assert result.none >= 285  # at least 95% called "none"
    assert tagged <= 6         # at most 2% tagged


def test_the_model_version_changes_with_the_features(fitted):
    tagger, _, _, _ = fitted
    pixels_only = model_version(tagger.forest, features.PixelFeatures())
    assert pixels_only == tagger.forest.version
    assert tagger.version != pixels_only and len(tagger.version) == 12


def test_a_forest_that_does_not_match_its_features_is_refused(fitted):
    tagger, _, _, _ = fitted
    from tinytags.core.forest import ModelError

    with pytest.raises(ModelError, match="votes for 11 classes"):
        Tagger(tagger.forest, features.PixelFeatures())
