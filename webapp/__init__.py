"""TinyTags web UI and JSON API (Flask app factory).

Run (the demo's command; settings come from the environment)::

    TINYTAGS_SOLR_URL=http://127.0.0.1:8983/solr/tinytags TINYTAGS_MODEL_DIR=/path/to/model \\
        .venv/bin/gunicorn 'webapp:create_app()' -b 127.0.0.1:5000 -k gthread --workers 2 --threads 8

Settings, lowest to highest priority: the defaults below, then TINYTAGS_* environment variables,
then ``test_config``.
- TINYTAGS_SOLR_URL: the Solr core or collection URL (default http://127.0.0.1:8983/solr/tinytags).
  Given Solr's root (ending in /solr), TINYTAGS_SOLR_COLLECTION (default tinytags) is appended.
- TINYTAGS_MODEL_DIR: the model directory (forest.npz, model_card.json, plots); optional.
- TINYTAGS_SOLR_USER with TINYTAGS_SOLR_PASSWORD_FILE (or TINYTAGS_SOLR_PASSWORD): Solr BasicAuth, as
  the read-only `search` user where Solr runs with security.json (docs/security.md).
- TINYTAGS_SOLR_TIMEOUT (seconds, 5: connect, and each read of Solr's answer; then 503),
  TINYTAGS_MAX_UPLOAD_BYTES (4 MiB), TINYTAGS_MAX_ROWS (200),
  TINYTAGS_SEARCH_CACHE_SECONDS (10; how long a search's first page is reused, 0 = never),
  TINYTAGS_FACET_CACHE_SECONDS (300; tag counts, per filter set and index version, 0 = never),
  TINYTAGS_INDEX_VERSION_SECONDS (1; how often the index version is asked, 0 = every search),
  TINYTAGS_SIMILAR_EXACT_MAX (100000; similar images among at most this many filter matches are
  scored exactly, more by HNSW k-NN: webapp/similarity.py),
  TINYTAGS_SOLR_POOL (2; Solr requests a process has open at once, the rest wait their turn).
- TINYTAGS_SOURCE_ROOT: a folder (local or hdfs://) holding packed photos' originals; an image
  whose source lies inside it gets a larger preview made from the original (optional).
  TINYTAGS_PREVIEW_SIDE (512 pixels), TINYTAGS_PREVIEW_MAX_BYTES (50 MiB: larger originals get none).
- TINYTAGS_CLASSIFY_SLOTS (2): uploads classified at once per process; TINYTAGS_CLASSIFY_WAIT (1 s):
  how long one more waits for a slot before it gets 503 with Retry-After (never an unbounded queue).

Every answer carries a Content-Security-Policy, X-Content-Type-Options: nosniff, Referrer-Policy and
frame denial (X-Frame-Options: DENY, frame-ancestors 'none'); errors are JSON under /api/ and a page
elsewhere, never a stack trace (DEBUG stays off whatever FLASK_DEBUG says).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import orjson
from flask import Flask, jsonify, render_template, request
from flask.json.provider import DefaultJSONProvider
from werkzeug.exceptions import HTTPException

from tinytags.io.solr import SolrAuthError, SolrError, SolrRejected
from tinytags.settings import (
    DEFAULT_SOLR_URL,
    env,
    env_number,
    solr_collection_url,
    solr_credentials,
)
from webapp.model import Model
from webapp.queries import MAX_ROWS, BadSearch
from webapp.similarity import SIMILAR_EXACT_MAX

log = logging.getLogger(__name__)

def _settings_from_env() -> dict[str, Any]:
    """The TINYTAGS_* settings that are set (read now, through the one settings module)."""
    settings: dict[str, Any] = {}
    if env("TINYTAGS_SOLR_URL") or env("TINYTAGS_SOLR_COLLECTION"):
        settings["SOLR_URL"] = solr_collection_url()
    if env("TINYTAGS_MODEL_DIR"):
        settings["MODEL_DIR"] = env("TINYTAGS_MODEL_DIR")
    if env("TINYTAGS_SOURCE_ROOT"):
        settings["SOURCE_ROOT"] = env("TINYTAGS_SOURCE_ROOT")
    credentials = solr_credentials()
    if credentials:
        settings["SOLR_USER"], settings["SOLR_PASSWORD"] = credentials
    for name, key, kind in (("TINYTAGS_SOLR_TIMEOUT", "SOLR_TIMEOUT", float),
                            ("TINYTAGS_MAX_UPLOAD_BYTES", "MAX_CONTENT_LENGTH", int),
                            ("TINYTAGS_MAX_ROWS", "MAX_ROWS", int),
                            ("TINYTAGS_SEARCH_CACHE_SECONDS", "SEARCH_CACHE_SECONDS", float),
                            ("TINYTAGS_FACET_CACHE_SECONDS", "FACET_CACHE_SECONDS", float),
                            ("TINYTAGS_INDEX_VERSION_SECONDS", "INDEX_VERSION_SECONDS", float),
                            ("TINYTAGS_SIMILAR_EXACT_MAX", "SIMILAR_EXACT_MAX", int),
                            ("TINYTAGS_SOLR_POOL", "SOLR_POOL", int),
                            ("TINYTAGS_PREVIEW_SIDE", "PREVIEW_SIDE", int),
                            ("TINYTAGS_PREVIEW_MAX_BYTES", "PREVIEW_MAX_BYTES", int),
                            ("TINYTAGS_CLASSIFY_SLOTS", "CLASSIFY_SLOTS", int),
                            ("TINYTAGS_CLASSIFY_WAIT", "CLASSIFY_WAIT", float)):
        if env(name):
            settings[key] = env_number(name, 0, kind)
    return settings


class OrjsonProvider(DefaultJSONProvider):
    """Flask's JSON with orjson: a page of 50 results encodes in a tenth of the time, keys in the
    order the answers build them; dates, dataclasses and the like still go through Flask's default."""

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        return orjson.dumps(obj, default=self.default, option=orjson.OPT_NON_STR_KEYS).decode()

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        return orjson.loads(s)


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    """Build the app: defaults, then TINYTAGS_* environment, then test_config."""
    app = Flask(__name__)
    app.config.from_mapping(
        # Flask would take DEBUG from FLASK_DEBUG; a debug app shows tracebacks, so never by accident.
        DEBUG=False,
        SOLR_URL=DEFAULT_SOLR_URL,
        # Solr BasicAuth (None: anonymous); the web app's user needs only Solr's read permissions.
        SOLR_USER=None,
        SOLR_PASSWORD=None,
        SOLR_TIMEOUT=5.0,
        # Solr requests one app process has open at once; more wait their turn in the app. A few per
        # process keep Solr's queue short: p95 falls although each request waits, and an index
        # run beside the searches gets more of Solr's CPU. Raise it with Solr's cores
        # (docs/operations.md, "Searching while indexing").
        SOLR_POOL=2,
        MODEL_DIR=None,
        MAX_ROWS=MAX_ROWS,
        # First pages and tag counts are kept per index version (webapp/services.py index_version),
        # which is asked again after INDEX_VERSION_SECONDS; first pages are kept at most
        # SEARCH_CACHE_SECONDS, tag counts at most FACET_CACHE_SECONDS (0: not kept).
        SEARCH_CACHE_SECONDS=10.0,
        FACET_CACHE_SECONDS=300.0,
        INDEX_VERSION_SECONDS=1.0,
        # Similar images among at most this many filter matches are scored exactly, above by HNSW
        # (webapp/similarity.py).
        SIMILAR_EXACT_MAX=SIMILAR_EXACT_MAX,
        # Uploads for /api/classify: a photo is plenty; anything larger is refused with 413.
        MAX_CONTENT_LENGTH=4 * 1024 * 1024,
        # Result images never change for an id (same Tiny Images record), so browsers may keep them.
        IMAGE_MAX_AGE=86400,
        # Previews of packed photos, made from the originals under SOURCE_ROOT (None: no previews).
        SOURCE_ROOT=None,
        PREVIEW_SIDE=512,
        PREVIEW_MAX_BYTES=50 * 1024 * 1024,
        # Classifying an upload is CPU work (decode, features, forest): at most this many at once per
        # process; one more waits CLASSIFY_WAIT seconds for a slot, then gets 503 with Retry-After.
        CLASSIFY_SLOTS=2,
        CLASSIFY_WAIT=1.0,
        CLASSIFY_RETRY_AFTER=5,
    )
    app.config.from_mapping(_settings_from_env())
    if test_config:
        app.config.from_mapping(test_config)
    app.json = OrjsonProvider(app)
    app.extensions["tinytags_model"] = Model(app.config["MODEL_DIR"])
    if app.config["CLASSIFY_SLOTS"] < 1:
        raise ValueError(f"CLASSIFY_SLOTS (TINYTAGS_CLASSIFY_SLOTS) should be >= 1, got {app.config['CLASSIFY_SLOTS']}")
    app.extensions["tinytags_classify_slots"] = threading.BoundedSemaphore(app.config["CLASSIFY_SLOTS"])

    from webapp import api, pages

    app.register_blueprint(api.bp)
    app.register_blueprint(pages.bp)
    _register_error_handlers(app)
    app.after_request(_security_headers)
    return app


