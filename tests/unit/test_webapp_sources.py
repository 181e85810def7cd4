"""webapp/queries.py for packed photos: the source_prefix filter and the source fields of a result (no services)."""

from __future__ import annotations

import pytest

from tests.helpers import query_args
from webapp import _settings_from_env
from webapp.queries import (
    BadSearch,
    Search,
    facet_params,
    parse_search,
    result,
    results_params,
)

args = query_args


@pytest.mark.parametrize("query, prefix", [
    ("", None),
    ("source_prefix=", None),
    ("source_prefix=/photos/2019/", "/photos/2019/"),
    ("source_prefix=%20/photos/a%20b/%20", "/photos/a b/"),
    ("source_prefix=hdfs://nn:9000/photos/", "hdfs://nn:9000/photos/"),
    # Solr syntax in the value stays text: it follows {!prefix f=source}, which takes the rest literally.
    ("source_prefix=/x/*:*%20OR%20tag:cat}{!", "/x/*:* OR tag:cat}{!"),
])
def test_source_prefix_is_validated_and_becomes_one_prefix_filter(query, prefix):
    search = parse_search(args(query))
    assert search.source_prefix == prefix
    wanted = [] if prefix is None else ["{!prefix f=source}" + prefix]
    assert [c for c in search.filters() if "source" in c] == wanted
    for params in (results_params(search), facet_params(search)):
        assert [v for k, v in params if k == "fq" and "source" in v] == wanted
    assert search.query_args().get("source_prefix") == prefix
    assert parse_search(args(search.query_string())) == search  # links repeat the search


@pytest.mark.parametrize("query, message", [
    ("source_prefix=/a%00b", "no control characters"),
    ("source_prefix=/a%0Ab", "no control characters"),
    ("source_prefix=" + "a" * 1025, "at most 1024 characters"),
    ("source_prefix=/a&source_prefix=/b", "given 2 times"),
])
def test_bad_source_prefixes_are_refused(query, message):
    with pytest.raises(BadSearch, match=message):
        parse_search(args(query))


def test_results_carry_source_and_size_when_the_document_has_them():
    urls = (lambda i: f"/img/{i}.png"), (lambda i: f"/page/{i}")
    doc = {"id": "7", "tag": "cat", "agreement": 0.5, "votes": 5}
    assert (result(doc, *urls)["source"], result(doc, *urls)["width"]) == (None, None)
    photo = result({**doc, "source": "/p/a.jpg", "width": 640, "height": 480}, *urls)
    assert (photo["source"], photo["width"], photo["height"]) == ("/p/a.jpg", 640, 480)
    assert Search().source_prefix is None


def test_preview_settings_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("TINYTAGS_SOURCE_ROOT", "/data/photos")
    monkeypatch.setenv("TINYTAGS_PREVIEW_SIDE", "300")
    settings = _settings_from_env()
    assert settings["SOURCE_ROOT"] == "/data/photos" and settings["PREVIEW_SIDE"] == 300
