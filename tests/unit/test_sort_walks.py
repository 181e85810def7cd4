"""webapp/queries.py's walked orders (agreement_asc, id_desc): their cursors, their plans, and
pages assembled against a small Solr stand-in written here, compared with Python's own sort."""

from __future__ import annotations

import base64
import json
import random
import re
from dataclasses import replace

import pytest

from tests.helpers import query_args
from webapp.queries import (
    BadSearch,
    Search,
    WalkCursor,
    WalkFacts,
    encode_walk_cursor,
    id_windows,
    level_params,
    level_steps,
    parse_search,
    search_response,
    walk,
    walk_cursor,
    walk_facts,
    walk_facts_params,
    window_params,
)

SOLR_MARK = "AoMIPwAAAGYhNg=="  # the shape of a Solr cursorMark: base64 of binary (javabin) values


def _text_cursor(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


# --- cursors ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("cursor, text", [
    (WalkCursor("agreement_asc", 0.4, SOLR_MARK), f"tt1 agreement_asc 0.4 0 {SOLR_MARK}"),
    (WalkCursor("agreement_asc", 1.0, "AoE/"), "tt1 agreement_asc 1.0 0 AoE/"),
    (WalkCursor("id_desc", 78999921, SOLR_MARK, 79), f"tt1 id_desc 78999921 79 {SOLR_MARK}"),
])
def test_a_walk_cursor_is_base64_of_its_documented_text_and_parses_back(cursor, text):
    encoded = encode_walk_cursor(cursor)
    assert base64.b64decode(encoded).decode() == text
    search = parse_search(query_args(f"sort={cursor.sort}&cursor={encoded}"))
    assert search.cursor == encoded and walk_cursor(search) == cursor
    # A hand-made URL that turned '+' into a space still parses.
    assert walk_cursor(parse_search(query_args(f"sort={cursor.sort}&cursor=" + encoded.replace("+", "%20")))) == cursor


def test_first_pages_and_solr_orders_have_no_walk_cursor():
    assert walk_cursor(Search(sort="agreement_asc")) is None
    assert walk_cursor(Search(sort="agreement_desc", cursor=SOLR_MARK)) is None  # Solr judges its own


@pytest.mark.parametrize("sort, cursor, message", [
    # A Solr cursor (of another order) given to a walked order.
    ("agreement_asc", SOLR_MARK, "not a next_cursor of this search"),
    ("id_desc", SOLR_MARK, "not a next_cursor of this search"),
    # A walk's cursor given to another order, walked or not.
    ("id_desc", _text_cursor(f"tt1 agreement_asc 0.4 0 {SOLR_MARK}"), "belongs to sort 'agreement_asc', not id_desc"),
    ("agreement_desc", _text_cursor(f"tt1 agreement_asc 0.4 0 {SOLR_MARK}"),
     "belongs to sort 'agreement_asc', not agreement_desc"),
    ("id_asc", _text_cursor(f"tt1 id_desc 5 1 {SOLR_MARK}"), "belongs to sort 'id_desc', not id_asc"),
    # Ours in form, damaged inside.
    ("agreement_asc", _text_cursor(f"tt1 agreement_asc 1.5 0 {SOLR_MARK}"), "agreement level '1.5' is not a number in [0, 1]"),
    ("agreement_asc", _text_cursor(f"tt1 agreement_asc nan 0 {SOLR_MARK}"), "agreement level 'nan'"),
    ("agreement_asc", _text_cursor(f"tt1 agreement_asc 0.4) 0 {SOLR_MARK}"), "agreement level '0.4)'"),
    ("id_desc", _text_cursor(f"tt1 id_desc -5 1 {SOLR_MARK}"), "image id '-5' is not a whole number"),
    ("id_desc", _text_cursor(f"tt1 id_desc 1e9 1 {SOLR_MARK}"), "image id '1e9'"),
    ("id_desc", _text_cursor("tt1 id_desc 5 1 }OR{"), "cursor is damaged"),
    ("id_desc", _text_cursor(f"tt1 id_desc 5 x {SOLR_MARK}"), "cursor is damaged"),
    ("agreement_asc", _text_cursor(f"tt1 agreement_asc 0.4 {SOLR_MARK}"), "not a next_cursor of this search"),
    ("agreement_asc", _text_cursor(f"tt2 agreement_asc 0.4 0 {SOLR_MARK}"), "not a next_cursor of this search"),
    ("agreement_asc", _text_cursor(f"tt1 agreement_asc 0.4 0 {SOLR_MARK} extra"), "not a next_cursor of this search"),
])
def test_foreign_and_damaged_cursors_are_refused_naming_the_problem(sort, cursor, message):
    with pytest.raises(BadSearch, match=re.escape(message)):
        parse_search(query_args(f"sort={sort}&cursor={cursor}"))


