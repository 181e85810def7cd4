"""Photos in, Tiny Images records out: decode, orient, crop, shrink; the ``_sources.jsonl`` sidecar; previews.

Pure code (Pillow and numpy, no files, no Spark), shared by ``python -m jobs.shards pack``,
jobs/pack.py, the tag job (the sidecar's fields in each line) and the web app (uploads, previews):

- **Decoding.** ``decode`` opens an image from its bytes, refuses what is not a photo we take
  (JPEG, PNG, WebP, GIF, BMP, TIFF; Pillow's decompression-bomb limit), applies the EXIF
  orientation, keeps the centre square and area-averages it to 32x32 (``Resampling.BOX``: each
  output pixel is the mean of its share of the square, the rule uploads always used). A JPEG is
  first asked for a 1/2-1/8 scale with ``draft()``: libjpeg scales in the DCT while decoding, so a
  12-megapixel photo is never decoded at full size (bench/pack.py measures the difference). Every
  problem is a ``PhotoError`` whose ``code`` says which kind and whose text says what was seen.
- **The record.** ``to_record`` turns the 32x32 image into one Tiny Images record (column-major
  planes, tinytags/core/images.py), the bytes every shard holds.
- **The sidecar.** ``Source`` is one line of ``_sources.jsonl``: id, path, byte size, mtime,
  width x height as shown (after orientation) and the SHA-256 of the file's bytes. Lines start
  with ``{"id":`` and are in id order, so a reader can find a block's lines by bisection
  (``line_id``). ``line_fields`` is what the tag job adds to an image's JSON line.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from tinytags.core.contract import InputError
from tinytags.core.images import SIDE, cifar_to_tiny_layout, hwc_to_cifar

# File name endings the walker hands to the decoder (any case); other files are not photos.
EXTENSIONS = (".jpg", ".jpeg", ".jpe", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff")
# What Pillow must find inside (MPO: the JPEG variant many cameras write).
FORMATS = frozenset({"JPEG", "MPO", "PNG", "WEBP", "GIF", "BMP", "TIFF"})
# draft() keeps at least this many pixels on each side: the centre square is then still >= 4x
# the 32 pixels it is averaged down to, so the DCT scaling never decides the result's detail.
DRAFT_SIDE = 4 * SIDE
ORIENTATION_TAG = 0x0112
_SWAPS_SIDES = {5, 6, 7, 8}  # EXIF orientations that turn the picture by 90 degrees


class PhotoError(ValueError):
    """An image file the packer cannot use; ``code`` is one of empty, unidentified, format, bomb, too_large, corrupt."""

    def __init__(self, code: str, reason: str):
        super().__init__(reason)
        self.code = code


@dataclass(frozen=True)
class Decoded:
    """A decoded photo: its 32x32x3 uint8 image and its size as shown (after EXIF orientation)."""

    hwc: np.ndarray
    width: int
    height: int


def is_photo_name(name: str) -> bool:
    """True for the file names the packer reads (by their ending, any case)."""
    return name.lower().endswith(EXTENSIONS)


def content_hash(data: bytes) -> str:
    """The SHA-256 of a file's bytes (hex): what makes a photo "already packed"."""
    return hashlib.sha256(data).hexdigest()


def open_image(data: bytes, formats: frozenset[str] = FORMATS, max_pixels: int | None = None) -> Image.Image:
    """Open image bytes (header only) and check format and size; PhotoError says why not."""
    if not data:
        raise PhotoError("empty", "empty file (0 bytes)")
    try:
        image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as error:
        raise PhotoError("bomb", f"decompression bomb: {error}") from None
    except UnidentifiedImageError:
        raise PhotoError("unidentified", "not an image file Pillow can read") from None
    except Exception as error:  # noqa: BLE001 - a malformed header raises anything from SyntaxError to struct.error
        raise PhotoError("corrupt", f"truncated or corrupt image header ({type(error).__name__}: {error})") from None
    if image.format not in formats:
        raise PhotoError("format", f"{image.format} files are not accepted; send {', '.join(sorted(formats))}")
    width, height = image.size
    if width <= 0 or height <= 0:
        raise PhotoError("corrupt", f"the image claims to be {width}x{height} pixels")
    if max_pixels is not None and width * height > max_pixels:
        raise PhotoError("too_large", f"{width}x{height} is too large; at most {max_pixels:,} pixels")
    return image


