"""Search parameters -> validated values -> Solr parameters -> the API's response shape.

Pure functions, no Flask and no HTTP, shared by the JSON API and the pages. The rule they keep:
nothing a user sends ever reaches Solr as query syntax. Every parameter is parsed into a value
of a known kind (a tag from CLASSES, a float in [0, 1], an int, a sort key from a fixed table, a
cursor of base64 characters, a folder prefix of printable characters), and Solr's filters are
written from those values only. The folder prefix is the one free text: it goes after
``{!prefix f=source}``, where Solr takes the rest of the clause literally as the prefix, so it
can never become query syntax.

Two orders are walked by the app instead of asked of Solr as they are (see "Walked orders" below):
their next_cursor is this module's, and the walk's own filters are written from validated numbers.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterable, Protocol
from urllib.parse import urlencode

from tinytags.core.contract import CLASSES
from tinytags.io.solr import is_partial

MAX_ROWS = 200
API_ROWS = 50
PAGE_ROWS = 48
PAGE_ROW_CHOICES = (24, 48, 96)
# Every sort ends with the uniqueKey: cursorMark paging needs a total order.
SORTS = {
    "agreement_desc": "agreement desc, image_id asc, id asc",
    "agreement_asc": "agreement asc, image_id asc, id asc",
    "id_asc": "image_id asc, id asc",
    "id_desc": "image_id desc, id asc",
}
SORT_LABELS = {
    "agreement_desc": "highest agreement",
    "agreement_asc": "lowest agreement",
    "id_asc": "image id, ascending",
    "id_desc": "image id, descending",
}
DEFAULT_SORT = "agreement_desc"
# Stored fields a result needs (never the pixels or the vector: they are large).
RESULT_FIELDS = "id,image_id,block,label,tag,votes,agreement,vote_counts,model,expected_precision,source,width,height"
# Below this many matches Solr counts exactly; above, numFound of a page is "at least" (see results_params).
MIN_EXACT_COUNT = 1000
# On SolrCloud, a shard with no live replica gives an answer flagged partialResults (the API says
# "partial": true) instead of an error; a standalone Solr ignores it.
TOLERANT = ("shards.tolerant", "true")
MAX_PREFIX_CHARS = 1024  # a folder prefix longer than any sensible path is refused
# Agreement histogram: buckets of 0.1 centred on 0.0, 0.1 ... 1.0, so that each possible
# votes/trees value of a 10-tree forest sits mid-bucket, away from float rounding at the edges.
HISTOGRAM_GAP = 0.1
HISTOGRAM_START = -HISTOGRAM_GAP / 2
HISTOGRAM_BUCKETS = 11

_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
_INTEGER = re.compile(r"\d{1,9}")
_CURSOR = re.compile(r"[A-Za-z0-9+/]{1,1000}={0,2}")
_MODEL = re.compile(r"[0-9a-f]{6,64}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class BadSearch(ValueError):
    """A search parameter that is not acceptable; the message names it and what was expected."""


class Args(Protocol):
    """What a request's query arguments offer (werkzeug's MultiDict has it)."""

    def getlist(self, key: str) -> list[str]: ...


@dataclass(frozen=True)
class Search:
    """One validated search: what to filter on, how to sort, which page."""

    tags: tuple[str, ...] = ()
    min_agreement: float = 0.0
    max_agreement: float = 1.0
    sort: str = DEFAULT_SORT
    rows: int = API_ROWS
    cursor: str = "*"
    model: str | None = None
    source_prefix: str | None = None

    def filters(self) -> list[str]:
        """Solr fq clauses written from the validated values (see the module docstring)."""
        clauses = []
        if self.tags:
            # Tagged so the tag facet can exclude it: counts show what picking another tag adds.
            clauses.append("{!terms f=tag tag=tags}" + ",".join(self.tags))
        if (self.min_agreement, self.max_agreement) != (0.0, 1.0):
            clauses.append(f"agreement:[{_solr_number(self.min_agreement)} TO {_solr_number(self.max_agreement)}]")
        if self.model:
            clauses.append("{!term f=model}" + self.model)
        if self.source_prefix:
            clauses.append("{!prefix f=source}" + self.source_prefix)
        return clauses

    def filter_key(self) -> "Search":
        """The search without its order and page: what its tag counts and total depend on."""
        return replace(self, sort=DEFAULT_SORT, rows=0, cursor="*")

    def query_args(self, **changes: Any) -> dict[str, str]:
        """The search as URL parameters (only what differs from the defaults), for links."""
        search = replace(self, **changes) if changes else self
        args = {}
        if search.tags:
            args["tags"] = ",".join(search.tags)
        # repr: the shortest text that parses back to the same float, so a link repeats the search exactly.
        if search.min_agreement != 0.0:
            args["min_agreement"] = repr(search.min_agreement)
        if search.max_agreement != 1.0:
            args["max_agreement"] = repr(search.max_agreement)
        if search.sort != DEFAULT_SORT:
            args["sort"] = search.sort
        args["rows"] = str(search.rows)
        if search.cursor != "*":
            args["cursor"] = search.cursor
        if search.model:
            args["model"] = search.model
        if search.source_prefix:
            args["source_prefix"] = search.source_prefix
        return args

    def query_string(self, **changes: Any) -> str:
        """``query_args`` encoded for a URL."""
        return urlencode(self.query_args(**changes))


def _solr_number(value: float) -> str:
    # Fixed point (never 1e-05): 9 decimals are finer than the float32 agreement field can tell apart.
    return f"{value:.9f}"


def _short(value: float) -> str:
    return f"{value:.4f}".rstrip("0").rstrip(".") if value else "0"


def _single(args: Args, name: str) -> str | None:
    values = args.getlist(name)
    if not values:
        return None
    if len(values) > 1:
        raise BadSearch(f"{name} was given {len(values)} times; give it once")
    return values[0].strip()


def _show(value: str) -> str:
    """A user's value quoted for an error message, cut short (templates escape it, JSON quotes it)."""
    return repr(value if len(value) <= 40 else value[:40] + "…")


