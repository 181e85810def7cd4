"""webapp JSON API against the real Solr: a fresh core loaded with known documents, answers checked
against counts, orders and pixels computed here from the same JSON lines."""

from __future__ import annotations

import base64
import io
import json
import time

import numpy as np
import pytest
from PIL import Image

from tests.helpers import (
    MODEL_A,
    MODEL_B,
    Loaded,
    expected,
    hwc_of,
    learned_model,
    load_documents,
    make_card_older,
    make_lines,
    ordered,
    png_of,
)
from tinytags.core.contract import CLASSES
from tinytags.core.images import embedding
from tinytags.core.junk import junk_images
from webapp import create_app

pytestmark = pytest.mark.integration

@pytest.mark.parametrize(
    "params, tags, low, high",
    [
        ({}, (), 0.0, 1.0),
        ({"tags": "cat"}, ("cat",), 0.0, 1.0),
        ({"tags": "cat,dog", "min_agreement": "0.6"}, ("cat", "dog"), 0.6, 1.0),
        ({"tags": "Ship, truck ,", "min_agreement": "0.5", "max_agreement": "0.8"}, ("ship", "truck"), 0.5, 0.8),
        ({"min_agreement": "0.7", "max_agreement": "0.7"}, (), 0.7, 0.7),
        ({"min_agreement": "0.95"}, (), 0.95, 1.0),
    ],
)
def test_search_counts_and_tag_facets_match_the_documents(loaded, params, tags, low, high):
    response, body = loaded.get("/api/search", rows="5", **params)
    assert response.status_code == 200, body
    assert body["numFound"] == len(expected(loaded.lines, tags, low, high))
    # Tag counts ignore the tag choice itself (multi-select): what each tag would show at this range.
    in_range = expected(loaded.lines, (), low, high)
    assert body["facets"]["tag"] == {name: sum(l["tag"] == name for l in in_range) for name in CLASSES}
    assert all(r["tag"] in (tags or CLASSES) and low <= r["agreement"] <= high for r in body["results"])


@pytest.mark.parametrize("sort", ["agreement_desc", "agreement_asc", "id_asc", "id_desc"])
def test_paging_with_cursors_visits_every_match_once_in_order(loaded, sort):
    want = ordered(expected(loaded.lines, ("cat", "dog", "frog"), 0.5, 1.0), sort)
    seen, cursor, pages = [], "*", 0
    while cursor is not None:
        response, body = loaded.get("/api/search", tags="cat,dog,frog", min_agreement="0.5", rows="7",
                                    sort=sort, cursor=cursor)
        assert response.status_code == 200, body
        assert body["numFound"] == len(want)
        seen += [r["id"] for r in body["results"]]
        cursor, pages = body["next_cursor"], pages + 1
        assert pages <= len(want) // 7 + 2, "paging does not stop"
    assert seen == want


def test_results_carry_the_contract_fields_and_working_links(loaded):
    response, body = loaded.get("/api/search", tags="horse", rows="3", sort="id_asc")
    first = min((l for l in loaded.lines if l["tag"] == "horse"), key=lambda l: l["id"])
    result = body["results"][0]
    assert {k: result[k] for k in ("id", "tag", "agreement", "votes", "vote_counts", "block", "model")} == {
        "id": str(first["id"]), "tag": "horse", "agreement": first["agreement"], "votes": first["votes"],
        "vote_counts": first["vote_counts"], "block": first["block"], "model": first["model"]}
    assert result["image_url"] == f"/api/images/{first['id']}.png"
    assert loaded.client.get(result["image_url"]).status_code == 200
    assert loaded.client.get(result["page_url"]).status_code == 200


