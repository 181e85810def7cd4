"""Learned features under the random forest: k-means patch dictionary, pooled activations, LDA.

The recipe (after Coates, Lee & Ng 2011), all numpy, float32, batched (no per-image Python loops):

1. (a) ``sample_patches``: random 6x6x3 patches (108 numbers) of training images, each normalised
   for brightness and contrast, (x - mean) / sqrt(var + 10).
2. (b) ``fit_dictionary`` (driver): PCA whitening of the patches (eps 0.1), keeping the top
   ``whiten_dims`` = 40 of 108 directions (ZCA is a rotation of PCA whitening, so distances are
   the ZCA ones minus the low-variance directions; it cuts the products 2.7x), then Lloyd k-means,
   256 centroids, 200,000 patches, 15 iterations.
3. (c) ``encode`` / ``Encoder`` (the heavy part, Spark tasks): patches at stride 2 (14x14
   positions) by ``sliding_window_view`` + one copy; the per-patch normalisation is folded into
   the whitening product (x W - mean (1 W)) / s - m W; activation "relu" = the triangle on
   *squared* distances, max(0, mean_k(d^2) - d_k^2), which is linear in the whitened patch
   (|y|^2 cancels), so it is one sgemm with a bias row and a max — the contrast 1/s moves into the
   pooling weights. Sum-pooled over a 3x3 grid of regions -> 2,304 numbers (2x2 quadrants, 1,024). ("triangle" on true distances,
   the paper's, is kept: squared distances by one augmented sgemm [y, 1, |y|^2] @ [-2C; |c|^2; 1].)
4. (d) ``fit_head`` (driver): square root of the pooled features, standardise, LDA (Fisher,
   classes - 1 dims, from one Gram matrix: within = total - between) -> per-feature quantiles to
   256 uint8 levels (each level ~ equal share of training images) for the unchanged forest;
   whitened PCA (48 dims, unit length) for cosine similarity; an outlier cut.

Junk rejection, two tests: ``FeatureSet.fit`` adds 6,000 generated junk images (``junk_images``:
uniform and gaussian noise, flat colours, gradients, stripes, checkerboards) as an extra class
"none" (label = number of real classes) to LDA and forest; and ``outlier_score`` (squared length
of the standardised pooled features) above its 99.5% quantile on real training images flags junk.
An image is tagged only when its winner is a real class and it is not flagged.

Why these choices (each variant's accuracy, junk rate and cost: bench/RESULTS.md, "Learned
features"):

- The triangle on *squared* distances ("relu") over 40 whitened dimensions, then a square root of
  the pooled features: as accurate as the paper's triangle on true distances over all 108
  dimensions, and cheaper, since the encoding is one matrix product.
- The junk class and the outlier cut: without them most synthetic junk gets a tag; with them very
  little does, at the price of a few real images called junk.
- Stride 2, not 3: stride 3 encodes faster but loses accuracy.
- A 3x3 pooling grid, not 2x2: more accurate at the same encoding cost.
- LDA alone for the forest: extra PCA dimensions beside the LDA ones brought no gain.
- The 40% rule's precision stays close to accuracy: the trees all split the same 10 LDA values, so
  they agree on most images.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from tinytags.core.images import CHANNELS, RECORD_BYTES, SIDE, embedding
from tinytags.core.junk import junk_images

FEATURES_FILE = "features.npz"
FEATURES_FORMAT = "tinytags-features/1"
CHUNK = 2048          # images per transform batch (bounds memory)
_ENCODE_CHUNK = 16    # images per inner encoding step (keeps the P x K activations in cache)
_NORM_EPS = 10.0      # per-patch contrast normalisation: (x - mean) / sqrt(var + 10), pixels 0..255
_WHITEN_EPS = 0.1     # ZCA / PCA whitening regulariser on normalised patches
OUTLIER_QUANTILE = 0.995  # share of real training images under the outlier cut


class FeatureError(ValueError):
    """A feature model that cannot be used (missing, wrong format, mismatched input)."""


@dataclass(frozen=True)
class Config:
    """Hyper-parameters of the learned feature set."""

    patch: int = 6               # patch side (pixels); a patch is patch*patch*3 numbers
    stride: int = 2              # step between patch positions
    centroids: int = 256         # k-means dictionary size
    whiten_dims: int = 40        # PCA-whitened dimensions kept (108 = all: ZCA-equivalent distances)
    activation: str = "relu"     # "triangle": max(0, mean(z) - z_k), z = distance; "relu": squared-distance triangle
    grid: int = 3                # pooling grid (grid x grid regions, sum-pooled); 3: more accurate than 2
    power: float = 0.5           # pooled features ** power before LDA (0.5: square root)
    lda_dims: int = 0            # 0: classes - 1
    pca_dims: int = 0            # extra PCA dims appended to the LDA dims for the forest
    shrinkage: float = 0.0       # LDA within-class scatter shrinkage towards a scaled identity
    embed_lda_weight: float = 0.0  # similarity vector: weight of the (whitened) LDA dims next to PCA dims
    kmeans_patches: int = 200_000
    kmeans_iters: int = 15
    embed_dims: int = 48

    def __post_init__(self):
        if self.activation not in ("triangle", "relu"):
            raise ValueError(f"activation must be triangle or relu, got {self.activation!r}")
        if not 1 <= self.whiten_dims <= self.patch * self.patch * CHANNELS:
            raise ValueError(f"whiten_dims must be 1..{self.patch * self.patch * CHANNELS}")

    @property
    def positions(self) -> int:
        """Patch positions along one side of the image."""
        return (SIDE - self.patch) // self.stride + 1


# --- (a) patch sampling ---------------------------------------------------------------------------


def _planes(pixels: np.ndarray) -> np.ndarray:
    pixels = np.asarray(pixels)
    if pixels.dtype != np.uint8 or pixels.ndim != 2 or pixels.shape[1] != RECORD_BYTES:
        raise FeatureError(f"expected n x {RECORD_BYTES} uint8 pixel rows, got {pixels.dtype} {pixels.shape}")
    return pixels.reshape(-1, CHANNELS, SIDE, SIDE)


def normalise_patches(patches: np.ndarray) -> np.ndarray:
    """Rows of raw patch values -> brightness/contrast-normalised float32 rows."""
    x = np.asarray(patches, np.float32)
    mean = x.mean(axis=1, keepdims=True)
    x = x - mean
    x /= np.sqrt((x * x).mean(axis=1, keepdims=True) + _NORM_EPS)
    return x


def sample_patches(pixels: np.ndarray, count: int, seed: int, patch: int = 6) -> np.ndarray:
    """Random patches from a batch of images (CIFAR layout) -> count x patch*patch*3 normalised float32."""
    planes = _planes(pixels)
    rng = np.random.default_rng(seed)
    n = planes.shape[0]
    image = rng.integers(0, n, count)
    row = rng.integers(0, SIDE - patch + 1, count)
    col = rng.integers(0, SIDE - patch + 1, count)
    offsets = np.arange(patch)
    # count x 3 x patch x patch by fancy indexing, channel-major (the encoder's column order)
    rows = (row[:, None] + offsets)[:, None, :, None]
    cols = (col[:, None] + offsets)[:, None, None, :]
    got = planes[image[:, None, None, None], np.arange(CHANNELS)[None, :, None, None], rows, cols]
    return normalise_patches(got.reshape(count, -1))


# --- (b) whitening + k-means ----------------------------------------------------------------------


@dataclass(frozen=True)
class Dictionary:
    """Patch whitening and the k-means centroids (in whitened space)."""

    mean: np.ndarray       # D float32, mean of normalised patches
    whiten: np.ndarray     # D x d float32, PCA whitening (kept dims)
    centroids: np.ndarray  # K x d float32


def _sq_distances(x: np.ndarray, c: np.ndarray, c_sq: np.ndarray) -> np.ndarray:
    d = x @ (-2.0 * c.T)
    d += (x * x).sum(axis=1, keepdims=True)
    d += c_sq
    return d


def kmeans(x: np.ndarray, k: int, iters: int, seed: int) -> np.ndarray:
    """Plain Lloyd k-means (numpy, float32) from k random samples; empty clusters re-seeded; k x d."""
    rng = np.random.default_rng(seed)
    x = np.ascontiguousarray(x, np.float32)
    centroids = x[rng.choice(x.shape[0], k, replace=False)].copy()
    for _ in range(iters):
        c_sq = (centroids * centroids).sum(axis=1)
        assign = np.empty(x.shape[0], np.intp)
        for lo in range(0, x.shape[0], 16384):
            assign[lo:lo + 16384] = _sq_distances(x[lo:lo + 16384], centroids, c_sq).argmin(axis=1)
        counts = np.bincount(assign, minlength=k)
        sums = np.zeros((k, x.shape[1]), np.float64)
        np.add.at(sums, assign, x) if x.shape[0] < 1000 else _add_rows(sums, assign, x)
        empty = counts == 0
        centroids = (sums / np.maximum(counts, 1)[:, None]).astype(np.float32)
        if empty.any():
            centroids[empty] = x[rng.choice(x.shape[0], int(empty.sum()), replace=False)]
    return centroids


def _add_rows(sums: np.ndarray, assign: np.ndarray, x: np.ndarray) -> None:
    """sums[assign[i]] += x[i] via a sort and reduceat (much faster than np.add.at)."""
    order = np.argsort(assign, kind="stable")
    sorted_assign = assign[order]
    starts = np.flatnonzero(np.r_[True, sorted_assign[1:] != sorted_assign[:-1]])
    sums[sorted_assign[starts]] += np.add.reduceat(x[order].astype(np.float64), starts, axis=0)


def fit_dictionary(patches: np.ndarray, config: Config, seed: int) -> Dictionary:
    """Normalised patches -> whitening (PCA, top whiten_dims) and k-means centroids, on the driver."""
    x = np.asarray(patches, np.float32)
    mean = x.mean(axis=0, dtype=np.float64)
    centred = x - mean.astype(np.float32)
    cov = (centred.T @ centred).astype(np.float64) / x.shape[0]
    values, vectors = np.linalg.eigh(cov)
    order = np.argsort(values)[::-1][:config.whiten_dims]
    whiten = (vectors[:, order] / np.sqrt(values[order] + _WHITEN_EPS)).astype(np.float32)
    centroids = kmeans(centred @ whiten, config.centroids, config.kmeans_iters, seed)
    return Dictionary(mean=mean.astype(np.float32), whiten=whiten, centroids=centroids)


# --- (c) encoding ---------------------------------------------------------------------------------


def _pool_matrix(config: Config) -> np.ndarray:
    """grid^2 x positions^2 0/1 matrix: which region each patch position is summed into."""
    p = config.positions
    edges = np.linspace(0, p, config.grid + 1).round().astype(int)
    region = np.searchsorted(edges, np.arange(p), side="right") - 1
    cell = (region[:, None] * config.grid + region[None, :]).ravel()
    return (cell[None, :] == np.arange(config.grid ** 2)[:, None]).astype(np.float32)


class Encoder:
    """Pooled dictionary activations of images: the heavy step, batched, float32."""

    def __init__(self, dictionary: Dictionary, config: Config):
        self.config = config
        w = dictionary.whiten
        c = dictionary.centroids
        d = w.shape[1]
        # whitened y = ((x - mu)/s - m) W, with mu, s the patch's mean and contrast: computed as
        # (x W - mu (1 W)) / s - m W, so the patch matrix is never normalised element by element.
        self._w = np.ascontiguousarray(w)
        self._w_ones = w.sum(axis=0)
        self._w_mean = dictionary.mean @ w
        if config.activation == "triangle":
            # squared distances in one product: [y, 1, |y|^2] @ [-2C; |c|^2; 1]
            self._c_aug = np.vstack([-2.0 * c.T, (c * c).sum(axis=1)[None], np.ones((1, c.shape[0]))]).astype(np.float32)
        else:
            # mean_k(z_k^2) - z_k^2 = 2 y (c_k - cbar) - (|c_k|^2 - mean|c|^2): linear in y.
            cbar = c.mean(axis=0)
            c_sq = (c * c).sum(axis=1)
            self._c_aug = np.vstack([2.0 * (c - cbar).T, -(c_sq - c_sq.mean())[None]]).astype(np.float32)
        self._d = d
        self._pool = _pool_matrix(config)
        self.dims = config.grid ** 2 * c.shape[0]

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        """n x 3072 uint8 -> n x (grid^2 * K) float32 pooled activations."""
        planes = _planes(pixels)
        out = np.empty((planes.shape[0], self.dims), np.float32)
        for lo in range(0, planes.shape[0], _ENCODE_CHUNK):
            out[lo:lo + _ENCODE_CHUNK] = self._encode(planes[lo:lo + _ENCODE_CHUNK])
        return out

    def _encode(self, planes: np.ndarray) -> np.ndarray:
        cfg = self.config
        n, p, s = planes.shape[0], cfg.patch, cfg.stride
        positions = cfg.positions
        windows = np.lib.stride_tricks.sliding_window_view(planes, (p, p), axis=(2, 3))
        windows = windows[:, :, :positions * s:s, :positions * s:s]          # n,3,P,P,p,p
        x = np.empty((n, positions, positions, CHANNELS, p, p), np.float32)
        np.copyto(x, windows.transpose(0, 2, 3, 1, 4, 5))
        x = x.reshape(n * positions * positions, -1)
        dim = x.shape[1]
        total = x.sum(axis=1)
        squares = np.einsum("ij,ij->i", x, x)
        mu = total / dim
        scale = np.sqrt(np.maximum(squares / dim - mu * mu, 0) + _NORM_EPS)
        inv = (1.0 / scale).astype(np.float32)
        y = x @ self._w
        y -= mu[:, None] * self._w_ones
        if cfg.activation == "triangle":
            y *= inv[:, None]
            y -= self._w_mean
            y_aug = np.empty((y.shape[0], self._d + 2), np.float32)
            y_aug[:, :self._d] = y
            y_aug[:, self._d] = 1.0
            y_aug[:, self._d + 1] = np.einsum("ij,ij->i", y, y)
            z = y_aug @ self._c_aug
            np.maximum(z, 0, out=z)
            np.sqrt(z, out=z)
            mean = z.mean(axis=1, keepdims=True)
            np.subtract(mean, z, out=z)
            np.maximum(z, 0, out=z)
            weights = self._pool[None]
        else:
            # s * (y.w - b) = (xW - mu 1W - s mW).w - s b: scale by 1/s only in the pooling weights
            y -= scale[:, None] * self._w_mean
            y_aug = np.empty((y.shape[0], self._d + 1), np.float32)
            y_aug[:, :self._d] = y
            y_aug[:, self._d] = scale
            z = y_aug @ self._c_aug
            np.maximum(z, 0, out=z)
            weights = self._pool[None] * inv.reshape(n, 1, -1)
        if cfg.activation == "triangle" and cfg.grid == 2 and positions % 2 == 0:
            h = positions // 2
            return z.reshape(n, 2, h, 2, h, -1).sum(axis=(2, 4)).reshape(n, -1)
        pooled = np.matmul(weights, z.reshape(n, positions * positions, -1))
        return pooled.reshape(n, -1)


def encode(pixels: np.ndarray, dictionary: Dictionary, config: Config) -> np.ndarray:
    """A batch of images -> pooled features (n x grid^2*K float32); what a Spark task runs."""
    return Encoder(dictionary, config)(pixels)


# --- (d) LDA, PCA, quantiser ----------------------------------------------------------------------


@dataclass(frozen=True)
class Head:
    """Pooled features -> forest features (uint8) and similarity vectors."""

    power: float
    mean: np.ndarray        # F, of powered pooled features
    scale: np.ndarray       # F, their standard deviations
    project: np.ndarray     # F x D forest projection (LDA dims then PCA dims)
    cuts: np.ndarray        # D x 255 quantile cut points: uint8 value = number of cuts below
    embed: np.ndarray       # F x E projection for the similarity vectors
    outlier_cut: float      # junk when outlier_score > this (its OUTLIER_QUANTILE on real training images)


def _gram(x: np.ndarray, block: int = 4096) -> np.ndarray:
    total = np.zeros((x.shape[1], x.shape[1]), np.float64)
    for lo in range(0, x.shape[0], block):
        part = x[lo:lo + block]
        total += part.T @ part
    return total


def fit_lda_pca(features: np.ndarray, labels: np.ndarray, lda_dims: int, pca_dims: int,
                shrinkage: float = 0.0):
    """Fisher discriminant directions (F x lda_dims) and top principal directions and variances
    (F x pca_dims) of standardised features, from one Gram matrix (total = within + between).

    The between-class scatter has rank <= classes - 1, so the generalised eigenproblem
    Sb v = l Sw v is solved through one linear solve with Sw and a classes x classes eigenproblem
    (v = Sw^-1 D' u, with (D Sw^-1 D') u = l u), and the principal directions by subspace
    iteration: at 2,304 features far cheaper than three full eigendecompositions.
    """
    labels = np.asarray(labels)
    classes, index = np.unique(labels, return_inverse=True)
    n, f = features.shape
    counts = np.bincount(index).astype(np.float64)
    onehot = np.zeros((classes.size, n), np.float32)
    onehot[index, np.arange(n)] = 1.0
    sums = (onehot @ features).astype(np.float64)  # one sgemm instead of a sort of every row
    means = sums / counts[:, None]
    overall = sums.sum(axis=0) / n
    total = _gram(features) / n - np.outer(overall, overall)
    diff = (means - overall) * np.sqrt(counts / n)[:, None]  # between = diff' diff
    within = total - diff.T @ diff
    if shrinkage:
        within = (1 - shrinkage) * within + shrinkage * np.trace(within) / f * np.eye(f)
    within += 1e-6 * np.trace(within) / f * np.eye(f)
    solved = np.linalg.solve(within, diff.T)          # Sw^-1 D'
    values, vectors = np.linalg.eigh(diff @ solved)   # classes x classes
    order = np.argsort(values)[::-1][:lda_dims]
    # v' Sw v = l for v = Sw^-1 D' u: scale to unit within-class variance, as the textbook LDA.
    lda = solved @ (vectors[:, order] / np.sqrt(np.maximum(values[order], 1e-12)))
    p_values, p_vectors = _top_eigen(total, pca_dims)
    return lda.astype(np.float32), p_vectors.astype(np.float32), p_values


def _top_eigen(matrix: np.ndarray, k: int, iterations: int = 12, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The k largest eigenvalues and eigenvectors of a symmetric matrix, by subspace iteration."""
    if k <= 0:
        return np.zeros(0), np.zeros((matrix.shape[0], 0))
    width = min(matrix.shape[0], k + 16)
    basis = np.linalg.qr(np.random.default_rng(seed).standard_normal((matrix.shape[0], width)))[0]
    for _ in range(iterations):
        basis = np.linalg.qr(matrix @ basis)[0]
    values, vectors = np.linalg.eigh(basis.T @ matrix @ basis)
    order = np.argsort(values)[::-1][:k]
    return values[order], basis @ vectors[:, order]