def parse_tags(args: Args) -> tuple[str, ...]:
    """``tags=cat,dog`` and/or ``tags=cat&tags=dog`` -> known class names in label order."""
    wanted = set()
    for value in args.getlist("tags"):
        for name in value.split(","):
            name = name.strip().lower()
            if not name:
                continue
            if name not in CLASSES:
                raise BadSearch(f"tags: unknown tag {_show(name)}; expected some of {', '.join(CLASSES)}")
            wanted.add(name)
    return tuple(name for name in CLASSES if name in wanted)


def parse_agreement(args: Args, name: str, default: float) -> float:
    """An agreement bound: a plain decimal number within [0, 1]."""
    value = _single(args, name)
    if value is None or value == "":
        return default
    if not _NUMBER.fullmatch(value):
        raise BadSearch(f"{name} should be a number between 0 and 1, got {_show(value)}")
    number = float(value)
    if not 0.0 <= number <= 1.0:
        raise BadSearch(f"{name} should be between 0 and 1, got {_show(value)}")
    return number + 0.0  # -0.0 -> 0.0


def parse_rows(args: Args, default: int, max_rows: int) -> int:
    """How many results per page: an integer from 0 (counts only) to max_rows."""
    value = _single(args, "rows")
    if value is None or value == "":
        return default
    if not _INTEGER.fullmatch(value):
        raise BadSearch(f"rows should be a whole number from 0 to {max_rows}, got {_show(value)}")
    rows = int(value)
    if rows > max_rows:
        raise BadSearch(f"rows should be at most {max_rows}, got {rows}")
    return rows


