"""Similar images: exact scoring over a small filter set, HNSW k-NN over a large one.

Pure functions, no Flask and no HTTP (webapp/services.py runs them). Two ways to find the
images nearest a vector, both on the ``vector`` field, both scored as Solr scores cosine,
(1 + cos) / 2:

- **exact**: ``q={!func}vectorSimilarity(vector, [..])`` with the search's filters as ``fq``,
  sorted by score. Lucene scores only the documents the filters match (the filter leads the
  conjunction), one cosine each, so the cost grows with the filter set. The answer is the true
  nearest neighbours among the matches.
- **hnsw**: ``{!knn}`` with the filters as pre-filters. Its cost hardly depends on the index
  size, but a filter makes Lucene 9.12 walk the graph until it has seen as many nodes as the
  filter matches and then start again exactly, so for a small filter set it does the exact
  work twice over. It is approximate (recall@10 ≥ 0.95 at the topK we ask, bench/index.py).

``use_exact`` picks by the number of matches (the search's cached tag counts know it):
SIMILAR_EXACT_MAX (TINYTAGS_SIMILAR_EXACT_MAX; bench/search.py measures the crossover) or
fewer go exact. A collection whose vectors have no graph (a flat vector format) answers k-NN
with nothing; the service then falls back to exact scoring, so such a collection is served
whatever the setting says.
"""

from __future__ import annotations

from typing import Sequence

FIELD = "vector"
# A filter set up to this many documents is scored exactly: where the two ways cost the same at 1M
# documents (bench/RESULTS.md, "Similar images"). Exact grows with the matches, HNSW with how
# selective the filter is, so the crossover is a count.
SIMILAR_EXACT_MAX = 100_000
# HNSW searches as wide as topK: asking for more candidates than we show keeps recall at the goal
# (a small shard's graph missed a true 4th neighbour at topK=9).
MIN_CANDIDATES, MAX_CANDIDATES = 50, 1000


def vector_text(vector: Sequence[float]) -> str:
    """A vector as Solr's ``[..]`` literal (only ever for a vector we computed or Solr stored)."""
    return "[" + ",".join(repr(float(v)) for v in vector) + "]"


def candidates_for(wanted: int) -> int:
    """How wide the HNSW search goes for `wanted` results."""
    return min(max(4 * wanted, MIN_CANDIDATES), MAX_CANDIDATES)


def knn_query(vector: Sequence[float], top_k: int) -> str:
    """The HNSW k-NN query for a vector."""
    return f"{{!knn f={FIELD} topK={int(top_k)}}}{vector_text(vector)}"


def exact_query(vector: Sequence[float]) -> str:
    """The exact query: every matching document scored by its cosine with the vector."""
    return f"{{!func}}vectorSimilarity({FIELD},{vector_text(vector)})"


def use_exact(matches: int | None, exact_max: int) -> bool:
    """Score exactly when the filter set is known and small enough (None: unknown or no filter)."""
    return matches is not None and matches <= exact_max


def similar_params(vector: Sequence[float], wanted: int, filters: Sequence[str], exact: bool,
                   fields: str) -> list[tuple[str, str]]:
    """/select parameters for the `wanted` images nearest `vector` among those the fq `filters` match."""
    params = [("fl", fields + ",score"), ("rows", str(wanted)), ("wt", "json")]
    if exact:
        # Ties (equal scores) go by index order, as they do in HNSW's answer.
        params += [("q", exact_query(vector)), ("sort", "score desc")]
    else:
        params += [("q", knn_query(vector, candidates_for(wanted)))]
    return params + [("fq", clause) for clause in filters]


def cosine_of(score: float) -> float:
    """Solr's cosine score (1 + cos) / 2 -> cos."""
    return round(2.0 * float(score) - 1.0, 6)
