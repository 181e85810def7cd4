"""Vector options of the configset (docs/operations.md, "Vector options") on a real Solr: the codec
factory of deploy/solr (tinytags.vector.format = hnsw | hnsw-int8 | flat) and the compact stored
vector (tinytags.vector.stored=false, tinytags.vector.compact=true).

The Solr is the stack's (make test starts it from this checkout's deploy/solr classes and solr_conf/).
"""

from __future__ import annotations

import base64
import uuid
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import requests

from jobs import index
from tests.helpers import Loaded, expected, load_documents, make_lines, write_tag_output
from tinytags.core.contract import CLASSES
from tinytags.core.images import embedding
from tinytags.core.solr_docs import stored_vector, to_solr_docs
from tinytags.pipeline import index as index_pipeline

COMPACT = {"tinytags.vector.stored": "false", "tinytags.vector.compact": "true"}


@pytest.fixture(scope="module")
def solr_root(stack):
    """The stack's Solr, once it is known to have this checkout's codec factory (a Solr started
    before deploy/solr had it would refuse the configset's flat cores)."""
    root = stack["solr"]
    name = f"vec_{uuid.uuid4().hex[:10]}"
    answer = requests.get(f"{root}/admin/cores", params={
        "action": "CREATE", "name": name, "configSet": "tinytags", "property.tinytags.vector.format": "flat",
        "wt": "json"}, timeout=120)
    if answer.status_code != 200:
        pytest.fail(f"the stack's Solr cannot make a flat core; restart it with this checkout's classes "
                    f"(make setup, then make down && make up): {answer.text[:300]}")
    requests.get(f"{root}/admin/cores", params={"action": "UNLOAD", "core": name, "deleteInstanceDir": "true"},
                 timeout=120)
    return root


@contextmanager
def _core(root: str, properties: dict[str, str]):
    name = f"vec_{uuid.uuid4().hex[:10]}"
    answer = requests.get(f"{root}/admin/cores", params={
        "action": "CREATE", "name": name, "configSet": "tinytags", "wt": "json",
        **{f"property.{key}": value for key, value in properties.items()}}, timeout=120)
    assert answer.status_code == 200, answer.text
    try:
        yield f"{root}/{name}"
    finally:
        requests.get(f"{root}/admin/cores", params={"action": "UNLOAD", "core": name, "deleteInstanceDir": "true"},
                     timeout=120)


def _unit(lines) -> np.ndarray:
    """The lines' vectors as numpy computes them from the pixels (float32, as Solr holds them), unit length."""
    vectors = embedding(np.frombuffer(b"".join(base64.b64decode(line["pixels"]) for line in lines), np.uint8))
    vectors = np.round(vectors.astype(np.float64), 6).astype(np.float32).astype(np.float64)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _select(core: str, **params) -> dict:
    answer = requests.post(f"{core}/select", data={"wt": "json", **params}, timeout=60)
    assert answer.status_code == 200, answer.text
    return answer.json()["response"]


def _numbers(vector) -> str:
    return "[" + ",".join(repr(float(v)) for v in vector) + "]"


def _index_files(root: str, core: str) -> list[str]:
    name = core.rsplit("/", 1)[1]
    status = requests.get(f"{root}/admin/cores", params={"action": "STATUS", "core": name, "wt": "json"}, timeout=60)
    return sorted(p.name for p in (Path(status.json()["status"][name]["dataDir"]) / "index").iterdir())


def _exact_scores_match_numpy(core: str, lines, unit) -> None:
    """{!func}vectorSimilarity within each tag equals numpy's cosine ((1 + cos) / 2, Lucene's cosine score)."""
    ids = np.array([line["id"] for line in lines])
    tags = np.array([line["tag"] for line in lines])
    for probe in (0, 33, 101):
        tag = lines[probe]["tag"]
        found = _select(core, q=f"{{!func}}vectorSimilarity(vector,{_numbers(unit[probe])})", fq=f"tag:{tag}",
                        rows="1000", fl="id,score")
        within = np.flatnonzero(tags == tag)
        scores = dict(zip(ids[within].tolist(), ((1 + unit[within] @ unit[probe]) / 2).tolist()))
        got = {int(doc["id"]): doc["score"] for doc in found["docs"]}
        assert got.keys() == scores.keys()
        np.testing.assert_allclose([got[i] for i in scores], list(scores.values()), atol=1e-6)


@pytest.mark.integration
def test_a_flat_core_answers_exact_scores_as_numpy_and_no_knn(solr_root):
    lines = make_lines()
    unit = _unit(lines)
    with _core(solr_root, {"tinytags.vector.format": "flat"}) as core:
        load_documents(core, lines)
        files = _index_files(solr_root, core)
        assert any("TinyTagsFlat99" in name and name.endswith(".vec") for name in files), files
        assert not any(name.endswith(".vex") for name in files), files  # no HNSW graph was built
        _exact_scores_match_numpy(core, lines, unit)
        knn = f"{{!knn f=vector topK=10}}{_numbers(unit[5])}"
        assert _select(core, q=knn)["numFound"] == 0  # a flat field has no graph to search
        # Unless a filter leaves at most topK documents: Lucene then scores those exactly.
        assert _select(core, q=knn, fq=f"id:{lines[5]['id']}")["numFound"] == 1
        # The segments name their format: a reloaded core (segments opened again) reads them.
        name = core.rsplit("/", 1)[1]
        requests.get(f"{solr_root}/admin/cores", params={"action": "RELOAD", "core": name}, timeout=120).raise_for_status()
        _exact_scores_match_numpy(core, lines, unit)