def fit_quantiser(values: np.ndarray, levels: int = 256) -> np.ndarray:
    """Per-feature quantile cut points (D x levels-1) so each uint8 level holds ~equal training share."""
    qs = np.linspace(0, 1, levels + 1)[1:-1]
    return np.quantile(values, qs, axis=0).T.astype(np.float32)


def quantise(values: np.ndarray, cuts: np.ndarray) -> np.ndarray:
    """n x D float -> n x D uint8: how many of each feature's cuts lie below the value."""
    out = np.empty(values.shape, np.uint8)
    for j in range(values.shape[1]):
        out[:, j] = np.searchsorted(cuts[j], values[:, j], side="left")
    return out


def _powered(pooled: np.ndarray, power: float) -> np.ndarray:
    if power == 1.0:
        return pooled
    if power == 0.5:  # sqrt is several times faster than a general power
        return np.sqrt(np.maximum(pooled, 0))
    return np.power(np.maximum(pooled, 0), power, dtype=np.float32)


def outlier_score(standardised: np.ndarray) -> np.ndarray:
    """Squared length of standardised pooled features: far above real images' for most junk."""
    return np.einsum("ij,ij->i", standardised, standardised)


def fit_head(pooled: np.ndarray, labels: np.ndarray, config: Config,
             real: np.ndarray | None = None) -> Head:
    """LDA (+PCA) projection, quantiser, similarity projection and outlier cut from pooled training
    features; `real` marks the real (non-junk) rows the outlier cut is set on."""
    x = _powered(pooled, config.power)
    mean = x.mean(axis=0, dtype=np.float64).astype(np.float32)
    z = x - mean
    del x
    scale = (np.sqrt(np.einsum("ij,ij->j", z, z, dtype=np.float64) / len(z)) + 1e-6).astype(np.float32)
    z /= scale
    n_classes = np.unique(labels).size
    lda, pca, variances = fit_lda_pca(z, labels, config.lda_dims or n_classes - 1,
                                      max(config.pca_dims, config.embed_dims), config.shrinkage)
    project = np.hstack([lda, pca[:, :config.pca_dims]]) if config.pca_dims else lda
    cuts = fit_quantiser(z @ project)
    pca_white = pca[:, :config.embed_dims] / np.sqrt(variances[:config.embed_dims]).astype(np.float32)
    if config.embed_lda_weight:
        k = lda.shape[1]
        lda_proj = z @ lda
        lda_white = lda / lda_proj.std(axis=0)
        embed = np.hstack([config.embed_lda_weight * lda_white,
                           pca_white[:, :config.embed_dims - k]])
    else:
        embed = pca_white
    scores = outlier_score(z if real is None else z[real])
    return Head(power=config.power, mean=mean, scale=scale, project=project.astype(np.float32),
                cuts=cuts, embed=embed.astype(np.float32),
                outlier_cut=float(np.quantile(scores, OUTLIER_QUANTILE)))


