"""What the web app does, for both views: search, images, previews, similar images, classify, stats, health.

The pages (webapp/pages.py) and the JSON API (webapp/api.py) are thin blueprints over these
functions; neither imports the other. Everything here runs inside a request (it reads the app's
config, its Solr client and its model through Flask's ``current_app``).
"""

from __future__ import annotations

import base64
import hashlib
import os
import threading
from typing import Any

from flask import current_app, request

from jobs.core.images import RECORD_BYTES, cifar_to_hwc
from jobs.core.photos import PhotoError, preview_jpeg
from jobs.infra.solr import SolrClient, SolrRejected
from jobs.infra.storage import FILE_ERRORS, Storage, kind, local_path, within
from webapp.cache import Lru, app_cache
from webapp.model import Model, png_bytes, precision_at, tag_precision, upload_to_pixels
from webapp.queries import (
    RESULT_FIELDS,
    BadSearch,
    Search,
    facet_params,
    knn_query,
    parse_search,
    result,
    results_params,
    search_response,
    stats_params,
    stats_response,
)

SIMILAR_ROWS = 12
MAX_SIMILAR_ROWS = 100
_lock = threading.Lock()


def get_solr() -> SolrClient:
    """The app's Solr client, made on first use in each process (gunicorn workers fork first)."""
    extensions = current_app.extensions
    client = extensions.get("tinytags_solr")
    if client is None:
        with _lock:
            client = extensions.get("tinytags_solr")
            if client is None:
                config = current_app.config
                # No retries: a page waits at most the timeout, then says Solr is unavailable.
                client = SolrClient(config["SOLR_URL"], timeout=config["SOLR_TIMEOUT"],
                                    pool_size=config["SOLR_POOL"])
                extensions["tinytags_solr"] = client
    return client


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
    card = model().card()[0]
    answer["model_card"] = precision_at(card, search.min_agreement)
    # How often each shown tag was right on held-out images at this threshold (chosen tags, or all).
    answer["tag_precision"] = tag_precision(card, search.min_agreement, search.tags)
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
    cache = app_cache("tinytags_search_cache", 1024, ttl)
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


def _png_cache() -> Lru:
    # An id always names the same Tiny Images record, so its PNG never goes stale.
    return app_cache("tinytags_png_cache", 4096)


def _decode_pixels(doc: dict[str, Any], image_id: int) -> bytes:
    try:
        pixels = base64.b64decode(doc.get("pixels") or "", validate=True)
    except ValueError:
        pixels = b""
    if len(pixels) != RECORD_BYTES:
        raise ValueError(f"document {image_id}: field 'pixels' should hold {RECORD_BYTES} bytes, has {len(pixels)}")
    return pixels


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


def classify_upload(data: bytes, rows: int) -> dict[str, Any]:
    """Uploaded image bytes -> the model's votes, tag (none for junk), agreement, expected precision,
    the card's precision at that agreement, similar images."""
    hwc, pixels = upload_to_pixels(data)
    answer, vector = model().classify(pixels)
    answer["model_card"] = None if answer["junk"] else precision_at(model().card()[0], answer["agreement"])
    answer["image"] = "data:image/png;base64," + base64.b64encode(png_bytes(hwc)).decode()
    # The model's own similarity vector: the one the tag job indexed for this model's images.
    answer["similar"] = _similar_answer(similar_to_vector(vector.tolist(), rows))
    return answer


def stats_answer() -> dict[str, Any]:
    """Images per tag and model, the agreement histogram, and the model card as it is."""
    answer = stats_response(get_solr().select(stats_params()))
    card, problem = model().card()
    answer["model_card"] = card
    answer["model_card_problem"] = problem
    answer["plots"] = model().plots()
    return answer


def image_png_bytes(image_id: int) -> tuple[bytes, str] | None:
    """(PNG bytes, ETag) of a stored image rendered at 32x32, or None when the id is unknown."""
    cache = _png_cache()
    item = cache.get(image_id)
    if item is None:
        doc = get_solr().document(image_id, "id,pixels")
        if doc is None:
            return None
        pixels = _decode_pixels(doc, image_id)
        item = (png_bytes(cifar_to_hwc(pixels)[0]), hashlib.sha1(pixels).hexdigest()[:20])
        cache.put(image_id, item)
    return item


def stored_document(image_id: int, fields: str = "*") -> dict[str, Any] | None:
    """The stored Solr document of an image (these fields), or None."""
    return get_solr().document(image_id, fields)


def image_details(image_id: int) -> dict[str, Any] | None:
    """What an image's page shows: its document (without pixels), a preview of its original, images like it."""
    doc = stored_document(image_id, RESULT_FIELDS + ",shard,offset,indexed_at")
    if doc is None:
        return None
    try:
        similar = similar_images(image_id, SIMILAR_ROWS)
    except BadSearch:
        similar = None
    preview = f"{request.script_root}/api/images/{doc['id']}/preview.jpg" if source_preview(doc) else None
    return {"doc": doc, "similar": similar, "image_url": image_url(doc["id"]), "preview_url": preview}


def source_preview(doc: dict[str, Any]) -> tuple[bytes, str] | None:
    """(JPEG, ETag) of a packed photo made from its original, or None (no source, outside the root, unreadable).

    Only a document's own ``source`` is ever read, never a path from the request, and only when
    it lies inside SOURCE_ROOT once symlinks and ``..`` are resolved; for a local path the
    resolved path is the one read, so a link swapped after the check cannot lead outside.
    Previews (and misses) are kept an hour: ids never change, but an original may be edited.
    """
    cache = app_cache("tinytags_preview_cache", PREVIEW_CACHE, ttl=3600)
    item = cache.get(doc["id"])
    if item is None:
        item = _make_preview(doc.get("source")) or False
        cache.put(doc["id"], item)
    return item or None


PREVIEW_CACHE = 256  # previews per process; each is a JPEG of at most PREVIEW_SIDE pixels a side (~30-80 KB)


def _make_preview(source: str | None) -> tuple[bytes, str] | None:
    config = current_app.config
    root = config["SOURCE_ROOT"]
    if not root or not isinstance(source, str) or not source:
        return None
    target = os.path.realpath(local_path(source)) if kind(source) == "local" else source
    if not within(root, target):
        return None
    files = Storage()
    try:
        status = files.status(target)
        if status is None or status[0] != "file" or status[1] > config["PREVIEW_MAX_BYTES"]:
            return None
        jpeg = preview_jpeg(files.read_bytes(target), config["PREVIEW_SIDE"])
    except (PhotoError, *FILE_ERRORS):
        return None
    return jpeg, hashlib.sha1(jpeg).hexdigest()[:20]


def model_plot_bytes(name: str) -> bytes | None:
    """A PNG plot from the model directory (only names that its listing shows)."""
    if name not in model().plots():
        return None
    return (model().dir / name).read_bytes()


def solr_health() -> dict[str, Any]:
    """Solr answers: the document count (SolrError when it does not)."""
    return {"status": "ok", "documents": get_solr().count()}
