"""Training the network of tinytags/core/cnn.py with Keras 3 on tensorflow-cpu (the train job's driver only).

The recipe, chosen by validation on training images (bench/cnn.py) and kept small for 2 CPU cores:

- SGD with Nesterov momentum, a one-cycle learning rate (linear up over the first fifth of the
  steps, linear down to zero), decoupled weight decay, label smoothing 0.2;
- each epoch sees every image once, flipped left-right at random and shifted by up to 2 pixels
  (reflected borders), in a new order;
- bf16 arithmetic where the CPU has it (``--cnn-precision auto``: Intel AMX or AVX-512 BF16;
  variables and the loss stay float32), else float32;
- the whitening layer is not trained: it is computed once from 2x2 patches of the training images.

TensorFlow is imported inside the functions, so importing this module costs nothing where only
inference runs (executors and the web app never import it).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from tinytags.core.cnn import Shape
from tinytags.core.images import SIDE

BN_EPSILON = 1e-5


@dataclass(frozen=True)
class Recipe:
    """How the network is trained (flags of ``jobs/train.py --features cnn``)."""

    epochs: int = 20
    batch: int = 512
    peak_lr: float = 0.2
    weight_decay: float = 5e-4
    label_smoothing: float = 0.2
    momentum: float = 0.9
    warmup: float = 0.2
    shift: int = 2
    precision: str = "auto"  # "bf16", "fp32" or "auto" (bf16 where the CPU computes it natively)


def cpu_has_bf16() -> bool:
    """Whether this CPU has native bf16 matrix arithmetic (AMX or AVX-512 BF16), read from /proc/cpuinfo."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as handle:
            flags = next((line for line in handle if line.startswith("flags")), "")
    except OSError:
        return False
    return " amx_bf16" in flags or " avx512_bf16" in flags


def to_nhwc(pixels: np.ndarray) -> np.ndarray:
    """n x 3072 CIFAR-layout uint8 -> n x 32 x 32 x 3 uint8 (Keras' channel-last order)."""
    return np.asarray(pixels, np.uint8).reshape(-1, 3, SIDE, SIDE).transpose(0, 2, 3, 1)


