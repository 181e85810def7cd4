"""webapp/queries.py and webapp/model.py: parameter validation, Solr filters, card lookups, uploads (no services)."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
from PIL import Image
from werkzeug.datastructures import MultiDict

from tests.helpers import query_args
from webapp import _settings_from_env, create_app
from webapp.model import (
    UploadError,
    agreement_rows,
    card_trees,
    confusion,
    features_info,
    junk_figures,
    precision_at,
    tag_precision,
    upload_to_pixels,
)
from webapp.queries import (
    MIN_EXACT_COUNT,
    RESULT_FIELDS,
    BadSearch,
    Search,
    facet_params,
    parse_search,
    result,
    results_params,
    search_response,
    stats_response,
)

args = query_args


@pytest.mark.parametrize(
    "query, want",
    [
        ("", Search()),
        ("tags=dog,cat", Search(tags=("cat", "dog"))),
        ("tags=dog&tags=cat,dog", Search(tags=("cat", "dog"))),
        ("tags=+CAT+,,", Search(tags=("cat",))),
        ("tags=", Search()),
        ("min_agreement=0.4&max_agreement=.9", Search(min_agreement=0.4, max_agreement=0.9)),
        ("min_agreement=-0&max_agreement=1e0", Search()),
        ("min_agreement=0.5&max_agreement=0.5", Search(min_agreement=0.5, max_agreement=0.5)),
        ("rows=0", Search(rows=0)),
        ("rows=200", Search(rows=200)),
        ("sort=id_desc", Search(sort="id_desc")),
        ("cursor=*", Search()),
        ("cursor=AoMIPwAAAGYhNg==", Search(cursor="AoMIPwAAAGYhNg==")),
        ("cursor=AoMIPwAAAGYhNg%3D%3D", Search(cursor="AoMIPwAAAGYhNg==")),
        # A '+' decoded to a space by a hand-made URL is put back.
        ("cursor=AoMI+wAAAGYhNg==", Search(cursor="AoMI+wAAAGYhNg==")),
        ("model=abc123def456", Search(model="abc123def456")),
    ],
)
def test_valid_parameters_parse_to_values(query, want):
    assert parse_search(args(query)) == want


@pytest.mark.parametrize(
    "query, message",
    [
        ("tags=cats", "unknown tag 'cats'"),
        ("tags=cat;dog", "unknown tag 'cat;dog'"),
        ("min_agreement=abc", "min_agreement should be a number between 0 and 1, got 'abc'"),
        ("min_agreement=inf", "min_agreement should be a number"),
        ("max_agreement=1.0001", "max_agreement should be between 0 and 1"),
        ("min_agreement=1&max_agreement=0", "min_agreement (1) is above max_agreement (0)"),
        ("rows=1e2", "rows should be a whole number from 0 to 200"),
        ("rows=99999999999", "rows should be a whole number"),
        ("rows=300", "rows should be at most 200, got 300"),
        ("sort=score", "sort: unknown order 'score'"),
        ("cursor=Ao_-", "cursor is malformed"),
        ("cursor=AoMIPwAAAGYhNg=", "cursor is malformed"),
        ("model=ABCDEF", "model should be a model version"),
        ("sort=id_asc&sort=id_desc", "sort was given 2 times"),
        ("tags=" + "x" * 100, "…"),
    ],
)
def test_bad_parameters_name_the_parameter(query, message):
    with pytest.raises(BadSearch) as error:
        parse_search(args(query))
    assert message in str(error.value)


def test_row_cap_comes_from_the_caller():
    assert parse_search(args("rows=300"), max_rows=500).rows == 300
    with pytest.raises(BadSearch, match="at most 20"):
        parse_search(args("rows=21"), max_rows=20)


@pytest.mark.parametrize(
    "search, filters",
    [
        (Search(), []),
        (Search(tags=("cat", "dog")), ["{!terms f=tag tag=tags}cat,dog"]),
        (Search(min_agreement=0.4), ["agreement:[0.400000000 TO 1.000000000]"]),
        (Search(min_agreement=0.00001, max_agreement=0.5), ["agreement:[0.000010000 TO 0.500000000]"]),
        (Search(tags=("ship",), max_agreement=0.9, model="abcdef"),
         ["{!terms f=tag tag=tags}ship", "agreement:[0.000000000 TO 0.900000000]", "{!term f=model}abcdef"]),
    ],
)
def test_filters_are_written_from_validated_values(search, filters):
    assert search.filters() == filters
    assert [value for key, value in results_params(search) if key == "fq"] == filters
    facets = facet_params(search)
    assert [value for key, value in facets if key == "fq"] == filters
    assert ("facet.field", "{!ex=tags}tag") in facets and ("rows", "0") in facets


@pytest.mark.parametrize("sort, solr_sort", [
    ("agreement_desc", "agreement desc, image_id asc, id asc"),
    ("id_desc", "image_id desc, id asc"),
])
def test_every_sort_ends_with_the_unique_key_for_cursors(sort, solr_sort):
    assert dict(results_params(Search(sort=sort)))["sort"] == solr_sort


@pytest.mark.parametrize("search", [
    Search(), Search(tags=("cat", "truck"), min_agreement=0.45, max_agreement=0.95, sort="id_asc", rows=24,
                     cursor="AoMIPwAAAGYhNg==", model="abcdef"),
    Search(min_agreement=0.123456789, max_agreement=0.00001 + 0.5), Search(min_agreement=1e-05)])
def test_query_args_parse_back_to_the_same_search(search):
    assert parse_search(MultiDict(search.query_args())) == search


def _results(docs, next_cursor="NEXT"):
    return {"response": {"numFound": 99, "docs": docs}, "nextCursorMark": next_cursor}


def _facets(flat, total=500):
    return {"response": {"numFound": total, "docs": []}, "facet_counts": {"facet_fields": {"tag": flat}}}


@pytest.mark.parametrize(
    "rows, docs, next_cursor, want",
    [
        (2, 2, "NEXT", "NEXT"),
        (2, 1, "NEXT", None),     # a short page is the last one
        (2, 2, "*", None),        # Solr repeats the cursor at the end
        (0, 0, "NEXT", None),     # counts only
    ],
)
def test_next_cursor_is_none_at_the_end(rows, docs, next_cursor, want):
    doc = {"id": "7", "image_id": 7, "tag": "cat", "agreement": 0.5, "votes": 5}
    answer = search_response(Search(rows=rows), _results([doc] * docs, next_cursor=next_cursor), None,
                             lambda i: f"/img/{i}", lambda i: f"/page/{i}")
    assert answer["next_cursor"] == want and answer["numFound"] == 99 and answer["exact"] is True
    assert all(r["image_url"] == "/img/7" and r["page_url"] == "/page/7" for r in answer["results"])


def test_the_total_of_a_page_solr_stopped_counting_is_flagged_approximate():
    results = {"response": {"numFound": 1000, "numFoundExact": False, "docs": []}, "nextCursorMark": "N"}
    answer = search_response(Search(cursor="AoE="), results, None, str, str)
    assert (answer["numFound"], answer["exact"], answer["facets"]) == (1000, False, None)


def test_with_tag_counts_the_total_is_exact_even_when_solr_stopped_counting():
    results = {"response": {"numFound": 1000, "numFoundExact": False, "docs": []}, "nextCursorMark": "N"}
    answer = search_response(Search(), results, _facets(["dog", 3], total=123_456), str, str)
    assert (answer["numFound"], answer["exact"]) == (123_456, True)


def test_pages_let_solr_stop_counting_and_counts_filter_like_pages():
    search = Search(tags=("cat", "dog"), min_agreement=0.5, sort="id_desc", rows=24, cursor="AoE=")
    assert dict(results_params(search))["minExactCount"] == str(MIN_EXACT_COUNT)
    assert search.filter_key() == Search(tags=("cat", "dog"), min_agreement=0.5, rows=0)
    assert search.filter_key().filters() == search.filters()


def test_tag_facets_cover_every_class_in_label_order():
    answer = search_response(Search(), _results([]), _facets(["dog", 3, "cat", 2, "unknown", 9]), str, str)
    assert list(answer["facets"]["tag"]) == [
        "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    assert answer["facets"]["tag"]["dog"] == 3 and answer["facets"]["tag"]["cat"] == 2
    assert sum(answer["facets"]["tag"].values()) == 5


@pytest.mark.parametrize("tags, total", [((), 500), (("cat", "dog"), 5), (("ship",), 0)])
def test_counts_only_totals_come_from_the_tag_counts(tags, total):
    # The counts' own numFound is the filtered total (their request counts every match, rows=0).
    answer = search_response(Search(tags=tags, rows=0), None, _facets(["dog", 3, "cat", 2], total=total), str, str)
    assert answer["numFound"] == total and answer["exact"] is True
    assert answer["results"] == [] and answer["next_cursor"] is None


def test_histogram_buckets_are_labelled_by_their_centre():
    counts = []
    for index in range(11):
        counts += [f"{-0.05 + 0.1 * index + 1e-7:.8f}", index * 10]
    body = {"response": {"numFound": 550}, "facet_counts": {
        "facet_fields": {"tag": [], "model": ["m1", 550]}, "facet_ranges": {"agreement": {"counts": counts}}}}
    stats = stats_response(body)
    assert [b["agreement"] for b in stats["agreement_histogram"]] == [round(i / 10, 1) for i in range(11)]
    assert stats["agreement_histogram"][7] == {"agreement": 0.7, "from": 0.65, "to": 0.75, "count": 70}
    assert stats["models"] == {"m1": 550}


CARD = {"params": {"n_trees": 10}, "agreement": [
    {"min_votes": v, "coverage": round(1 - v / 11, 3), "precision": round(0.3 + v / 20, 3)} for v in range(1, 11)]}


@pytest.mark.parametrize(
    "card, min_agreement, want_votes",
    [
        (CARD, 0.0, 1), (CARD, 0.4, 4), (CARD, 0.41, 5), (CARD, 0.45, 5), (CARD, 1.0, 10),
        ({**CARD, "params": {}}, 0.7, 7),                     # trees from the table when params lack them
        ({"params": {"trees": 20}, "agreement": CARD["agreement"]}, 0.6, None),  # 12 votes: no such row
        ({"agreement": "broken"}, 0.4, None),
        (None, 0.4, None),
    ],
)
def test_precision_is_looked_up_for_the_votes_the_threshold_needs(card, min_agreement, want_votes):
    row = precision_at(card, min_agreement)
    if want_votes is None:
        assert row is None
    else:
        assert row["min_votes"] == want_votes and row["precision"] == pytest.approx(0.3 + want_votes / 20)


@pytest.mark.parametrize("params, trees", [
    ({"trees": 7}, 7), ({"numTrees": 3}, 3), ({"n_estimators": 4}, 4), ({"trees": True}, 10), ({"trees": "10"}, 10)])
def test_card_trees_reads_the_names_trainers_use(params, trees):
    assert card_trees({"params": params, "agreement": CARD["agreement"]}) == trees


def test_malformed_card_parts_are_dropped_not_fatal():
    card = {"agreement": [{"min_votes": 2, "coverage": 0.5, "precision": 0.6}, {"min_votes": "x"}, 7,
                          {"min_votes": 1, "coverage": math.nan}],
            "confusion_matrix": [[1, 2], [3, 4]]}
    assert agreement_rows(card) == [{"min_votes": 2, "coverage": 0.5, "precision": 0.6}]
    assert confusion(card) is None
    assert confusion({"confusion_matrix": [[i * 10 + j for j in range(10)] for i in range(10)]})[3][4] == 34


@pytest.mark.parametrize("stored, want", [(0.71, 0.71), (1.0, 1.0), (0.0, 0.0), (None, None)])
def test_results_carry_the_documents_expected_precision(stored, want):
    doc = {"id": "7", "image_id": 7, "tag": "cat", "agreement": 0.6, "votes": 6, "vote_counts": [0] * 10}
    if stored is not None:  # a document indexed without one has no such field at all
        doc["expected_precision"] = stored
    item = result(doc, lambda i: f"/img/{i}", lambda i: f"/page/{i}")
    assert "expected_precision" in item and item["expected_precision"] == want
    assert "expected_precision" in RESULT_FIELDS.split(",")
    answer = search_response(Search(rows=1), _results([doc]), _facets([]), str, str)
    assert answer["results"][0]["expected_precision"] == want


CLASS_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def per_class_card(trees: int, rows: int | None = None, params: dict | None = None) -> dict:
    """A card whose per_class_agreement is a known function of tag index c and min_votes k."""
    rows = trees if rows is None else rows
    return {"params": {"trees": trees} if params is None else params, "per_class_agreement": {
        name: [{"min_votes": k, "images": 500 - 10 * k - c, "recall": round(1 - k / 12, 4),
                "precision": round(0.3 + k / 20 + c / 100, 4)} for k in range(1, rows + 1)]
        for c, name in enumerate(CLASS_NAMES)}}


@pytest.mark.parametrize(
    "card, min_agreement, want_votes",
    [
        (per_class_card(10), 0.4, 4),
        (per_class_card(10), 0.0, 1),     # a top class always has a vote
        (per_class_card(10), 0.39, 4),
        (per_class_card(10), 0.41, 5),
        (per_class_card(10), 0.6, 6),
        (per_class_card(10), 1.0, 10),
        (per_class_card(5), 0.6, 3),
        (per_class_card(5), 0.4, 2),
        (per_class_card(7), 0.5, 4),      # 3.5 votes round up
        (per_class_card(10, params={}), 0.7, 7),  # trees from the table when params lack them
    ],
)
def test_tag_precision_picks_the_row_of_the_votes_the_threshold_needs(card, min_agreement, want_votes):
    found = tag_precision(card, min_agreement)
    assert list(found) == list(CLASS_NAMES)
    for c, name in enumerate(CLASS_NAMES):
        assert found[name]["min_votes"] == want_votes
        assert found[name]["precision"] == pytest.approx(0.3 + want_votes / 20 + c / 100)
        assert found[name]["images"] == 500 - 10 * want_votes - c
        assert found[name]["recall"] == pytest.approx(1 - want_votes / 12, abs=1e-4)


def test_tag_precision_keeps_the_chosen_tags_in_label_order():
    found = tag_precision(per_class_card(10), 0.5, ("cat", "ship"))
    assert list(found) == ["cat", "ship"]
    assert found["ship"]["precision"] == pytest.approx(0.3 + 5 / 20 + 8 / 100)


def _without(card: dict, tag: str) -> dict:
    table = dict(card["per_class_agreement"])
    del table[tag]
    return {**card, "per_class_agreement": table}


def _broken_rows(card: dict) -> dict:
    table = dict(card["per_class_agreement"])
    table["dog"] = [{"min_votes": "4", "images": 3, "precision": 0.5}, {"min_votes": 4, "images": True},
                    "row", {"min_votes": 4, "images": -1, "precision": 0.5}]
    table["cat"] = [{**row, "precision": 1.5 if row["min_votes"] == 4 else row["precision"]} for row in table["cat"]]
    return {**card, "per_class_agreement": table}


@pytest.mark.parametrize(
    "card, min_agreement, want_tags",
    [
        (None, 0.4, []),
        ({}, 0.4, []),
        ({"params": {"trees": 10}, "agreement": CARD["agreement"]}, 0.4, []),   # an older card: no table
        ({"params": {"trees": 10}, "per_class_agreement": "broken"}, 0.4, []),
        (per_class_card(20, rows=10), 0.6, []),                                 # needs 12 votes: no such rows
        (_without(per_class_card(10), "frog"), 0.4, [n for n in CLASS_NAMES if n != "frog"]),
        (_broken_rows(per_class_card(10)), 0.4, [n for n in CLASS_NAMES if n != "dog"]),
    ],
)
def test_tag_precision_hides_what_the_card_lacks(card, min_agreement, want_tags):
    assert list(tag_precision(card, min_agreement)) == want_tags


def test_a_precision_outside_0_1_is_not_shown():
    card = _broken_rows(per_class_card(10))  # cat's row at 4 votes says 1.5
    assert tag_precision(card, 0.4, ("cat",))["cat"]["precision"] is None
    assert tag_precision(card, 0.5, ("cat",))["cat"]["precision"] == pytest.approx(0.3 + 5 / 20 + 3 / 100)


def test_tag_precision_keeps_a_row_without_test_images_with_no_precision():
    card = per_class_card(10)
    card["per_class_agreement"]["truck"][9] = {"min_votes": 10, "images": 0, "recall": 0.0, "precision": None}
    assert tag_precision(card, 1.0, ("truck",)) == {
        "truck": {"min_votes": 10, "images": 0, "recall": 0.0, "precision": None, "trees": 10}}


@pytest.mark.parametrize("card, want", [
    ({"junk": {"images": 6000, "tagged": 0.0085, "real_called_junk": 0.0064}},
     {"images": 6000, "tagged": 0.0085, "real_called_junk": 0.0064}),
    ({"junk": {"images": 500, "tagged": "lots"}, "real_called_junk": 0.01}, {"images": 500, "real_called_junk": 0.01}),
    ({"junk": {"tagged": 2.0}}, None),
    ({"test_accuracy": 0.4}, None),
    (None, None),
])
def test_junk_figures_keep_only_well_formed_numbers(card, want):
    assert junk_figures(card) == want


@pytest.mark.parametrize("card, want", [
    ({"features": {"name": "kmeans256-lda", "version": "abc123", "dims": 10, "junk_class": 10}},
     {"name": "kmeans256-lda", "version": "abc123", "dims": 10, "junk_class": 10}),
    ({"features": {"name": "pixels", "version": "pixels", "dims": 3072, "junk_class": None}},
     {"name": "pixels", "version": "pixels", "dims": 3072, "junk_class": None}),
    ({"features": {"dims": 10}}, None),
    ({"features": "pixels"}, None),
    ({}, None),
])
def test_features_info_reads_the_cards_feature_set(card, want):
    assert features_info(card) == want


def _encode(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def test_upload_of_32x32_keeps_every_pixel_in_cifar_layout():
    rng = np.random.default_rng(0)
    hwc = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    got_hwc, row = upload_to_pixels(_encode(Image.fromarray(hwc)))
    np.testing.assert_array_equal(got_hwc, hwc)
    # CIFAR layout by hand: pixel (r, c) of plane p at p*1024 + 32*r + c.
    assert row[0 * 1024 + 32 * 5 + 7] == hwc[5, 7, 0] and row[2 * 1024 + 32 * 31 + 1] == hwc[31, 1, 2]


def test_upload_is_centre_cropped_then_area_averaged():
    # 128x64: a red left quarter, a blue middle half, a green right quarter. The centre square is all blue.
    image = np.zeros((64, 128, 3), np.uint8)
    image[:, :32] = (255, 0, 0)
    image[:, 32:96] = (0, 0, 255)
    image[:, 96:] = (0, 255, 0)
    hwc, _ = upload_to_pixels(_encode(Image.fromarray(image)))
    assert hwc.shape == (32, 32, 3) and (hwc == (0, 0, 255)).all()
    # A 1-pixel black/white checkerboard at 64x64: every 2x2 block averages to mid grey.
    board = (np.indices((64, 64)).sum(axis=0) % 2 * 255).astype(np.uint8)
    grey, _ = upload_to_pixels(_encode(Image.fromarray(board, "L")))
    assert set(np.unique(grey)) <= {127, 128}


@pytest.mark.parametrize("data, message", [
    (b"GIF89a nonsense", "not a readable image"),
    (b"", "not a readable image"),
])
def test_unreadable_uploads_are_refused(data, message):
    with pytest.raises(UploadError, match=message):
        upload_to_pixels(data)


def test_huge_dimensions_are_refused_before_decoding():
    data = _encode(Image.new("1", (5000, 4000)))  # a few KB on disk, 20 MP decoded
    with pytest.raises(UploadError, match="5000x4000 is too large"):
        upload_to_pixels(data)


@pytest.mark.parametrize("env, want", [
    ({}, {}),
    ({"TINYTAGS_SOLR_URL": "http://solr:8983/solr/"}, {"SOLR_URL": "http://solr:8983/solr/tinytags"}),
    ({"TINYTAGS_SOLR_URL": "http://solr:8983/solr", "TINYTAGS_SOLR_COLLECTION": "c2"},
     {"SOLR_URL": "http://solr:8983/solr/c2"}),
    ({"TINYTAGS_SOLR_URL": "http://solr:8983/solr/mine"}, {"SOLR_URL": "http://solr:8983/solr/mine"}),
    ({"TINYTAGS_SOLR_COLLECTION": "c3"}, {"SOLR_URL": "http://127.0.0.1:8983/solr/c3"}),
    ({"TINYTAGS_MODEL_DIR": "/m", "TINYTAGS_MAX_ROWS": "50", "TINYTAGS_SOLR_TIMEOUT": "2.5"},
     {"MODEL_DIR": "/m", "MAX_ROWS": 50, "SOLR_TIMEOUT": 2.5}),
])
def test_settings_come_from_the_environment(env, want, monkeypatch):
    _only_env(monkeypatch, env)
    assert _settings_from_env() == want


def _only_env(monkeypatch, env: dict[str, str]) -> None:
    """Exactly these TINYTAGS_* variables set (the settings are read when asked for)."""
    import os

    for name in [n for n in os.environ if n.startswith("TINYTAGS_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)


def test_test_config_beats_the_environment(monkeypatch):
    monkeypatch.setenv("TINYTAGS_SOLR_URL", "http://env:1/solr/x")
    monkeypatch.setenv("TINYTAGS_MAX_ROWS", "77")
    app = create_app({"SOLR_URL": "http://test:2/solr/y"})
    assert app.config["SOLR_URL"] == "http://test:2/solr/y" and app.config["MAX_ROWS"] == 77


def test_a_bad_number_in_the_environment_is_named(monkeypatch):
    _only_env(monkeypatch, {"TINYTAGS_MAX_ROWS": "lots"})
    with pytest.raises(ValueError, match="TINYTAGS_MAX_ROWS should be a number, got 'lots'"):
        _settings_from_env()
