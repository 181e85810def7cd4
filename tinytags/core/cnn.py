"""The convolutional network under the forest (``--features cnn``): its shape, its ONNX graph, and inference.

Why this split. Training needs automatic differentiation and fast convolutions on a CPU: Keras 3 on
``tensorflow-cpu`` in the train job's driver (tinytags/core/cnn_training.py). Everything that only
*runs* the network — Spark executors tagging shards, the web app's classify, the benchmarks — needs
``onnxruntime`` (a small wheel, no TensorFlow): the trained weights are written as one ONNX graph,
built here by hand from the weights, so nothing depends on a converter keeping up with Keras.

The network (after the airbench family of fast CIFAR-10 networks; our own code and sizes):

- input: uint8 records in CIFAR layout, which *is* NCHW (three row-major planes); scaled to [0, 1]
  and standardised per channel;
- a fixed 2x2 "whitening" convolution (eigenvectors of the training patches' covariance, each with
  its negative: ``2 * 12`` channels), then GELU;
- three blocks ``conv3x3 -> max-pool 2 -> batch-norm -> GELU -> conv3x3 -> batch-norm -> GELU``
  (widths in ``Shape.widths``);
- a global max-pool: the **embedding** (``widths[-1]`` numbers), then one linear layer to the logits
  of the ten classes and "none".

The forest votes on ``forest_inputs``: the logits and the leading principal components of the
embedding, quantised to 256 levels (the forest splits integer thresholds). The similarity vector
is the embedding projected on its leading principal directions, unit length. Not whitened: dividing
by each direction's spread lifts the faint directions, which carry more noise than class, and
costs about 4 points of 10-NN same-class share in cross-validation on training images
(bench/RESULTS.md).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from tinytags.core.contract import CLASSES
from tinytags.core.features import FEATURES_FILE, fit_quantiser, npz_bytes, quantise
from tinytags.core.images import RECORD_BYTES, SIDE

CNN_FORMAT = "tinytags-cnn-1"
CHUNK = 1024  # images per onnxruntime call: big enough for the matrix kernels, small in memory
OPSET = 20    # Gelu arrived in opset 20


class NetworkError(ValueError):
    """A network file that cannot be used; the message names it."""


@dataclass(frozen=True)
class Shape:
    """The network's sizes (what ``--cnn-widths`` and friends set)."""

    widths: tuple[int, int, int] = (32, 64, 128)
    whiten_pairs: int = 12      # 2x2x3 = 12 whitening directions, each with its negative
    outputs: int = len(CLASSES) + 1  # ten classes + none
    logit_scale: float = 1 / 9  # keeps the initial logits small (a fixed scale, as airbench does)
    # Average the outputs of the image and its mirror image (test-time flips): better on held-out
    # photos of the ten and of none (bench/RESULTS.md), at twice the network's cost per image.
    flip: bool = True

    @property
    def embed_dims(self) -> int:
        """Numbers in the embedding (the global max-pool of the last block)."""
        return self.widths[-1]


# --- ONNX graph from weights --------------------------------------------------------------------