@pytest.mark.integration
@pytest.mark.parametrize("properties", [{}, {"tinytags.vector.format": "hnsw"}, {"tinytags.vector.format": "hnsw-int8"}],
                         ids=["schema-default", "hnsw", "hnsw-int8"])
def test_hnsw_cores_are_served_by_knn_and_exact_scores(solr_root, properties):
    lines = make_lines()
    unit = _unit(lines)
    with _core(solr_root, properties) as core:
        load_documents(core, lines)
        assert any(name.endswith(".vex") for name in _index_files(solr_root, core))  # an HNSW graph
        _exact_scores_match_numpy(core, lines, unit)
        ids = np.array([line["id"] for line in lines])
        for probe in (3, 77):
            truth = ids[np.argsort(-(unit @ unit[probe]), kind="stable")[:10]].tolist()
            found = _select(core, q=f"{{!knn f=vector topK=10}}{_numbers(unit[probe])}", fl="id", rows="10")
            got = [int(doc["id"]) for doc in found["docs"]]
            # 240 vectors: the graph finds the true neighbours (int8 may reorder near ties).
            assert len(set(got) & set(truth)) >= 9, (got, truth)


@pytest.mark.integration
def test_an_unknown_vector_format_is_refused_with_the_choices(solr_root):
    answer = requests.get(f"{solr_root}/admin/cores", params={
        "action": "CREATE", "name": f"vec_{uuid.uuid4().hex[:10]}", "configSet": "tinytags", "wt": "json",
        "property.tinytags.vector.format": "ivf"}, timeout=120)
    assert answer.status_code >= 400 and "should be hnsw, hnsw-int8 or flat" in answer.text


@pytest.mark.integration
def test_the_indexer_stores_the_compact_vector_where_the_schema_asks_and_both_read_back(solr_root, spark, tmp_path):
    out = tmp_path / "tags"
    lines = write_tag_output(out, {0: 80, 1: 60})
    every = [line for block in lines.values() for line in block]
    want = {line["id"]: row for line, row in zip(every, _unit(every))}
    read_back = {}
    for layout, properties in (("stored", {}), ("compact", {"tinytags.vector.format": "flat", **COMPACT})):
        with _core(solr_root, properties) as core:
            summary = index_pipeline.run(spark, index.parse_args(["--input", str(out), "--solr", core]))
            assert summary.exit_code == 0 and summary.docs == 140, summary.text()
            docs = _select(core, q="*:*", rows="1000", fl="id,tag,vector,vector_f32")["docs"]
            assert len(docs) == 140 and {doc["tag"] for doc in docs} <= set(CLASSES)
            # Exactly one stored form per layout: the compact one saves the 48 stored values.
            assert all(("vector" in doc) == (layout == "stored") and ("vector_f32" in doc) == (layout == "compact")
                       for doc in docs)
            read_back[layout] = {int(doc["id"]): np.asarray(stored_vector(doc)) for doc in docs}
    assert read_back["stored"].keys() == read_back["compact"].keys() == want.keys()
    for image_id, unit in want.items():
        for layout in read_back:
            vector = read_back[layout][image_id]
            np.testing.assert_allclose(vector / np.linalg.norm(vector), unit, atol=1e-6)
        np.testing.assert_array_equal(read_back["stored"][image_id], read_back["compact"][image_id])


@pytest.mark.integration
def test_the_web_app_serves_similar_images_of_a_flat_compact_core_exactly(solr_root):
    lines = make_lines(300, seed=31)
    unit = _unit(lines)
    with _core(solr_root, {"tinytags.vector.format": "flat", **COMPACT}) as core:
        # As the indexer sends them to a collection that stores the vector compactly.
        response = requests.post(f"{core}/update", params={"commit": "true"}, timeout=120,
                                 json=to_solr_docs(lines, compact_vector=True))
        assert response.status_code == 200, response.text
        app = Loaded(core, lines)
        for params, pool in (({}, lines), ({"tags": "cat,dog"}, expected(lines, ("cat", "dog")))):
            probe = 7
            others = [i for i, line in enumerate(lines) if line in pool and i != probe]
            cosine = unit[others] @ unit[probe]
            order = np.argsort(-cosine, kind="stable")[:6]
            response, body = app.get(f"/api/similar/{lines[probe]['id']}", rows="6", **params)
            assert response.status_code == 200, body
            # No graph: k-NN finds nothing, so the app scores the matches exactly, whatever their number.
            assert body["method"] == "exact"
            assert [r["id"] for r in body["results"]] == [str(lines[others[j]]["id"]) for j in order]
            np.testing.assert_allclose([r["similarity"] for r in body["results"]], cosine[order], atol=1e-4)
