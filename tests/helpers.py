"""What several tests share: paths, service addresses, a spark-submit runner, test data makers.

Tests import these from here (never from conftest.py or from another test); conftest.py files hold
only fixtures.
"""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

from tinytags.core.contract import CLASSES
from tinytags.core.forest import Forest, ModelError
from tinytags.core.junk import junk_images
from tinytags.core.solr_docs import DocumentError, to_solr_docs, validate_line
from tinytags.settings import stack_settings

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"
CIFAR_SAMPLE = SHARED_DATA / "cifar-10-sample-binary.tar.gz"
CIFAR_DEV = SHARED_DATA / "cifar-10-dev-binary.tar.gz"
PHOTOS = SHARED_DATA / "photos-32x32.tar.gz"
SAMPLE_MODEL_SEED = "3"  # the seed of the models trained on the sample (the shared cluster model among them)
# The default network (--features cnn) at test size: one short epoch of a narrow network, as CI's
# time allows; the full recipe is the benchmark's (bench/quality.py). As flags, and the same sizes as
# the TINYTAGS_* settings jobs/train.py reads, for commands run as documented (test_readme.py).
_CNN_TINY_SIZES = {"cnn-epochs": "1", "cnn-widths": "8,16,16", "junk-images": "500"}
CNN_TINY = [part for flag, value in _CNN_TINY_SIZES.items() for part in (f"--{flag}", value)] + [
    "--cnn-batch", "256", "--junk-test-images", "200"]
CNN_TINY_ENV = {"TINYTAGS_" + flag.upper().replace("-", "_"): value for flag, value in _CNN_TINY_SIZES.items()}

# The local stack's addresses, from the settings place the stack itself reads (its TINYTAGS_* ports).
_STACK = stack_settings()
SOLR_URL = os.environ.get("TINYTAGS_TEST_SOLR_ROOT", _STACK.solr_root)  # Solr root, not a core
WEBHDFS_URL = os.environ.get("TINYTAGS_WEBHDFS_URL", _STACK.namenode_http)
HDFS_URI = os.environ.get("TINYTAGS_HDFS_URI", _STACK.hdfs_uri)
SPARK_MASTER = os.environ.get("TINYTAGS_SPARK_MASTER", _STACK.spark_master)
SOLR_CLOUD_URL = os.environ.get("TINYTAGS_TEST_SOLR_CLOUD", "")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def need_shared(path: Path) -> Path:
    """The ../shared data file, or a skip outside CI (a failure in CI) when it is missing."""
    if path.exists():
        return path
    message = f"{path} is missing (the ../shared development data)"
    if IN_CI:
        pytest.fail(message + "; CI must have it")
    pytest.skip(message)


def spark_submit(script: Path | str, *args: str, master: str = SPARK_MASTER, timeout: float = 600):
    """Run a job with bin/spark-submit (the venv's pyspark and Python); returns the CompletedProcess."""
    env = {k: v for k, v in os.environ.items() if k not in ("SPARK_HOME", "PYSPARK_PYTHON", "PYSPARK_DRIVER_PYTHON")}
    command = [
        str(ROOT / "bin" / "spark-submit"), "--master", master,
        "--conf", "spark.ui.enabled=false", "--conf", "spark.executor.memory=2g",
        str(script), *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=timeout)




# --- tag-output lines and Solr documents ---------------------------------------------------------

TREES = 10
MODEL_A, MODEL_B = "aaaaaa111111", "bbbbbb222222"


def line_precision(index: int, label: int, votes: int) -> float | None:
    """The expected_precision test lines carry: a known function of tag and votes, on a 0.01 grid
    (so a percentage never rounds at a half); None for every 25th line (indexed without one)."""
    return None if index % 25 == 3 else round(0.3 + 0.05 * votes + 0.01 * label, 2)


