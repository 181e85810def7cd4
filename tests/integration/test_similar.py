"""Similar images against the real Solr, both ways (webapp/similarity.py): exact scoring over the
filter set equals a brute-force cosine ranking, HNSW keeps recall@10 ≥ 0.95, and SIMILAR_EXACT_MAX
picks between them by the number of matches.

Expectations are computed here with numpy from the pixels of the lines that were loaded.
"""

from __future__ import annotations

import base64

import numpy as np
import pytest

from tests.helpers import Loaded, expected, load_documents, make_lines
from tinytags.core.images import embedding

pytestmark = pytest.mark.integration

EXACT, HNSW = 10**9, 0  # SIMILAR_EXACT_MAX that sends every filtered search one way


def _unit_vectors(lines) -> np.ndarray:
    vectors = embedding(np.frombuffer(b"".join(base64.b64decode(l["pixels"]) for l in lines), np.uint8))
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _nearest(lines, unit, probe: int, pool: list[int], k: int) -> tuple[list[str], np.ndarray]:
    """The k nearest of the pool to the probe by cosine (ids, cosines), ties in pool order."""
    pool = [i for i in pool if i != probe]
    cosine = unit[pool] @ unit[probe]
    order = np.argsort(-cosine, kind="stable")[:k]
    return [str(lines[pool[j]]["id"]) for j in order], cosine[order]


@pytest.mark.parametrize("exact_max, method", [(EXACT, "exact"), (HNSW, "hnsw")])
@pytest.mark.parametrize("params, tags, low", [({"tags": "cat,dog"}, ("cat", "dog"), 0.0),
                                               ({"tags": "ship", "min_agreement": "0.6"}, ("ship",), 0.6)])
def test_each_way_finds_the_brute_force_nearest_among_the_matches(solr_core, exact_max, method, params, tags, low):
    lines = make_lines(400, seed=21)
    load_documents(solr_core, lines)
    app = Loaded(solr_core, lines, SIMILAR_EXACT_MAX=exact_max)
    unit = _unit_vectors(lines)
    pool = [i for i, line in enumerate(lines) if line in expected(lines, tags, low)]
    for probe in (0, 17, 123):
        want, cosine = _nearest(lines, unit, probe, pool, 8)
        response, body = app.get(f"/api/similar/{lines[probe]['id']}", rows="8", **params)
        assert response.status_code == 200, body
        assert body["method"] == method
        assert [r["id"] for r in body["results"]] == want
        np.testing.assert_allclose([r["similarity"] for r in body["results"]], cosine, atol=1e-4)


def test_the_number_of_matches_picks_the_way(solr_core):
    lines = make_lines(300, seed=22)
    load_documents(solr_core, lines)
    ships = len(expected(lines, ("ship",)))
    probe = f"/api/similar/{lines[0]['id']}"
    assert Loaded(solr_core, lines, SIMILAR_EXACT_MAX=ships).get(probe, tags="ship")[1]["method"] == "exact"
    assert Loaded(solr_core, lines, SIMILAR_EXACT_MAX=ships - 1).get(probe, tags="ship")[1]["method"] == "hnsw"
    # No filter: the whole index, HNSW whatever the setting (there is no count to weigh).
    assert Loaded(solr_core, lines, SIMILAR_EXACT_MAX=EXACT).get(probe)[1]["method"] == "hnsw"


@pytest.mark.slow
def test_hnsw_keeps_recall_at_10_above_0_95_where_it_is_approximate(solr_core):
    # 6,000 images: the graph search stops long before it has seen every candidate, so this is the
    # approximate answer, unlike on a few hundred documents where Lucene ends up scoring them all.
    lines = make_lines(6_000, seed=23)
    for start in range(0, len(lines), 3000):
        load_documents(solr_core, lines[start:start + 3000])
    app = Loaded(solr_core, lines, SIMILAR_EXACT_MAX=HNSW)
    unit = _unit_vectors(lines)
    everyone = list(range(len(lines)))
    broad = [i for i, line in enumerate(lines) if line["agreement"] >= 0.5]
    hits = total = 0
    for probe in np.random.default_rng(3).choice(len(lines), 40, replace=False):
        for params, pool in (({}, everyone), ({"min_agreement": "0.5"}, broad)):
            want, _ = _nearest(lines, unit, int(probe), pool, 10)
            response, body = app.get(f"/api/similar/{lines[probe]['id']}", rows="10", **params)
            assert response.status_code == 200 and body["method"] == "hnsw", body
            hits += len(set(want) & {r["id"] for r in body["results"]})
            total += len(want)
    assert hits / total >= 0.95, f"recall@10 {hits / total:.3f}"
