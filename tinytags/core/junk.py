"""Synthetic non-photos: what a tagger must never tag (noise, flat colours, gradients, stripes, ...).

Trained as the "none" class beside real photos of other things (``--extra``), and used held out to
measure how much junk gets a tag. ``EXTRA_JUNK_KINDS`` are never trained on: they test kinds of junk
the model has not seen.
"""

from __future__ import annotations

import numpy as np

from tinytags.core.images import CHANNELS, RECORD_BYTES, SIDE

JUNK_KINDS = ("uniform", "gaussian", "flat", "gradient", "stripes", "checker")
EXTRA_JUNK_KINDS = ("saltpepper", "blobs", "rings", "twocolour")  # never used in training


def junk_images(count: int, seed: int, kinds: tuple[str, ...] = JUNK_KINDS) -> np.ndarray:
    """count synthetic non-photos (noise, flat colours, gradients, stripes, ...) in CIFAR layout."""
    rng = np.random.default_rng(seed)
    out = np.empty((count, CHANNELS, SIDE, SIDE), np.float32)
    which = rng.integers(0, len(kinds), count)
    r, c = np.mgrid[0:SIDE, 0:SIDE].astype(np.float32) / (SIDE - 1)
    for i, kind in enumerate(kinds):
        idx = np.flatnonzero(which == i)
        m = idx.size
        if not m:
            continue
        colour_a = rng.uniform(0, 255, (m, CHANNELS, 1, 1))
        colour_b = rng.uniform(0, 255, (m, CHANNELS, 1, 1))
        if kind == "uniform":
            img = rng.uniform(0, 255, (m, CHANNELS, SIDE, SIDE))
        elif kind == "gaussian":
            img = colour_a + rng.uniform(5, 80, (m, 1, 1, 1)) * rng.standard_normal((m, CHANNELS, SIDE, SIDE))
        elif kind == "flat":
            img = colour_a + rng.uniform(0, 6, (m, 1, 1, 1)) * rng.standard_normal((m, CHANNELS, SIDE, SIDE))
        elif kind in ("gradient", "stripes", "checker", "rings"):
            angle = rng.uniform(0, 2 * np.pi, (m, 1, 1))
            t = np.cos(angle) * c + np.sin(angle) * r
            if kind == "gradient":
                t = t - t.min(axis=(1, 2), keepdims=True)
                t = t / np.maximum(t.max(axis=(1, 2), keepdims=True), 1e-6)
            elif kind == "stripes":
                period = rng.uniform(2, 12, (m, 1, 1)) / SIDE
                t = (np.sin(2 * np.pi * t / period) > 0).astype(np.float32)
            elif kind == "checker":
                size = rng.integers(1, 9, (m, 1, 1))
                rr, cc = np.mgrid[0:SIDE, 0:SIDE]
                t = (((rr[None] // size) + (cc[None] // size)) % 2).astype(np.float32)
            else:
                cy, cx = rng.uniform(0, 1, (2, m, 1, 1))
                radius = np.sqrt((r - cy) ** 2 + (c - cx) ** 2)
                period = rng.uniform(3, 10, (m, 1, 1)) / SIDE
                t = (np.sin(2 * np.pi * radius / period) > 0).astype(np.float32)
            img = colour_a + (colour_b - colour_a) * t[:, None]
        elif kind == "saltpepper":
            img = np.where(rng.random((m, 1, SIDE, SIDE)) < 0.5, colour_a, colour_b) + 0 * r
        elif kind == "blobs":
            small = rng.uniform(0, 255, (m, CHANNELS, 4, 4))
            img = np.repeat(np.repeat(small, 8, axis=2), 8, axis=3)
        elif kind == "twocolour":
            split = rng.uniform(0.2, 0.8, (m, 1, 1))
            img = colour_a + (colour_b - colour_a) * (c > split)[:, None]
        else:
            raise ValueError(f"unknown junk kind {kind!r}")
        out[idx] = img
    return np.clip(out, 0, 255).round().astype(np.uint8).reshape(count, RECORD_BYTES)


def with_junk(pixels: np.ndarray, labels: np.ndarray, n_classes: int, count: int, seed: int):
    """Training set plus count junk images labelled n_classes (the extra "none" class)."""
    junk = junk_images(count, seed)
    return (np.concatenate([pixels, junk]),
            np.concatenate([np.asarray(labels), np.full(count, n_classes, np.asarray(labels).dtype)]))