def parse_cursor(args: Args) -> str:
    """``*`` (the first page) or a next_cursor from an earlier answer: base64 text."""
    value = _single(args, "cursor")
    if value is None or value in ("", "*"):
        return "*"
    # Browsers and hand-written URLs turn '+' into a space; a cursor never has spaces.
    value = value.replace(" ", "+")
    if not _CURSOR.fullmatch(value):
        raise BadSearch(f"cursor is malformed: expected '*' or a next_cursor from an earlier search, got {_show(value)}")
    try:
        base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise BadSearch(f"cursor is malformed: {_show(value)} is not a next_cursor from an earlier search") from None
    return value


def parse_source_prefix(args: Args) -> str | None:
    """``source_prefix=/photos/2019/``: a folder (or any start of a path) of printable characters, or None."""
    value = _single(args, "source_prefix")
    if not value:
        return None
    if len(value) > MAX_PREFIX_CHARS:
        raise BadSearch(f"source_prefix should be at most {MAX_PREFIX_CHARS} characters, got {len(value):,}")
    if _CONTROL.search(value):
        raise BadSearch(f"source_prefix should hold no control characters, got {_show(value)}")
    return value


def parse_search(args: Args, default_rows: int = API_ROWS, max_rows: int = MAX_ROWS) -> Search:
    """Validate a request's search parameters; BadSearch names the first bad one."""
    tags = parse_tags(args)
    low = parse_agreement(args, "min_agreement", 0.0)
    high = parse_agreement(args, "max_agreement", 1.0)
    if low > high:
        raise BadSearch(f"min_agreement ({_short(low)}) is above max_agreement ({_short(high)})")
    sort = _single(args, "sort") or DEFAULT_SORT
    if sort not in SORTS:
        raise BadSearch(f"sort: unknown order {_show(sort)}; expected one of {', '.join(SORTS)}")
    rows = parse_rows(args, default_rows, max_rows)
    cursor = parse_cursor(args)
    model = _single(args, "model") or None
    if model is not None and not _MODEL.fullmatch(model):
        raise BadSearch(f"model should be a model version (6-64 lowercase hex digits), got {_show(model)}")
    search = Search(tags=tags, min_agreement=low, max_agreement=high, sort=sort, rows=rows,
                    cursor=cursor, model=model, source_prefix=parse_source_prefix(args))
    walk_cursor(search)  # a walk's cursor from another order, or a Solr cursor given to a walk, is refused here
    return search


def results_params(search: Search) -> list[tuple[str, str]]:
    """/select parameters for one page of results (a list: fq repeats).

    minExactCount lets Lucene stop counting once that many matches are seen and then skip what
    cannot make the page: segments are sorted in the default order, so such a page ends after
    `rows` hits per segment, and image_id asc skips through the points index (the other two
    orders are walked: see "Walked orders"). numFound is then a lower bound (numFoundExact
    false); the exact total comes from the tag counts.
    """
    params = [
        # cache=false: for a bare *:* Solr walks its cached set of all documents itself and cannot
        # stop early (Lucene's early termination then escapes as an HTTP 500 in Solr 9.10).
        ("q", "{!cache=false}*:*"), ("fl", RESULT_FIELDS), ("sort", SORTS[search.sort]),
        ("rows", str(search.rows)), ("cursorMark", search.cursor), ("wt", "json"),
        ("minExactCount", str(MIN_EXACT_COUNT)), TOLERANT,
    ]
    return params + [("fq", clause) for clause in search.filters()]


def facet_params(search: Search) -> list[tuple[str, str]]:
    """/select parameters for the tag counts of a search, asked apart from its results.

    Apart, because then Solr builds the matching set from cached filters and counts each of the
    10 tags by intersecting cached sets (facet.method=enum), instead of collecting every match
    one by one beside the sorted page, which costs far more at a million documents.
    """
    return [
        ("q", "*:*"), ("rows", "0"), ("wt", "json"), TOLERANT, *[("fq", clause) for clause in search.filters()],
        ("facet", "true"), ("facet.field", "{!ex=tags}tag"), ("facet.mincount", "0"),
        ("facet.limit", str(len(CLASSES) + 10)), ("facet.method", "enum"),
    ]