def channel_stats(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation of NHWC uint8 images, on the [0, 1] scale."""
    sample = images[:: max(1, len(images) // 20000)].astype(np.float32) / 255
    return sample.mean(axis=(0, 1, 2)), sample.std(axis=(0, 1, 2))


def whitening(images: np.ndarray, mean: np.ndarray, std: np.ndarray, pairs: int,
              eps: float = 5e-4) -> np.ndarray:
    """The fixed 2x2 whitening kernel (2, 2, 3, 2*pairs): top eigenvectors of the patch covariance, +/-."""
    sample = (images[:: max(1, len(images) // 5000)].astype(np.float32) / 255 - mean) / std
    patches = np.lib.stride_tricks.sliding_window_view(sample, (2, 2), axis=(1, 2))  # n, 31, 31, 3, 2, 2
    patches = patches.transpose(0, 1, 2, 4, 5, 3).reshape(-1, 12).astype(np.float64)
    values, vectors = np.linalg.eigh(np.cov(patches, rowvar=False))
    order = np.argsort(values)[::-1][:pairs]
    kernel = (vectors[:, order] / np.sqrt(values[order] + eps)).reshape(2, 2, 3, pairs)
    return np.concatenate([kernel, -kernel], axis=3).astype(np.float32)


def augment(images: np.ndarray, rng: np.random.Generator, shift: int) -> np.ndarray:
    """Random left-right flips and shifts of up to ``shift`` pixels (reflected borders), batched in numpy."""
    out = np.where(rng.random(len(images))[:, None, None, None] < 0.5, images[:, :, ::-1], images)
    if shift:
        padded = np.pad(out, ((0, 0), (shift, shift), (shift, shift), (0, 0)), mode="reflect")
        dy = rng.integers(0, 2 * shift + 1, len(images))
        dx = rng.integers(0, 2 * shift + 1, len(images))
        for y in range(2 * shift + 1):
            for x in range(2 * shift + 1):
                chosen = (dy == y) & (dx == x)
                out[chosen] = padded[chosen, y:y + SIDE, x:x + SIDE]
    return out


def build(shape: Shape, kernel: np.ndarray, mean: np.ndarray, std: np.ndarray):
    """The Keras model (NHWC input in [0, 255]) -> (embedding, logits)."""
    import keras
    from keras import layers

    def gelu(x):
        return layers.Activation(lambda t: keras.activations.gelu(t, approximate=False))(x)

    inputs = keras.Input((SIDE, SIDE, 3), name="pixels")
    x = layers.Normalization(mean=mean * 255, variance=(std * 255) ** 2, name="standard")(inputs)
    x = gelu(layers.Conv2D(kernel.shape[-1], 2, use_bias=False, trainable=False, name="whiten")(x))
    for i, width in enumerate(shape.widths):
        for j in range(2):
            x = layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"b{i}_conv{j}")(x)
            if j == 0:
                x = layers.MaxPooling2D(2, name=f"b{i}_pool")(x)
            x = gelu(layers.BatchNormalization(momentum=0.6, epsilon=BN_EPSILON, name=f"b{i}_bn{j}")(x))
    embedding = layers.GlobalMaxPooling2D(name="embedding", dtype="float32")(x)
    logits = layers.Dense(shape.outputs, use_bias=False, name="dense", dtype="float32")(embedding)
    logits = layers.Rescaling(shape.logit_scale, name="logits", dtype="float32")(logits)
    model = keras.Model(inputs, [embedding, logits])
    model.get_layer("whiten").set_weights([kernel])
    return model


class _OneCycle:
    """Linear warm-up to the peak, then linear decay to zero (as a Keras schedule)."""

    def __new__(cls, peak: float, steps: int, warmup: float):
        import keras

        class Schedule(keras.optimizers.schedules.LearningRateSchedule):
            def __call__(self, step):
                from keras import ops

                step = ops.cast(step, "float32")
                up = max(1.0, warmup * steps)
                rising = peak * (0.1 + 0.9 * step / up)
                falling = peak * ops.maximum(0.0, (steps - step) / max(1.0, steps - up))
                return ops.where(step < up, rising, falling)

            def get_config(self):
                return {"peak": peak, "steps": steps, "warmup": warmup}

        return Schedule()


def train(pixels: np.ndarray, labels: np.ndarray, shape: Shape, recipe: Recipe, seed: int,
          log: Callable[[str], None] = print) -> tuple[dict[str, np.ndarray], dict, object]:
    """Train on n x 3072 CIFAR-layout pixels with labels 0..outputs-1; returns (ONNX weights, facts, Keras model)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    bf16 = recipe.precision == "bf16" or (recipe.precision == "auto" and cpu_has_bf16())
    keras.mixed_precision.set_global_policy("mixed_bfloat16" if bf16 else "float32")
    try:
        images = to_nhwc(pixels)
        mean, std = channel_stats(images)
        kernel = whitening(images, mean, std, shape.whiten_pairs)
        model = build(shape, kernel, mean, std)
        steps = recipe.epochs * -(-len(images) // recipe.batch)
        optimizer = keras.optimizers.SGD(_OneCycle(recipe.peak_lr, steps, recipe.warmup), momentum=recipe.momentum,
                                         nesterov=True, weight_decay=recipe.weight_decay)
        loss = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=recipe.label_smoothing)
        trainer = keras.Model(model.input, model.outputs[1])  # the same layers; the loss sees the logits
        trainer.compile(optimizer=optimizer, loss=loss, jit_compile=False)
        targets = keras.utils.to_categorical(labels, shape.outputs).astype(np.float32)
        rng = np.random.default_rng(seed)
        started = time.monotonic()
        for epoch in range(recipe.epochs):
            order = rng.permutation(len(images))
            batch_images = augment(images[order], rng, recipe.shift).astype(np.float32)
            history = trainer.fit(batch_images, targets[order], batch_size=recipe.batch, epochs=1, shuffle=False,
                                  verbose=0)
            seconds = time.monotonic() - started
            log(f"cnn epoch {epoch + 1}/{recipe.epochs}: loss {history.history['loss'][-1]:.3f}, "
                f"{seconds:,.0f} s, {len(images) * (epoch + 1) / seconds:,.0f} images/s")
        weights = export_weights(model, mean, std)
        facts = {"epochs": recipe.epochs, "images": int(len(images)), "precision": "bf16" if bf16 else "fp32",
                 "seconds": round(time.monotonic() - started, 1), "parameters": int(model.count_params()),
                 "tensorflow": tf.__version__, "keras": keras.__version__}
        return weights, facts, model
    finally:
        keras.mixed_precision.set_global_policy("float32")


def export_weights(model, mean: np.ndarray, std: np.ndarray) -> dict[str, np.ndarray]:
    """A trained Keras model's weights in the form tinytags.core.cnn.onnx_graph takes (batch-norms folded)."""
    out = {"mean": mean.astype(np.float32), "std": std.astype(np.float32)}
    whiten = model.get_layer("whiten").get_weights()[0]
    out["whiten"], out["whiten_bias"] = whiten, np.zeros(whiten.shape[-1], np.float32)
    for layer in model.layers:
        name = layer.name
        if name.startswith("b") and "_conv" in name:
            out[name] = layer.get_weights()[0].astype(np.float32)
        elif name.startswith("b") and "_bn" in name:
            gamma, beta, moving_mean, moving_var = (w.astype(np.float64) for w in layer.get_weights())
            scale = gamma / np.sqrt(moving_var + BN_EPSILON)
            out[f"{name}_scale"] = scale.astype(np.float32)
            out[f"{name}_shift"] = (beta - moving_mean * scale).astype(np.float32)
    out["dense"] = model.get_layer("dense").get_weights()[0].astype(np.float32)
    return out


def keras_outputs(model, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(embedding, logits) of the Keras model itself, for checking the ONNX graph against it."""
    embedding, logits = model.predict(to_nhwc(pixels).astype(np.float32), batch_size=1024, verbose=0)
    return np.asarray(embedding, np.float32), np.asarray(logits, np.float32)