# Pages load only our own script and style sheet; inline style attributes draw the bars (style
# elements stay forbidden where browsers know style-src-elem). A value that slipped past escaping
# could still not run script. Everything else (JSON, images, static files) may load nothing at all.
_CSP_PAGES = ("default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
              "style-src-elem 'self'; script-src 'self'; object-src 'none'; base-uri 'none'; "
              "form-action 'self'; frame-ancestors 'none'")
_CSP_OTHER = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # Search URLs hold the search; other sites need not see them.
    "Referrer-Policy": "same-origin",
}


def _security_headers(response):
    """The headers every answer carries, errors and static files included."""
    for name, value in _HEADERS.items():
        response.headers.setdefault(name, value)
    response.headers.setdefault("Content-Security-Policy",
                                _CSP_PAGES if response.mimetype == "text/html" else _CSP_OTHER)
    return response


def _wants_json() -> bool:
    return request.path.startswith("/api/")


def _error(status: int, message: str, title: str):
    if _wants_json():
        return jsonify(error=message), status
    return render_template("error.html", status=status, title=title, message=message), status


def _register_error_handlers(app: Flask) -> None:
    from webapp import services

    @app.errorhandler(BadSearch)
    def bad_search(error: BadSearch):
        return _error(400, str(error), "That search cannot be run")

    @app.errorhandler(SolrRejected)
    def solr_rejected(error: SolrRejected):
        # Parameters are validated first, so a refusal here is our bug, not the user's input.
        log.error("solr rejected a query: %s", error)
        return _error(500, "The search index refused the query; this is a bug, please report it.",
                      "Something went wrong")

    @app.errorhandler(SolrAuthError)
    def solr_refused(error: SolrAuthError):
        # Our own set-up is wrong (user, password or its roles): say whose login, not how to get in.
        log.error("solr refused the web app's user: %s", error)
        if error.status == 403:
            what = f"refused the web app's user {error.user!r} (not allowed)"
        elif error.user:
            what = f"did not accept the web app's login as {error.user!r}"
        else:
            what = "asks for a login the web app was not given (TINYTAGS_SOLR_USER)"
        return _error(503, f"The search index (Solr) {what}; the operator must fix the web app's Solr "
                           "credentials.", "Search is unavailable")

    @app.errorhandler(services.ClassifyBusy)
    def classify_busy(error: services.ClassifyBusy):
        response, status = _error(503, str(error), "Too busy")
        response = app.make_response((response, status))
        response.headers["Retry-After"] = str(app.config["CLASSIFY_RETRY_AFTER"])
        return response

    @app.errorhandler(SolrError)
    def solr_down(error: SolrError):
        # Unavailable (down, timeout, 5xx), no such collection, or 401/403: to a user, search is down.
        log.warning("solr unavailable: %s", error)
        return _error(503, "The search index (Solr) is not answering right now; try again in a minute.",
                      "Search is unavailable")

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException):
        messages = {
            404: "There is nothing at this address.",
            405: f"{request.method} is not allowed here.",
            413: f"The upload is too large; at most {app.config['MAX_CONTENT_LENGTH']:,} bytes.",
        }
        return _error(error.code or 500, messages.get(error.code, error.description or error.name), error.name)

    @app.errorhandler(Exception)
    def unexpected(error: Exception):
        log.exception("unexpected error on %s", request.path)
        return _error(500, "Something went wrong on our side; it has been logged.", "Something went wrong")
