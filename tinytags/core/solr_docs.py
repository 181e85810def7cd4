"""The one Solr document builder: a tag-output JSON line (see docs/pipeline.md, "Tag output") -> Solr document.

Pure functions, no Spark and no HTTP: the indexer, the web app's tests and the benches all build
documents here, so the schema (solr_conf/managed-schema.xml) and the JSON contract meet in one place.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

import numpy as np
import orjson

from tinytags.core.contract import CLASSES, VECTOR_B64, VECTOR_DIMS
from tinytags.core.contract import LINE_FIELDS as REQUIRED
from tinytags.core.contract import OPTIONAL_LINE_FIELDS as OPTIONAL
from tinytags.core.images import RECORD_BYTES, embedding

# Largest value each integer field's Solr type holds (pint is 32-bit, plong 64-bit): an id past
# these would be rejected by Solr one document at a time, so it is caught here with its name.
INT_MAX = {"id": 2**63 - 1, "block": 2**31 - 1, "votes": 2**31 - 1, "shard": 2**31 - 1, "offset": 2**63 - 1,
           "width": 2**31 - 1, "height": 2**31 - 1}
# Lucene refuses a term longer than this many UTF-8 bytes: a longer source path would fail the whole batch.
MAX_TERM_BYTES = 32766


class DocumentError(ValueError):
    """A JSON line that does not follow the tag-output contract; the message names the field."""


def validate_line(line: dict[str, Any], *, vector: bool = True) -> bytes:
    """Check one decoded JSON line against the contract; returns its decoded pixel bytes.

    vector=False leaves the ``vector`` field to the caller (the indexer checks a batch's vectors
    at once: ``_vector_errors``)."""
    if not isinstance(line, dict):
        raise DocumentError(f"expected a JSON object, got {type(line).__name__}")
    for name, kind in REQUIRED.items():
        if name not in line:
            raise DocumentError(f"missing field {name!r}")
        value = line[name]
        if isinstance(value, bool) or not isinstance(value, kind):
            raise DocumentError(f"field {name!r} should be {_kind_name(kind)}, got {value!r:.40}")
    for name, kind in OPTIONAL.items():
        if name in line and (isinstance(line[name], bool) or not isinstance(line[name], kind)):
            raise DocumentError(f"field {name!r} should be {_kind_name(kind)}, got {line[name]!r:.40}")
    for name, largest in INT_MAX.items():
        if name in line and not 0 <= line[name] <= largest:
            raise DocumentError(f"field {name!r} should be within 0-{largest}, got {line[name]}")
    if not 0 <= line["label"] < len(CLASSES):
        raise DocumentError(f"field 'label' should be 0-{len(CLASSES) - 1}, got {line['label']}")
    if line["tag"] != CLASSES[line["label"]]:
        raise DocumentError(f"field 'tag' is {line['tag']!r} but label {line['label']} is {CLASSES[line['label']]!r}")
    if not 0.0 <= float(line["agreement"]) <= 1.0:
        raise DocumentError(f"field 'agreement' should be within [0, 1], got {line['agreement']}")
    counts = line["vote_counts"]
    # set(map(type, ...)) runs in C: this check is on the indexer's per-document path.
    if len(counts) != len(CLASSES) or set(map(type, counts)) != {int} or min(counts) < 0:
        raise DocumentError(f"field 'vote_counts' should be {len(CLASSES)} non-negative ints, got {counts!r:.60}")
    if line["votes"] != max(counts):
        raise DocumentError(f"field 'votes' is {line['votes']} but the top of vote_counts is {max(counts)}")
    pixels = _decoded(line, "pixels", RECORD_BYTES, "")
    precision = line.get("expected_precision")
    if precision is not None and not 0.0 <= float(precision) <= 1.0:
        raise DocumentError(f"field 'expected_precision' should be within [0, 1] or null, got {precision}")
    if "source" in line and not 0 < len(line["source"].encode("utf-8", "surrogatepass")) <= MAX_TERM_BYTES:
        raise DocumentError(f"field 'source' should be a path of 1 to {MAX_TERM_BYTES} bytes, got {len(line['source'])} characters")
    for name in ("width", "height"):
        if name in line and line[name] < 1:
            raise DocumentError(f"field {name!r} should be at least 1 pixel, got {line[name]}")
    if vector and "vector" in line:
        line_vector(line)
    return pixels


VECTOR_BYTES = VECTOR_DIMS * 2  # float16


def line_vector(line: dict[str, Any]) -> np.ndarray:
    """A line's ``vector`` field (base64 of 48 little-endian float16) -> 48 float32; DocumentError if bad."""
    raw = _decoded(line, "vector", VECTOR_BYTES, f" ({VECTOR_DIMS} float16)")
    vector = np.frombuffer(raw, "<f2").astype(np.float32)
    if not np.isfinite(vector).all() or not np.any(vector):
        raise DocumentError("field 'vector' should hold finite numbers, not all zero")
    return vector


