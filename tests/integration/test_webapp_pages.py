"""webapp pages (search, image, stats, classify) rendered by the real app over a real Solr core."""

from __future__ import annotations

import html
import io
import re

import pytest

from jobs.core.contract import CLASSES
from tests.helpers import expected, hwc_of, ordered, png_of
from webapp import create_app

pytestmark = pytest.mark.integration


def tile_ids(page: str) -> list[str]:
    return re.findall(r'<li class="tile" data-id="(\d+)"', page)


def tag_counts(page: str) -> dict[str, int]:
    found = dict(re.findall(r'<span class="count" data-tag="(\w+)">([\d,]+)</span>', page))
    return {name: int(value.replace(",", "")) for name, value in found.items()}


def test_search_page_shows_the_matches_their_tag_counts_and_pages_on(loaded):
    response = loaded.client.get("/?tags=cat,horse&min_agreement=0.6&rows=10")
    page = response.get_data(as_text=True)
    assert response.status_code == 200
    want = ordered(expected(loaded.lines, ("cat", "horse"), 0.6), "agreement_desc")
    assert f'data-value="{len(want)}"' in page
    assert tile_ids(page) == want[:10]
    assert tag_counts(page) == {name: len(expected(loaded.lines, (name,), 0.6)) for name in CLASSES}
    for name in CLASSES:  # the chosen tags are ticked, the others not
        box = re.search(rf'<input type="checkbox" name="tags" value="{name}"[^>]*>', page).group(0)
        assert ("checked" in box) == (name in ("cat", "horse"))
    # The Next link carries the whole search, so following it is all a reader needs.
    link = html.unescape(re.search(r'id="next-page"\s+rel="next"\s+href="([^"]+)"', page).group(1))
    assert "tags=cat%2Chorse" in link and "min_agreement=0.6" in link and "offset=10" in link
    second = loaded.client.get("/" + link).get_data(as_text=True)
    assert tile_ids(second) == want[10:20]
    assert "showing 11–20" in second and 'id="first-page"' in second


def test_pages_forbid_inline_script(loaded):
    response = loaded.client.get("/")
    policy = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy.split("script-src")[1].split(";")[0]
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert "javascript:" not in response.get_data(as_text=True)


def test_last_page_has_no_next_link(loaded):
    want = ordered(expected(loaded.lines, ("ship",)), "id_asc")
    page = loaded.client.get(f"/?tags=ship&sort=id_asc&rows={len(want)}").get_data(as_text=True)
    assert tile_ids(page) == want and 'id="next-page"' not in page


def test_empty_result_says_so(loaded):
    response = loaded.client.get("/?model=cccccc333333")  # a model version no document has
    page = response.get_data(as_text=True)
    assert response.status_code == 200 and tile_ids(page) == []
    assert 'data-value="0"' in page and "No image matches" in page and 'id="next-page"' not in page


@pytest.mark.parametrize("query, message", [
    ("tags=<script>alert(1)</script>", "unknown tag &#39;&lt;script&gt;alert(1)&lt;/script&gt;&#39;"),
    ("min_agreement=0.9&max_agreement=0.1", "min_agreement (0.9) is above max_agreement (0.1)"),
    ("rows=5000", "rows should be at most 200"),
    ("cursor=%22%3E%3Cimg%20src=x%20onerror=alert(1)%3E", "cursor is malformed"),
])
def test_bad_search_is_a_friendly_400_with_the_payload_escaped(unreachable_solr_url, query, message):
    client = create_app({"SOLR_URL": unreachable_solr_url, "TESTING": True}).test_client()
    response = client.get(f"/?{query}")
    page = response.get_data(as_text=True)
    assert response.status_code == 400
    assert "That search cannot be run" in page and message in page
    assert "<script>alert" not in page and "<img src=x" not in page


def test_solr_down_is_a_503_page_not_a_trace(unreachable_solr_url):
    client = create_app({"SOLR_URL": unreachable_solr_url, "TESTING": True}).test_client()
    for path in ("/", "/stats", "/images/7"):
        response = client.get(path)
        page = response.get_data(as_text=True)
        assert response.status_code == 503 and "Search is unavailable" in page
        assert "Traceback" not in page and unreachable_solr_url not in page