# --- the feature sets -----------------------------------------------------------------------------


def npz_bytes(arrays: dict[str, np.ndarray], meta: dict) -> bytes:
    """A ``features.npz``: the arrays and a JSON ``meta`` entry (both learned feature sets write this)."""
    buffer = io.BytesIO()
    np.savez(buffer, meta=np.array(json.dumps(meta, sort_keys=True)), **arrays)
    return buffer.getvalue()


class PixelFeatures:
    """The raw pixels, unchanged: the forest's original input."""

    name = "pixels"
    version = "pixels"
    junk_class = None

    def fit(self, pixels, labels, seed: int = 0) -> "PixelFeatures":
        """Nothing to learn."""
        return self

    def transform(self, pixels: np.ndarray) -> np.ndarray:
        """n x 3072 uint8 -> the same array."""
        return _planes(pixels).reshape(-1, RECORD_BYTES)

    def vectors(self, pixels: np.ndarray) -> np.ndarray:
        """The 4x4 colour-layout similarity vectors (tinytags.core.images.embedding)."""
        return embedding(pixels)

    def encode_all(self, pixels: np.ndarray, vectors: bool = True) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """(the pixels as forest input, colour-layout vectors unless vectors=False, no outlier flags)."""
        pixels = self.transform(pixels)
        return pixels, embedding(pixels) if vectors else None, np.zeros(len(pixels), bool)


