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

from tinytags.core.images import RECORD_BYTES, cifar_to_hwc
from tinytags.core.photos import PhotoError, preview_jpeg
from tinytags.core.solr_docs import stored_vector
from tinytags.io.solr import SolrClient, SolrRejected, is_partial
from tinytags.io.storage import FILE_ERRORS, Storage, kind, local_path, within
from webapp.cache import Lru, app_cache
from webapp.model import Model, png_bytes, precision_at, tag_precision, upload_to_pixels
from webapp.queries import (
    RESULT_FIELDS,
    TOLERANT,
    WALKED_SORTS,
    BadSearch,
    Search,
    WalkFacts,
    facet_params,
    index_facts,
    index_facts_params,
    parse_search,
    result,
    results_params,
    search_response,
    stats_params,
    stats_response,
    walk,
    walk_facts,
    walk_facts_params,
)
from webapp.similarity import cosine_of, similar_params, use_exact

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
                auth = (config["SOLR_USER"], config["SOLR_PASSWORD"] or "") if config["SOLR_USER"] else None
                client = SolrClient(config["SOLR_URL"], timeout=config["SOLR_TIMEOUT"],
                                    pool_size=config["SOLR_POOL"], auth=auth)
                client.discover()  # SolrCloud: the other nodes to fail over to
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
    """Validate, query Solr, shape: what /api/search and the search page share.

    A first page's whole answer is kept per index version (and model card) for
    SEARCH_CACHE_SECONDS: Solr bypasses its own result cache for cursorMark queries, and the
    shaping costs as much CPU as the Solr call. Pages after the first always go to Solr; their
    tag counts come from the per-version cache of ``tag_counts_for``. Callers must not change
    the answer (it is shared). agreement_asc and id_desc pages are walked (queries.walk) with the
    level counts of ``walk_facts_for``.
    """
    search = parse_search(args, default_rows=default_rows, max_rows=current_app.config["MAX_ROWS"])
    failovers = get_solr().failovers
    version = index_version()
    card = model().card()[0]
    ttl = current_app.config["SEARCH_CACHE_SECONDS"]
    cache = app_cache("tinytags_search_cache", SEARCH_CACHE, ttl) if search.cursor == "*" and ttl > 0 else None
    key = (version, search, request.script_root)
    if cache is not None:
        kept = cache.get(key)
        if kept is not None and kept[0] is card:  # a re-read card is a new object
            return search, kept[1]
    results = None if search.rows == 0 and search.cursor == "*" else _select_results(get_solr(), search, version)
    answer = search_response(search, results, tag_counts_for(search, version), *_url_makers())
    answer["model_card"] = precision_at(card, search.min_agreement)
    # How often each shown tag was right on held-out images at this threshold (chosen tags, or all).
    answer["tag_precision"] = tag_precision(card, search.min_agreement, search.tags)
    # Any of this search's Solr calls (or another thread's, meanwhile) had to leave a dead node.
    answer["partial"] = answer["partial"] or get_solr().failovers != failovers
    if cache is not None and not answer["partial"]:  # a partial answer is not kept: the next may be whole
        cache.put(key, (card, answer))
    return search, answer


SEARCH_CACHE = 1024  # first-page answers a process keeps
FACET_CACHE = 4096  # filter sets whose tag counts a process keeps (10 tags x agreement ranges x a few models)


def index_version() -> str:
    """The version of the index Solr searches (its Lucene version), asked at most every INDEX_VERSION_SECONDS.

    Tag counts and first pages are kept per version: a commit that changes the index changes the
    version, and the first search after the next check counts again. On SolrCloud it is the
    version of the replica that answers; the indexer's commits reach every shard, and cached
    counts also expire after FACET_CACHE_SECONDS whatever the version says.
    """
    seconds = current_app.config["INDEX_VERSION_SECONDS"]
    if seconds <= 0:
        return get_solr().index_version()
    cache = app_cache("tinytags_index_version", 1, seconds)
    version = cache.get("version")
    if version is None:
        version = get_solr().index_version()
        cache.put("version", version)
    return version


def tag_counts_for(search: Search, version: str) -> dict[str, Any] | None:
    """Solr's tag-count answer for the search's filters at this index version, or None for a cursor page
    whose counts nobody asked for yet at this version (pages after the first are never counted)."""
    seconds = current_app.config["FACET_CACHE_SECONDS"]
    if seconds <= 0:
        return get_solr().select(facet_params(search)) if search.cursor == "*" else None
    cache = app_cache("tinytags_facet_cache", FACET_CACHE, seconds)
    key = (version, search.filter_key())
    answer = cache.get(key)
    if answer is None and search.cursor == "*":
        answer = get_solr().select(facet_params(search))
        if not is_partial(answer):
            cache.put(key, answer)
    return answer


