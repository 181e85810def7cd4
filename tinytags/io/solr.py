"""The one Solr client, with the one Solr error hierarchy, for the indexer, the web app and the benches.

A ``SolrClient`` holds a keep-alive connection pool to one core or collection URL. Queries are
POSTed form-encoded (no URL length limit for k-NN vectors, and urllib3 does not re-scan a long
query string), updates are POSTed as JSON. It pickles without its pool, so every Spark task
builds its own.

Errors, by what the caller can do about them:

- ``SolrUnavailable``: no connection, a timeout, HTTP 5xx, 408 or 429. Retried with exponential
  backoff when the client has ``retries``; the web app answers 503.
- ``SolrRejected``: Solr refused the request itself (HTTP 400, or a 5xx that blames one document
  with ``[doc=<id>]``, as Solr does for a vector of the wrong length). No retry helps; the
  indexer bisects a rejected batch to find the bad documents (``send_bisecting``).
- ``SolrAuthError``: 401/403, Solr's BasicAuth refused the client's user (or its lack of one); the
  message names the user and what was refused. The indexer stops, the web app answers 503.
- ``SolrError``, their base: anything else Solr answered (no such collection, ...).

Credentials (``auth=(user, password)``, from ``tinytags.settings.solr_credentials``) are sent
as a BasicAuth header on every request and pickle with the client, so Spark tasks log in too.

Failover (SolrCloud): the URL may be a comma-separated list of the same collection on several
nodes, and ``discover()`` adds every node that hosts the collection or is live, from Solr's cluster
state (CLUSTERSTATUS, which ZooKeeper holds). A request that finds its node unreachable, or that
node answering 5xx, is sent to the next node at once, and the client stays on the node that
answered; only when every node failed does the retry schedule start (each retry tries every node
again). Updates are safe to re-send (ids are deterministic), so they fail over too. An answer that
came from another node than the one first asked says so in its ``responseHeader`` (FAILED_OVER),
and ``is_partial`` tells a caller to flag it, as it does for Solr's own ``partialResults`` (a
shard with no live replica under ``shards.tolerant=true``).
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any, Callable, Iterable, Sequence
from urllib.parse import urlencode, urlsplit

import orjson
import urllib3

from tinytags.settings import DEFAULT_SOLR_URL

Params = Iterable[tuple[str, str]] | dict[str, Any]
FAILED_OVER = "tinytagsFailedOver"  # responseHeader key: the node that answered after another failed
_FORM = {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}
_JSON = {"Content-Type": "application/json"}


class SolrError(RuntimeError):
    """Solr could not do what was asked, in a way no retry fixes."""


class SolrUnavailable(SolrError):
    """Solr did not answer, or answered 5xx/408/429 (after the client's retries)."""


class SolrRejected(SolrError):
    """Solr refused a request because of what it holds; ``message`` is Solr's reason."""

    def __init__(self, status: int, message: str):
        super().__init__(f"Solr answered {status}: {message}")
        self.status = status
        self.message = message


class SolrAuthError(SolrError):
    """Solr refused the client's user (401: unknown or wrong password, or none given; 403: not allowed)."""

    def __init__(self, status: int, user: str | None, message: str):
        super().__init__(message)
        self.status, self.user = status, user


class TooManyRejects(SolrError):
    """More documents of one block were rejected than allowed (the schema, not the data, is wrong?)."""


def backoff_delays(retries: int, base: float, cap: float = 30.0) -> list[float]:
    """Seconds to wait before each retry: base, 2*base, 4*base, ... capped."""
    return [min(cap, base * 2 ** attempt) for attempt in range(retries)]


def with_retries(call: Callable[[], Any], delays: Sequence[float], what: str,
                 retriable: tuple[type[BaseException], ...] = (SolrUnavailable,),
                 sleep: Callable[[float], None] = time.sleep) -> Any:
    """Run ``call``; on a retriable error wait and try again; after the last delay raise
    SolrUnavailable naming ``what`` and the number of attempts."""
    for delay in [*delays, None]:
        try:
            return call()
        except retriable as error:
            if delay is None:
                raise SolrUnavailable(f"{what}: failed after {len(delays) + 1} attempts: {error}") from error
            sleep(delay)
    raise AssertionError("unreachable")


def send_bisecting(docs: Sequence[Any], send: Callable[[Sequence[Any]], None],
                   max_rejects: int) -> list[tuple[int, str]]:
    """Send a batch; when Solr rejects it, split it in halves until the rejected documents are
    alone. Returns (index in ``docs``, Solr's reason) for each rejected document.

    Re-sending accepted documents is harmless: ids are deterministic, so Solr replaces them.
    More than ``max_rejects`` rejections raise TooManyRejects.
    """
    rejected: list[tuple[int, str]] = []
    pending = [(0, len(docs))]
    while pending:
        start, stop = pending.pop()
        if start == stop:
            continue
        try:
            send(docs[start:stop])
        except SolrRejected as error:
            if stop - start == 1:
                rejected.append((start, error.message))
                if len(rejected) > max_rejects:
                    what = f"more than {max_rejects} documents" if max_rejects else "a document"
                    raise TooManyRejects(f"Solr rejected {what}; the first: {rejected[0][1]}") from error
            else:
                middle = (start + stop) // 2
                pending.append((middle, stop))
                pending.append((start, middle))  # popped first: keeps document order
    return sorted(rejected)


def span(blocks: Sequence[int]) -> str:
    """``3`` or ``3..9 (7 blocks)``, for messages about a list of blocks."""
    return f"{blocks[0]}" if len(blocks) == 1 else f"{blocks[0]}..{blocks[-1]} ({len(blocks)} blocks)"


def is_partial(answer: dict[str, Any] | None) -> bool:
    """True when an answer may miss documents: Solr's partialResults, or this client failed over for it."""
    header = (answer or {}).get("responseHeader") or {}
    return bool(header.get("partialResults") or header.get(FAILED_OVER))


def split_urls(url: str) -> list[str]:
    """The nodes of a comma-separated Solr URL list, each without a trailing slash, in order."""
    return [part.strip().rstrip("/") for part in url.split(",") if part.strip()]


class SolrClient:
    """One Solr core or collection over HTTP, on one node or failing over between several (see the
    module docstring)."""

    def __init__(self, url: str, *, timeout: float = 5.0, retries: int = 0, backoff: float = 1.0,
                 pool_size: int = 16, auth: tuple[str, str] | None = None):
        urls = split_urls(url)
        if not urls:
            raise ValueError(f"the Solr URL should be an http(s) URL of a core or collection, got {url!r}")
        for each in urls:
            parts = urlsplit(each)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"the Solr URL should be an http(s) URL of a core or collection, got {each!r}")
        self.urls = urls
        self.url = urls[0]  # what messages name; the node first asked
        self.timeout, self.retries, self.backoff, self.pool_size = timeout, retries, backoff, pool_size
        self._current = 0  # the node that answered last
        self.failovers = 0  # requests answered by another node than the one first asked
        self._pools: dict[str, Any] = {}
        self.user = auth[0] if auth else None
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode() if auth else None
        self._auth = {"Authorization": f"Basic {token}"} if token else {}

    def __getstate__(self):
        return {**self.__dict__, "_pools": {}}

    def without_retries(self) -> "SolrClient":
        """The same client (its own pool) that fails at the first connection error or 5xx."""
        clone = SolrClient.__new__(SolrClient)
        clone.__dict__.update(self.__getstate__())
        clone.retries = 0
        return clone

    @property
    def delays(self) -> list[float]:
        """Waits before each retry."""
        return backoff_delays(self.retries, self.backoff)

    @property
    def collection(self) -> str:
        """The collection (or core) name: the last part of the URL."""
        return self.url.rsplit("/", 1)[1]

    def discover(self) -> list[str]:
        """Add the collection's URL on every node that hosts it or is live, from Solr's cluster state;
        returns the node list. A standalone Solr (no cluster state) or no answer leaves it as it is."""
        # Asking is not using: which node answers searches, and the failover count, stay as they were.
        current, failovers = self._current, self.failovers
        try:
            answer = self.request("admin/collections", root=True, query={"action": "CLUSTERSTATUS", "collection":
                                  self.collection, "wt": "json"}, method="GET", what="read the cluster state",
                                  retry=False)
        except SolrError:
            return self.urls
        finally:
            self._current, self.failovers = current, failovers
        cluster = answer.get("cluster") or {}
        bases = []
        for shard in ((cluster.get("collections") or {}).get(self.collection) or {}).get("shards", {}).values():
            bases += [replica.get("base_url") for replica in shard.get("replicas", {}).values()]
        scheme = urlsplit(self.url).scheme
        # A live node is "host:port_context" (context with / as _), e.g. 127.0.0.1:8985_solr.
        bases += [f"{scheme}://{node.replace('_', '/', 1)}" for node in cluster.get("live_nodes", [])]
        for base in bases:
            url = f"{base.rstrip('/')}/{self.collection}" if base else None
            if url and url not in self.urls:
                self.urls.append(url)
        return self.urls

    def _connections(self, url: str):
        pool = self._pools.get(url)
        if pool is None:
            # block=True: threads beyond pool_size wait for a connection instead of opening throwaways.
            pool = self._pools[url] = urllib3.connection_from_url(
                url, maxsize=self.pool_size, block=True, retries=False,
                timeout=urllib3.Timeout(connect=min(self.timeout, 5.0), read=self.timeout))
        return pool

    def request(self, handler: str, *, form: Params | None = None, body: bytes | None = None,
                query: Params | None = None, what: str = "request", retry: bool = True,
                method: str = "POST", root: bool = False) -> dict[str, Any]:
        """Send one request to <url>/<handler> (form fields or a JSON body) -> Solr's decoded JSON;
        on another node when the one asked is down (see the module docstring). ``root``: the handler
        is under the node's Solr root (``.../solr/admin/...``), not under the collection."""
        path = f"/{handler}"
        if query:
            path += "?" + urlencode(list(query.items()) if isinstance(query, dict) else list(query))
        if form is not None:
            items = list(form.items()) if isinstance(form, dict) else list(form)
            payload, headers = urlencode(items).encode(), _FORM
        else:
            payload, headers = body, (_JSON if body is not None else {})
        headers = {**headers, **self._auth}

        def one(url: str):
            try:
                base = urlsplit(url).path
                base = base.rsplit("/", 1)[0] if root else base
                response = self._connections(url).urlopen(method, base + path, body=payload,
                                                          headers=headers, preload_content=True)
            except urllib3.exceptions.HTTPError as error:
                raise SolrUnavailable(f"cannot reach Solr at {url} ({what}): "
                                      f"{error.__class__.__name__}: {str(error)[:200]}") from error
            return _answer(response, url, what, self.user)

        def call():
            first = self._current % len(self.urls)
            errors = []
            for step in range(len(self.urls)):
                at = (first + step) % len(self.urls)
                try:
                    answer = one(self.urls[at])
                except SolrUnavailable as error:
                    errors.append(error)
                    continue
                self._current = at
                if step:
                    self.failovers += 1
                    answer.setdefault("responseHeader", {})[FAILED_OVER] = self.urls[at]
                return answer
            if len(errors) == 1:
                raise errors[0]
            raise SolrUnavailable(f"no Solr node answered ({what}): " + "; ".join(map(str, errors)))

        return with_retries(call, self.delays if retry else [], what)

    # -- queries
    def select(self, params: Params) -> dict[str, Any]:
        """A /select query."""
        return self.request("select", form=params, what="select")

    def document(self, image_id: int, fields: str) -> dict[str, Any] | None:
        """The stored document of one image id (an int), or None."""
        body = self.select([("q", "{!term f=id}" + str(int(image_id))), ("fl", fields), ("rows", "1"),
                            ("wt", "json")])
        docs = body["response"]["docs"]
        return docs[0] if docs else None

    def index_version(self) -> str:
        """The version of the index searches see now; it changes with every commit that changes the index."""
        answer = self.request("admin/luke", query={"show": "index", "numTerms": "0", "wt": "json"},
                              method="GET", what="read the index version")
        index = answer.get("index", {})
        return f"{index.get('version')}:{index.get('numDocs')}:{index.get('maxDoc')}"

    def count(self) -> int:
        """Documents the collection holds (as of its last commit)."""
        return int(self.select([("q", "*:*"), ("rows", "0"), ("wt", "json")])["response"]["numFound"])

    def block_counts(self, blocks: Iterable[int]) -> dict[int, int]:
        """Documents per block for these blocks (blocks with none are absent)."""
        blocks = sorted(blocks)
        if not blocks:
            return {}
        # Asked of each shard's leader: on SolrCloud with TLOG replicas a follower holds a commit's
        # documents only once it has copied the leader's segments, so a count made right after the
        # commit may come up short there (NRT replicas index every document themselves; a standalone
        # core ignores the preference).
        form = {"q": "*:*", "rows": 0, "fq": "{!terms f=block}" + ",".join(map(str, blocks)),
                "facet": "true", "facet.field": "block", "facet.limit": -1, "facet.mincount": 1,
                "shards.preference": "replica.leader:true", "wt": "json"}
        answer = self.request("select", form=form, what=f"count blocks {span(blocks)}")
        flat = answer["facet_counts"]["facet_fields"]["block"]
        return {int(value): count for value, count in zip(flat[::2], flat[1::2])}

    def check_schema(self, fields: Iterable[str]) -> dict[str, dict[str, Any]]:
        """Fail early, with the fix, when the URL is not a collection made from solr_conf/; -> every
        field's properties (name -> Solr's entry, defaults included: e.g. whether it is stored)."""
        try:
            answer = self.request("schema/fields", query={"wt": "json", "showDefaults": "true"}, method="GET",
                                  what="read the schema")
        except SolrRejected as error:
            raise SolrError(f"no Solr collection at {self.url} ({error})") from error
        except (SolrUnavailable, SolrAuthError):
            raise
        except SolrError as error:
            raise SolrError(f"no Solr collection at {self.url} ({error}); the URL should name the "
                            f"collection, e.g. {DEFAULT_SOLR_URL}") from error
        names = {entry["name"]: entry for entry in answer.get("fields", [])}
        missing = [name for name in fields if name not in names]
        if missing:
            raise SolrError(f"the schema at {self.url} lacks fields {missing}; create the collection "
                            "from the tinytags configset (solr_conf/)")
        return names

    # -- updates (none commits but ``commit``)
    def update(self, body: bytes, what: str, retry: bool = True) -> dict[str, Any]:
        """POST a JSON update body."""
        return self.request("update", body=body, query={"wt": "json"}, what=what, retry=retry)

    def add_json(self, docs: Sequence[str]) -> None:
        """Add (or replace, by id) documents already serialised as JSON objects."""
        self.update(("[" + ",".join(docs) + "]").encode(), f"add {len(docs)} documents")

    def delete_blocks(self, blocks: Iterable[int]) -> None:
        """Delete every document of these blocks (not visible until the next commit)."""
        blocks = sorted(blocks)
        query = "{!terms f=block}" + ",".join(map(str, blocks))
        self.update(json.dumps({"delete": {"query": query}}).encode(), f"delete blocks {span(blocks)}")

    def commit(self) -> None:
        """Hard commit that opens a new searcher and waits for it, so the counts that follow see it."""
        self.update(b'{"commit": {"waitSearcher": true}}', "commit")

    def merge_segments(self, max_segments: int) -> None:
        """Merge the index down to at most this many segments (Solr's optimize), and wait for it.

        Each segment has its own HNSW graph and its own early stop per sorted page, so a bulk-loaded
        index of many segments searches slower; the merge costs about as much CPU as indexing the
        documents that move. Not retried: a merge cut short leaves a valid index behind."""
        self.update(json.dumps({"optimize": {"maxSegments": int(max_segments), "waitSearcher": True}}).encode(),
                    f"merge to {max_segments} segments", retry=False)