def test_every_result_carries_its_documents_expected_precision(loaded):
    want = {str(l["id"]): l["expected_precision"] for l in loaded.lines}
    assert None in want.values() and len(set(want.values())) > 10  # both kinds are in the index
    seen, cursor = {}, "*"
    while cursor is not None:
        _, body = loaded.get("/api/search", rows="100", sort="id_asc", cursor=cursor)
        seen.update({r["id"]: r["expected_precision"] for r in body["results"]})
        cursor = body["next_cursor"]
    assert seen.keys() == want.keys()
    for doc_id, precision in want.items():
        assert seen[doc_id] == (None if precision is None else pytest.approx(precision, abs=1e-6)), doc_id
    # Similar images are results too.
    _, similar = loaded.get(f"/api/similar/{loaded.lines[0]['id']}", rows="10")
    for item in similar["results"]:
        assert item["expected_precision"] == (None if want[item["id"]] is None else pytest.approx(want[item["id"]]))


def test_search_reports_each_tags_precision_at_the_threshold(loaded, model_dir):
    path, _, _ = model_dir
    card = json.loads((path / "model_card.json").read_text())
    client = create_app({"SOLR_URL": loaded.url, "MODEL_DIR": str(path), "TESTING": True}).test_client()

    def row(tag, votes):  # the card's own row, found by hand
        found = [r for r in card["per_class_agreement"][tag] if r["min_votes"] == votes]
        assert len(found) == 1
        return found[0]

    # 5 trees: agreement >= 0.6 needs 3 votes; only the chosen tags, in label order.
    body = client.get("/api/search?tags=dog,cat&min_agreement=0.6&rows=0").get_json()
    assert list(body["tag_precision"]) == ["cat", "dog"]
    for tag in ("cat", "dog"):
        assert body["tag_precision"][tag] == {"min_votes": 3, "trees": 5, "images": row(tag, 3)["images"],
                                              "precision": row(tag, 3)["precision"], "recall": row(tag, 3)["recall"]}
    # No tag chosen: all ten. 0.4 x 5 trees = 2 votes.
    body = client.get("/api/search?min_agreement=0.4&rows=0").get_json()
    assert list(body["tag_precision"]) == list(CLASSES)
    assert {t: r["precision"] for t, r in body["tag_precision"].items()} == {t: row(t, 2)["precision"] for t in CLASSES}
    # Full agreement: truck had no test images there, so no precision (but the row is there).
    body = client.get("/api/search?tags=truck&min_agreement=1&rows=0").get_json()
    assert body["tag_precision"]["truck"]["images"] == 0 and body["tag_precision"]["truck"]["precision"] is None
    # Without a card, or with an older card without the table: nothing, not an error.
    assert loaded.get("/api/search", rows="0")[1]["tag_precision"] == {}
    del card["per_class_agreement"]
    (path / "model_card.json").write_text(json.dumps(card))
    assert client.get("/api/search?min_agreement=0.4&rows=0").get_json()["tag_precision"] == {}


def test_model_filter_keeps_one_model_version(loaded):
    response, body = loaded.get("/api/search", model=MODEL_B, rows="0")
    assert body["numFound"] == len(expected(loaded.lines, model=MODEL_B)) > 0
    assert body["results"] == [] and body["next_cursor"] is None