class FeatureSet:
    """k-means patch dictionary + pooled activations + LDA, quantised to uint8 for the forest."""

    def __init__(self, config: Config | None = None, dictionary: Dictionary | None = None,
                 head: Head | None = None, n_classes: int = 0, junk_class: int | None = None):
        self.config = config or Config()
        self.dictionary, self.head = dictionary, head
        self.n_classes, self.junk_class = n_classes, junk_class
        self._encoder = Encoder(dictionary, self.config) if dictionary is not None else None

    @property
    def name(self) -> str:
        """E.g. "kmeans256-lda"."""
        extra = f"+pca{self.config.pca_dims}" if self.config.pca_dims else ""
        return f"kmeans{self.config.centroids}-lda{extra}"

    @property
    def version(self) -> str:
        """Content hash of the fitted arrays and config (12 hex digits)."""
        digest = hashlib.sha256(json.dumps(asdict(self.config), sort_keys=True).encode())
        for array in self._arrays().values():
            digest.update(np.ascontiguousarray(array).tobytes())
        return digest.hexdigest()[:12]

    def fit(self, pixels: np.ndarray, labels: np.ndarray, seed: int = 0, junk: int = 6000) -> "FeatureSet":
        """Learn everything from training images (plus `junk` synthetic "none" images if junk > 0)."""
        labels = np.asarray(labels)
        n_classes = int(labels.max()) + 1
        patches = sample_patches(pixels, self.config.kmeans_patches, seed, self.config.patch)
        dictionary = fit_dictionary(patches, self.config, seed)
        pooled = encode(pixels, dictionary, self.config)
        if junk:
            pooled = np.concatenate([pooled, encode(junk_images(junk, seed + 1), dictionary, self.config)])
            labels = np.concatenate([labels, np.full(junk, n_classes, labels.dtype)])
        return self.fit_from_pooled(dictionary, pooled, labels, n_classes, n_classes if junk else None)

    def fit_from_pooled(self, dictionary: Dictionary, pooled: np.ndarray, labels: np.ndarray,
                        n_classes: int, junk_class: int | None) -> "FeatureSet":
        """Step (d) on pooled features computed elsewhere (e.g. in Spark tasks); labels >= n_classes are junk."""
        self.dictionary, self._encoder = dictionary, Encoder(dictionary, self.config)
        self.n_classes, self.junk_class = n_classes, junk_class
        self.head = fit_head(pooled, labels, self.config, np.asarray(labels) < n_classes)
        return self

    @property
    def forest_classes(self) -> int:
        """Classes the forest is trained on: the real ones plus "none" when junk was used."""
        return self.n_classes + (self.junk_class is not None)

    def pooled(self, pixels: np.ndarray) -> np.ndarray:
        """n x 3072 uint8 -> n x F float32 pooled activations (batched)."""
        return self._encoder(pixels)

    def _standardised(self, pooled: np.ndarray) -> np.ndarray:
        h = self.head
        z = _powered(pooled, h.power) - h.mean
        z /= h.scale
        return z

    def project(self, pooled: np.ndarray) -> np.ndarray:
        """Pooled features -> n x D float32 LDA(+PCA) values (before quantising)."""
        return self._standardised(pooled) @ self.head.project

    def encode_all(self, pixels: np.ndarray, vectors: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One pass: (n x D uint8 forest input, n x E unit float32 vectors, n bool outlier flags).

        The vectors are always computed (one small product of what the forest input needs anyway).
        """
        n = _planes(pixels).shape[0]
        h = self.head
        out = np.empty((n, h.project.shape[1]), np.uint8)
        vec = np.empty((n, h.embed.shape[1]), np.float32)
        junk = np.empty(n, bool)
        for lo in range(0, n, CHUNK):
            z = self._standardised(self.pooled(pixels[lo:lo + CHUNK]))
            out[lo:lo + CHUNK] = quantise(z @ h.project, h.cuts)
            v = z @ h.embed
            v /= np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
            vec[lo:lo + CHUNK] = v
            junk[lo:lo + CHUNK] = outlier_score(z) > h.outlier_cut
        return out, vec, junk

    def transform(self, pixels: np.ndarray) -> np.ndarray:
        """n x 3072 uint8 -> n x D uint8 forest input."""
        return self.encode_all(pixels)[0]

    def vectors(self, pixels: np.ndarray) -> np.ndarray:
        """n x 3072 uint8 -> n x embed_dims unit float32 vectors for cosine similarity."""
        return self.encode_all(pixels)[1]

    def is_junk(self, pixels: np.ndarray) -> np.ndarray:
        """n bool: the outlier score says "not a photo" (the forest's "none" class is the other test)."""
        return self.encode_all(pixels)[2]

    def _arrays(self) -> dict[str, np.ndarray]:
        d, h = self.dictionary, self.head
        return {"patch_mean": d.mean, "whiten": d.whiten, "centroids": d.centroids,
                "mean": h.mean, "scale": h.scale, "project": h.project, "cuts": h.cuts,
                "embed": h.embed}

    def save(self, model_dir: str | Path) -> Path:
        """Write ``features.npz`` into model_dir; returns its path."""
        meta = {"format": FEATURES_FORMAT, "name": self.name, "config": asdict(self.config),
                "n_classes": self.n_classes, "junk_class": self.junk_class,
                "power": self.head.power, "outlier_cut": self.head.outlier_cut}
        path = Path(model_dir) / FEATURES_FILE
        path.write_bytes(npz_bytes(self._arrays(), meta))
        return path

    @classmethod
    def load(cls, model_dir: str | Path) -> "FeatureSet":
        """Read ``features.npz`` from a model dir (FeatureError if missing or of another format)."""
        path = Path(model_dir) / FEATURES_FILE
        if not path.is_file():
            raise FeatureError(f"no feature model at {model_dir}: {FEATURES_FILE} is missing")
        return cls.loads(path.read_bytes(), str(path))

    @classmethod
    def loads(cls, data: bytes, source: str = "features") -> "FeatureSet":
        """Parse the bytes of a ``features.npz``."""
        try:
            arrays = np.load(io.BytesIO(data), allow_pickle=False)
            meta = json.loads(str(arrays["meta"]))
        except (OSError, ValueError, KeyError) as error:
            raise FeatureError(f"{source} is not a readable feature file: {error}") from error
        return cls.from_arrays(arrays, meta, source)

    @classmethod
    def from_arrays(cls, arrays, meta: dict, source: str = "features") -> "FeatureSet":
        """From an opened ``features.npz`` and its meta (FeatureError when it is of another format)."""
        if meta.get("format") != FEATURES_FORMAT:
            raise FeatureError(f"{source} has format {meta.get('format')!r}, expected {FEATURES_FORMAT!r}")
        config = Config(**meta["config"])
        dictionary = Dictionary(mean=arrays["patch_mean"], whiten=arrays["whiten"],
                                centroids=arrays["centroids"])
        head = Head(power=float(meta["power"]), mean=arrays["mean"], scale=arrays["scale"],
                    project=arrays["project"], cuts=arrays["cuts"], embed=arrays["embed"],
                    outlier_cut=float(meta["outlier_cut"]))
        return cls(config, dictionary, head, int(meta["n_classes"]), meta["junk_class"])
