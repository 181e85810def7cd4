"""The one place the web app talks to Solr: a pooled HTTP client for one core or collection.

Errors come out as two kinds the app maps to HTTP answers: SolrUnavailable (cannot connect,
timeout, Solr's own 5xx -> 503) and SolrRejected (Solr answered 4xx; its message is kept so a
bad cursor can be told apart from a bug).
"""

from __future__ import annotations

import json
import threading
from typing import Any, Iterable
from urllib.parse import urlencode, urlsplit

import urllib3
from flask import current_app

Params = Iterable[tuple[str, str]] | dict[str, str]
_FORM = {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}


class SolrError(RuntimeError):
    """Solr could not answer a request."""


class SolrUnavailable(SolrError):
    """Solr is down, too slow or failing (the app answers 503)."""


class SolrRejected(SolrError):
    """Solr refused a request (4xx); ``message`` is Solr's reason."""

    def __init__(self, status: int, message: str):
        super().__init__(f"Solr answered {status}: {message}")
        self.status = status
        self.message = message


class Solr:
    """A keep-alive connection pool to one Solr core URL (e.g. http://127.0.0.1:8983/solr/tinytags)."""

    def __init__(self, url: str, timeout: float = 5.0, pool_size: int = 16):
        parts = urlsplit(url.rstrip("/"))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"TINYTAGS_SOLR_URL should be an http(s) URL of a Solr core, got {url!r}")
        self.url = url.rstrip("/")
        self._path = parts.path
        # block=True: threads beyond pool_size wait for a connection instead of opening throwaways.
        self._pool = urllib3.connection_from_url(
            self.url, maxsize=pool_size, block=True,
            timeout=urllib3.Timeout(connect=min(timeout, 2.0), read=timeout), retries=False,
        )

    def request(self, handler: str, params: Params) -> dict[str, Any]:
        """POST the params form-encoded to <core>/<handler> -> the decoded JSON answer.

        POST, not GET: no URL length limit for k-NN vectors, and urllib3 does not re-scan a long
        query string for characters to escape (a measurable share of a search's Python time).
        """
        items = list(params.items()) if isinstance(params, dict) else list(params)
        try:
            response = self._pool.urlopen(
                "POST", f"{self._path}/{handler}", body=urlencode(items).encode(),
                headers=_FORM, preload_content=True)
        except urllib3.exceptions.HTTPError as error:
            raise SolrUnavailable(f"cannot reach Solr at {self.url}: {error.__class__.__name__}") from error
        try:
            body = json.loads(response.data)
        except ValueError:
            body = None
        if response.status >= 400:
            message = (body or {}).get("error", {}).get("msg") if isinstance(body, dict) else None
            message = message or response.data[:200].decode("utf-8", "replace")
            if 400 <= response.status < 500 and response.status != 404:
                raise SolrRejected(response.status, message)
            raise SolrUnavailable(f"Solr at {self.url} answered {response.status}: {message}")
        if not isinstance(body, dict):
            raise SolrUnavailable(f"Solr at {self.url} answered with something that is not JSON")
        return body

    def select(self, params: Params) -> dict[str, Any]:
        """A /select query."""
        return self.request("select", params)

    def document(self, image_id: int, fields: str) -> dict[str, Any] | None:
        """The stored document of one image id (a validated int), or None."""
        body = self.select([("q", "{!term f=id}" + str(int(image_id))), ("fl", fields), ("rows", "1"),
                            ("wt", "json")])
        docs = body["response"]["docs"]
        return docs[0] if docs else None


_lock = threading.Lock()


def get_solr() -> Solr:
    """The app's Solr client, made on first use in each process (gunicorn workers fork first)."""
    extensions = current_app.extensions
    client = extensions.get("tinytags_solr")
    if client is None:
        with _lock:
            client = extensions.get("tinytags_solr")
            if client is None:
                config = current_app.config
                client = Solr(config["SOLR_URL"], timeout=config["SOLR_TIMEOUT"], pool_size=config["SOLR_POOL"])
                extensions["tinytags_solr"] = client
    return client