def test_image_png_is_rendered_from_the_stored_pixels_with_cache_headers(loaded):
    line = loaded.lines[5]
    response = loaded.client.get(f"/api/images/{line['id']}.png")
    assert response.status_code == 200 and response.mimetype == "image/png"
    image = Image.open(io.BytesIO(response.data))
    assert image.size == (32, 32) and image.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(image), hwc_of(line))
    assert response.cache_control.public and response.cache_control.max_age >= 3600
    etag = response.headers["ETag"]
    again = loaded.client.get(f"/api/images/{line['id']}.png", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.data == b""


def test_unknown_image_is_a_json_404(loaded):
    for path in ("/api/images/5.png", "/api/documents/5", "/api/similar/5"):
        response = loaded.client.get(path)
        assert response.status_code == 404 and response.get_json() == {"error": "no image with id 5"}
    assert loaded.client.get("/api/images/cat.png").get_json() == {"error": "There is nothing at this address."}


def test_raw_document_holds_every_stored_field(loaded):
    line = loaded.lines[9]
    response, body = loaded.get(f"/api/documents/{line['id']}")
    assert body["pixels"] == line["pixels"] and body["vote_counts"] == line["vote_counts"]
    assert body["image_id"] == line["id"] and len(body["vector"]) == 48 and "indexed_at" in body


def test_similar_images_come_nearest_first_as_a_brute_force_cosine_ranking_says(loaded):
    vectors = embedding(np.frombuffer(b"".join(base64.b64decode(l["pixels"]) for l in loaded.lines), np.uint8))
    for probe in (0, 17, 101):
        cosine = vectors @ vectors[probe] / (np.linalg.norm(vectors, axis=1) * np.linalg.norm(vectors[probe]))
        order = [i for i in np.argsort(-cosine, kind="stable") if i != probe][:8]
        response, body = loaded.get(f"/api/similar/{loaded.lines[probe]['id']}", rows="8")
        assert response.status_code == 200, body
        assert [r["id"] for r in body["results"]] == [str(loaded.lines[i]["id"]) for i in order]
        np.testing.assert_allclose([r["similarity"] for r in body["results"]], cosine[order], atol=1e-4)
        assert body["numFound"] == 8 and body["next_cursor"] is None


def test_stats_count_tags_models_and_the_agreement_histogram(loaded):
    response, body = loaded.get("/api/stats")
    lines = loaded.lines
    assert body["numFound"] == len(lines)
    assert body["tags"] == {name: sum(l["tag"] == name for l in lines) for name in CLASSES}
    assert body["models"] == {MODEL_A: sum(l["model"] == MODEL_A for l in lines),
                              MODEL_B: sum(l["model"] == MODEL_B for l in lines)}
    histogram = {bucket["agreement"]: bucket["count"] for bucket in body["agreement_histogram"]}
    assert histogram == {round(v / 10, 1): sum(l["votes"] == v for l in lines) for v in range(11)}


HOSTILE = [
    ({"tags": "cat OR tag:*"}, "unknown tag 'cat or tag:*'"),
    ({"tags": "*:*"}, "unknown tag '*:*'"),
    ({"tags": "cat) OR (*:*"}, "unknown tag 'cat) or (*:*'"),
    ({"tags": "<script>alert(1)</script>"}, "unknown tag '<script>alert(1)</script>'"),
    ({"tags": "zebra"}, "expected some of airplane"),
    ({"min_agreement": "0.4 TO *] OR agreement:[0"}, "min_agreement should be a number"),
    ({"min_agreement": "-0.1"}, "min_agreement should be between 0 and 1"),
    ({"max_agreement": "1.5"}, "max_agreement should be between 0 and 1"),
    ({"min_agreement": "nan"}, "min_agreement should be a number"),
    ({"min_agreement": "1_0"}, "min_agreement should be a number"),
    ({"min_agreement": "0.8", "max_agreement": "0.6"}, "min_agreement (0.8) is above max_agreement (0.6)"),
    ({"rows": "201"}, "rows should be at most 200"),
    ({"rows": "-1"}, "rows should be a whole number"),
    ({"rows": "10; DROP"}, "rows should be a whole number"),
    ({"sort": "agreement desc, pixels asc"}, "sort: unknown order"),
    ({"cursor": '*" OR 1'}, "cursor is malformed"),
    ({"cursor": "AoE"}, "cursor is malformed"),
    ({"cursor": "x" * 2000}, "cursor is malformed"),
    ({"model": "abc' OR '1"}, "model should be a model version"),
]


@pytest.mark.parametrize("params, message", HOSTILE)
def test_bad_and_hostile_parameters_are_refused_before_solr(unreachable_solr_url, params, message):
    client = create_app({"SOLR_URL": unreachable_solr_url, "TESTING": True}).test_client()
    response = client.get("/api/search", query_string=params)
    assert response.status_code == 400
    assert message in response.get_json()["error"]


def test_repeated_single_parameters_are_refused(unreachable_solr_url):
    client = create_app({"SOLR_URL": unreachable_solr_url, "TESTING": True}).test_client()
    response = client.get("/api/search?min_agreement=0.4&min_agreement=0.9")
    assert response.status_code == 400 and "given 2 times" in response.get_json()["error"]


def test_hostile_values_find_nothing_extra_in_a_real_index(loaded):
    """The same payloads against the loaded core: refused, and the real index is never widened."""
    for params, _ in HOSTILE:
        response, body = loaded.get("/api/search", **params)
        assert response.status_code == 400, (params, body)


def test_a_cursor_of_another_sort_is_a_400(loaded):
    _, first = loaded.get("/api/search", rows="5", sort="id_asc")
    response, body = loaded.get("/api/search", rows="5", sort="agreement_desc", cursor=first["next_cursor"])
    assert response.status_code == 400 and "not a next_cursor of this search" in body["error"]


def test_solr_down_is_a_503_with_a_json_message(unreachable_solr_url):
    client = create_app({"SOLR_URL": unreachable_solr_url, "TESTING": True}).test_client()
    for path in ("/api/search", "/api/stats", "/api/images/7.png", "/api/similar/7"):
        response = client.get(path)
        assert response.status_code == 503, path
        assert "not answering" in response.get_json()["error"]


def test_first_pages_and_counts_are_kept_per_index_version_deeper_pages_never(solr_core):
    lines = make_lines(40)
    load_documents(solr_core, lines[:30])
    trusting = Loaded(solr_core, lines, SEARCH_CACHE_SECONDS=60, INDEX_VERSION_SECONDS=3600).client
    checking = Loaded(solr_core, lines, SEARCH_CACHE_SECONDS=60, INDEX_VERSION_SECONDS=0).client
    fresh = Loaded(solr_core, lines, SEARCH_CACHE_SECONDS=0, FACET_CACHE_SECONDS=0).client
    short = Loaded(solr_core, lines, SEARCH_CACHE_SECONDS=0.5, FACET_CACHE_SECONDS=0.5,
                   INDEX_VERSION_SECONDS=3600).client
    first = trusting.get("/api/search?rows=5&sort=id_asc").get_json()
    for client in (checking, short):
        assert client.get("/api/search?rows=5&sort=id_asc").get_json()["numFound"] == 30
    assert first["numFound"] == 30
    load_documents(solr_core, lines[30:])  # the index changes under the apps
    # An app that does not look at the index version again keeps its first page and counts ...
    assert trusting.get("/api/search?rows=5&sort=id_asc").get_json() == first
    # ... one that does counts again at once, as does one that keeps nothing.
    assert checking.get("/api/search?rows=5&sort=id_asc").get_json()["numFound"] == 40
    assert fresh.get("/api/search?rows=5&sort=id_asc").get_json()["numFound"] == 40
    # A deeper page is always asked of Solr: it holds the new documents at once.
    deeper = trusting.get(f"/api/search?rows=50&sort=id_asc&cursor={first['next_cursor']}").get_json()
    assert [r["id"] for r in deeper["results"]] == [str(l["id"]) for l in sorted(lines, key=lambda l: l["id"])[5:]]
    time.sleep(0.6)  # kept at most SEARCH_CACHE_SECONDS / FACET_CACHE_SECONDS, whatever the version says
    assert short.get("/api/search?rows=5&sort=id_asc").get_json()["numFound"] == 40


def test_health_counts_documents_or_says_solr_is_down(loaded, unreachable_solr_url):
    assert loaded.get("/api/health")[1] == {"status": "ok", "documents": len(loaded.lines)}
    down = create_app({"SOLR_URL": unreachable_solr_url, "TESTING": True}).test_client().get("/api/health")
    assert down.status_code == 503


def test_missing_core_is_a_503(stack):
    client = create_app({"SOLR_URL": f"{stack['solr']}/no_such_core_here", "TESTING": True}).test_client()
    assert client.get("/api/search").status_code == 503


def test_classify_votes_like_the_trees_and_finds_the_image_itself_first(loaded, model_dir):
    path, trees, pixels = model_dir
    client = create_app({"SOLR_URL": loaded.url, "MODEL_DIR": str(path), "TESTING": True}).test_client()
    probe = 11
    response = client.post("/api/classify?rows=4",
                           data={"image": (io.BytesIO(png_of(hwc_of(loaded.lines[probe]))), "probe.png")},
                           content_type="multipart/form-data")
    body = response.get_json()
    assert response.status_code == 200, body
    # Independent expectation: scikit-learn's own trees, each predicting on the same pixels; a tie
    # on votes goes to the class whose voting leaves are purer (then the lower class).
    row = pixels[probe:probe + 1].astype(np.float32)
    predicted = [int(t.predict(row)[0]) for t in trees]
    purity = [float(t.predict_proba(row).max()) for t in trees]
    want = np.bincount(predicted, minlength=10)
    tied = [c for c in range(10) if want[c] == want.max()]
    winner = max(tied, key=lambda c: (sum(p for v, p in zip(predicted, purity) if v == c), -c))
    assert body["vote_counts"] == want.tolist()
    assert body["votes"] == want.max() and body["tag"] == CLASSES[winner]
    assert body["agreement"] == pytest.approx(want.max() / 5)
    assert body["model_card"]["min_votes"] == want.max()
    assert body["model_card"]["precision"] == pytest.approx(0.2 + want.max() / 10)
    assert body["similar"]["results"][0]["id"] == str(loaded.lines[probe]["id"])
    assert body["similar"]["results"][0]["similarity"] == pytest.approx(1.0, abs=1e-4)
    assert len(body["similar"]["results"]) == 4
    # A real image is no junk, and the card's table says how often this tag with these votes was right.
    card = json.loads((path / "model_card.json").read_text())
    assert body["junk"] is False and body["features"] == "pixels"
    assert body["expected_precision"] == pytest.approx(card["expected_precision"][CLASSES[winner]][want.max()])


def test_classify_rereads_the_card_when_it_changes(loaded, model_dir):
    path, _, _ = model_dir
    client = create_app({"SOLR_URL": loaded.url, "MODEL_DIR": str(path), "TESTING": True}).test_client()

    def classify():
        return client.post("/api/classify", data={"image": (io.BytesIO(png_of(hwc_of(loaded.lines[8]))), "a.png")},
                           content_type="multipart/form-data").get_json()

    first = classify()
    card = json.loads((path / "model_card.json").read_text())
    assert first["expected_precision"] == pytest.approx(card["expected_precision"][first["tag"]][first["votes"]])
    card["expected_precision"] = {tag: [0.123] * 6 for tag in CLASSES}  # the model was re-evaluated
    (path / "model_card.json").write_text(json.dumps(card, indent=1))
    again = classify()
    assert again["tag"] == first["tag"] and again["expected_precision"] == pytest.approx(0.123)


def test_classify_without_a_precision_table_still_answers(loaded, model_dir):
    """An older card (no expected_precision): the vote as before, and no expected precision."""
    path, _, _ = model_dir
    make_card_older(path)
    client = create_app({"SOLR_URL": loaded.url, "MODEL_DIR": str(path), "TESTING": True}).test_client()
    response = client.post("/api/classify", data={"image": (io.BytesIO(png_of(hwc_of(loaded.lines[3]))), "a.png")},
                           content_type="multipart/form-data")
    body = response.get_json()
    assert response.status_code == 200, body
    assert body["junk"] is False and body["tag"] in CLASSES and body["expected_precision"] is None
    assert body["model_card"]["min_votes"] == body["votes"]


def test_classify_with_learned_features_calls_junk_junk_and_searches_with_the_models_vector(loaded, tmp_path):

    features, trees = learned_model(tmp_path, loaded.lines)
    client = create_app({"SOLR_URL": loaded.url, "MODEL_DIR": str(tmp_path), "TESTING": True}).test_client()
    index_vectors = embedding(np.frombuffer(b"".join(base64.b64decode(l["pixels"]) for l in loaded.lines), np.uint8))

    def expect(row):
        """The verdict by hand: each scikit-learn tree votes on the features; junk when "none" has the
        most votes (ties to the purer leaves) or the features call the image an outlier."""
        inputs, vectors, outlier = features.encode_all(row[None, :])
        predicted = [int(t.predict(inputs.astype(np.float32))[0]) for t in trees]
        counts = np.bincount(predicted, minlength=len(CLASSES) + 1)
        purity = [float(t.predict_proba(inputs.astype(np.float32)).max()) for t in trees]
        tied = [c for c in range(len(counts)) if counts[c] == counts.max()]
        winner = max(tied, key=lambda c: (sum(p for v, p in zip(predicted, purity) if v == c), -c))
        return winner == features.junk_class or bool(outlier[0]), winner, counts[:len(CLASSES)], vectors[0]

    def post(hwc):
        response = client.post("/api/classify?rows=5", data={"image": (io.BytesIO(png_of(hwc)), "x.png")},
                               content_type="multipart/form-data")
        assert response.status_code == 200, response.get_data(as_text=True)
        return response.get_json()

    verdicts = []
    for row in list(junk_images(6, 99)) + [np.frombuffer(base64.b64decode(loaded.lines[i]["pixels"]), np.uint8)
                                             for i in (2, 40, 77)]:
        hwc = row.reshape(3, 32, 32).transpose(1, 2, 0).copy()
        junk, winner, counts, vector = expect(row)
        body = post(hwc)
        verdicts.append(junk)
        assert body["junk"] is junk and body["vote_counts"] == counts.tolist()
        assert body["features"] == features.name
        if junk:
            assert body["tag"] is None and body["expected_precision"] is None and body["model_card"] is None
        else:
            assert body["tag"] == CLASSES[winner] and body["votes"] == counts[winner]
        # Similar images: ranked by the model's own vector, not the colour layout.
        cosine = index_vectors @ vector / np.linalg.norm(index_vectors, axis=1)
        order = np.argsort(-cosine, kind="stable")[:5]
        assert [r["id"] for r in body["similar"]["results"]] == [str(loaded.lines[i]["id"]) for i in order]
        np.testing.assert_allclose([r["similarity"] for r in body["similar"]["results"]], cosine[order], atol=1e-4)
    # Both verdicts were seen: junk the model rejects, and photos it tags.
    assert any(verdicts[:6]) and not all(verdicts[6:]), verdicts


def test_classify_refuses_what_it_cannot_use(loaded, model_dir, tmp_path):
    path, _, _ = model_dir
    client = create_app({"SOLR_URL": loaded.url, "MODEL_DIR": str(path), "TESTING": True,
                         "MAX_CONTENT_LENGTH": 50_000}).test_client()

    def post(data, name="x.png"):
        return client.post("/api/classify", data={"image": (io.BytesIO(data), name)}, content_type="multipart/form-data")

    not_image = post(b"this is not an image", "x.txt")
    assert not_image.status_code == 400 and "not a readable image" in not_image.get_json()["error"]
    too_big = post(b"\0" * 60_000)
    assert too_big.status_code == 413 and "at most 50,000 bytes" in too_big.get_json()["error"]
    no_file = client.post("/api/classify", data={}, content_type="multipart/form-data")
    assert no_file.status_code == 400 and "field named 'image'" in no_file.get_json()["error"]
    tiff = io.BytesIO()
    Image.new("RGB", (8, 8)).save(tiff, format="TIFF")
    assert "TIFF files are not accepted" in post(tiff.getvalue()).get_json()["error"]
    no_model = create_app({"SOLR_URL": loaded.url, "MODEL_DIR": str(tmp_path / "none"), "TESTING": True})
    response = no_model.test_client().post(
        "/api/classify", data={"image": (io.BytesIO(png_of(hwc_of(loaded.lines[0]))), "a.png")},
        content_type="multipart/form-data")
    assert response.status_code == 503 and "forest.npz is missing" in response.get_json()["error"]


def test_search_reports_the_model_cards_precision_for_the_threshold(loaded, model_dir):
    path, _, _ = model_dir
    client = create_app({"SOLR_URL": loaded.url, "MODEL_DIR": str(path), "TESTING": True}).test_client()
    body = client.get("/api/search?min_agreement=0.6&rows=0").get_json()
    # 5 trees: agreement >= 0.6 means at least 3 votes.
    assert body["model_card"] == {"min_votes": 3, "coverage": 0.7, "precision": pytest.approx(0.5), "trees": 5}
