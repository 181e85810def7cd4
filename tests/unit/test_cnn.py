"""The network under the forest: the ONNX graph computes what Keras trained, and an image gets the same
features wherever it is evaluated (train time, tag time from CIFAR or Tiny layout, the web app's
classify, after pickling to an executor); a missing or corrupt network stops before any output."""

from __future__ import annotations

import io
import json
import pickle

import numpy as np
import pytest
from PIL import Image

from tinytags.core import cnn, cnn_training
from tinytags.core.contract import CLASSES, VECTOR_DIMS
from tinytags.core.forest import ModelError
from tinytags.core.images import cifar_to_hwc, cifar_to_tiny_layout
from tinytags.core.labelled import NONE_LABEL
from tinytags.core.tagger import Tagger, load_features
from tinytags.core.tagging import LineFormat, tag_batch
from tinytags.core.training import TreeParams, bin_pixels, fit_bins, grow_trees

SHAPE = cnn.Shape(widths=(8, 16, 16))


@pytest.fixture(scope="module")
def trained():
    """A tiny network trained for one epoch on random-but-learnable pictures (fp32, so Keras and ONNX agree)."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, len(CLASSES) + 1, 600)
    pixels = rng.integers(0, 80, (600, 3072)).astype(np.uint8)
    planes = pixels.reshape(600, 3, 32, 32)
    for c in range(len(CLASSES) + 1):  # each class lights its own band of rows: learnable in one epoch
        planes[labels == c, c % 3, 2 * c:2 * c + 3, :] = 250
    recipe = cnn_training.Recipe(epochs=1, batch=100, precision="fp32")
    weights, facts, model = cnn_training.train(pixels, labels, SHAPE, recipe, seed=3, log=lambda line: None)
    return pixels, labels, weights, facts, model


@pytest.fixture(scope="module")
def tagger(trained):
    """Network + head + a small forest over its outputs, as the train job builds them."""
    pixels, labels, weights, _, _ = trained
    network = cnn.Network(cnn.onnx_graph(SHAPE, weights), "network", threads=1)
    features = cnn.CnnFeatures(SHAPE, network)
    embedding, logits = features.outputs(pixels)
    features.head = cnn.fit_head(embedding, logits, forest_pcs=4, vector_dims=VECTOR_DIMS)
    inputs = features.encode_all(pixels)[0]
    bins = fit_bins(inputs, 32, 0)
    forest = grow_trees(bin_pixels(inputs, bins), labels, len(CLASSES) + 1, bins,
                        TreeParams(max_depth=6, max_bins=32), seed=1, tree_indices=range(5))
    return Tagger(forest, features, {})


def test_the_onnx_graph_computes_what_keras_trained(trained):
    pixels, _, weights, facts, model = trained
    graph = cnn.onnx_graph(SHAPE, weights)
    embedding, logits = cnn.Network(graph, threads=1).run(pixels[:200])
    k_embedding, k_logits = cnn_training.keras_outputs(model, pixels[:200])
    assert embedding.shape == (200, SHAPE.embed_dims) and logits.shape == (200, len(CLASSES) + 1)
    np.testing.assert_allclose(embedding, k_embedding, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(logits, k_logits, rtol=1e-4, atol=1e-4)
    assert facts["precision"] == "fp32" and facts["epochs"] == 1 and facts["images"] == 600


def test_an_image_gets_the_same_features_at_train_tag_and_classify_time(tagger, trained):
    pixels = trained[0][:64]
    at_train = tagger.features.encode_all(pixels)
    # Tag time: Tiny-layout records through the tag job's batch function (which converts them).
    fmt = LineFormat(tagger.version, tagger.n_trees, 20000, None)
    lines = tag_batch(tagger, cifar_to_tiny_layout(pixels), 0, 0, 0, 0, fmt).lines.decode().splitlines()
    predicted = tagger.predict(pixels)
    kept = np.flatnonzero(~predicted.junk)
    assert kept.size > 0
    assert [json.loads(line)["id"] for line in lines] == kept.tolist()
    for line, i in zip(lines, kept):
        assert json.loads(line)["vote_counts"] == predicted.vote_counts[i].tolist()
    # Classify: an uploaded PNG of the image, decoded as the web app decodes uploads.
    from webapp.model import upload_to_pixels

    uploads = []
    for hwc in cifar_to_hwc(pixels):
        buffer = io.BytesIO()
        Image.fromarray(hwc).save(buffer, format="PNG")
        uploads.append(upload_to_pixels(buffer.getvalue())[1])
    at_classify = tagger.features.encode_all(np.stack(uploads))
    # After pickling (what a Spark broadcast does), in a fresh onnxruntime session.
    at_executor = pickle.loads(pickle.dumps(tagger)).features.encode_all(pixels)
    for other in (at_classify, at_executor):
        assert np.array_equal(other[0], at_train[0])
        np.testing.assert_allclose(other[1], at_train[1], atol=1e-6)


def test_the_feature_file_round_trips_and_bad_ones_name_the_file(tagger, trained):
    data = tagger.features.dumps()
    loaded = load_features(data, "m/features.npz")
    assert loaded.version == tagger.features.version
    assert np.array_equal(loaded.encode_all(trained[0][:20])[0], tagger.features.encode_all(trained[0][:20])[0])
    with pytest.raises(ModelError, match="m/features.npz"):
        load_features(data[: len(data) // 2], "m/features.npz")
    arrays = dict(np.load(io.BytesIO(data)))
    graph = arrays["network"].tobytes()
    arrays["network"] = np.frombuffer(graph[:100] + b"\x00" * 50 + graph[150:], np.uint8)
    broken = io.BytesIO()
    np.savez(broken, **arrays)
    with pytest.raises(ModelError, match="m/features.npz: not a usable network"):
        load_features(broken.getvalue(), "m/features.npz")
    del arrays["cuts"]
    incomplete = io.BytesIO()
    np.savez(incomplete, **arrays)
    with pytest.raises(ModelError, match="m/features.npz: incomplete network file"):
        load_features(incomplete.getvalue(), "m/features.npz")


def test_none_is_the_forest_and_networks_last_class(tagger):
    assert tagger.junk_class == NONE_LABEL == len(CLASSES)
    assert tagger.forest.n_classes == len(CLASSES) + 1


def test_augment_flips_and_shifts_within_bounds():
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (50, 32, 32, 3), dtype=np.uint8)
    out = cnn_training.augment(images, np.random.default_rng(2), shift=0)
    flipped = [np.array_equal(o, i[:, ::-1]) for o, i in zip(out, images)]
    same = [np.array_equal(o, i) for o, i in zip(out, images)]
    assert all(f or s for f, s in zip(flipped, same)) and 10 < sum(flipped) < 40
    shifted = cnn_training.augment(images, np.random.default_rng(3), shift=2)
    assert shifted.shape == images.shape and shifted.dtype == np.uint8
    # Every shifted image keeps its centre 28x28 from the original or its mirror image, moved <= 2 pixels.
    for o, i in zip(shifted[:10], images[:10]):
        candidates = [np.roll(np.roll(src, dy, 0), dx, 1)[2:30, 2:30]
                      for src in (i, i[:, ::-1]) for dy in range(-2, 3) for dx in range(-2, 3)]
        assert any(np.array_equal(o[2:30, 2:30], c) for c in candidates)


def test_outputs_average_the_image_and_its_mirror_and_old_files_keep_their_shape(tagger, trained):
    pixels = trained[0][:30]
    features = tagger.features
    assert features.shape.flip
    plain = features.network.run(pixels)
    mirror = features.network.run(pixels.reshape(-1, 3, 32, 32)[:, :, :, ::-1].reshape(-1, 3072))
    averaged = features.outputs(pixels)
    for got, a, b in zip(averaged, plain, mirror):
        np.testing.assert_allclose(got, (a + b) / 2, rtol=1e-6, atol=1e-6)
    # A mirrored image gets the same averaged outputs as the image itself.
    np.testing.assert_allclose(features.outputs(cnn.mirrored(pixels))[1], averaged[1], rtol=1e-5, atol=1e-5)
    # Feature files written before test-time flips existed record no flip: they keep running without.
    meta = {"shape": {k: v for k, v in cnn.shape_meta(SHAPE).items() if k != "flip"}}
    assert cnn.shape_from(meta).flip is False


def test_the_similarity_directions_are_the_embeddings_principal_axes_unscaled():
    rng = np.random.default_rng(3)
    spread = np.array([9.0, 5.0, 3.0, 1.0, 0.5, 0.2])
    axes, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    embedding = (rng.normal(size=(20000, 6)) * spread) @ axes.T + 4.0
    head = cnn.fit_head(embedding.astype(np.float32), np.zeros((20000, 11), np.float32), forest_pcs=2, vector_dims=3)
    # Unit-length, orthogonal directions (no whitening: the faint axes are not blown up) ...
    assert np.allclose(head.embed.T @ head.embed, np.eye(3), atol=1e-4)
    # ... along the three widest axes of the data, in order (up to sign).
    assert np.allclose(np.abs(head.embed.T @ axes[:, :3]), np.eye(3), atol=0.02)
    assert np.allclose(head.center, 4.0, atol=0.2)


def test_a_network_narrower_than_the_vector_pads_it_with_zeros():
    # The test-sized network (widths 8,16,16) has a 16-number embedding; a tag line holds 48.
    rng = np.random.default_rng(4)
    embedding = rng.normal(size=(500, 16)).astype(np.float32) * np.linspace(3, 0.5, 16, dtype=np.float32)
    head = cnn.fit_head(embedding, np.zeros((500, 11), np.float32), forest_pcs=2, vector_dims=48)
    assert head.embed.shape == (16, 48) and not head.embed[:, 16:].any()
    assert np.allclose(head.embed[:, :16].T @ head.embed[:, :16], np.eye(16), atol=1e-4)
    vectors = (embedding - head.center) @ head.embed
    full = (embedding - head.center) @ head.embed[:, :16]  # the same similarities as without padding
    assert np.allclose(vectors[:, :16], full) and np.allclose(vectors @ vectors.T, full @ full.T, atol=1e-3)