# --- Walked orders ---------------------------------------------------------------------------------
#
# The index is sorted agreement desc, image_id asc, id asc (solr_conf/solrconfig.xml), so a page in
# that order stops after `rows` hits per segment, and image_id asc skips through the points index.
# Asked as they are, agreement asc and image_id desc visit most matches. The app walks them instead,
# through queries Lucene can stop early, each page still exactly the next `rows` of the plain order:
# - agreement_asc, level by level, lowest first: agreement is votes/trees, a few discrete values,
#   and within one level (fq agreement:[v TO v]) the index order is already image_id asc, id asc.
#   A page that empties a level fills up from the next one.
# - id_desc, in windows of image ids below the last one shown (an uncached fq image_id:[low TO
#   high], which Lucene leads with, so only the window's documents are visited): a window holding a
#   full page holds the right page, because every match outside it has a lower id. A short window
#   is widened, and the last try has no lower bound.
# Both keep Solr's cursorMark inside their own cursor: base64 of the ASCII text
#   "tt1 <sort> <level | last image id> <image ids per match on the last page> <Solr cursorMark>".
WALKED_SORTS = ("agreement_asc", "id_desc")
INDEX_SORT = "agreement_desc"  # the order the index is sorted in: its pages stop early
_WALK_MAGIC = "tt1"
_IMAGE_ID = re.compile(r"\d{1,18}")
ID_WINDOW_PAGES = 2  # a first window is sized for twice the page at the density seen so far
ID_WINDOW_GROWTH = 8  # a window that held too few matches is tried again this many times wider
ID_WINDOW_TRIES = 3  # bounded windows before the unbounded query


@dataclass(frozen=True)
class WalkCursor:
    """Where a walked order stopped: the level (agreement_asc) or last image id (id_desc), Solr's cursorMark there."""

    sort: str
    at: float | int
    mark: str
    gap: int = 0  # id_desc: image ids per match on the last page, which sizes the next window


@dataclass(frozen=True)
class WalkFacts:
    """What the walks know of a filter set: its matches per agreement level, the index's lowest and highest image id."""

    levels: dict[float, int]
    low_id: int | None = None
    high_id: int | None = None
    partial: bool = False

    @property
    def total(self) -> int:
        """Matches in the filter set (exact: every level counted)."""
        return sum(self.levels.values())


Select = Callable[[list[tuple[str, str]]], dict[str, Any]]


def encode_walk_cursor(cursor: WalkCursor) -> str:
    """A walk's position -> next_cursor text (base64, so parse_cursor takes it back)."""
    text = f"{_WALK_MAGIC} {cursor.sort} {cursor.at!r} {int(cursor.gap)} {cursor.mark}"
    return base64.b64encode(text.encode("ascii")).decode("ascii")


def walk_cursor(search: Search) -> WalkCursor | None:
    """The walk position a walked order's cursor holds (None on a first page or another order);
    BadSearch names what is wrong with a cursor that is not this order's."""
    if search.cursor == "*":
        return None
    try:
        parts = base64.b64decode(search.cursor, validate=True).decode("ascii").split(" ")
    except (binascii.Error, ValueError):  # a Solr cursorMark is binary, not ASCII text
        parts = []
    ours = len(parts) == 5 and parts[0] == _WALK_MAGIC
    if search.sort not in WALKED_SORTS:
        if ours:
            raise BadSearch(f"cursor is not a next_cursor of this search: it belongs to sort {_show(parts[1])}, "
                            f"not {search.sort}")
        return None  # Solr's own: Solr judges it
    if not ours:
        raise BadSearch("cursor is not a next_cursor of this search (it may belong to another sort order)")
    _, sort, at, gap, mark = parts
    if sort != search.sort:
        raise BadSearch(f"cursor is not a next_cursor of this search: it belongs to sort {_show(sort)}, not {search.sort}")
    if search.sort == "agreement_asc":
        if not _NUMBER.fullmatch(at) or not 0.0 <= float(at) <= 1.0:
            raise BadSearch(f"cursor is damaged: its agreement level {_show(at)} is not a number in [0, 1]")
        position: float | int = float(at)
    else:
        if not _IMAGE_ID.fullmatch(at):
            raise BadSearch(f"cursor is damaged: its image id {_show(at)} is not a whole number")
        position = int(at)
    if not _IMAGE_ID.fullmatch(gap) or not _CURSOR.fullmatch(mark):
        raise BadSearch("cursor is damaged: it is not a next_cursor from an earlier search")
    return WalkCursor(sort, position, mark, int(gap))