def _decoded(line: dict[str, Any], name: str, size: int, what: str) -> bytes:
    """A base64 field's bytes, which must be exactly ``size`` long; DocumentError names the field."""
    try:
        raw = base64.b64decode(line[name], validate=True)
    except (binascii.Error, ValueError) as error:
        raise DocumentError(f"field {name!r} is not valid base64: {error}") from error
    if len(raw) != size:
        raise DocumentError(f"field {name!r} should decode to {size} bytes{what}, got {len(raw)}")
    return raw


def _kind_name(kind) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join({"int": "an integer", "float": "a number", "str": "a string", "list": "a list", "NoneType": "null"}[k.__name__] for k in kinds)


def to_solr_docs(lines: list[dict[str, Any]], *, compact_vector: bool = False) -> list[dict[str, Any]]:
    """Validated JSON lines -> Solr documents (similarity vectors computed for the whole batch).

    Raises DocumentError naming the index of the first bad line; the indexer, which dead-letters
    bad lines instead, uses ``to_solr_json``. compact_vector adds ``vector_f32`` (see
    ``stored_vector``) for a collection that stores the vector that way.
    """
    pixel_rows = []
    for index, line in enumerate(lines):
        try:
            pixel_rows.append(validate_line(line))
        except DocumentError as error:
            raise DocumentError(f"line {index}: {error}") from error
    vectors = _vectors(lines, pixel_rows)
    compact = _compact(vectors) if compact_vector else [None] * len(lines)
    return [_doc(line, vector, f32) for line, vector, f32 in zip(lines, vectors.tolist(), compact)]


def _validate_all(lines: list[Any]) -> tuple[list[int], list[bytes], list[tuple[int, DocumentError]], np.ndarray | None]:
    """Validate every line once: (indexes of good lines, their pixel bytes, (index, error) of bad
    ones in line order, the good lines' vectors when every good line has one, else None)."""
    checked, pixel_rows, errors = [], [], []
    for index, line in enumerate(lines):
        try:
            pixel_rows.append(validate_line(line, vector=False))
        except DocumentError as error:
            errors.append((index, error))
            continue
        checked.append(index)
    vectors, bad = _vector_errors([lines[i] for i in checked])
    if not bad:
        return checked, pixel_rows, errors, vectors
    good, good_pixels = [], []
    for position, index in enumerate(checked):
        if position in bad:
            errors.append((index, bad[position]))
        else:
            good.append(index)
            good_pixels.append(pixel_rows[position])
    errors.sort(key=lambda item: item[0])
    return good, good_pixels, errors, None  # _vectors decodes the good ones


def _vector_errors(lines: list[dict[str, Any]]) -> tuple[np.ndarray | None, dict[int, DocumentError]]:
    """Check the ``vector`` fields of (otherwise valid) lines: (the vectors as float32 rows when
    every line has one, else None; {position: error} of the bad ones).

    The usual batch, every line with a well-formed vector, is decoded and checked in one numpy
    pass instead of one per line; anything else is checked line by line (``line_vector``), so
    the errors say the same either way."""
    have = [line.get("vector") for line in lines]
    if lines and all(isinstance(text, str) and len(text) == VECTOR_B64 for text in have):
        try:
            raw = base64.b64decode("".join(have), validate=True)
        except (binascii.Error, ValueError):
            raw = None
        if raw is not None and len(raw) == VECTOR_BYTES * len(lines):
            vectors = np.frombuffer(raw, "<f2").astype(np.float32).reshape(len(lines), VECTOR_DIMS)
            fine = np.isfinite(vectors).all(axis=1) & vectors.any(axis=1)
            if fine.all():
                return vectors, {}
    bad = {}
    for position, line in enumerate(lines):
        if "vector" in line:
            try:
                line_vector(line)
            except DocumentError as error:
                bad[position] = error
    return None, bad