# --- plans --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("levels, cursor, want", [
    ({0.6: 3, 0.4: 1, 0.5: 2}, None, [(0.4, "*"), (0.5, "*"), (0.6, "*")]),
    ([0.6, 0.4, 0.5], WalkCursor("agreement_asc", 0.5, "M"), [(0.5, "M"), (0.6, "*")]),
    ([0.6, 0.4], WalkCursor("agreement_asc", 0.5, "M"), [(0.5, "M"), (0.6, "*")]),  # its level emptied since
    ([0.6, 0.4, 0.5], WalkCursor("agreement_asc", 0.6, "M"), [(0.6, "M")]),
    ([], None, []),
])
def test_a_level_walk_asks_the_cursors_level_then_each_higher_one(levels, cursor, want):
    assert level_steps(levels, cursor) == want


@pytest.mark.parametrize("top, gap, rows, low_id, want", [
    # Windows of 2 pages at the density seen, 8 times wider on each try, then no bound.
    (10_000, 10, 5, 0, [9_900, 9_200, 3_600, None]),
    (10_000, 10, 5, 5_000, [9_900, 9_200, None]),  # 3,600 would hold every match: no bound instead
    (10_000, 0, 5, 0, [9_990, 9_920, 9_360, None]),  # no density known: one id per match
    (10_000, 5_000, 5, 0, [None]),  # a window of 2 pages spans every id
    (None, 10, 5, 0, [None]),
    (10_000, 10, 5, None, [None]),  # an empty index
])
def test_id_windows_widen_from_the_density_seen(top, gap, rows, low_id, want):
    assert id_windows(top, gap, rows, low_id) == want


def test_level_and_window_pages_use_the_index_order_and_validated_numbers():
    search = Search(tags=("cat",), min_agreement=0.5, sort="agreement_asc", rows=9)
    params = level_params(search, 0.7, "AoE/", 4)
    assert ("sort", "agreement desc, image_id asc, id asc") in params
    assert ("rows", "4") in params and ("cursorMark", "AoE/") in params
    assert [v for k, v in params if k == "fq"][-1] == "agreement:[0.7 TO 0.7]"
    ids = Search(sort="id_desc", rows=9)
    assert [v for k, v in window_params(ids, "*", 900, None) if k == "fq"] == ["{!cache=false}image_id:[900 TO *]"]
    assert [v for k, v in window_params(ids, "M", 900, 1234) if k == "fq"] == ["{!cache=false}image_id:[900 TO 1234]"]
    assert [v for k, v in window_params(ids, "M", None, 1234) if k == "fq"] == []
    assert ("sort", "image_id desc, id asc") in window_params(ids, "M", 900, 1234)


def test_level_counts_are_read_per_level_and_empty_levels_left_out():
    index = WalkFacts({0.4: 10, 0.5: 7, 0.6: 3}, 0, 999)
    params = walk_facts_params(Search(tags=("dog",)), index)
    assert [v for k, v in params if k == "facet.query"] == ["agreement:[0.4 TO 0.4]", "agreement:[0.5 TO 0.5]",
                                                            "agreement:[0.6 TO 0.6]"]
    answer = {"facet_counts": {"facet_queries": {"agreement:[0.4 TO 0.4]": 4, "agreement:[0.5 TO 0.5]": 0,
                                                 "agreement:[0.6 TO 0.6]": 2}}}
    facts = walk_facts(answer, index)
    assert (facts.levels, facts.total, facts.low_id, facts.high_id) == ({0.4: 4, 0.6: 2}, 6, 0, 999)


# --- whole walks against a stand-in for Solr --------------------------------------------------------


class FakeSolr:
    """Answers the /select parameters the walks send, from a list of documents, as Solr would:
    fq clauses of the kinds queries.py writes, a sort from SORTS, rows, cursorMark (here base64 of
    the last document's sort values)."""

    KEYS = {
        "agreement desc, image_id asc, id asc": lambda d: (-d["agreement"], d["image_id"], d["id"]),
        "image_id desc, id asc": lambda d: (-d["image_id"], d["id"]),
    }

    def __init__(self, docs: list[dict]):
        self.docs, self.asked = docs, []

    def select(self, params: list[tuple[str, str]]) -> dict:
        self.asked.append(params)
        args = dict(params)
        key = self.KEYS[args["sort"]]
        found = sorted((d for d in self.docs if all(self._passes(d, fq) for k, fq in params if k == "fq")), key=key)
        mark = args["cursorMark"]
        after = [d for d in found if mark == "*" or list(key(d)) > json.loads(base64.b64decode(mark))]
        page = after[:int(args["rows"])]
        next_mark = base64.b64encode(json.dumps(list(key(page[-1]))).encode()).decode() if page else mark
        return {"responseHeader": {}, "response": {"numFound": len(found), "docs": page}, "nextCursorMark": next_mark}

    @staticmethod
    def _passes(doc: dict, fq: str) -> bool:
        if fq.startswith("{!terms f=tag tag=tags}"):
            return doc["tag"] in fq.split("}", 1)[1].split(",")
        field, low, high = re.fullmatch(r"(?:\{!cache=false\})?(\w+):\[(\S+) TO (\S+)\]", fq).groups()
        value = doc[field]
        return (low == "*" or value >= float(low)) and (high == "*" or value <= float(high))


