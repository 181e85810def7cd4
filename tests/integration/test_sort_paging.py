"""Cursor paging in every sort order against the real Solr, while another thread adds documents
between pages: every original match comes exactly once, in order (the walked orders,
agreement_asc and id_desc, are assembled by the app from several Solr queries per page).

Expectations are computed here from the JSON lines that were loaded, never read back from Solr.
"""

from __future__ import annotations

import queue
import threading

import pytest
import requests

from tests.helpers import Loaded, expected, load_documents, make_lines, ordered
from tinytags.core.solr_docs import to_solr_docs
from webapp.queries import SORTS

pytestmark = pytest.mark.integration

TAGS, LOW, HIGH = ("cat", "dog", "ship", "truck"), 0.5, 0.9
ROWS = 6
ADDED = 8  # documents added after each page: about 2 of them match, so paging outruns the growth


def _newcomers(batch: int, count: int) -> list[dict]:
    """Batch number ``batch`` (from 1) of new documents: ids between the loaded ones (those are
    1000 + 7 i, i < 700), spread over that range, never repeated; all levels, all tags."""
    lines = make_lines(count, seed=100 + batch)
    for index, line in enumerate(lines):
        n = (batch - 1) * count + index
        line["id"] = 1000 + 7 * (n * 37 % 700) + 1 + n // 700 % 6
        line["block"], line["offset"] = line["id"] // 100, line["id"]
    return lines


def _sort_key(sort: str):
    return {
        "agreement_desc": lambda r: (-r["agreement"], r["image_id"]),
        "agreement_asc": lambda r: (r["agreement"], r["image_id"]),
        "id_asc": lambda r: r["image_id"],
        "id_desc": lambda r: -r["image_id"],
    }[sort]


@pytest.mark.parametrize("sort", list(SORTS))
def test_paging_while_documents_arrive_returns_every_original_once_in_order(solr_core, sort):
    lines = make_lines(700, seed=23)
    load_documents(solr_core, lines)
    want = ordered(expected(lines, TAGS, LOW, HIGH), sort)
    # The index version is asked on every search, so each page sees the documents added before it.
    reader = Loaded(solr_core, lines, INDEX_VERSION_SECONDS=0)

    asks, done = queue.Queue(), queue.Queue()

    def add_batches():
        while (batch := asks.get()) is not None:
            docs = to_solr_docs(_newcomers(batch, ADDED))
            response = requests.post(f"{solr_core}/update", params={"commit": "true"}, json=docs, timeout=120)
            done.put(response.status_code)

    adder = threading.Thread(target=add_batches, daemon=True)
    adder.start()
    seen, cursor, pages = [], "*", 0
    try:
        while cursor is not None:
            response, body = reader.get("/api/search", tags=",".join(TAGS), min_agreement=str(LOW),
                                        max_agreement=str(HIGH), sort=sort, rows=str(ROWS), cursor=cursor)
            assert response.status_code == 200, body
            if pages == 0:
                assert (body["numFound"], body["exact"]) == (len(want), True)
            seen += body["results"]
            cursor, pages = body["next_cursor"], pages + 1
            assert pages <= len(want), "paging does not stop"
            asks.put(pages)  # the other thread adds ADDED documents and commits before the next page
            assert done.get(timeout=120) == 200
    finally:
        asks.put(None)
        adder.join(timeout=120)

    ids = [r["id"] for r in seen]
    assert len(ids) == len(set(ids)), "a document came twice"
    originals = set(want)
    assert [i for i in ids if i in originals] == want  # every original once, in the expected order
    assert len(ids) > len(want), "no added document showed up: the test did not page while the index grew"
    assert all(r["tag"] in TAGS and LOW <= r["agreement"] <= HIGH for r in seen)
    keys = [_sort_key(sort)(r) for r in seen]
    assert keys == sorted(keys)  # the added ones that came are in order too


def test_walked_cursors_are_refused_by_other_orders_and_solrs_by_walks(loaded):
    _, walked = loaded.get("/api/search", rows="5", sort="agreement_asc")
    _, solrs = loaded.get("/api/search", rows="5", sort="agreement_desc")
    cases = [
        ("id_desc", walked["next_cursor"], "belongs to sort 'agreement_asc', not id_desc"),
        ("agreement_desc", walked["next_cursor"], "belongs to sort 'agreement_asc', not agreement_desc"),
        ("agreement_asc", solrs["next_cursor"], "not a next_cursor of this search"),
        ("id_desc", solrs["next_cursor"], "not a next_cursor of this search"),
    ]
    for sort, cursor, message in cases:
        response, body = loaded.get("/api/search", rows="5", sort=sort, cursor=cursor)
        assert response.status_code == 400 and message in body["error"], (sort, body)