def _orientation(image: Image.Image) -> int:
    """The EXIF orientation of a loaded image (1 when there is none, or the EXIF block is damaged)."""
    try:
        return int(image.getexif().get(ORIENTATION_TAG, 1))
    except Exception:  # noqa: BLE001 - a damaged EXIF block only loses the orientation
        return 1


def _as_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode -> RGB: transparency over white, 16-bit and float greys scaled to 8 bits."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        values = np.asarray(image, dtype=np.float64)
        scale = 1 / 256 if image.mode != "F" and values.max(initial=0) > 255 else 1.0
        return Image.fromarray(np.clip(values * scale, 0, 255).astype(np.uint8), "L").convert("RGB")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def oriented(image: Image.Image, draft_side: int | None = DRAFT_SIDE) -> Image.Image:
    """The opened image decoded (scaled down in the JPEG decoder when ``draft_side`` allows), upright, RGB.

    The pixels are loaded before anything reads the EXIF block: for some formats reading it
    loads the image, and a failure there must be the file's error, not a lost orientation.
    """
    if draft_side and image.format in ("JPEG", "MPO"):
        image.draft("RGB", (draft_side, draft_side))
    image.load()
    return _as_rgb(ImageOps.exif_transpose(image))


def square_32(image: Image.Image) -> np.ndarray:
    """The centre square of an RGB image, area-averaged to 32x32: a 32x32x3 uint8 array."""
    width, height = image.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    box = (left, top, left + side, top + side)
    if side == SIDE:
        return np.asarray(image.crop(box), dtype=np.uint8)
    return np.asarray(image.resize((SIDE, SIDE), Image.Resampling.BOX, box=box), dtype=np.uint8)


def decode(data: bytes, formats: frozenset[str] = FORMATS, max_pixels: int | None = None) -> Decoded:
    """Image file bytes -> its upright 32x32 centre square and its shown size; PhotoError if unusable."""
    image = open_image(data, formats, max_pixels)
    width, height = image.size  # before draft() shrinks it
    try:
        picture = oriented(image)
        if _orientation(image) in _SWAPS_SIDES:
            width, height = height, width
        hwc = square_32(picture)
    except PhotoError:
        raise
    except Image.DecompressionBombError as error:
        raise PhotoError("bomb", f"decompression bomb: {error}") from None
    except Exception as error:  # noqa: BLE001 - truncated or corrupt data fails in many ways inside Pillow
        raise PhotoError("corrupt", f"truncated or corrupt image data ({type(error).__name__}: {error})") from None
    return Decoded(hwc, width, height)


def to_record(hwc: np.ndarray) -> bytes:
    """A 32x32x3 image -> its 3072-byte Tiny Images record (column-major planes)."""
    return cifar_to_tiny_layout(hwc_to_cifar(hwc)).tobytes()


def preview_jpeg(data: bytes, side: int, max_pixels: int | None = None) -> bytes:
    """An original's bytes -> a JPEG of it, upright, at most ``side`` pixels on its longer side."""
    image = open_image(data, max_pixels=max_pixels)
    try:
        picture = oriented(image, draft_side=side)
        picture.thumbnail((side, side), Image.Resampling.LANCZOS)
        buffer = io.BytesIO()
        picture.save(buffer, format="JPEG", quality=85)
    except Exception as error:  # noqa: BLE001 - as in decode
        raise PhotoError("corrupt", f"truncated or corrupt image data ({type(error).__name__}: {error})") from None
    return buffer.getvalue()