def _docs(count: int, seed: int, clustered: bool = False) -> list[dict]:
    rng = random.Random(seed)
    ids = rng.sample(range(1_000_000), count)
    if clustered:  # most ids far below a few high ones: the first windows come back short
        ids = [i // 50 if n % 10 else 999_000 + n for n, i in enumerate(ids)]
    return [{"id": str(i), "image_id": i, "tag": rng.choice(["cat", "dog", "ship"]), "votes": 5,
             "agreement": rng.choice([0.4, 0.5, 0.6, 0.7, 0.9, 1.0])} for i in ids]


def _facts(docs: list[dict]) -> WalkFacts:
    levels: dict[float, int] = {}
    for doc in docs:
        levels[doc["agreement"]] = levels.get(doc["agreement"], 0) + 1
    ids = [d["image_id"] for d in docs]
    return WalkFacts(levels, min(ids, default=None), max(ids, default=None))


@pytest.mark.parametrize("sort", ["agreement_asc", "id_desc"])
@pytest.mark.parametrize("rows", [1, 7, 50])
@pytest.mark.parametrize("clustered", [False, True])
def test_walked_pages_concatenate_to_the_plain_order(sort, rows, clustered):
    docs = _docs(400, seed=rows, clustered=clustered)
    solr = FakeSolr(docs)
    search = Search(tags=("cat", "dog"), min_agreement=0.5, max_agreement=0.9, sort=sort, rows=rows)
    matching = [d for d in docs if d["tag"] in ("cat", "dog") and 0.5 <= d["agreement"] <= 0.9]
    plain = {"agreement_asc": lambda d: (d["agreement"], d["image_id"]), "id_desc": lambda d: -d["image_id"]}[sort]
    want = [d["id"] for d in sorted(matching, key=plain)]
    facts = _facts(matching)
    seen, cursor, pages = [], "*", 0
    while cursor is not None:
        page = replace(search, cursor=cursor)
        answer = walk(page, facts, solr.select)
        assert answer["response"]["numFound"] == len(matching) and answer["response"]["numFoundExact"]
        seen += [d["id"] for d in answer["response"]["docs"]]
        cursor, pages = search_response(page, answer, None, str, str)["next_cursor"], pages + 1
        assert pages <= len(want) + 1
    assert seen == want


def test_a_level_walk_fills_a_page_across_levels_with_one_query_per_level():
    docs = [{"id": str(i), "image_id": i, "tag": "cat", "agreement": level}
            for i, level in enumerate([0.5] * 3 + [0.6] * 2 + [0.8] * 4)]
    solr = FakeSolr(docs)
    answer = walk(Search(sort="agreement_asc", rows=6), _facts(docs), solr.select)
    assert [d["id"] for d in answer["response"]["docs"]] == ["0", "1", "2", "3", "4", "5"]
    assert [[v for k, v in asked if k == "fq"] for asked in solr.asked] == [
        ["agreement:[0.5 TO 0.5]"], ["agreement:[0.6 TO 0.6]"], ["agreement:[0.8 TO 0.8]"]]
    assert [dict(asked)["rows"] for asked in solr.asked] == ["6", "3", "1"]
    cursor = walk_cursor(Search(sort="agreement_asc", cursor=answer["nextCursorMark"]))
    assert (cursor.sort, cursor.at) == ("agreement_asc", 0.8)


def test_an_id_walk_widens_a_short_window_and_ends_unbounded():
    # 3 matches near the top, the rest far below: the first window is short, the wider ones too.
    docs = [{"id": str(i), "image_id": i, "tag": "cat", "agreement": 0.5} for i in [1_000_000, 999_990, 999_980]]
    docs += [{"id": str(i), "image_id": i, "tag": "cat", "agreement": 0.5} for i in range(0, 1000, 10)]
    solr = FakeSolr(docs)
    # 103 matches over ids 998,980...1,000,000 as far as these facts say: 10 ids per match.
    facts = WalkFacts({0.5: len(docs)}, 1_000_000 - 10 * (len(docs) - 1), 1_000_000)
    answer = walk(Search(sort="id_desc", rows=5), facts, solr.select)
    assert [d["image_id"] for d in answer["response"]["docs"]] == [1_000_000, 999_990, 999_980, 990, 980]
    windows = [[v for k, v in asked if k == "fq"] for asked in solr.asked]
    # 2 pages x 10 ids per match, then 8 times wider; 64 times would reach below the lowest id:
    # no bound instead.
    assert windows == [["{!cache=false}image_id:[999900 TO *]"], ["{!cache=false}image_id:[999200 TO *]"], []]


def test_rows_zero_asks_nothing_and_an_empty_set_ends_at_once():
    solr = FakeSolr([])
    for sort in ("agreement_asc", "id_desc"):
        answer = walk(Search(sort=sort, rows=0), WalkFacts({0.5: 3}, 0, 10), solr.select)
        assert answer["response"]["docs"] == [] and answer["nextCursorMark"] is None and solr.asked == []
        answer = walk(Search(sort=sort, rows=5), WalkFacts({}), solr.select)
        assert answer["response"]["docs"] == [] and answer["nextCursorMark"] is None

