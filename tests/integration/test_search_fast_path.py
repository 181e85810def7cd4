"""The search hot path against the real Solr: pages that stop counting say so, tag counts kept per
index version change after a commit, similar-image search honours the search filters.

Expectations are computed here from the JSON lines that were loaded, never read back from Solr.
"""

from __future__ import annotations

import base64

import numpy as np
import pytest
import requests

from tests.helpers import Loaded, expected, load_documents, make_lines, ordered
from tinytags.core.contract import CLASSES
from tinytags.core.images import embedding
from tinytags.core.solr_docs import to_solr_docs
from webapp.queries import MIN_EXACT_COUNT

pytestmark = pytest.mark.integration


def _counts(lines) -> dict[str, int]:
    return {name: sum(l["tag"] == name for l in lines) for name in CLASSES}


def test_a_cursor_page_without_counts_at_hand_flags_its_total_approximate(solr_core):
    lines = make_lines(3 * MIN_EXACT_COUNT, seed=11)
    load_documents(solr_core, lines)
    want = ordered(lines, "agreement_desc")
    reader = Loaded(solr_core, lines)
    response, first = reader.get("/api/search", rows="50")
    assert response.status_code == 200, first
    # A first page is counted: exact, whatever Solr did to find the page.
    assert (first["numFound"], first["exact"]) == (len(lines), True)
    assert [r["id"] for r in first["results"]] == want[:50]

    # Page 2 in another process (a fresh app: no counts cached there): Solr stops counting, so
    # the total is a lower bound, flagged; the page itself is still exactly the next 50.
    other = Loaded(solr_core, lines)
    response, second = other.get("/api/search", rows="50", cursor=first["next_cursor"])
    assert response.status_code == 200, second
    assert second["exact"] is False and second["facets"] is None
    assert MIN_EXACT_COUNT <= second["numFound"] <= len(lines)
    assert [r["id"] for r in second["results"]] == want[50:100]
    page = other.client.get("/", query_string={"rows": "24", "cursor": first["next_cursor"]})
    assert page.status_code == 200 and b'data-exact="false"' in page.data and b">about </span>" in page.data

    # The app that counted page 1 still has the counts of this index version: exact again.
    _, again = reader.get("/api/search", rows="50", cursor=first["next_cursor"])
    assert (again["numFound"], again["exact"]) == (len(lines), True)
    assert again["facets"]["tag"] == _counts(lines)


def test_small_result_sets_are_counted_exactly_even_on_cursor_pages(solr_core):
    lines = make_lines(240)
    load_documents(solr_core, lines)
    first = Loaded(solr_core, lines).get("/api/search", tags="cat,dog", rows="5")[1]
    _, second = Loaded(solr_core, lines).get("/api/search", tags="cat,dog", rows="5", cursor=first["next_cursor"])
    assert (second["numFound"], second["exact"]) == (len(expected(lines, ("cat", "dog"))), True)


def test_tag_counts_are_kept_per_index_version_and_change_after_a_commit(solr_core):
    lines = make_lines(300, seed=5)
    old, new = lines[:200], lines[200:]
    load_documents(solr_core, old)
    checking = Loaded(solr_core, lines, INDEX_VERSION_SECONDS=0)   # asks the version on every search
    trusting = Loaded(solr_core, lines, INDEX_VERSION_SECONDS=3600)  # asked it once, keeps it an hour
    for app in (checking, trusting):
        _, body = app.get("/api/search", rows="3", min_agreement="0.5")
        assert body["facets"]["tag"] == _counts(expected(old, (), 0.5))
        assert body["numFound"] == len(expected(old, (), 0.5))

    # Sent but not committed: the searchable index has not changed, nor do the counts.
    response = requests.post(f"{solr_core}/update", json=to_solr_docs(new), timeout=120)
    assert response.status_code == 200, response.text
    _, body = checking.get("/api/search", rows="3", min_agreement="0.5")
    assert body["facets"]["tag"] == _counts(expected(old, (), 0.5))

    requests.get(f"{solr_core}/update", params={"commit": "true"}, timeout=120).raise_for_status()
    _, body = checking.get("/api/search", rows="3", min_agreement="0.5")
    assert body["facets"]["tag"] == _counts(expected(lines, (), 0.5))
    assert body["numFound"] == len(expected(lines, (), 0.5))
    assert [r["id"] for r in body["results"]] == ordered(expected(lines, (), 0.5), "agreement_desc")[:3]
    # The app that has not looked at the version again still answers from its cache: the counts
    # really are kept, not recounted on every search.
    _, stale = trusting.get("/api/search", rows="3", min_agreement="0.5")
    assert stale["facets"]["tag"] == _counts(expected(old, (), 0.5))


@pytest.mark.parametrize("params, tags, low, high", [
    ({"tags": "cat,dog"}, ("cat", "dog"), 0.0, 1.0),
    ({"tags": "ship", "min_agreement": "0.6"}, ("ship",), 0.6, 1.0),
    ({"min_agreement": "0.5", "max_agreement": "0.7"}, (), 0.5, 0.7),
])
def test_similar_images_are_the_nearest_among_those_matching_the_filters(loaded, params, tags, low, high):
    lines = loaded.lines
    vectors = embedding(np.frombuffer(b"".join(base64.b64decode(l["pixels"]) for l in lines), np.uint8))
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    for probe in (3, 50):
        pool = [i for i, l in enumerate(lines) if l in expected(lines, tags, low, high) and i != probe]
        cosine = unit[pool] @ unit[probe]
        want = [str(lines[pool[j]]["id"]) for j in np.argsort(-cosine, kind="stable")[:6]]
        response, body = loaded.get(f"/api/similar/{lines[probe]['id']}", rows="6", **params)
        assert response.status_code == 200, body
        assert [r["id"] for r in body["results"]] == want
        assert all(r["tag"] in (tags or CLASSES) and low <= r["agreement"] <= high for r in body["results"])
    page = loaded.client.get(f"/images/{lines[3]['id']}", query_string={"rows": "6", **params})
    assert page.status_code == 200 and b'id="similar-filters"' in page.data


def test_similar_images_refuse_bad_filters_like_search_does(loaded):
    response, body = loaded.get(f"/api/similar/{loaded.lines[0]['id']}", tags="unicorn")
    assert response.status_code == 400 and "unknown tag 'unicorn'" in body["error"]
