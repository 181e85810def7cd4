"""JSON API under /api/: search, image PNGs, raw documents, similar images, classify, stats."""

from __future__ import annotations

import base64
import hashlib
import threading
import time
from collections import OrderedDict
from typing import Any

from flask import Blueprint, Response, abort, current_app, jsonify, request

from jobs.forest import ModelError
from jobs.images import RECORD_BYTES, cifar_to_hwc, embedding
from webapp.model import Model, UploadError, png_bytes, precision_at, upload_to_pixels
from webapp.search import (
    API_ROWS, RESULT_FIELDS, BadSearch, Search, facet_params, knn_query, parse_rows, parse_search, result,
    results_params, search_response, stats_params, stats_response,
)
from webapp.solr import SolrRejected, get_solr

bp = Blueprint("api", __name__, url_prefix="/api")

SIMILAR_ROWS = 12
MAX_SIMILAR_ROWS = 100


def _url_makers():
    """(image PNG URL, image page URL) makers; the request's root is looked up once per answer."""
    root = request.script_root
    return (lambda doc_id: f"{root}/api/images/{doc_id}.png"), (lambda doc_id: f"{root}/images/{doc_id}")


def image_url(doc_id: str) -> str:
    """Where an image's PNG is served."""
    return _url_makers()[0](doc_id)


def model() -> Model:
    """The configured model directory (card, plots, forest)."""
    return current_app.extensions["tinytags_model"]


def run_search(args, default_rows: int) -> tuple[Search, dict[str, Any]]:
    """Validate, query Solr, shape: what /api/search and the search page share."""
    search = parse_search(args, default_rows=default_rows, max_rows=current_app.config["MAX_ROWS"])
    results, facets = _first_page_answers(search)
    answer = search_response(search, results, facets, *_url_makers())
    answer["model_card"] = precision_at(model().card()[0], search.min_agreement)
    return search, answer


def _solr_answers(search: Search) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """Solr's answers for a search: a page of results (none for a first page of 0 rows), the tag counts."""
    solr = get_solr()
    # A cursor is checked by Solr before anything else is asked: a bad one must be a 400, whatever the rows.
    results = _select_results(solr, search) if search.rows or search.cursor != "*" else None
    return results, solr.select(facet_params(search))


def _first_page_answers(search: Search) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """First pages come from a short-lived cache: everyone's landing page is the same query.

    Solr's own result cache would do this, but Solr bypasses it for cursorMark queries, and a
    first page sorted over a million matches costs Solr tens of milliseconds. Pages after the
    first (their cursors are per reader) always go to Solr. The index changes in batches, so a
    first page at most SEARCH_CACHE_SECONDS old is fine; 0 turns the cache off.
    """
    ttl = current_app.config["SEARCH_CACHE_SECONDS"]
    if search.cursor != "*" or ttl <= 0:
        return _solr_answers(search)
    cache = _cache("tinytags_search_cache", 1024, ttl)
    answers = cache.get(search)
    if answers is None:
        answers = _solr_answers(search)
        cache.put(search, answers)
    return answers


def _select_results(solr, search: Search) -> dict[str, Any]:
    try:
        return solr.select(results_params(search))
    except SolrRejected as error:
        # A cursor can be well-formed and still not be Solr's (or belong to another sort).
        if search.cursor != "*" and "cursor" in error.message.lower():
            raise BadSearch("cursor is not a next_cursor of this search (it may belong to another sort order)") from None
        raise


@bp.get("/search")
def search():
    """GET /api/search?tags=cat,dog&min_agreement=0.4&max_agreement=1&sort=...&rows=50&cursor=*"""
    return jsonify(run_search(request.args, API_ROWS)[1])


