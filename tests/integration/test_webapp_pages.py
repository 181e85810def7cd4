"""webapp pages (search, image, stats, classify) rendered by the real app over a real Solr core."""

from __future__ import annotations

import html
import io
import json
import re

import pytest

from tests.helpers import (
    expected,
    hwc_of,
    learned_model,
    make_card_older,
    ordered,
    png_of,
)
from tinytags.core.contract import CLASSES
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


def tile_precision(page: str) -> dict[str, tuple[str, str] | None]:
    """Per tile id: (its "right N%" text, its explaining title), or None when it shows none."""
    found = {}
    for doc_id, body in re.findall(r'<li class="tile" data-id="(\d+)"(.*?)</li>', page, re.S):
        match = re.search(r'<span class="right"\s+title="([^"]*)">(right \d+%)</span>', body)
        found[doc_id] = (match.group(2), match.group(1)) if match else None
    return found


def said(percent: float) -> str:
    return f"{round(percent * 100)}%"


def text_of(fragment: str) -> str:
    """Visible text of an HTML fragment, whitespace collapsed."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", fragment)).split()).replace(" :", ":").replace("( ", "(")


def test_search_tiles_show_each_images_expected_precision(loaded):
    by_id = {str(l["id"]): l for l in loaded.lines}
    page = loaded.client.get("/?rows=96&sort=id_asc").get_data(as_text=True)
    shown = tile_precision(page)
    assert list(shown) == ordered(loaded.lines, "id_asc")[:96]
    assert any(v is None for v in shown.values()) and any(v is not None for v in shown.values())
    for doc_id, item in shown.items():
        line = by_id[doc_id]
        if line["expected_precision"] is None:
            assert item is None, doc_id
        else:
            title = (f"On held-out images, {line['tag']} with {line['votes']} votes was right "
                     f"{said(line['expected_precision'])} of the time")
            assert item == (f"right {said(line['expected_precision'])}", title), doc_id


def test_image_page_and_its_similar_tiles_show_expected_precision(loaded):
    by_id = {str(l["id"]): l for l in loaded.lines}
    line = next(l for l in loaded.lines[20:] if l["expected_precision"] is not None)
    page = loaded.client.get(f"/images/{line['id']}").get_data(as_text=True)
    note = re.search(r'<p class="expected-precision" id="expected-precision".*?</p>', page, re.S).group(0)
    assert text_of(note) == (f"Expected precision: on held-out images, {line['tag']} with {line['votes']} of 10 "
                             f"votes was right {said(line['expected_precision'])} of the time.")
    similar = tile_precision(page)
    assert similar
    for doc_id, item in similar.items():
        precision = by_id[doc_id]["expected_precision"]
        assert item == (None if precision is None else (f"right {said(precision)}", item[1])), doc_id
    bare = next(l for l in loaded.lines if l["expected_precision"] is None)
    page = loaded.client.get(f"/images/{bare['id']}").get_data(as_text=True)
    assert 'id="expected-precision"' not in page and "Image <span" in page


def tag_precision_items(page: str) -> dict[str, str]:
    block = re.search(r'<ul class="tag-precision small" id="tag-precision".*?</ul>', page, re.S).group(0)
    return {tag: text_of(body) for tag, body in re.findall(r'<li data-tag="(\w+)">(.*?)</li>', block, re.S)}


@pytest.mark.parametrize("query, tags, threshold, votes", [
    ("tags=dog,cat&min_agreement=0.6", ("cat", "dog"), "60%", 3),
    ("min_agreement=0.4", CLASSES, "40%", 2),
    ("", CLASSES, "20%", 1),                       # agreement >= 0 still needs one vote of five
    ("tags=truck,ship&min_agreement=0.9", ("ship", "truck"), "100%", 5),
])
def test_search_page_shows_each_tags_precision_next_to_the_filter(loaded, model_dir, query, tags, threshold, votes):
    path, _, _ = model_dir
    card = json.loads((path / "model_card.json").read_text())
    client = create_app({"SOLR_URL": loaded.url, "MODEL_DIR": str(path), "TESTING": True}).test_client()
    page = client.get(f"/?{query}").get_data(as_text=True)
    want = {}
    for tag in tags:
        row = next(r for r in card["per_class_agreement"][tag] if r["min_votes"] == votes)
        want[tag] = (f"{tag} at ≥ {threshold}: no test images" if row["images"] == 0 else
                     f"{tag} at ≥ {threshold}: right {said(row['precision'])} ({row['images']:,} test images)")
    assert tag_precision_items(page) == want
    # The same table goes to search.js, which redoes the list when the slider moves.
    data = json.loads(html.unescape(re.search(r'id="card-rows">(.*?)</script>', page, re.S).group(1)))
    assert data["trees"] == 5 and data["tags"] == list(tags)
    assert data["per_class"]["cat"] == [{k: r[k] for k in ("min_votes", "images", "precision", "recall")}
                                        for r in card["per_class_agreement"]["cat"]]


def test_search_page_without_per_class_figures_shows_no_tag_list(loaded, model_dir):
    assert tag_precision_items(loaded.client.get("/").get_data(as_text=True)) == {}  # no card at all
    path, _, _ = model_dir
    card = json.loads((path / "model_card.json").read_text())
    del card["per_class_agreement"]
    (path / "model_card.json").write_text(json.dumps(card))
    client = create_app({"SOLR_URL": loaded.url, "MODEL_DIR": str(path), "TESTING": True}).test_client()
    page = client.get("/?min_agreement=0.4").get_data(as_text=True)
    assert tag_precision_items(page) == {} and "tags are right" in page  # the overall note stays


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
    # The junk figures and the per-class table at the tag job's rule (0.4 x 5 trees = 2 votes).
    saved = json.loads(card)
    junk = text_of(re.search(r'<dl class="facts inline" id="junk-figures">.*?</dl>', page, re.S).group(0))
    assert junk == ("synthetic junk test images 6,000 of them tagged anyway 0.9% real test images called junk 0.6%")
    rows = re.findall(r'<tr data-tag="(\w+)">(.*?)</tr>', page, re.S)
    assert [tag for tag, _ in rows] == list(CLASSES)
    for tag, body in rows:
        row = next(r for r in saved["per_class_agreement"][tag] if r["min_votes"] == 2)
        cells = [text_of(cell) for cell in re.findall(r"<td>(.*?)</td>", body, re.S)]
        assert cells == [tag, f"{row['images']:,}", f"{row['precision'] * 100:.1f}%", f"{row['recall'] * 100:.1f}%"]
    assert "at least 2 of 5 trees (40%)" in text_of(page)
    assert 'id="features-name">pixels<' in page


def test_stats_page_of_an_older_card_hides_the_new_figures(loaded, model_dir):
    path, _, _ = model_dir
    make_card_older(path)
    page = create_app({"SOLR_URL": loaded.url, "MODEL_DIR": str(path), "TESTING": True}).test_client().get("/stats")
    text = page.get_data(as_text=True)
    assert page.status_code == 200 and 'id="agreement-table"' in text and "25.0%" in text
    assert 'id="junk-figures"' not in text and 'id="rule-table"' not in text and 'id="features-name"' not in text


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
    card = json.loads((path / "model_card.json").read_text())
    note = text_of(re.search(r'<p id="expected-precision">.*?</p>', page, re.S).group(0))
    assert note == (f"On held-out images, {api['tag']} with {api['votes']} votes was right "
                    f"{said(card['expected_precision'][api['tag']][api['votes']])} of the time.")
    assert "Not a photo" not in page
    empty = client.post("/classify", data={}, content_type="multipart/form-data")
    assert empty.status_code == 400 and "Choose an image file first" in empty.get_data(as_text=True)


def test_classify_page_says_when_an_upload_is_not_a_photo(loaded, tmp_path):
    from tinytags.core.junk import junk_images

    features, _ = learned_model(tmp_path, loaded.lines)
    client = create_app({"SOLR_URL": loaded.url, "MODEL_DIR": str(tmp_path), "TESTING": True}).test_client()
    seen = 0
    for row in junk_images(6, 99):
        upload = png_of(row.reshape(3, 32, 32).transpose(1, 2, 0).copy())
        api = client.post("/api/classify", data={"image": (io.BytesIO(upload), "n.png")},
                          content_type="multipart/form-data").get_json()
        page = client.post("/classify", data={"image": (io.BytesIO(upload), "n.png")},
                           content_type="multipart/form-data").get_data(as_text=True)
        assert ('id="junk-verdict">Not a photo: no tag<' in page) is api["junk"]
        assert ("</strong> trees agree" not in page) is api["junk"]
        if api["junk"]:
            seen += 1
            assert 'class="winner"' not in page and 'id="expected-precision"' not in page
            assert f"features <span class=\"mono\">{features.name}</span>" in page
    assert seen  # the API's own answer decides above; here at least one upload was junk