def index_facts_params() -> list[tuple[str, str]]:
    """/select parameters for the whole index's agreement levels and image id range (asked once per index version)."""
    facet = {"levels": {"type": "terms", "field": "agreement", "limit": -1, "mincount": 1},
             "low": "min(image_id)", "high": "max(image_id)"}
    return [("q", "*:*"), ("rows", "0"), ("wt", "json"), TOLERANT, ("json.facet", json.dumps(facet))]


def index_facts(solr_json: dict[str, Any]) -> WalkFacts:
    """Solr's answer to index_facts_params -> WalkFacts of the whole index."""
    facets = solr_json.get("facets") or {}
    levels = {float(bucket["val"]): int(bucket["count"]) for bucket in (facets.get("levels") or {}).get("buckets", [])}
    low, high = facets.get("low"), facets.get("high")
    return WalkFacts(levels, None if low is None else int(low), None if high is None else int(high),
                     is_partial(solr_json))


def level_clause(level: float) -> str:
    """The filter of one agreement level; the walk's pages and the level counts share its cached set."""
    # repr: the shortest text of the float Solr gave (or the cursor held), which Solr reads back exactly.
    return f"agreement:[{float(level)!r} TO {float(level)!r}]"


def walk_facts_params(search: Search, index: WalkFacts) -> list[tuple[str, str]]:
    """/select parameters for a filter set's matches at each of the index's agreement levels.

    One facet query per level: each intersects two cached sets, far cheaper than faceting on
    the agreement values of every match."""
    return [("q", "*:*"), ("rows", "0"), ("wt", "json"), TOLERANT, *[("fq", clause) for clause in search.filters()],
            ("facet", "true"), *[("facet.query", level_clause(level)) for level in sorted(index.levels)]]


def walk_facts(solr_json: dict[str, Any], index: WalkFacts) -> WalkFacts:
    """Solr's answer to walk_facts_params -> the filter set's WalkFacts (levels it has; the index's id range)."""
    counts = solr_json.get("facet_counts", {}).get("facet_queries", {})
    levels = {level: int(counts.get(level_clause(level), 0)) for level in index.levels}
    return WalkFacts({level: count for level, count in levels.items() if count}, index.low_id, index.high_id,
                     index.partial or is_partial(solr_json))


def level_steps(levels: Iterable[float], cursor: WalkCursor | None) -> list[tuple[float, str]]:
    """(agreement level, Solr cursorMark) in the order a level walk asks them: the cursor's level from
    its mark, then every higher level from its start."""
    ordered = sorted(set(levels))
    if cursor is None:
        return [(level, "*") for level in ordered]
    return [(float(cursor.at), cursor.mark)] + [(level, "*") for level in ordered if level > cursor.at]


def level_params(search: Search, level: float, mark: str, rows: int) -> list[tuple[str, str]]:
    """/select parameters for up to `rows` matches at one agreement level, in the index's order."""
    return results_params(replace(search, sort=INDEX_SORT, rows=rows, cursor=mark)) + [("fq", level_clause(level))]


def id_windows(top: int | None, gap: int, rows: int, low_id: int | None) -> list[int | None]:
    """The lower image-id bounds an id_desc page tries below ``top``, narrowest first; None (no bound) last."""
    bounds: list[int | None] = []
    if top is not None and low_id is not None:
        width = max(1, gap) * rows * ID_WINDOW_PAGES
        while len(bounds) < ID_WINDOW_TRIES and top - width > low_id:  # else the window holds every match
            bounds.append(top - width)
            width *= ID_WINDOW_GROWTH
    return bounds + [None]