def _answer(response, url: str, what: str, user: str | None = None) -> dict[str, Any]:
    try:
        body = orjson.loads(response.data)
    except ValueError:
        body = None
    status = response.status
    if status == 200 and isinstance(body, dict):
        return body
    message = None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        message = body["error"].get("msg")
    message = str(message or response.data[:300].decode("utf-8", "replace"))[:500]
    if status == 400 or (status >= 500 and "[doc=" in message):
        raise SolrRejected(status, message)
    if status >= 500 or status in (408, 429):
        raise SolrUnavailable(f"{what}: HTTP {status} from {url}: {message}")
    if status == 200:
        raise SolrUnavailable(f"{what}: Solr at {url} answered with something that is not JSON")
    if status in (401, 403):
        if status == 403:
            problem = f"user {user!r} is not allowed to {what}"
        elif user:
            problem = f"user {user!r} could not log in (unknown user or wrong password) to {what}"
        else:
            problem = f"{what} needs a login: set TINYTAGS_SOLR_USER and TINYTAGS_SOLR_PASSWORD_FILE"
        # Jetty answers these in HTML: its reason line says it all.
        detail = message if isinstance(body, dict) else (getattr(response, "reason", None) or "")
        raise SolrAuthError(status, user, f"Solr at {url}: {problem} (HTTP {status}: {detail[:200]})")
    raise SolrError(f"{what}: HTTP {status} from {url}: {message}")
