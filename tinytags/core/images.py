"""Image byte layouts and the small per-image features shared by the tag job, indexer and web app.

CIFAR-10 layout (what the model is trained on): per record 1024 R, 1024 G, 1024 B bytes, each
plane row-major, pixel (r, c) at ``c + 32*r``.
Tiny Images layout: the same three planes, each column-major, pixel (r, c) at ``r + 32*c``
(``np.frombuffer(rec, np.uint8).reshape(32, 32, 3, order="F")`` is the HWC image). CIFAR-10 was
drawn from Tiny Images, so converting is a transpose of each plane, never a re-sampling.
"""

from __future__ import annotations

import numpy as np

SIDE = 32
CHANNELS = 3
RECORD_BYTES = SIDE * SIDE * CHANNELS  # 3072
# Side of the thumbnail whose colours make the similarity vector (4x4x3 = 48 numbers).
EMBED_SIDE = 4
EMBED_DIMS = EMBED_SIDE * EMBED_SIDE * CHANNELS


def _as_records(data: np.ndarray | bytes | bytearray | memoryview) -> np.ndarray:
    array = np.frombuffer(data, np.uint8) if not isinstance(data, np.ndarray) else data
    if array.dtype != np.uint8:
        raise ValueError(f"expected uint8 pixels, got {array.dtype}")
    if array.size % RECORD_BYTES:
        raise ValueError(
            f"expected a multiple of {RECORD_BYTES} bytes (32x32x3 records), got {array.size}"
        )
    return array.reshape(-1, RECORD_BYTES)


def tiny_to_cifar_layout(records: np.ndarray | bytes) -> np.ndarray:
    """Tiny Images records (n x 3072, column-major planes) -> CIFAR layout (row-major planes)."""
    planes = _as_records(records).reshape(-1, CHANNELS, SIDE, SIDE)  # [n, ch, col, row]
    return np.ascontiguousarray(planes.transpose(0, 1, 3, 2)).reshape(-1, RECORD_BYTES)


def cifar_to_tiny_layout(records: np.ndarray | bytes) -> np.ndarray:
    """CIFAR layout records -> Tiny Images layout (the transpose is its own inverse)."""
    return tiny_to_cifar_layout(records)


def cifar_to_hwc(records: np.ndarray | bytes) -> np.ndarray:
    """CIFAR layout records -> n x 32 x 32 x 3 images (height, width, RGB) for display."""
    planes = _as_records(records).reshape(-1, CHANNELS, SIDE, SIDE)  # [n, ch, row, col]
    return np.ascontiguousarray(planes.transpose(0, 2, 3, 1))


def hwc_to_cifar(images: np.ndarray) -> np.ndarray:
    """n x 32 x 32 x 3 uint8 images -> CIFAR layout records (n x 3072)."""
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[None]
    if images.shape[1:] != (SIDE, SIDE, CHANNELS) or images.dtype != np.uint8:
        raise ValueError(f"expected uint8 images of shape (n, 32, 32, 3), got {images.dtype} {images.shape}")
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2)).reshape(-1, RECORD_BYTES)


def embedding(records: np.ndarray | bytes) -> np.ndarray:
    """CIFAR layout records -> unit-length colour-layout vectors (n x 48 float32) for similarity.

    Each vector is the image's 4x4 mean-colour thumbnail, centred on its own mean and scaled to
    length 1, so that cosine similarity compares layout and colour contrast, not brightness.
    """
    planes = _as_records(records).reshape(-1, CHANNELS, EMBED_SIDE, SIDE // EMBED_SIDE,
                                          EMBED_SIDE, SIDE // EMBED_SIDE)
    thumb = planes.mean(axis=(3, 5), dtype=np.float32).reshape(-1, EMBED_DIMS)
    thumb -= thumb.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(thumb, axis=1, keepdims=True)
    # A flat image (all one colour) has no layout; give it a fixed unit vector instead of NaN.
    flat = norms[:, 0] < 1e-6
    thumb[flat] = 1.0 / np.sqrt(EMBED_DIMS)
    norms[flat] = 1.0
    return (thumb / norms).astype(np.float32)
