"""webapp/similarity.py: which way a similar-image search goes, and the Solr parameters of each."""

from __future__ import annotations

import pytest

from webapp.similarity import candidates_for, cosine_of, exact_query, knn_query, similar_params, use_exact


@pytest.mark.parametrize("matches, exact_max, exact", [
    (None, 10**9, False),   # no filter: the whole index, HNSW
    (0, 0, True),
    (5_000, 5_000, True),
    (5_001, 5_000, False),
    (100_000, 200_000, True),
])
def test_use_exact_weighs_the_matches_against_the_setting(matches, exact_max, exact):
    assert use_exact(matches, exact_max) is exact


def test_knn_query_lists_the_vector():
    assert knn_query([0.5, -0.25], 3) == "{!knn f=vector topK=3}[0.5,-0.25]"


def test_exact_query_scores_by_the_vector_similarity_function():
    assert exact_query([1, 0.125]) == "{!func}vectorSimilarity(vector,[1.0,0.125])"


@pytest.mark.parametrize("wanted, candidates", [(1, 50), (12, 50), (13, 52), (100, 400), (600, 1000)])
def test_hnsw_searches_wider_than_it_shows(wanted, candidates):
    assert candidates_for(wanted) == candidates


def test_each_way_keeps_the_filters_and_asks_for_the_score():
    filters = ["{!terms f=tag tag=tags}cat", "agreement:[0.6 TO 1.0]"]
    exact = similar_params([0.5], 7, filters, True, "id,tag")
    assert dict(exact)["q"] == "{!func}vectorSimilarity(vector,[0.5])" and dict(exact)["sort"] == "score desc"
    approx = similar_params([0.5], 7, filters, False, "id,tag")
    assert dict(approx)["q"] == "{!knn f=vector topK=50}[0.5]" and "sort" not in dict(approx)
    for params in (exact, approx):
        assert [v for k, v in params if k == "fq"] == filters
        assert ("fl", "id,tag,score") in params and ("rows", "7") in params


@pytest.mark.parametrize("score, cosine", [(1.0, 1.0), (0.5, 0.0), (0.0, -1.0), (0.75, 0.5)])
def test_solr_scores_turn_back_into_cosines(score, cosine):
    assert cosine_of(score) == pytest.approx(cosine)