def card_tables(trees: int, seed: int = 5) -> dict:
    """The model-card fields jobs/train.py adds (features, expected_precision, per_class_agreement,
    junk) for a model of ``trees`` trees, with made-up values on a 0.01 grid. Truck's top two vote
    counts have no test images (precision null), as a small test set gives."""
    rng = np.random.default_rng(seed)
    expected_precision, per_class = {}, {}
    for c, name in enumerate(CLASSES):
        expected_precision[name] = [None] + sorted(round(float(v), 2) for v in rng.uniform(0.2, 0.95, trees))
        images = sorted((int(v) for v in rng.integers(1, 500, trees)), reverse=True)
        precision = sorted(round(float(v), 2) for v in rng.uniform(0.25, 0.9, trees))
        if name == "truck":
            images[-2:] = [0, 0]
        per_class[name] = [
            {"min_votes": k + 1, "images": images[k], "recall": round(images[k] / 600, 4),
             "precision": precision[k] if images[k] else None}
            for k in range(trees)]
    return {"features": {"name": "pixels", "version": "pixels", "dims": 3072, "junk_class": None},
            "expected_precision": expected_precision, "per_class_agreement": per_class,
            "junk": {"images": 6000, "tagged": 0.0087, "real_called_junk": 0.0064}}


def make_lines(n: int = 240, seed: int = 7) -> list[dict]:
    """Tag-output JSON lines with known tags, votes, expected precision (``line_precision``) and
    pixels (4x4 colour layouts plus noise)."""
    rng = np.random.default_rng(seed)
    lines = []
    for i in range(n):
        image_id = 1000 + 7 * i  # not contiguous, so an id sort is not an insertion-order accident
        label = int(rng.integers(len(CLASSES)))
        votes = int(rng.integers(4, TREES + 1))
        counts = [0] * len(CLASSES)
        counts[label] = votes
        for _ in range(TREES - votes):  # the rest of the trees vote elsewhere, never reaching the winner
            choices = [c for c in range(len(CLASSES)) if c != label and counts[c] + 1 < votes]
            counts[int(rng.choice(choices))] += 1
        layout = rng.integers(0, 256, (4, 4, 3)).astype(np.float64)
        hwc = np.clip(np.kron(layout, np.ones((8, 8, 1))) + rng.normal(0, 12, (32, 32, 3)), 0, 255).astype(np.uint8)
        lines.append({
            "id": image_id, "block": image_id // 100, "label": label, "tag": CLASSES[label],
            "votes": votes, "agreement": votes / TREES, "vote_counts": counts,
            "model": MODEL_B if i % 12 == 0 else MODEL_A,
            # CIFAR layout written out by hand: the R plane, then G, then B, each row-major.
            "pixels": base64.b64encode(hwc.transpose(2, 0, 1).tobytes()).decode(),
            "shard": 0, "offset": image_id, "expected_precision": line_precision(i, label, votes),
        })
    return lines


def learned_model(path: Path, lines: list[dict]):
    """Write a small real learned-features model dir for these lines: a k-means/LDA feature set with
    the "none" class (300 generated junk images), 5 scikit-learn trees over its output (11 classes)
    in the one forest format, a card; returns (the feature set, the trees)."""
    import json

    from sklearn.tree import DecisionTreeClassifier

    from tinytags.core import features as F
    from tinytags.core import forest

    pixels = np.stack([np.frombuffer(base64.b64decode(l["pixels"]), np.uint8) for l in lines])
    labels = np.array([l["label"] for l in lines])
    config = F.Config(centroids=16, whiten_dims=20, kmeans_patches=5000, kmeans_iters=5)
    features = F.FeatureSet(config).fit(pixels, labels, seed=1, junk=300)
    x = features.transform(np.concatenate([pixels, junk_images(300, 2)]))
    y = np.concatenate([labels, np.full(300, features.junk_class)])
    rng = np.random.default_rng(4)
    trees = []
    for seed in range(5):
        sample = rng.integers(0, len(y), len(y))
        trees.append(DecisionTreeClassifier(max_depth=6, random_state=seed).fit(x[sample], y[sample]))
    forest.save(forest_from_sklearn(trees, len(CLASSES) + 1), path)
    features.save(path)
    (path / "model_card.json").write_text(json.dumps({
        "params": {"trees": 5}, "features": {"name": features.name, "version": features.version,
                                             "dims": int(x.shape[1]), "junk_class": features.junk_class}}))
    return features, trees


