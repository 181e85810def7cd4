"""bench/pack: JPEGs/s of packing 12-megapixel photos into shards, ours (draft() downscale-on-decode)
next to the naive approach (full decode, then resize), in one run on the same files.

    .venv/bin/python -m bench.pack                       # 300 files of 4000x3000, 2 workers
    .venv/bin/python -m bench.pack --files 100 --noise 0 # smoother photos (smaller files)

The photos are made here, into a temporary folder: --bases different pictures (CIFAR-10 sample
images scaled up to 4000x3000, with --noise grey levels of Gaussian grain so the files are as
large as a camera's, ~2-4 MB at quality 90, 4:2:0), each written many times with its own JPEG
comment so that every file has its own bytes (and content hash). Decoding time grows with the
file size (libjpeg must entropy-decode every coefficient, whatever the scale), so the figures say
how large the files were.

Contenders, both with --workers processes over the same files, both reading, hashing (SHA-256)
and reducing each file to the same 32x32 centre square:
  - ours: ``python -m jobs.shards pack DIR --out OUT --workers N`` as a user runs it (shards and
    _sources.jsonl written). "pack phase" is the command's own clock (walk done -> last shard and
    sidecar written); "whole command" includes Python start and the pool's start.
  - naive: Image.open, full-size decode, exif_transpose, convert, centre crop, resize: what one
    writes without draft().
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import multiprocessing
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from tinytags.core.images import cifar_to_hwc
from tinytags.core.photos import square_32, to_record

ROOT = Path(__file__).resolve().parent.parent

SAMPLE = ROOT.parent / "shared" / "data" / "cifar-10-sample-binary.tar.gz"


def base_jpegs(count: int, width: int, height: int, noise: float, seed: int = 0) -> list[bytes]:
    """``count`` different photo-sized JPEGs: CIFAR sample images (or colour fields) scaled up, with grain."""
    rng = np.random.default_rng(seed)
    if SAMPLE.exists():
        from tinytags.io.cifar_files import read_local

        small = cifar_to_hwc(read_local(SAMPLE).test.pixels[:count])
    else:
        small = rng.integers(0, 256, (count, 32, 32, 3), dtype=np.uint8)
    out = []
    for image in small:
        picture = np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.BICUBIC), np.float32)
        if noise:
            picture += rng.normal(0, noise, picture.shape).astype(np.float32)
        buffer = io.BytesIO()
        Image.fromarray(np.clip(picture, 0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=90)
        out.append(buffer.getvalue())
    return out


def with_comment(jpeg: bytes, text: bytes) -> bytes:
    """The same JPEG with a COM segment after SOI: other bytes, same pixels, same decoding work."""
    return jpeg[:2] + b"\xff\xfe" + (len(text) + 2).to_bytes(2, "big") + text + jpeg[2:]


def naive(path: str) -> bytes:
    """Read, hash, decode at full size, orient, crop, resize: the approach without draft()."""
    data = Path(path).read_bytes()
    hashlib.sha256(data).hexdigest()
    image = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")
    return to_record(square_32(image))


def run_naive(paths: list[str], workers: int) -> float:
    started = time.perf_counter()
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        for _ in pool.imap(naive, paths, chunksize=4):
            pass
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=300)
    parser.add_argument("--width", type=int, default=4000)
    parser.add_argument("--height", type=int, default=3000)
    parser.add_argument("--noise", type=float, default=6.0, help="grain, in grey levels (0: smooth, small files)")
    parser.add_argument("--bases", type=int, default=12, help="different pictures the files are made from")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--naive-files", type=int, default=0, help="files for the naive run (default: all)")
    options = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="tinytags-bench-pack-"))
    try:
        started = time.perf_counter()
        bases = base_jpegs(options.bases, options.width, options.height, options.noise)
        photos = folder / "photos"
        photos.mkdir()
        paths = []
        for index in range(options.files):
            path = photos / f"DSC_{index:05d}.jpg"
            path.write_bytes(with_comment(bases[index % len(bases)], f"bench file {index}".encode()))
            paths.append(str(path))
        sizes = [os.path.getsize(p) for p in paths]
        print(f"made {options.files} JPEGs of {options.width}x{options.height} ({options.width * options.height / 1e6:.1f} MP), "
              f"{np.mean(sizes) / 1e6:.2f} MB on average ({min(sizes) / 1e6:.2f}-{max(sizes) / 1e6:.2f}), "
              f"noise {options.noise}, in {time.perf_counter() - started:.1f} s", flush=True)
        print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
              f"Pillow {Image.__version__}; load average before: {os.getloadavg()[0]:.2f}", flush=True)

        out = folder / "shards"
        started = time.perf_counter()
        command = [sys.executable, "-m", "jobs.shards", "pack", str(photos), "--out", str(out),
                   "--workers", str(options.workers)]
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
        whole = time.perf_counter() - started
        if done.returncode != 0:
            print(done.stderr, file=sys.stderr)
            return 1
        summary = json.loads(done.stdout.strip().splitlines()[-1])
        assert summary["packed"] == options.files, summary

        naive_paths = paths[: options.naive_files or len(paths)]
        naive_seconds = run_naive(naive_paths, options.workers)

        ours_phase = summary["seconds"]
        rows = [
            ("ours, pack phase (jobs.shards pack)", options.files, ours_phase),
            ("ours, whole command (Python + pool start)", options.files, whole),
            ("naive: full decode, then resize", len(naive_paths), naive_seconds),
        ]
        naive_rate = len(naive_paths) / naive_seconds
        print(f"\n{options.workers} workers; files {np.mean(sizes) / 1e6:.2f} MB, {options.width}x{options.height}")
        print(f"{'contender':45} {'files':>6} {'seconds':>8} {'JPEGs/s':>8} {'x naive':>8}")
        for name, count, seconds in rows:
            rate = count / seconds
            print(f"{name:45} {count:6d} {seconds:8.2f} {rate:8.1f} {rate / naive_rate:8.2f}")
        print(f"goal: >= 300 JPEGs/s on 2 cores -> {'met' if options.files / ours_phase >= 300 else 'not met'} "
              f"({options.files / ours_phase:.1f}/s)")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