def onnx_graph(shape: Shape, weights: dict[str, np.ndarray]) -> bytes:
    """The network as ONNX bytes: input ``pixels`` (n x 3072 uint8), outputs ``embedding`` and ``logits``.

    ``weights``: ``mean``/``std`` (3,), ``whiten`` (2, 2, 3, 24) and ``whiten_bias`` (24,), and per
    block ``b{i}_conv{j}`` (3, 3, in, out) kernels and ``b{i}_bn{j}_scale``/``_shift`` (out,) affine
    batch-norm terms (already folded from gamma, beta, mean, variance), then ``dense`` (embed, out).
    Kernels come in Keras' HWIO order and are turned into ONNX's OIHW here.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits = [], []

    def const(name: str, array: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def node(op: str, inputs: list[str], output: str, **attrs) -> str:
        nodes.append(helper.make_node(op, inputs, [output], name=output, **attrs))
        return output

    def conv(x: str, kernel: np.ndarray, name: str, pad: int, bias: np.ndarray | None = None) -> str:
        w = const(f"{name}.w", kernel.transpose(3, 2, 0, 1).astype(np.float32))
        inputs = [x, w] + ([const(f"{name}.b", bias.astype(np.float32))] if bias is not None else [])
        return node("Conv", inputs, name, pads=[pad] * 4, kernel_shape=list(kernel.shape[:2]))

    def affine(x: str, scale: np.ndarray, shift: np.ndarray, name: str) -> str:
        s = const(f"{name}.s", scale.reshape(1, -1, 1, 1).astype(np.float32))
        t = const(f"{name}.t", shift.reshape(1, -1, 1, 1).astype(np.float32))
        return node("Add", [node("Mul", [x, s], f"{name}.mul"), t], name)

    x = node("Cast", ["pixels"], "float", to=TensorProto.FLOAT)
    x = node("Reshape", [x, const("nchw", np.array([-1, 3, SIDE, SIDE], np.int64))], "image")
    x = affine(x, 1 / (255 * weights["std"]), -weights["mean"] / weights["std"], "standard")
    x = node("Gelu", [conv(x, weights["whiten"], "whiten", 0, weights["whiten_bias"])], "whiten.act")
    for i in range(len(shape.widths)):
        for j in range(2):
            x = conv(x, weights[f"b{i}_conv{j}"], f"b{i}.conv{j}", 1)
            if j == 0:
                x = node("MaxPool", [x], f"b{i}.pool", kernel_shape=[2, 2], strides=[2, 2])
            x = affine(x, weights[f"b{i}_bn{j}_scale"], weights[f"b{i}_bn{j}_shift"], f"b{i}.bn{j}")
            x = node("Gelu", [x], f"b{i}.act{j}")
    x = node("GlobalMaxPool", [x], "pooled")
    embedding = node("Flatten", [x], "embedding", axis=1)
    dense = const("dense.w", (weights["dense"] * shape.logit_scale).astype(np.float32))
    node("MatMul", [embedding, dense], "logits")
    graph = helper.make_graph(
        nodes, "tinytags-cnn",
        [helper.make_tensor_value_info("pixels", TensorProto.UINT8, ["n", RECORD_BYTES])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["n", shape.embed_dims]),
         helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", shape.outputs])],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="tinytags")
    model.ir_version = 10  # what onnxruntime of the pinned version reads
    onnx.checker.check_model(model)
    return model.SerializeToString()


# --- inference ----------------------------------------------------------------------------------


def _threads() -> int:
    """onnxruntime threads when none were set: TINYTAGS_CNN_THREADS, else 1 (Spark runs a task per core)."""
    value = os.environ.get("TINYTAGS_CNN_THREADS")
    return max(1, int(value)) if value else 1


class Network:
    """An ONNX network run by onnxruntime; picklable (the session is made again where it runs)."""

    def __init__(self, graph: bytes, source: str = "network", threads: int | None = None):
        self.graph, self.source, self.threads = graph, source, threads
        self._session = None
        self._lock = threading.Lock()

    def use_threads(self, threads: int) -> None:
        """Run with this many threads from now on (a new session if the count changes)."""
        with self._lock:
            if threads != self.threads:
                self.threads, self._session = threads, None

    def __getstate__(self):
        # The thread count is the process's own: a Spark task sets its cores (Tagger.use_threads).
        return {"graph": self.graph, "source": self.source, "threads": None}

    def __setstate__(self, state):
        self.__init__(state["graph"], state["source"], state["threads"])

    @property
    def session(self):
        """The onnxruntime session, made on first use in this process."""
        with self._lock:
            if self._session is None:
                import onnxruntime

                options = onnxruntime.SessionOptions()
                options.intra_op_num_threads = self.threads or _threads()
                options.inter_op_num_threads = 1
                options.log_severity_level = 3
                try:
                    self._session = onnxruntime.InferenceSession(self.graph, options,
                                                                 providers=["CPUExecutionProvider"])
                except Exception as error:  # noqa: BLE001 - onnxruntime raises its own untyped errors for bad graphs
                    raise NetworkError(f"{self.source}: not a usable network ({type(error).__name__}: "
                                       f"{str(error)[:200]})") from None
            return self._session

    def run(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """n x 3072 uint8 (CIFAR layout) -> (n x E embedding, n x C logits), float32, in chunks."""
        pixels = np.ascontiguousarray(np.asarray(pixels, np.uint8).reshape(-1, RECORD_BYTES))
        session = self.session
        embedded, logits = [], []
        for lo in range(0, pixels.shape[0], CHUNK):
            e, l = session.run(["embedding", "logits"], {"pixels": pixels[lo:lo + CHUNK]})
            embedded.append(e)
            logits.append(l)
        if not embedded:
            shape = [o.shape[1] for o in session.get_outputs()]
            return np.zeros((0, shape[0]), np.float32), np.zeros((0, shape[1]), np.float32)
        return np.concatenate(embedded), np.concatenate(logits)


def digest(*parts: bytes | np.ndarray | dict) -> str:
    """Content hash (12 hex digits) of graphs, arrays and JSON-able settings."""
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, dict):
            part = json.dumps(part, sort_keys=True).encode()
        elif isinstance(part, np.ndarray):
            part = np.ascontiguousarray(part).tobytes()
        h.update(part)
    return h.hexdigest()[:12]


def shape_from(meta: dict) -> Shape:
    """The Shape recorded in a feature file's meta (files from before test-time flips had none)."""
    fields = dict(meta["shape"])
    fields["widths"] = tuple(fields["widths"])
    fields.setdefault("flip", False)
    return Shape(**fields)


def mirrored(pixels: np.ndarray) -> np.ndarray:
    """n x 3072 CIFAR-layout rows -> the same images flipped left to right."""
    return np.ascontiguousarray(np.asarray(pixels, np.uint8).reshape(-1, 3, SIDE, SIDE)[:, :, :, ::-1]).reshape(
        -1, RECORD_BYTES)


