"""tinytags/core/images.py: Tiny Images <-> CIFAR-10 byte layouts, display layout, similarity vectors."""

from __future__ import annotations

import numpy as np
import pytest

from tinytags.core.images import (
    EMBED_DIMS,
    cifar_to_hwc,
    cifar_to_tiny_layout,
    embedding,
    hwc_to_cifar,
    tiny_to_cifar_layout,
)


def _known_image() -> np.ndarray:
    """An HWC image whose every pixel value encodes where it is: R=row, G=column, B=channel tag."""
    image = np.zeros((32, 32, 3), np.uint8)
    image[:, :, 0] = np.arange(32)[:, None]        # red = row
    image[:, :, 1] = np.arange(32)[None, :] + 100  # green = column + 100
    image[:, :, 2] = 200
    return image


def test_tiny_record_follows_the_documented_fortran_reshape():
    image = _known_image()
    tiny = image.reshape(-1, order="F")  # how Tiny Images stores a record
    np.testing.assert_array_equal(np.frombuffer(tiny.tobytes(), np.uint8).reshape(32, 32, 3, order="F"), image)
    cifar = tiny_to_cifar_layout(tiny.tobytes())[0]
    # CIFAR: red plane first, pixel (r, c) at c + 32 r.
    for r, c in [(0, 0), (0, 31), (5, 7), (31, 2)]:
        assert cifar[c + 32 * r] == image[r, c, 0] == r
        assert cifar[1024 + c + 32 * r] == image[r, c, 1] == c + 100
        assert cifar[2048 + c + 32 * r] == 200


def test_layout_round_trips_and_differs_from_raw_bytes():
    rng = np.random.default_rng(3)
    cifar = rng.integers(0, 256, (5, 3072), dtype=np.uint8)
    tiny = cifar_to_tiny_layout(cifar)
    assert not np.array_equal(tiny, cifar)  # feeding raw Tiny bytes would transpose every image
    np.testing.assert_array_equal(tiny_to_cifar_layout(tiny), cifar)
    np.testing.assert_array_equal(hwc_to_cifar(cifar_to_hwc(cifar)), cifar)


def test_cifar_to_hwc_puts_rows_first():
    image = _known_image()
    np.testing.assert_array_equal(cifar_to_hwc(hwc_to_cifar(image))[0], image)
    record = hwc_to_cifar(image)[0]
    assert record[32 * 3 + 4] == 3  # red of (row 3, col 4) is the row


@pytest.mark.parametrize("size", [3071, 3073, 1])
def test_partial_records_are_rejected_with_the_expected_size(size):
    with pytest.raises(ValueError, match="multiple of 3072"):
        tiny_to_cifar_layout(bytes(size))


def test_embedding_is_unit_length_and_brightness_invariant():
    rng = np.random.default_rng(4)
    cifar = rng.integers(0, 200, (3, 3072), dtype=np.uint8)
    brighter = (cifar + 40).astype(np.uint8)
    flat = np.full((1, 3072), 77, np.uint8)
    vectors = embedding(np.vstack([cifar, brighter, flat]))
    assert vectors.shape == (7, EMBED_DIMS)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(vectors[:3], vectors[3:6], atol=1e-5)
    assert np.isfinite(vectors[6]).all()