def window_params(search: Search, mark: str, low: int | None, high: int | None) -> list[tuple[str, str]]:
    """/select parameters for the next id_desc page among image ids in [low, high] (None: no bound)."""
    params = results_params(replace(search, cursor=mark))
    if low is None:
        return params  # the plain query: nothing to gain from an upper bound alone
    upper = "*" if high is None else str(int(high))
    # Uncached: every window is new, and Lucene leads with this narrow range of the points index.
    return params + [("fq", f"{{!cache=false}}image_id:[{int(low)} TO {upper}]")]


def walk(search: Search, facts: WalkFacts, select: Select) -> dict[str, Any]:
    """One page of a walked order, shaped as Solr's answer (numFound: the filter set's exact total,
    nextCursorMark: the walk's own cursor, or None at the end)."""
    cursor = walk_cursor(search)
    answers: list[dict[str, Any]] = []
    docs: list[dict[str, Any]] = []
    next_cursor = None
    if search.rows == 0:
        pass
    elif search.sort == "agreement_asc":
        for level, mark in level_steps(facts.levels, cursor):
            need = search.rows - len(docs)
            answers.append(select(level_params(search, level, mark, need)))
            got = answers[-1]["response"]["docs"]
            docs += got
            if len(got) == need:  # the page is full: the next one goes on from here
                next_cursor = encode_walk_cursor(WalkCursor(search.sort, level, answers[-1]["nextCursorMark"]))
                break
    else:
        high = cursor.at if cursor is not None else None
        top = high if high is not None else facts.high_id
        gap = cursor.gap if cursor is not None else _ids_per_match(facts)
        mark = cursor.mark if cursor is not None else "*"
        for low in id_windows(None if top is None else int(top), gap, search.rows, facts.low_id):
            answers.append(select(window_params(search, mark, low, None if high is None else int(high))))
            docs = answers[-1]["response"]["docs"]
            if len(docs) == search.rows:
                break
        if docs and len(docs) == search.rows:
            last = int(docs[-1]["image_id"])
            seen = (int(docs[0]["image_id"]) - last) // max(1, len(docs) - 1) or gap
            next_cursor = encode_walk_cursor(WalkCursor(search.sort, last, answers[-1]["nextCursorMark"], seen))
    partial = facts.partial or any(is_partial(answer) for answer in answers)
    return {"responseHeader": {"partialResults": partial},
            "response": {"numFound": facts.total, "numFoundExact": True, "docs": docs},
            "nextCursorMark": next_cursor}