def test_image_page_shows_votes_origin_links_and_similar_images(loaded):
    line = loaded.lines[21]
    response = loaded.client.get(f"/images/{line['id']}")
    page = response.get_data(as_text=True)
    assert response.status_code == 200
    counts = re.findall(r'<span class="vote-name">(\w+)</span>.*?<span class="vote-count">(\d+)</span>', page, re.S)
    assert [(name, int(n)) for name, n in counts] == list(zip(CLASSES, line["vote_counts"]))
    assert re.search(rf'<li class="winner">\s*<span class="vote-name">{line["tag"]}<', page)
    for value in (line["id"], line["block"], line["model"]):
        assert f'<dd class="mono">{value}</dd>' in page
    assert f'href="/api/documents/{line["id"]}"' in page
    assert f'src="/api/images/{line["id"]}.png"' in page
    similar = loaded.client.get(f"/api/similar/{line['id']}?rows=12").get_json()
    assert tile_ids(page) == [r["id"] for r in similar["results"]]


def test_unknown_image_page_is_a_404_page(loaded):
    response = loaded.client.get("/images/3")
    assert response.status_code == 404 and "no tagged image with id 3" in response.get_data(as_text=True)


def test_stats_page_counts_tags_and_says_when_there_is_no_card(loaded):
    page = loaded.client.get("/stats").get_data(as_text=True)
    counts = dict(re.findall(r'<span class="hbar-count" data-tag="(\w+)">([\d,]+)</span>', page))
    assert {k: int(v) for k, v in counts.items()} == {name: sum(l["tag"] == name for l in loaded.lines) for name in CLASSES}
    assert f'id="total-images">{len(loaded.lines)}<' in page
    assert "no model directory is configured" in page


def test_stats_page_shows_the_model_card(loaded, model_dir):
    path, _, _ = model_dir
    matrix = [[(i * 7 + j * 3) % 50 for j in range(10)] for i in range(10)]
    card = (path / "model_card.json").read_text().replace('"test_accuracy"', f'"confusion_matrix": {matrix}, "test_accuracy"')
    (path / "model_card.json").write_text(card)
    (path / "coverage.png").write_bytes(png_of(hwc_of(loaded.lines[0])))
    app = create_app({"SOLR_URL": loaded.url, "MODEL_DIR": str(path), "TESTING": True})
    client = app.test_client()
    page = client.get("/stats").get_data(as_text=True)
    assert "25.0%" in page  # test_accuracy
    cells = [int(v) for v in re.findall(r'<td class="(?:diag)?" style="--heat: [\d.]+">(\d+)</td>', page)]
    assert cells == [v for row in matrix for v in row]
    assert 'src="/api/model/coverage.png"' in page
    assert client.get("/api/model/coverage.png").status_code == 200
    assert client.get("/api/model/model_card.json").status_code == 404
    assert client.get("/api/model/..%2Fforest.npz").status_code == 404


def test_classify_page_shows_the_vote_and_similar_images(loaded, model_dir):
    path, _, _ = model_dir
    client = create_app({"SOLR_URL": loaded.url, "MODEL_DIR": str(path), "TESTING": True}).test_client()
    line = loaded.lines[4]
    api = client.post("/api/classify", data={"image": (io.BytesIO(png_of(hwc_of(line))), "a.png")},
                      content_type="multipart/form-data").get_json()
    response = client.post("/classify", data={"image": (io.BytesIO(png_of(hwc_of(line))), "a.png")},
                           content_type="multipart/form-data")
    page = response.get_data(as_text=True)
    assert response.status_code == 200
    assert f'{api["votes"]} of 5</strong> trees agree' in page
    assert tile_ids(page)[0] == str(line["id"])
    empty = client.post("/classify", data={}, content_type="multipart/form-data")
    assert empty.status_code == 400 and "Choose an image file first" in empty.get_data(as_text=True)