def shape_meta(shape: Shape) -> dict:
    """A Shape as JSON-able meta."""
    return asdict(shape)


# --- the feature set the forest votes on --------------------------------------------------------


@dataclass(frozen=True)
class Head:
    """What turns the network's outputs into forest inputs and similarity vectors (fitted on held-out images)."""

    center: np.ndarray    # E: mean embedding
    components: np.ndarray  # E x P: leading principal directions, for the forest
    embed: np.ndarray     # E x V: leading principal directions, for the similarity vector
    cuts: np.ndarray      # (C + P) x 255 quantiser cuts of [logits, components]


def fit_head(embedding: np.ndarray, logits: np.ndarray, forest_pcs: int, vector_dims: int) -> Head:
    """PCA of held-out embeddings (forest components and similarity directions) and quantiser cuts."""
    center = embedding.mean(axis=0)
    centred = (embedding - center).astype(np.float64)
    values, vectors = np.linalg.eigh(centred.T @ centred / max(1, len(centred) - 1))
    order = np.argsort(values)[::-1]
    values, vectors = np.maximum(values[order], 1e-9), vectors[:, order]
    components = vectors[:, :forest_pcs].astype(np.float32)
    # A network narrower than the vector (its embedding has fewer than vector_dims numbers) gets
    # zero columns: every vector keeps the contract's length, and similarities are unchanged.
    embed = np.zeros((len(center), vector_dims), np.float32)
    embed[:, :min(len(center), vector_dims)] = vectors[:, :vector_dims]
    values_for_forest = np.concatenate([logits, (embedding - center) @ components], axis=1)
    return Head(center.astype(np.float32), components, embed, fit_quantiser(values_for_forest))


class CnnFeatures:
    """The network, then the head: the feature set of ``--features cnn`` (see the module docstring)."""

    junk_class = len(CLASSES)  # the network's and the forest's last class is "none"

    def __init__(self, shape: Shape, network: Network, head: Head | None = None):
        self.shape, self.network, self.head = shape, network, head

    @property
    def name(self) -> str:
        """E.g. ``cnn64-128-128``."""
        return "cnn" + "-".join(str(w) for w in self.shape.widths)

    @property
    def version(self) -> str:
        """Content hash of the graph and the head."""
        head = self.head
        return digest(self.network.graph, shape_meta(self.shape), head.center, head.components, head.embed, head.cuts)

    def outputs(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """n x 3072 CIFAR-layout uint8 -> (embedding, logits) of the network (averaged with the mirror image's)."""
        embedding, logits = self.network.run(pixels)
        if self.shape.flip and len(embedding):
            flipped_embedding, flipped_logits = self.network.run(mirrored(pixels))
            embedding = (embedding + flipped_embedding) / 2
            logits = (logits + flipped_logits) / 2
        return embedding, logits

    def forest_values(self, embedding: np.ndarray, logits: np.ndarray) -> np.ndarray:
        """The forest's inputs before quantising: the logits and the leading components of the embedding."""
        return np.concatenate([logits, (embedding - self.head.center) @ self.head.components], axis=1)

    def encode_all(self, pixels: np.ndarray, vectors: bool = True) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """(n x D uint8 forest input, n x V unit float32 vectors unless vectors=False, no outlier flags).

        "None of the ten" is a class of the network and of the forest, learned from real photos and
        synthetic junk, so no separate outlier test is needed.
        """
        embedding, logits = self.outputs(pixels)
        inputs = quantise(self.forest_values(embedding, logits), self.head.cuts)
        vec = None
        if vectors:
            vec = (embedding - self.head.center) @ self.head.embed
            vec /= np.maximum(np.linalg.norm(vec, axis=1, keepdims=True), 1e-12)
        return inputs, vec, np.zeros(len(inputs), bool)

    def dumps(self) -> bytes:
        """The model dir's ``features.npz`` bytes: the ONNX graph, the head, and the shape."""
        head = self.head
        return npz_bytes({"network": np.frombuffer(self.network.graph, np.uint8), "center": head.center,
                         "components": head.components, "embed": head.embed, "cuts": head.cuts},
                        {"format": CNN_FORMAT, "name": self.name, "shape": shape_meta(self.shape)})

    def save(self, model_dir) -> str:
        """Write ``features.npz`` into model_dir; returns its path."""
        path = Path(model_dir) / FEATURES_FILE
        path.write_bytes(self.dumps())
        return str(path)

    @classmethod
    def from_arrays(cls, arrays, meta: dict, source: str) -> "CnnFeatures":
        """From an opened ``features.npz`` of the cnn format (checked: the graph must load)."""
        try:
            shape = shape_from(meta)
            network = Network(arrays["network"].tobytes(), source)
            head = Head(arrays["center"], arrays["components"], arrays["embed"], arrays["cuts"])
        except (KeyError, TypeError, ValueError) as error:
            raise NetworkError(f"{source}: incomplete network file ({type(error).__name__}: {error})") from None
        network.session  # fails here, naming the file, rather than in the first task
        return cls(shape, network, head)