def _ids_per_match(facts: WalkFacts) -> int:
    if facts.low_id is None or facts.high_id is None or facts.total < 2:
        return 1
    return max(1, (facts.high_id - facts.low_id) // (facts.total - 1))


def tag_counts(solr_json: dict[str, Any]) -> dict[str, int]:
    """Solr's flat [name, count, ...] tag facet -> {tag: count} for every class, in label order."""
    flat = solr_json.get("facet_counts", {}).get("facet_fields", {}).get("tag", [])
    found = dict(zip(flat[::2], flat[1::2]))
    return {name: int(found.get(name, 0)) for name in CLASSES}


def result(doc: dict[str, Any], image_url: Callable[[str], str], page_url: Callable[[str], str]) -> dict[str, Any]:
    """One Solr document -> one API result (expected_precision None for documents indexed without one)."""
    return {
        "id": doc["id"], "image_id": doc.get("image_id"), "tag": doc["tag"], "label": doc.get("label"),
        "agreement": doc["agreement"], "votes": doc["votes"], "vote_counts": doc.get("vote_counts"),
        "expected_precision": doc.get("expected_precision"),
        "block": doc.get("block"), "model": doc.get("model"),
        "source": doc.get("source"), "width": doc.get("width"), "height": doc.get("height"),
        "image_url": image_url(doc["id"]), "page_url": page_url(doc["id"]),
    }


def search_response(search: Search, results_json: dict[str, Any] | None, facets_json: dict[str, Any] | None,
                    image_url: Callable[[str], str], page_url: Callable[[str], str]) -> dict[str, Any]:
    """Solr's answers -> ``{"numFound", "exact", "results", "next_cursor", "facets", ...}`` (the API contract).

    ``results_json`` may be None for rows=0, ``facets_json`` None for a cursor page whose counts
    are not at hand (they are not counted again for every page). The total is exact when the
    counts are there (their rows=0 request counts every match) or when Solr counted the page's
    matches exactly; otherwise it is Solr's lower bound and ``exact`` is false.
    """
    counts = tag_counts(facets_json) if facets_json is not None else None
    docs, next_cursor = [], None
    if results_json is not None:
        docs = results_json["response"]["docs"]
        next_cursor = results_json.get("nextCursorMark")
    if facets_json is not None:
        found, exact = facets_json["response"]["numFound"], True
    else:
        found = results_json["response"]["numFound"]
        exact = results_json["response"].get("numFoundExact", True) is not False
    # Solr hands back the same cursor when there is nothing more; a short page is the end too.
    if next_cursor == search.cursor or len(docs) < search.rows or search.rows == 0:
        next_cursor = None
    return {
        "numFound": found,
        "exact": exact,
        # A shard had no live replica (its documents are missing) or the node asked was down.
        "partial": is_partial(results_json) or is_partial(facets_json),
        "results": [result(doc, image_url, page_url) for doc in docs],
        "cursor": search.cursor,
        "next_cursor": next_cursor,
        "facets": {"tag": counts} if counts is not None else None,
        "search": {
            "tags": list(search.tags), "min_agreement": search.min_agreement,
            "max_agreement": search.max_agreement, "sort": search.sort, "rows": search.rows,
            "model": search.model, "source_prefix": search.source_prefix,
        },
    }



def stats_params() -> list[tuple[str, str]]:
    """/select parameters for the stats: images per tag and per model, agreement histogram."""
    end = HISTOGRAM_START + HISTOGRAM_GAP * HISTOGRAM_BUCKETS
    return [
        ("q", "*:*"), ("rows", "0"), ("wt", "json"), TOLERANT, ("facet", "true"),
        ("facet.field", "tag"), ("facet.field", "model"), ("facet.mincount", "0"),
        ("f.tag.facet.limit", str(len(CLASSES) + 10)), ("f.model.facet.limit", "20"),
        ("f.model.facet.mincount", "1"),
        ("facet.range", "agreement"), ("f.agreement.facet.range.start", repr(HISTOGRAM_START)),
        ("f.agreement.facet.range.end", repr(end)), ("f.agreement.facet.range.gap", repr(HISTOGRAM_GAP)),
    ]


def stats_response(solr_json: dict[str, Any]) -> dict[str, Any]:
    """Solr's facet answer -> {"numFound", "tags", "models", "agreement_histogram"}."""
    facets = solr_json.get("facet_counts", {})
    models = facets.get("facet_fields", {}).get("model", [])
    counts = facets.get("facet_ranges", {}).get("agreement", {}).get("counts", [])
    # Solr labels buckets by float start (0.65000004...); we label them by their centre.
    histogram = [
        {"agreement": round(index * HISTOGRAM_GAP, 2),
         "from": round(HISTOGRAM_START + index * HISTOGRAM_GAP, 3),
         "to": round(HISTOGRAM_START + (index + 1) * HISTOGRAM_GAP, 3),
         "count": int(count)}
        for index, count in enumerate(counts[1::2])
    ]
    return {
        "numFound": solr_json["response"]["numFound"],
        "partial": is_partial(solr_json),
        "tags": tag_counts(solr_json),
        "models": dict(zip(models[::2], models[1::2])),
        "agreement_histogram": histogram,
    }