def walk_facts_for(search: Search, version: str) -> WalkFacts:
    """Matches per agreement level of the search's filter set, and the index's image id range, kept
    per index version like the tag counts (the walked orders need them on every page, not only the first).

    A commit seen within INDEX_VERSION_SECONDS may not be in them yet: as with a kept first page, a
    document committed that recently may be missed by a walk (at a level no other match had yet)."""
    seconds = current_app.config["FACET_CACHE_SECONDS"]
    cache = app_cache("tinytags_walk_cache", FACET_CACHE, seconds) if seconds > 0 else None
    key = (version, search.filter_key())
    facts = cache.get(key) if cache is not None else None
    if facts is None:
        # The index's levels and id range first (once per version): a filter set's counts are one
        # facet query per level.
        whole = cache.get((version, None)) if cache is not None else None
        if whole is None:
            whole = index_facts(get_solr().select(index_facts_params()))
            if cache is not None and not whole.partial:
                cache.put((version, None), whole)
        facts = walk_facts(get_solr().select(walk_facts_params(search, whole)), whole) if search.filters() else whole
        if cache is not None and not facts.partial:
            cache.put(key, facts)
    return facts


def _select_results(solr, search: Search, version: str) -> dict[str, Any]:
    try:
        if search.sort in WALKED_SORTS:
            # Orders the index is not sorted for, walked through pages that stop early (webapp/queries.py).
            return walk(search, walk_facts_for(search, version), solr.select)
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


def similar_to_vector(vector: list[float], rows: int, exclude: str | None = None,
                      within: Search | None = None) -> tuple[list[dict[str, Any]], str]:
    """Images nearest a similarity vector, nearest first, with their cosine similarity, and how they
    were found ("exact" or "hnsw": webapp/similarity.py).

    ``within``'s filters (tags, agreement, model, folder) are Solr fq clauses: exact scoring
    visits only their matches, HNSW takes them as pre-filters, so a filtered answer still has
    `rows` neighbours when that many match. The number of matches, from the search's cached tag
    counts, decides the way."""
    if rows == 0:
        return [], "exact"
    wanted = rows + (1 if exclude is not None else 0)
    filters = within.filters() if within is not None else []
    matches = None
    if filters:
        counts = tag_counts_for(within.filter_key(), index_version())
        matches = int(counts["response"]["numFound"]) if counts is not None else None
    exact = use_exact(matches, current_app.config["SIMILAR_EXACT_MAX"])
    docs = _similar_docs(vector, wanted, filters, exact)
    if not exact and len(docs) < wanted and (matches is None or len(docs) < matches):
        # Fewer than asked although more match: vectors without a graph (a flat vector format)
        # answer k-NN with nothing. Exact scoring serves them.
        exact = True
        docs = _similar_docs(vector, wanted, filters, exact)
    found = []
    urls = _url_makers()
    for doc in docs:
        if doc["id"] == exclude:
            continue
        item = result(doc, *urls)
        item["similarity"] = cosine_of(doc["score"])
        found.append(item)
    return found[:rows], "exact" if exact else "hnsw"


def _similar_docs(vector: list[float], wanted: int, filters: list[str], exact: bool) -> list[dict[str, Any]]:
    params = similar_params(vector, wanted, filters, exact, RESULT_FIELDS)
    return get_solr().select([*params, TOLERANT])["response"]["docs"]


def _similar_answer(found: tuple[list[dict[str, Any]], str]) -> dict[str, Any]:
    results, method = found
    tags: dict[str, int] = {}
    for item in results:
        tags[item["tag"]] = tags.get(item["tag"], 0) + 1
    return {"numFound": len(results), "exact": True, "results": results, "next_cursor": None, "facets": {"tag": tags},
            "method": method}


def similar_images(image_id: int, rows: int, within: Search | None = None) -> dict[str, Any] | None:
    """The images most like a stored one (itself left out, only those matching ``within``'s filters),
    or None when the id is unknown."""
    doc = get_solr().document(image_id, "id,vector,vector_f32")
    if doc is None:
        return None
    vector = stored_vector(doc)  # stored as 48 values, or compactly (tinytags.vector.compact)
    if vector is None:
        raise BadSearch(f"image {image_id} has no similarity vector (indexed without one)")
    return _similar_answer(similar_to_vector(vector, rows, exclude=doc["id"], within=within))


class ClassifyBusy(RuntimeError):
    """Every classification slot stayed taken for CLASSIFY_WAIT seconds (the app answers 503 + Retry-After)."""


def classify_upload(data: bytes, rows: int) -> dict[str, Any]:
    """Uploaded image bytes -> the model's votes, tag (none for junk), agreement, expected precision,
    the card's precision at that agreement, similar images.

    At most CLASSIFY_SLOTS run at once per process (decoding and the features are CPU work a few
    clients could otherwise pile up without end); one more waits CLASSIFY_WAIT seconds, then
    ClassifyBusy.
    """
    slots = current_app.extensions["tinytags_classify_slots"]
    if not slots.acquire(timeout=current_app.config["CLASSIFY_WAIT"]):
        raise ClassifyBusy(f"The classifier is busy ({current_app.config['CLASSIFY_SLOTS']} uploads at once); "
                           "try again in a few seconds.")
    try:
        return _classify(data, rows)
    finally:
        slots.release()


def _classify(data: bytes, rows: int) -> dict[str, Any]:
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


def image_details(image_id: int, within: Search | None = None) -> dict[str, Any] | None:
    """What an image's page shows: its document (without pixels), a preview of its original, images
    like it (those matching ``within``'s filters)."""
    doc = stored_document(image_id, RESULT_FIELDS + ",shard,offset,indexed_at")
    if doc is None:
        return None
    try:
        similar = similar_images(image_id, within.rows if within is not None else SIMILAR_ROWS, within)
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
