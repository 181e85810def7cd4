"""tinytags/core/solr_docs.py: JSON line -> Solr document, and the contract checks on each field."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from tests.helpers import checked_docs
from tinytags.core.images import embedding
from tinytags.core.solr_docs import DocumentError, stored_vector, to_solr_docs, to_solr_json, validate_line


def _line(**overrides):
    pixels = np.arange(3072, dtype=np.uint32).astype(np.uint8)
    line = {
        "id": 1_234_567, "block": 61, "label": 3, "tag": "cat", "votes": 5, "agreement": 0.5,
        "vote_counts": [0, 1, 0, 5, 2, 1, 0, 1, 0, 0], "model": "abc123def456",
        "pixels": base64.b64encode(pixels.tobytes()).decode(), "shard": 1, "offset": 234_567,
    }
    line.update(overrides)
    return line


def test_document_carries_every_field_and_the_vector_of_its_pixels():
    line = _line()
    (doc,) = to_solr_docs([line])
    assert doc["id"] == "1234567" and doc["image_id"] == 1_234_567
    assert {k: doc[k] for k in ("block", "label", "tag", "votes", "vote_counts", "model", "shard", "offset")} == {
        k: line[k] for k in ("block", "label", "tag", "votes", "vote_counts", "model", "shard", "offset")}
    expected = embedding(base64.b64decode(line["pixels"]))[0]
    np.testing.assert_allclose(doc["vector"], expected, atol=1e-6)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"id": "7"}, "'id' should be an integer"),
        ({"label": 10}, "'label' should be 0-9"),
        ({"tag": "dog"}, "label 3 is 'cat'"),
        ({"agreement": 1.5}, "within [0, 1]"),
        ({"vote_counts": [1] * 9}, "10 non-negative ints"),
        ({"vote_counts": [0, 1, 0, 5, 2, 1, 0, 1, 0, -1]}, "10 non-negative ints"),
        ({"vote_counts": [0, 1, 0, 5, 2, 1, 0, 1, 0, 0.5]}, "10 non-negative ints"),
        ({"vote_counts": [0, 1, 0, 5, 2, 1, 0, 1, 0, True]}, "10 non-negative ints"),
        ({"votes": 4}, "top of vote_counts is 5"),
        ({"pixels": "!!!!"}, "not valid base64"),
        ({"pixels": base64.b64encode(b"x" * 30).decode()}, "decode to 3072 bytes"),
        ({"votes": True}, "'votes' should be an integer"),
        ({"id": -1}, "'id' should be within 0-9223372036854775807"),
        ({"id": 2**63}, "'id' should be within 0-9223372036854775807"),  # past Solr's plong
        ({"shard": 2**31}, "'shard' should be within 0-2147483647"),  # past Solr's pint
        ({"offset": -5}, "'offset' should be within 0-"),
    ],
)
def test_contract_violations_name_the_field(overrides, message):
    with pytest.raises(DocumentError, match=message.replace("[", r"\[").replace("]", r"\]")):
        validate_line(_line(**overrides))


def test_missing_field_is_named_with_the_line_index():
    bad = _line()
    del bad["model"]
    with pytest.raises(DocumentError, match=r"line 1: missing field 'model'"):
        to_solr_docs([_line(), bad])


def test_checked_builder_returns_good_documents_and_indexed_errors():
    lines = [_line(id=1), _line(id=2, tag="dog"), _line(id=3), "not a dict", _line(id=5, votes=1)]
    docs, errors = checked_docs(lines)
    assert [doc["image_id"] for doc in docs] == [1, 3]
    assert [(index, type(error)) for index, error in errors] == [(1, DocumentError), (3, DocumentError), (4, DocumentError)]
    assert "label 3 is 'cat'" in str(errors[0][1]) and "expected a JSON object" in str(errors[1][1])
    # The same documents as the strict builder makes from the good lines alone.
    assert docs == to_solr_docs([lines[0], lines[2]])
    assert checked_docs([]) == ([], [])


def test_json_builder_reuses_the_line_text_and_describes_the_same_documents():
    lines = [_line(id=1), _line(id=2, tag="dog"), {**_line(id=3), "note": "extra"}, _line(id=4, agreement=1, votes=10,
             vote_counts=[0, 0, 0, 10, 0, 0, 0, 0, 0, 0])]
    texts = [json.dumps(line) for line in lines]
    texts[0] = "  " + texts[0] + "\r"  # whitespace a CRLF file leaves around a line
    docs, errors = to_solr_json(lines, texts)
    assert [index for index, _ in errors] == [1]
    expected = to_solr_docs([lines[0], {k: v for k, v in lines[2].items() if k != "note"}, lines[3]])
    decoded = [json.loads(doc) for doc in docs]
    # Solr turns the numeric id of a reused line into the string uniqueKey; all else is equal.
    assert [dict(d, id=str(d["id"])) for d in decoded] == expected
    assert docs[0].startswith('{"image_id":1,"vector":[') and texts[0].strip()[1:] in docs[0]  # reused as written
    assert "note" not in decoded[1]  # the line with an extra key was rebuilt without it


def test_the_compact_vector_copy_is_the_float32_of_the_indexed_numbers_in_both_builders():
    lines = [_line(id=1), _line(id=2, vector=_vector_text(np.linspace(-1, 1, 48))), {**_line(id=3), "note": "extra"}]
    docs = to_solr_docs([{k: v for k, v in line.items() if k != "note"} for line in lines], compact_vector=True)
    texts, _ = to_solr_json(lines, [json.dumps(line) for line in lines], compact_vector=True)
    for doc, text in zip(docs, texts):
        # What Solr makes of the 48 numbers in "vector" (float32), independently of the builder.
        expected = np.asarray(doc["vector"], np.float64).astype(np.float32)
        for built in (doc, json.loads(text)):
            raw = base64.b64decode(built["vector_f32"])
            np.testing.assert_array_equal(np.frombuffer(raw, "<f4"), expected)
            assert built["vector"] == doc["vector"]  # still indexed (and stored, if the schema says so)
    assert "vector_f32" not in to_solr_docs([lines[0]])[0]  # only when asked: older schemas lack the field
    assert all("vector_f32" not in json.loads(text) for text in to_solr_json(lines, [json.dumps(x) for x in lines])[0])


@pytest.mark.parametrize(
    "returned, expected",
    [
        # An older document, or one from a collection that stores the vector itself: 48 numbers.
        ({"id": "1", "vector": [0.5, -0.25] * 24}, [0.5, -0.25] * 24),
        # The compact layout (tinytags.vector.compact=true): base64 of 48 little-endian float32.
        ({"id": "1", "vector_f32": base64.b64encode(np.array([0.5, -0.25] * 24, "<f4").tobytes()).decode()},
         [0.5, -0.25] * 24),
        ({"id": "1", "vector_f32": base64.b64encode(np.array([1 / 3] * 48, "<f4").tobytes()).decode()},
         [float(np.float32(1 / 3))] * 48),
        # Solr writes a stored float32 as its shortest decimal: read back as that float32.
        ({"id": "1", "vector": [0.1] * 48}, [float(np.float32(0.1))] * 48),
        ({"id": "1"}, None),  # indexed without a vector
    ],
)
def test_a_returned_documents_vector_is_read_back_from_either_layout(returned, expected):
    assert stored_vector(returned) == expected


def test_a_stored_compact_vector_of_the_wrong_size_is_named():
    with pytest.raises(DocumentError, match="vector_f32"):
        stored_vector({"vector_f32": base64.b64encode(b"\0" * 12).decode()})


def _vector_text(values) -> str:
    return base64.b64encode(np.asarray(values, "<f2").tobytes()).decode()


def test_a_lines_own_vector_is_the_documents_and_is_cut_from_the_reused_text():
    learned = np.linspace(-1, 1, 48)
    learned /= np.linalg.norm(learned)
    line = {**_line(id=9), "expected_precision": 0.625, "vector": _vector_text(learned)}
    text = json.dumps(line)  # as the tag job writes it: vector last
    docs, errors = to_solr_json([line], [text])
    assert errors == []
    doc = json.loads(docs[0])
    assert doc["vector"] == pytest.approx(np.asarray(learned, "<f2").astype(float).tolist(), abs=1e-6)
    assert doc["expected_precision"] == 0.625
    # The colour-layout vector is not what was sent: the model's own vector won.
    assert doc["vector"] != pytest.approx(embedding(np.frombuffer(base64.b64decode(line["pixels"]), np.uint8))[0].tolist())
    assert docs[0].count('"vector"') == 1 and "=" not in docs[0].split('"vector":')[1][:5]
    assert [d["vector"] for d in to_solr_docs([line])] == [doc["vector"]]


@pytest.mark.parametrize("vector, message", [
    ("not base64!", "not valid base64"),
    (base64.b64encode(b"\x00" * 10).decode(), "should decode to 96 bytes"),
    (_vector_text([0.0] * 48), "not all zero"),
    (_vector_text([np.inf] + [0.1] * 47), "finite"),
])
def test_bad_vectors_are_named(vector, message):
    with pytest.raises(DocumentError, match=message):
        validate_line({**_line(), "vector": vector})


def test_expected_precision_is_checked_and_a_null_is_left_out():
    with pytest.raises(DocumentError, match="expected_precision"):
        validate_line({**_line(), "expected_precision": 1.5})
    with pytest.raises(DocumentError, match="should be an integer or a number or null"):
        validate_line({**_line(), "expected_precision": "high"})
    line = {**_line(id=3), "expected_precision": None}
    docs, errors = to_solr_json([line], [json.dumps(line)])
    assert errors == [] and "expected_precision" not in json.loads(docs[0])


def test_a_batch_with_bad_vectors_names_exactly_those_lines_as_a_line_by_line_check_does():
    # The indexer checks a batch's vectors in one numpy pass; the verdicts must be validate_line's.
    rng = np.random.default_rng(3)
    good = [_vector_text(v / np.linalg.norm(v)) for v in rng.normal(size=(5, 48))]
    vectors = [good[0], "not base64!" + "A" * 117, good[1], _vector_text([0.0] * 48), good[2],
               _vector_text([np.nan] + [0.1] * 47), good[3], base64.b64encode(b"\x01" * 10).decode(), good[4]]
    lines = [{**_line(id=i + 1), "vector": vector} for i, vector in enumerate(vectors)]
    lines[4]["tag"] = "dog"  # a line that is bad for another reason, between the bad vectors
    texts = [json.dumps(line, separators=(",", ":")) for line in lines]
    docs, errors = to_solr_json(lines, texts)
    expected_errors = []
    for index, line in enumerate(lines):
        try:
            validate_line(line)
        except DocumentError as error:
            expected_errors.append((index, str(error)))
    assert [(index, str(error)) for index, error in errors] == expected_errors
    assert [index for index, _ in expected_errors] == [1, 3, 4, 5, 7]
    good_lines = [lines[i] for i in (0, 2, 6, 8)]
    assert [json.loads(doc) for doc in docs] == [json.loads(doc) for doc in to_solr_json(
        good_lines, [json.dumps(line, separators=(",", ":")) for line in good_lines])[0]]
    assert [json.loads(doc)["vector"] for doc in docs] == [d["vector"] for d in to_solr_docs(good_lines)]


def test_a_batch_of_lines_with_and_without_vectors_gets_each_its_own():
    own = {**_line(id=1), "vector": _vector_text(np.linspace(0.1, 1, 48))}
    plain = _line(id=2)
    docs, errors = to_solr_json([own, plain], [json.dumps(own), json.dumps(plain)])
    assert errors == []
    assert [json.loads(doc)["vector"] for doc in docs] == [d["vector"] for d in to_solr_docs([own, plain])]