def load_documents(core_url: str, lines: list[dict]) -> None:
    """Index lines through the one document builder, one bulk POST, one commit."""
    response = requests.post(f"{core_url}/update", params={"commit": "true"}, json=to_solr_docs(lines), timeout=120)
    assert response.status_code == 200, response.text


def hwc_of(line: dict) -> np.ndarray:
    return np.frombuffer(base64.b64decode(line["pixels"]), np.uint8).reshape(3, 32, 32).transpose(1, 2, 0)


def expected(lines, tags=(), low=0.0, high=1.0, model=None):
    return [l for l in lines if (not tags or l["tag"] in tags) and low <= l["agreement"] <= high
            and (model is None or l["model"] == model)]


def ordered(lines, sort):
    keys = {
        "agreement_desc": lambda l: (-l["agreement"], l["id"]),
        "agreement_asc": lambda l: (l["agreement"], l["id"]),
        "id_asc": lambda l: l["id"],
        "id_desc": lambda l: -l["id"],
    }
    return [str(l["id"]) for l in sorted(lines, key=keys[sort])]


def png_of(hwc: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(hwc).save(buffer, format="PNG")
    return buffer.getvalue()


class Loaded:
    """A Solr core loaded with known lines, and a web app (test client) on it."""

    def __init__(self, url: str, lines: list[dict], **config):
        from webapp import create_app

        self.url, self.lines = url, lines
        self.app = create_app({"SOLR_URL": url, "TESTING": True, **config})
        self.client = self.app.test_client()

    def get(self, path: str, **params):
        """GET a path -> (response, its JSON or None)."""
        response = self.client.get(path, query_string=params)
        return response, response.get_json(silent=True)


def checked_docs(lines: list) -> tuple[list[dict], list[tuple[int, DocumentError]]]:
    """The documents of the good lines (in order) and (index, error) of each bad one."""
    good, errors = [], []
    for index, line in enumerate(lines):
        try:
            validate_line(line)
        except DocumentError as error:
            errors.append((index, error))
            continue
        good.append(line)
    return to_solr_docs(good), errors


# --- forests from scikit-learn (reference models for the evaluator and the web app) ---------------


def forest_from_sklearn(trees, n_classes: int) -> Forest:
    """Flatten fitted scikit-learn DecisionTreeClassifiers into one Forest.

    Each tree's leaf votes for its majority class, mapped through the tree's own ``classes_``
    (a bootstrap sample may lack a class).
    """
    features, thresholds, lefts, rights, leaves, weights, roots = [], [], [], [], [], [], []
    offset = 0
    for estimator in trees:
        tree = estimator.tree_
        count = tree.node_count
        is_leaf = tree.children_left == -1
        own = np.arange(count, dtype=np.int64)
        classes = np.asarray(estimator.classes_, dtype=np.int64)
        value = tree.value[:, 0, :]
        majority = classes[value.argmax(axis=1)]
        purity = value.max(axis=1) / np.maximum(value.sum(axis=1), 1e-12)
        features.append(np.where(is_leaf, 0, tree.feature).astype(np.int32))
        thresholds.append(np.where(is_leaf, 0.0, tree.threshold).astype(np.float32))
        lefts.append((np.where(is_leaf, own, tree.children_left) + offset).astype(np.int32))
        rights.append((np.where(is_leaf, own, tree.children_right) + offset).astype(np.int32))
        leaves.append(np.where(is_leaf, majority, -1).astype(np.int16))
        weights.append(np.where(is_leaf, purity, 0.0).astype(np.float32))
        roots.append(offset)
        offset += count
    if not roots:
        raise ModelError("a forest needs at least one tree")
    return Forest(
        feature=np.concatenate(features), threshold=np.concatenate(thresholds),
        left=np.concatenate(lefts), right=np.concatenate(rights),
        leaf_class=np.concatenate(leaves), roots=np.asarray(roots, dtype=np.int32),
        n_classes=int(n_classes), leaf_weight=np.concatenate(weights),
    )


# --- photo trees for the pack tests: real image files made from CIFAR-10 images ------------------

# What a viewer does to the stored pixels for each EXIF orientation is undone here with a table
# written out from the EXIF standard (not Pillow's): the file holds the upright picture with the
# inverse applied, so a packer that honours the tag gets the upright picture back. Pillow's
# Transpose.ROTATE_90 turns counter-clockwise.
STORED_FOR_ORIENTATION = {
    1: None,
    2: Image.Transpose.FLIP_LEFT_RIGHT,  # shown mirrored left-right
    3: Image.Transpose.ROTATE_180,       # shown turned 180 degrees
    4: Image.Transpose.FLIP_TOP_BOTTOM,  # shown mirrored top-bottom
    5: Image.Transpose.TRANSPOSE,        # shown mirrored on the main diagonal
    6: Image.Transpose.ROTATE_90,        # shown turned 90 degrees clockwise: stored turned counter-clockwise
    7: Image.Transpose.TRANSVERSE,       # shown mirrored on the other diagonal
    8: Image.Transpose.ROTATE_270,       # shown turned 90 degrees counter-clockwise: stored clockwise
}
PHOTO_FOLDERS = ("2019/summer", "2019/winter", "2020", "scans/old")


class Photo:
    """One generated photo: its file, the CIFAR image it shows, its upright size and orientation tag."""

    def __init__(self, path: Path, index: int, width: int, height: int, orientation: int):
        self.path, self.index, self.width, self.height, self.orientation = path, index, width, height, orientation


def photo_file(hwc32: np.ndarray, side: int, margin: int, portrait: bool, orientation: int, fmt: str,
               fill: tuple[int, int, int]) -> tuple[bytes, int, int]:
    """A CIFAR image scaled up to side x side, framed by two margins of flat colour (the centre
    square is the picture), stored turned for ``orientation`` with that EXIF tag; (bytes, width, height shown)."""
    picture = Image.fromarray(hwc32).resize((side, side), Image.Resampling.BICUBIC)
    width, height = (side, side + 2 * margin) if portrait else (side + 2 * margin, side)
    canvas = Image.new("RGB", (width, height), fill)
    canvas.paste(picture, ((width - side) // 2, (height - side) // 2))
    turn = STORED_FOR_ORIENTATION[orientation]
    stored = canvas if turn is None else canvas.transpose(turn)  # FLIP_LEFT_RIGHT is 0: compare with None
    exif = Image.Exif()
    if orientation != 1:
        exif[0x0112] = orientation
    buffer = io.BytesIO()
    options = {"quality": 92} if fmt in ("JPEG", "WEBP") else {}
    stored.save(buffer, format=fmt, exif=exif, **options)
    return buffer.getvalue(), width, height


def make_photo_tree(root: Path, pixels: np.ndarray, count: int, seed: int = 0, first: int = 0) -> list[Photo]:
    """``count`` JPEG/PNG/WebP photos of mixed sizes, shapes and EXIF orientations in nested folders
    under root, showing CIFAR-layout ``pixels[first:first + count]`` (scaled up, framed)."""
    from tinytags.core.images import cifar_to_hwc

    rng = np.random.default_rng(seed)
    formats = (("JPEG", ".jpg"), ("PNG", ".png"), ("WEBP", ".webp"), ("JPEG", ".JPEG"))
    sides = (40, 64, 96, 150, 256, 400)
    photos = []
    for index in range(first, first + count):
        fmt, ending = formats[index % len(formats)]
        side = int(sides[rng.integers(len(sides))])
        margin = int(rng.integers(0, side // 2 + 1))
        orientation = int(rng.integers(1, 9))
        fill = tuple(int(v) for v in rng.integers(0, 256, 3))
        data, width, height = photo_file(cifar_to_hwc(pixels[index])[0], side, margin, bool(rng.integers(2)),
                                         orientation, fmt, fill)
        folder = root / PHOTO_FOLDERS[index % len(PHOTO_FOLDERS)]
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"IMG_{index:05d}{ending}"
        path.write_bytes(data)
        photos.append(Photo(path, index, width, height, orientation))
    return photos


def _png_header(width: int, height: int) -> bytes:
    """A PNG that claims width x height pixels and holds none: a decompression bomb's header."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def make_bad_files(root: Path) -> dict[str, str]:
    """Every kind of file a pack must report and survive, under root/bad; {path: words its reason holds}.

    An unreadable file is only unreadable to a user other than root (root reads it anyway: then it
    is a good photo and not in the answer).
    """
    bad = root / "bad"
    bad.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (300, 400, 3), dtype=np.uint8)).save(buffer, "JPEG")
    jpeg = buffer.getvalue()
    png = io.BytesIO()
    Image.fromarray(np.random.default_rng(2).integers(0, 256, (100, 200, 3), dtype=np.uint8)).save(png, "PNG")
    damaged = bytearray(png.getvalue())
    damaged[len(damaged) // 2:len(damaged) // 2 + 64] = bytes(64)  # inside the compressed pixels
    icon = io.BytesIO()
    Image.new("RGB", (16, 16), (255, 0, 0)).save(icon, "ICO")
    files = {
        "truncated.jpg": (jpeg[: len(jpeg) // 2], "truncated or corrupt"),
        "damaged.png": (bytes(damaged), "corrupt"),
        "notes.jpg": (b"shopping list: milk, eggs\n" * 20, "not an image file"),
        "empty.webp": (b"", "empty file"),
        "bomb.png": (_png_header(30000, 30000), "decompression bomb"),
        "icon.png": (icon.getvalue(), "ICO files are not accepted"),
    }
    expected = {}
    for name, (data, reason) in files.items():
        (bad / name).write_bytes(data)
        expected[str(bad / name)] = reason
    locked = bad / "locked.jpg"
    locked.write_bytes(jpeg)
    locked.chmod(0)
    if os.geteuid() != 0:
        expected[str(locked)] = "permission denied"
    (bad / "loop").symlink_to(".")
    expected[str(bad / "loop")] = "symlink loop"
    (bad / "self.jpg").symlink_to("self.jpg")
    expected[str(bad / "self.jpg")] = "symlink loop"
    (bad / "gone.png").symlink_to("nowhere.png")
    expected[str(bad / "gone.png")] = "broken symlink"
    (bad / "readme.txt").write_text("not a photo, and not an error: ignored\n")
    return expected


def make_card_older(model_dir) -> None:
    """Strip the card fields this session's models added, as an older model's card lacks them."""
    import json

    path = Path(model_dir) / "model_card.json"
    card = json.loads(path.read_text())
    for key in ("expected_precision", "per_class_agreement", "junk", "features"):
        del card[key]
    path.write_text(json.dumps(card))


def query_args(query: str):
    """A query string as the MultiDict a Flask request's args are."""
    from urllib.parse import parse_qsl

    from werkzeug.datastructures import MultiDict

    return MultiDict(parse_qsl(query, keep_blank_values=True))


# --- the commands README.md and docs/*.md show ----------------------------------------------------

SH_FENCE = r"^```sh\n(.*?)^```"


def documents() -> list[Path]:
    """README.md, then docs/*.md in name order: the files whose ```sh blocks the tests run."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def sh_blocks(path: Path) -> list[str]:
    """The ```sh blocks of one markdown file, in order, stripped."""
    import re

    return [block.strip() for block in re.findall(SH_FENCE, path.read_text(), re.S | re.M)]


def section_sh_blocks(path: Path, heading: str) -> list[str]:
    """The ```sh blocks under one `## heading` of a markdown file (up to the next `## `), in order."""
    import re

    text = path.read_text()
    start = text.index(f"\n## {heading}\n")
    end = text.find("\n## ", start + 1)
    section = text[start:end if end != -1 else len(text)]
    return [block.strip() for block in re.findall(SH_FENCE, section, re.S | re.M)]


def run_stack(*args: str, env: dict[str, str] | None = None, timeout: float | None = None) -> subprocess.CompletedProcess:
    """``python -m deploy.stack ARGS`` from the checkout (output captured; ``env`` added to this one's)."""
    return subprocess.run([sys.executable, "-m", "deploy.stack", *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=timeout, check=False)


@contextmanager
def stack_services(*up_args: str, what: str):
    """``python -m deploy.stack up`` with these arguments (what is already up is left alone); inside,
    the services answer (else the test fails, saying ``what`` did not come up with the stack's output);
    afterwards only the services this call started are stopped."""
    started_file = ROOT / ".stack" / f"pytest-started-{os.getpid()}-{'-'.join(up_args).replace(',', '_')}"
    started_file.parent.mkdir(parents=True, exist_ok=True)
    result = run_stack("up", *up_args, "--started-file", str(started_file))
    started = started_file.read_text().strip() if started_file.exists() else ""
    started_file.unlink(missing_ok=True)
    try:
        if result.returncode != 0:
            pytest.fail(f"{what} did not come up:\n{result.stdout}{result.stderr}")
        yield
    finally:
        if started:
            run_stack("down", "--only", started)


# The tag outputs of write_tag_output: their model version and block size.
MODEL = "model-test-1"
BLOCK_SIZE = 1000


def write_tag_output(root: Path, kept: dict[int, int], parts: int = 2, model: str = MODEL, seed: int = 0,
                     manifest: bool = True) -> dict[int, list[dict]]:
    """A tag output as jobs/tag.py writes it (OUT/block=<n>/part-*, OUT/_manifest.json), from
    random pixels; returns the JSON lines of each block. Blocks keeping nothing get no folder."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    lines, blocks = {}, {}
    for block, count in kept.items():
        ids = np.sort(rng.choice(BLOCK_SIZE, count, replace=False)) + block * BLOCK_SIZE
        lines[block] = []
        for image_id in ids.tolist():
            counts = rng.multinomial(10, np.ones(10) / 10).tolist()
            label = int(np.argmax(counts))
            lines[block].append({
                "id": image_id, "block": block, "label": label, "tag": CLASSES[label], "votes": max(counts),
                "agreement": max(counts) / 10, "vote_counts": counts, "model": model,
                "pixels": base64.b64encode(rng.integers(0, 256, 3072, dtype=np.uint8).tobytes()).decode(),
                "shard": image_id // 5000, "offset": image_id % 5000,
            })
        if count:
            folder = root / f"block={block}"
            folder.mkdir()
            for part in range(parts):
                (folder / f"part-{part:05d}").write_text("".join(json.dumps(line) + "\n" for line in lines[block][part::parts]))
        blocks[str(block)] = {"read": BLOCK_SIZE, "kept": count, "dropped": BLOCK_SIZE - count}
    if manifest:
        (root / "_manifest.json").write_text(json.dumps({"model": model, "min_agreement": 0.4, "blocks": blocks}))
    return lines


def wait_for_ledger(ledger_file: Path, target: str, blocks: int, timeout: float) -> int:
    """Wait until an index run's ledger holds at least `blocks` verified blocks for this Solr target
    (or the timeout passes); -> how many it holds."""
    deadline = time.monotonic() + timeout
    while True:
        ledger = json.loads(ledger_file.read_text()) if ledger_file.exists() else {"targets": {}}
        held = len(ledger["targets"].get(target, {}).get("blocks", {}))
        if held >= blocks or time.monotonic() >= deadline:
            return held
        time.sleep(0.05)