def to_solr_json(lines: list[Any], texts: list[str], *,
                 compact_vector: bool = False) -> tuple[list[str], list[tuple[int, DocumentError]]]:
    """The indexer's hot path: the documents of the good lines as JSON text, ready to
    join into an update request. ``texts`` are the lines as read (``lines`` decoded from them);
    compact_vector as in ``to_solr_docs``.

    A line that holds only contract fields is reused as written, with image_id and vector put in
    front: its JSON, the 4 KB of base64 pixels included, is already escaped, and re-encoding it
    was a third of the indexer's own CPU. Solr stores the numeric id as the string uniqueKey, so
    the document Solr keeps is the one ``to_solr_docs`` describes.
    """
    good_indexes, pixel_rows, errors, checked_vectors = _validate_all(lines)
    good = [lines[i] for i in good_indexes]
    good_texts = [texts[i] for i in good_indexes]
    vectors = _vectors(good, pixel_rows, checked_vectors)
    compact = _compact(vectors) if compact_vector else [None] * len(good)
    out = []
    for line, text, vector, f32 in zip(good, good_texts, vectors.tolist(), compact):
        body = _reusable(line, text.strip())
        if body is not None:
            extra = f'"vector_f32":"{f32}",' if f32 is not None else ""
            out.append(f'{{"image_id":{line["id"]},"vector":{orjson.dumps(vector).decode()},{extra}{body[1:]}')
        else:  # extra keys (which Solr would refuse) or odd text: build the document afresh
            out.append(json.dumps(_doc(line, vector, f32)))
    return out, errors


_VECTOR_TAIL = ',"vector":"'


def _reusable(line: dict[str, Any], body: str) -> str | None:
    """The line's text ready to pass on (without its base64 vector, which the tag job writes last),
    or None when it must be rebuilt."""
    if not (line.keys() <= _FIELDS and body.startswith("{") and body.endswith("}")):
        return None
    if "vector" in line:
        cut = len(body) - len(_VECTOR_TAIL) - VECTOR_B64 - 2
        if cut <= 0 or not body.startswith(_VECTOR_TAIL, cut) or not body.endswith('"}'):
            return None
        body = body[:cut] + "}"
    if line.get("expected_precision", 0.0) is None:
        return None  # a JSON null would be an error for Solr's float field
    return body


_FIELDS = frozenset(REQUIRED) | frozenset(OPTIONAL)


def _vectors(lines: list[dict[str, Any]], pixel_rows: list[bytes],
             checked: np.ndarray | None = None) -> np.ndarray:
    """Each document's similarity vector as a row: the line's own (the model's), else the colour
    layout (``checked``: the lines' own vectors, already decoded by ``_validate_all``)."""
    if not pixel_rows:
        return np.empty((0, VECTOR_DIMS))
    if checked is None and all("vector" in line for line in lines):
        checked = _vector_errors(lines)[0]  # the lines are valid: one decode for the batch
    if checked is not None:
        vectors = checked
    else:
        vectors = embedding(np.frombuffer(b"".join(pixel_rows), np.uint8))
        for index, line in enumerate(lines):
            if "vector" in line:
                vectors[index] = line_vector(line)
    # Six decimals are far below the thumbnail's precision and keep the JSON short; rounding the
    # whole batch in numpy is much faster than round() per component (the indexer's hot loop).
    return np.round(vectors.astype(np.float64), 6)


def _compact(vectors: np.ndarray) -> list[str]:
    """``vector_f32`` of each row: base64 of its float32 bytes, the floats Solr parses from the
    rounded numbers in ``vector``, so both stored forms read back the same."""
    raw = vectors.astype("<f4")
    return [base64.b64encode(row.tobytes()).decode() for row in raw]


def stored_vector(doc: dict[str, Any]) -> list[float] | None:
    """A returned document's own similarity vector, whichever way it was stored, else None.

    ``vector`` (48 numbers: the schema's default and every older document) or ``vector_f32``
    (base64 of 48 little-endian float32, with tinytags.vector.compact=true); ask Solr for both
    (fl=vector,vector_f32). Either way the numbers are the float32 values Solr holds, so both
    layouts of one vector read back equal."""
    if doc.get("vector"):
        return np.asarray(doc["vector"], np.float32).astype(np.float64).tolist()
    if doc.get("vector_f32"):
        raw = base64.b64decode(doc["vector_f32"])
        if len(raw) != VECTOR_DIMS * 4:
            raise DocumentError(f"field 'vector_f32' should decode to {VECTOR_DIMS * 4} bytes, got {len(raw)}")
        return np.frombuffer(raw, "<f4").astype(np.float64).tolist()
    return None


def _doc(line: dict[str, Any], vector: list[float], vector_f32: str | None = None) -> dict[str, Any]:
    doc = {
        "id": str(line["id"]), "image_id": line["id"], "block": line["block"],
        "label": line["label"], "tag": line["tag"], "votes": line["votes"],
        "agreement": float(line["agreement"]), "vote_counts": line["vote_counts"],
        "model": line["model"], "pixels": line["pixels"], "vector": vector,
    }
    if vector_f32 is not None:
        doc["vector_f32"] = vector_f32
    for name in OPTIONAL:
        if name in line and name != "vector" and line[name] is not None:
            doc[name] = line[name]
    return doc