class _Lru:
    """A small thread-safe LRU map, with an optional time to live per entry."""

    def __init__(self, size: int, ttl: float | None = None):
        self._size, self._ttl = size, ttl
        self._items: OrderedDict[Any, tuple[float, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Any) -> Any:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return None
            if self._ttl is not None and time.monotonic() > item[0]:
                del self._items[key]
                return None
            self._items.move_to_end(key)
            return item[1]

    def put(self, key: Any, value: Any) -> None:
        expires = time.monotonic() + self._ttl if self._ttl is not None else 0.0
        with self._lock:
            self._items[key] = (expires, value)
            self._items.move_to_end(key)
            if len(self._items) > self._size:
                self._items.popitem(last=False)


def _cache(name: str, size: int, ttl: float | None = None) -> _Lru:
    extensions = current_app.extensions
    cache = extensions.get(name)
    if cache is None:
        cache = extensions.setdefault(name, _Lru(size, ttl))
    return cache


def _png_cache() -> _Lru:
    # An id always names the same Tiny Images record, so its PNG never goes stale.
    return _cache("tinytags_png_cache", 4096)


def _decode_pixels(doc: dict[str, Any], image_id: int) -> bytes:
    try:
        pixels = base64.b64decode(doc.get("pixels") or "", validate=True)
    except ValueError:
        pixels = b""
    if len(pixels) != RECORD_BYTES:
        raise ValueError(f"document {image_id}: field 'pixels' should hold {RECORD_BYTES} bytes, has {len(pixels)}")
    return pixels


@bp.get("/images/<int:image_id>.png")
def image_png(image_id: int):
    """The image as a 32x32 PNG rendered from its stored pixels; cacheable, with an ETag."""
    cache = _png_cache()
    item = cache.get(image_id)
    if item is None:
        doc = get_solr().document(image_id, "id,pixels")
        if doc is None:
            return jsonify(error=f"no image with id {image_id}"), 404
        pixels = _decode_pixels(doc, image_id)
        item = (png_bytes(cifar_to_hwc(pixels)[0]), hashlib.sha1(pixels).hexdigest()[:20])
        cache.put(image_id, item)
    data, etag = item
    response = Response(data, mimetype="image/png")
    response.set_etag(etag)
    response.cache_control.public = True
    response.cache_control.max_age = current_app.config["IMAGE_MAX_AGE"]
    return response.make_conditional(request)


@bp.get("/documents/<int:image_id>")
def document(image_id: int):
    """The raw stored Solr document of an image (every stored field, pixels and vector included)."""
    doc = get_solr().document(image_id, "*")
    if doc is None:
        return jsonify(error=f"no image with id {image_id}"), 404
    return jsonify(doc)


def similar_to_vector(vector: list[float], rows: int, exclude: str | None = None) -> list[dict[str, Any]]:
    """Images nearest a similarity vector (Solr HNSW k-NN), nearest first, with their cosine similarity."""
    if rows == 0:
        return []
    wanted = rows + (1 if exclude is not None else 0)
    # HNSW is approximate and searches as wide as topK: asking for more candidates than we show
    # keeps recall exact in practice (a small shard's graph missed a true 4th neighbour at topK=9).
    candidates = min(max(4 * wanted, 50), 1000)
    body = get_solr().select([("q", knn_query(vector, candidates)), ("fl", RESULT_FIELDS + ",score"),
                              ("rows", str(wanted)), ("wt", "json")])
    found = []
    urls = _url_makers()
    for doc in body["response"]["docs"]:
        if doc["id"] == exclude:
            continue
        item = result(doc, *urls)
        # Solr scores cosine as (1 + cos) / 2.
        item["similarity"] = round(2.0 * float(doc["score"]) - 1.0, 6)
        found.append(item)
    return found[:rows]


def _similar_answer(results: list[dict[str, Any]]) -> dict[str, Any]:
    tags: dict[str, int] = {}
    for item in results:
        tags[item["tag"]] = tags.get(item["tag"], 0) + 1
    return {"numFound": len(results), "results": results, "next_cursor": None, "facets": {"tag": tags}}


def similar_images(image_id: int, rows: int) -> dict[str, Any] | None:
    """The images most like a stored one (itself left out), or None when the id is unknown."""
    doc = get_solr().document(image_id, "id,vector")
    if doc is None:
        return None
    if not doc.get("vector"):
        raise BadSearch(f"image {image_id} has no similarity vector (indexed without one)")
    return _similar_answer(similar_to_vector(doc["vector"], rows, exclude=doc["id"]))


@bp.get("/similar/<int:image_id>")
def similar(image_id: int):
    """GET /api/similar/<id>?rows=N: the same result shape as search, nearest first."""
    rows = parse_rows(request.args, SIMILAR_ROWS, MAX_SIMILAR_ROWS)
    answer = similar_images(image_id, rows)
    if answer is None:
        return jsonify(error=f"no image with id {image_id}"), 404
    return jsonify(answer)


def classify_upload(data: bytes, rows: int) -> dict[str, Any]:
    """Uploaded image bytes -> the forest's votes, tag, agreement, the card's precision, similar images."""
    hwc, pixels = upload_to_pixels(data)
    answer = model().classify(pixels)
    answer["model_card"] = precision_at(model().card()[0], answer["agreement"])
    answer["image"] = "data:image/png;base64," + base64.b64encode(png_bytes(hwc)).decode()
    answer["similar"] = _similar_answer(similar_to_vector(embedding(pixels)[0].tolist(), rows))
    return answer


@bp.post("/classify")
def classify():
    """POST /api/classify (multipart, file field "image") -> votes, tag, agreement, similar images."""
    rows = parse_rows(request.args, SIMILAR_ROWS, MAX_SIMILAR_ROWS)
    upload = request.files.get("image")
    if upload is None:
        raise BadSearch("image: send the picture as a multipart file field named 'image'")
    try:
        return jsonify(classify_upload(upload.read(), rows))
    except UploadError as error:
        raise BadSearch(str(error)) from None
    except ModelError as error:
        return jsonify(error=f"classification is not available: {error}"), 503


def stats_answer() -> dict[str, Any]:
    """Images per tag and model, the agreement histogram, and the model card as it is."""
    answer = stats_response(get_solr().select(stats_params()))
    card, problem = model().card()
    answer["model_card"] = card
    answer["model_card_problem"] = problem
    answer["plots"] = model().plots()
    return answer


@bp.get("/stats")
def stats():
    """GET /api/stats."""
    return jsonify(stats_answer())


@bp.get("/model/<path:name>")
def model_plot(name: str):
    """A PNG plot from the model directory (only names that its listing shows)."""
    if name not in model().plots():
        abort(404)
    response = Response((model().dir / name).read_bytes(), mimetype="image/png")
    response.cache_control.max_age = 60
    return response


@bp.get("/health")
def health():
    """GET /api/health: 200 with the document count when Solr answers, else 503 (for healthchecks)."""
    body = get_solr().select([("q", "*:*"), ("rows", "0"), ("wt", "json")])
    return jsonify(status="ok", documents=body["response"]["numFound"])