# --- the _sources.jsonl sidecar --------------------------------------------------------------------

_SHA256 = re.compile(r"[0-9a-f]{64}")
_LINE_ID = re.compile(rb'\{"id":(\d+),')


@dataclass(frozen=True)
class Source:
    """One line of ``_sources.jsonl``: where image ``id`` came from."""

    id: int
    path: str
    bytes: int
    mtime: float  # seconds since the epoch, to the millisecond
    width: int
    height: int
    sha256: str

    def line(self) -> str:
        """The sidecar line (id first, so ``line_id`` can read it without parsing JSON)."""
        return (f'{{"id":{self.id},"path":{json.dumps(self.path)},"bytes":{self.bytes},"mtime":{self.mtime!r},'
                f'"width":{self.width},"height":{self.height},"sha256":"{self.sha256}"}}\n')

    @property
    def file_key(self) -> tuple[str, int, float]:
        """(path, bytes, mtime): a file with all three unchanged is skipped without reading it."""
        return (self.path, self.bytes, self.mtime)


def mtime_of(seconds: float) -> float:
    """An mtime as the sidecar keeps it (milliseconds: what both the OS and WebHDFS give exactly)."""
    return round(float(seconds), 3)


def parse_source(text: str | bytes, where: str) -> Source:
    """One sidecar line -> Source; InputError names ``where`` and the field."""
    try:
        data = json.loads(text)
    except ValueError as error:
        raise InputError(f"{where}: not a JSON line ({error})") from None
    if not isinstance(data, dict):
        raise InputError(f"{where}: expected a JSON object")
    for name in ("id", "bytes", "width", "height"):
        value = data.get(name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise InputError(f"{where}: field {name!r} should be a non-negative integer, got {value!r}")
    if not isinstance(data.get("path"), str) or not data["path"]:
        raise InputError(f"{where}: field 'path' should be a path")
    mtime = data.get("mtime")
    if isinstance(mtime, bool) or not isinstance(mtime, (int, float)):
        raise InputError(f"{where}: field 'mtime' should be a number, got {mtime!r}")
    if not isinstance(data.get("sha256"), str) or not _SHA256.fullmatch(data["sha256"]):
        raise InputError(f"{where}: field 'sha256' should be 64 lowercase hex digits")
    return Source(data["id"], data["path"], data["bytes"], float(mtime), data["width"], data["height"],
                  data["sha256"])


def line_id(line: bytes) -> int | None:
    """The id at the start of a sidecar line, or None when the bytes are no sidecar line's start."""
    match = _LINE_ID.match(line)
    return int(match.group(1)) if match else None


def line_fields(source: Source) -> str:
    """What the tag job adds to this image's JSON line, before ``pixels``: source, width, height."""
    return f',"source":{json.dumps(source.path)},"width":{source.width},"height":{source.height}'


def error_line(path: str, reason: str) -> str:
    """One line of ``_pack_errors.jsonl``."""
    return json.dumps({"path": path, "reason": reason}) + "\n"


# --- progress and summary ----------------------------------------------------------------------------


def pack_progress_text(done: int, total: int, packed: int, failed: int, seconds: float) -> str:
    """One progress line: files done of total, images packed, errors, files/s and time left."""
    rate = done / seconds if seconds > 0 else 0.0
    left = f", ~{(total - done) / rate:,.0f} s left" if rate > 0 and done < total else ""
    return (f"files {done:,}/{total:,} done: {packed:,} packed, {failed:,} errors "
            f"({rate:,.1f} images/s{left})")


def pack_exit_code(summary: dict[str, Any]) -> int:
    """0 unless nothing could be packed: 1 when not one photo is packed, now or before (all failed, or none found)."""
    return 0 if summary["packed"] or summary["already_packed"] or summary["duplicates"] else 1
