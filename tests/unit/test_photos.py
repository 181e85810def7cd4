"""tinytags/core/photos.py: decoding real image files (orientation, crop, area average, draft), the
Tiny record, every kind of unusable file, the sidecar line, pack ids and exit codes (no services)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from tests.helpers import STORED_FOR_ORIENTATION, _png_header
from tinytags.core import photos
from tinytags.core.contract import InputError, next_pack_shard
from tinytags.core.photos import (
    PhotoError,
    Source,
    decode,
    line_fields,
    line_id,
    parse_source,
    to_record,
)

RED, GREEN, BLUE, YELLOW, GREY = (230, 20, 20), (20, 200, 40), (30, 40, 220), (240, 220, 30), (128, 128, 128)


def _upright(width: int = 96, height: int = 64) -> np.ndarray:
    """A picture whose centre square has four coloured quadrants (red, green / blue, yellow), grey margins."""
    side = min(width, height)
    image = np.full((height, width, 3), GREY, np.uint8)
    top, left, half = (height - side) // 2, (width - side) // 2, side // 2
    for (row, col), colour in {(0, 0): RED, (0, 1): GREEN, (1, 0): BLUE, (1, 1): YELLOW}.items():
        image[top + row * half: top + (row + 1) * half, left + col * half: left + (col + 1) * half] = colour
    return image


def _file(hwc: np.ndarray, fmt: str = "PNG", orientation: int = 1, **options) -> bytes:
    picture = Image.fromarray(hwc)
    turn = STORED_FOR_ORIENTATION[orientation]
    stored = picture if turn is None else picture.transpose(turn)
    exif = Image.Exif()
    if orientation != 1:
        exif[0x0112] = orientation
    buffer = io.BytesIO()
    stored.save(buffer, format=fmt, exif=exif, **options)
    return buffer.getvalue()


def _quadrants(hwc: np.ndarray) -> list[tuple[int, ...]]:
    """The mean colour of the four 12x12 quadrant centres of a 32x32 image, row by row."""
    return [tuple(int(v) for v in hwc[r:r + 12, c:c + 12].reshape(-1, 3).mean(axis=0).round())
            for r, c in ((2, 2), (2, 18), (18, 2), (18, 18))]


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("fmt, tolerance", [("PNG", 0), ("JPEG", 12), ("WEBP", 12)])
def test_every_exif_orientation_comes_out_upright_and_centre_cropped(orientation, fmt, tolerance):
    options = {"quality": 95} if fmt != "PNG" else {}
    decoded = decode(_file(_upright(), fmt, orientation, **options))
    assert (decoded.width, decoded.height) == (96, 64)  # as shown, not as stored
    assert decoded.hwc.shape == (32, 32, 3) and decoded.hwc.dtype == np.uint8
    for got, want in zip(_quadrants(decoded.hwc), (RED, GREEN, BLUE, YELLOW)):
        assert max(abs(g - w) for g, w in zip(got, want)) <= tolerance, (got, want)


def test_a_portrait_keeps_its_centre_square_and_areas_average():
    decoded = decode(_file(_upright(64, 160)))
    assert (decoded.width, decoded.height) == (64, 160)
    assert _quadrants(decoded.hwc) == [RED, GREEN, BLUE, YELLOW]
    # A 1-pixel checkerboard at 64x64: every 2x2 area averages to mid grey.
    board = (np.indices((64, 64)).sum(axis=0) % 2 * 255).astype(np.uint8)
    assert set(np.unique(decode(_file(np.stack([board] * 3, axis=-1))).hwc)) <= {127, 128}


def test_a_large_jpeg_is_decoded_at_a_reduced_scale_to_the_same_picture():
    rng = np.random.default_rng(3)
    big = np.kron(rng.integers(0, 256, (24, 32, 3)), np.ones((64, 64, 1))).astype(np.uint8)  # 2048 x 1536
    data = _file(big, "JPEG", quality=92)
    drafted = decode(data)
    assert (drafted.width, drafted.height) == (2048, 1536)
    full = photos.square_32(photos.oriented(photos.open_image(data), draft_side=None))
    assert np.abs(drafted.hwc.astype(int) - full.astype(int)).mean() < 2.0


def test_modes_become_rgb_transparency_over_white_and_16_bit_scaled():
    rgba = np.zeros((32, 32, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:, 16:, 3] = 255  # left half transparent
    hwc = decode(_file(rgba)).hwc
    assert (hwc[:, :16] == 255).all() and (hwc[:, 16:] == (200, 0, 0)).all()
    grey16 = Image.fromarray(np.full((32, 32), 40000, np.uint16))
    buffer = io.BytesIO()
    grey16.save(buffer, "PNG")
    assert (decode(buffer.getvalue()).hwc == 40000 // 256).all()


def test_the_record_is_tiny_images_column_major_layout():
    rng = np.random.default_rng(0)
    hwc = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    record = to_record(hwc)
    assert len(record) == 3072
    # Tiny Images by hand: plane p, pixel (r, c) at p*1024 + r + 32*c.
    for p, r, c in ((0, 5, 7), (1, 31, 0), (2, 0, 31), (2, 13, 21)):
        assert record[p * 1024 + r + 32 * c] == hwc[r, c, p]


def _icon() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16)).save(buffer, "ICO")
    return buffer.getvalue()


@pytest.mark.parametrize("data, code, words", [
    (b"", "empty", "empty file"),
    (b"hello, this is text\n" * 10, "unidentified", "not an image file"),
    (_file(_upright(), "JPEG")[:300], "corrupt", "truncated or corrupt"),
    (_png_header(30000, 30000), "bomb", "decompression bomb"),
    (_icon(), "format", "ICO files are not accepted"),
])
def test_unusable_files_raise_photo_errors_that_say_why(data, code, words):
    with pytest.raises(PhotoError, match=words) as caught:
        decode(data)
    assert caught.value.code == code


def test_format_and_pixel_limits_can_be_narrowed():
    with pytest.raises(PhotoError, match="TIFF files are not accepted") as caught:
        decode(_file(_upright(), "TIFF"), formats=frozenset({"PNG"}))
    assert caught.value.code == "format"
    with pytest.raises(PhotoError, match="96x64 is too large") as caught:
        decode(_file(_upright()), max_pixels=5000)
    assert caught.value.code == "too_large"


def test_preview_is_upright_and_capped():
    data = _file(_upright(300, 200), "JPEG", 6, quality=90)
    preview = Image.open(io.BytesIO(photos.preview_jpeg(data, 120)))
    assert preview.format == "JPEG" and preview.size == (120, 80)


@pytest.mark.parametrize("name, wanted", [("a.JPG", True), ("b.jpeg", True), ("c.Tiff", True), ("d.webp", True),
                                          ("e.gif", True), ("f.bmp", True), ("g.png", True), ("h.txt", False),
                                          ("jpg", False), ("i.jpg.part", False)])
def test_photo_names(name, wanted):
    assert photos.is_photo_name(name) is wanted


def test_sidecar_lines_round_trip_and_start_with_the_id():
    source = Source(40_017, '/photos/été "1"/a.jpg', 123_456, 1_700_000_000.125, 4000, 3000, "ab" * 32)
    text = source.line()
    assert text.endswith("\n") and text.startswith('{"id":40017,')
    assert parse_source(text, "x") == source
    assert line_id(text.encode()) == 40_017 and line_id(b'{"path":"a"}') is None
    fields = line_fields(source)
    assert fields.startswith(',"source":') and '"width":4000,"height":3000' in fields


@pytest.mark.parametrize("text, words", [
    ("not json", "not a JSON line"),
    ('{"id":1,"path":"a","bytes":1,"mtime":1,"width":1,"height":1,"sha256":"xyz"}', "sha256"),
    ('{"id":-1,"path":"a","bytes":1,"mtime":1,"width":1,"height":1,"sha256":"' + "0" * 64 + '"}', "'id'"),
    ('{"id":1,"path":"","bytes":1,"mtime":1,"width":1,"height":1,"sha256":"' + "0" * 64 + '"}', "'path'"),
    ('{"id":1,"path":"a","bytes":1,"mtime":"x","width":1,"height":1,"sha256":"' + "0" * 64 + '"}', "'mtime'"),
])
def test_damaged_sidecar_lines_are_named(text, words):
    with pytest.raises(InputError, match=words):
        parse_source(text, "the sidecar line 3")


@pytest.mark.parametrize("last_id, shard_size, first", [
    (None, 20_000, 0), (0, 20_000, 1), (19_999, 20_000, 1), (20_000, 20_000, 2), (45, 10, 5), (49, 10, 5),
])
def test_a_pack_run_starts_after_the_shard_of_the_last_id(last_id, shard_size, first):
    assert next_pack_shard(last_id, shard_size) == first


@pytest.mark.parametrize("packed, already, duplicates, errors, code", [
    (3, 0, 0, 2, 0), (0, 5, 0, 0, 0), (0, 0, 1, 4, 0), (0, 0, 0, 4, 1), (0, 0, 0, 0, 1),
])
def test_exit_code_is_zero_unless_nothing_could_be_packed(packed, already, duplicates, errors, code):
    summary = {"packed": packed, "already_packed": already, "duplicates": duplicates, "errors": errors}
    assert photos.pack_exit_code(summary) == code


def test_progress_line_says_files_rate_and_time_left():
    assert photos.pack_progress_text(300, 1200, 290, 10, 2.0) == \
        "files 300/1,200 done: 290 packed, 10 errors (150.0 images/s, ~6 s left)"
    assert "left" not in photos.pack_progress_text(5, 5, 5, 0, 1.0)
