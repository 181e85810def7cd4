"""JSON API under /api/: search, image PNGs, photo previews, raw documents, similar images, classify, stats, health.

Routes only: each parses its request, calls webapp/services.py and shapes the HTTP answer.
"""

from __future__ import annotations

from flask import Blueprint, Response, abort, current_app, jsonify, request

from tinytags.core.forest import ModelError
from webapp import services
from webapp.model import UploadError
from webapp.queries import API_ROWS, BadSearch, parse_rows, parse_search

bp = Blueprint("api", __name__, url_prefix="/api")


@bp.get("/search")
def search():
    """GET /api/search?tags=cat,dog&min_agreement=0.4&max_agreement=1&sort=...&rows=50&cursor=* (with tag_precision)."""
    return jsonify(services.run_search(request.args, API_ROWS)[1])


def _cacheable(data: bytes, etag: str, mimetype: str, public: bool, max_age: int) -> Response:
    """An image answer with an ETag (304 when the browser has it) and a cache lifetime."""
    response = Response(data, mimetype=mimetype)
    response.set_etag(etag)
    if public:
        response.cache_control.public = True
    else:
        response.cache_control.private = True
    response.cache_control.max_age = max_age
    return response.make_conditional(request)


@bp.get("/images/<int:image_id>.png")
def image_png(image_id: int):
    """The image as a 32x32 PNG rendered from its stored pixels; cacheable, with an ETag."""
    item = services.image_png_bytes(image_id)
    if item is None:
        return jsonify(error=f"no image with id {image_id}"), 404
    return _cacheable(*item, "image/png", public=True, max_age=current_app.config["IMAGE_MAX_AGE"])


@bp.get("/images/<int:image_id>/preview.jpg")
def image_preview(image_id: int):
    """A larger preview of a packed photo, made from its original under SOURCE_ROOT; 404 when there is none."""
    doc = services.stored_document(image_id, "id,source")
    item = services.source_preview(doc) if doc is not None else None
    if item is None:
        return jsonify(error=f"no preview of image {image_id} (not a packed photo, or its original is not readable here)"), 404
    return _cacheable(*item, "image/jpeg", public=False, max_age=3600)


@bp.get("/documents/<int:image_id>")
def document(image_id: int):
    """The raw stored Solr document of an image (every stored field, pixels and vector included)."""
    doc = services.stored_document(image_id)
    if doc is None:
        return jsonify(error=f"no image with id {image_id}"), 404
    return jsonify(doc)


@bp.get("/similar/<int:image_id>")
def similar(image_id: int):
    """GET /api/similar/<id>?rows=N[&tags=..&min_agreement=..&max_agreement=..&model=..&source_prefix=..]:
    the same result shape as search, nearest first, only images matching the filters (k-NN pre-filters)."""
    within = parse_search(request.args, default_rows=services.SIMILAR_ROWS, max_rows=services.MAX_SIMILAR_ROWS)
    answer = services.similar_images(image_id, within.rows, within)
    if answer is None:
        return jsonify(error=f"no image with id {image_id}"), 404
    return jsonify(answer)


@bp.post("/classify")
def classify():
    """POST /api/classify (multipart, file field "image") -> votes, tag, agreement, junk, expected precision, similar images."""
    rows = parse_rows(request.args, services.SIMILAR_ROWS, services.MAX_SIMILAR_ROWS)
    upload = request.files.get("image")
    if upload is None:
        raise BadSearch("image: send the picture as a multipart file field named 'image'")
    try:
        return jsonify(services.classify_upload(upload.read(), rows))
    except UploadError as error:
        raise BadSearch(str(error)) from None
    except ModelError as error:
        return jsonify(error=f"classification is not available: {error}"), 503


@bp.get("/stats")
def stats():
    """GET /api/stats."""
    return jsonify(services.stats_answer())


@bp.get("/model/<path:name>")
def model_plot(name: str):
    """A PNG plot from the model directory (only names that its listing shows)."""
    data = services.model_plot_bytes(name)
    if data is None:
        abort(404)
    response = Response(data, mimetype="image/png")
    response.cache_control.max_age = 60
    return response


@bp.get("/health")
def health():
    """GET /api/health: 200 with the document count when Solr answers, else 503 (for healthchecks)."""
    return jsonify(services.solr_health())
