"""The search page in a real headless Chromium (Selenium + Debian's chromium/chromedriver) against
the real web app and a real Solr core: pick tags, move the agreement range, see the matching
images with their expected precision and each tag's precision at the threshold, page forward; the
page is saved as docs/screenshots/search.png.

Images: real CIFAR-10 test images when ../shared/data has the sample (as in CI), else generated
ones; tags and votes are made up here so that every expectation can be computed in the test.
"""

from __future__ import annotations

import base64
import json
import shutil
import threading

import numpy as np
import pytest
from werkzeug.serving import make_server

from tests.helpers import (
    CIFAR_SAMPLE,
    IN_CI,
    ROOT,
    card_tables,
    line_precision,
    load_documents,
    make_lines,
)
from tinytags.core.contract import CLASSES
from webapp import create_app

pytestmark = [pytest.mark.browser, pytest.mark.integration, pytest.mark.slow]

SCREENSHOT = ROOT / "docs" / "screenshots" / "search.png"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
TREES = 10
ROWS = 24


def browser_lines(n: int = 600, seed: int = 11) -> list[dict]:
    """Tag-output lines over real CIFAR-10 test images when available, else generated images."""
    if not CIFAR_SAMPLE.exists():
        return make_lines(n, seed)
    from tinytags.io.cifar_files import read_local

    test = read_local(CIFAR_SAMPLE).test
    rng = np.random.default_rng(seed)
    lines = []
    for i in range(n):
        # Mostly the true class, sometimes a confusion, as a 10-tree forest would vote.
        label = int(test.labels[i]) if rng.random() < 0.8 else int(rng.integers(len(CLASSES)))
        votes = int(rng.choice(np.arange(4, TREES + 1), p=[.22, .2, .17, .14, .11, .09, .07]))
        counts = [0] * len(CLASSES)
        counts[label] = votes
        for _ in range(TREES - votes):
            counts[int(rng.choice([c for c in range(10) if c != label and counts[c] + 1 < votes]))] += 1
        image_id = 20_000_000 + 37 * i
        lines.append({
            "id": image_id, "block": image_id // 20_000, "label": label, "tag": CLASSES[label], "votes": votes,
            "agreement": votes / TREES, "vote_counts": counts, "model": "3f9a1c27be04",
            "pixels": base64.b64encode(test.pixels[i].tobytes()).decode(), "shard": image_id // 1_000_000,
            "offset": image_id % 1_000_000, "expected_precision": line_precision(i, label, votes),
        })
    return lines


@pytest.fixture()
def driver(tmp_path):
    """Headless Chromium; skipped with a reason outside CI when it is not installed."""
    if not (CHROMIUM and CHROMEDRIVER):
        message = "chromium and chromedriver are needed (apt-get install chromium chromium-driver)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1440,1000", "--hide-scrollbars",
                 f"--user-data-dir={tmp_path / 'chromium'}"):
        options.add_argument(flag)
    browser = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield browser
    finally:
        browser.quit()


@pytest.fixture()
def site(solr_core, tmp_path):
    """The app on a free port (werkzeug in a thread), over a core loaded with browser_lines()."""
    lines = browser_lines()
    load_documents(solr_core, lines)
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    # A model card as jobs/train.py writes it; the page shows its precision for the chosen threshold.
    coverage = [1.0, 1.0, 0.93, 0.687, 0.47, 0.3, 0.18, 0.1, 0.05, 0.02]
    precision = [0.37, 0.37, 0.4, 0.442, 0.52, 0.6, 0.68, 0.75, 0.81, 0.86]
    card = {
        "params": {"trees": TREES, "max_depth": 10}, "test_accuracy": 0.37,
        "agreement": [{"min_votes": v + 1, "coverage": c, "precision": p}
                      for v, (c, p) in enumerate(zip(coverage, precision))],
        **card_tables(TREES)}
    (model_dir / "model_card.json").write_text(json.dumps(card))
    app = create_app({"SOLR_URL": solr_core, "MODEL_DIR": str(model_dir)})
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", lines, card
    finally:
        server.shutdown()
        thread.join(timeout=10)


def expected_ids(lines, tags, low):
    match = [l for l in lines if l["tag"] in tags and l["agreement"] >= low]
    return [str(l["id"]) for l in sorted(match, key=lambda l: (-l["agreement"], l["id"]))]


def test_search_page_pick_tags_move_range_page_forward(driver, site):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    base, lines, card = site
    wait = WebDriverWait(driver, 20)

    def loaded_with(fragment: str):
        wait.until(lambda d: fragment in d.current_url and d.execute_script("return document.readyState") == "complete")

    def tiles():
        return driver.find_elements(By.CSS_SELECTOR, "#grid .tile")

    def number_found() -> int:
        return int(driver.find_element(By.ID, "num-found").get_attribute("data-value"))

    driver.get(f"{base}/?rows={ROWS}")
    assert number_found() == len(lines)
    assert len(tiles()) == ROWS

    # Pick two tags: each click reloads the page with the choice in the URL.
    driver.find_element(By.CSS_SELECTOR, "input[name=tags][value=cat]").click()
    loaded_with("tags=cat")
    driver.find_element(By.CSS_SELECTOR, "input[name=tags][value=dog]").click()
    loaded_with("tags=cat%2Cdog")
    assert number_found() == len(expected_ids(lines, {"cat", "dog"}, 0.0))

    # Move the lower agreement bound up five steps of 1/10 (the card says 10 trees) with the keyboard.
    slider = driver.find_element(By.ID, "min-agreement")
    for _ in range(5):
        slider.send_keys(Keys.ARROW_RIGHT)
    loaded_with("min_agreement=0.5")
    want = expected_ids(lines, {"cat", "dog"}, 0.5)
    assert number_found() == len(want) > ROWS
    shown = tiles()
    assert [t.get_attribute("data-id") for t in shown] == want[:ROWS]
    assert all(t.get_attribute("data-tag") in ("cat", "dog") and float(t.get_attribute("data-agreement")) >= 0.5
               for t in shown)
    assert "5 of 10" in driver.find_element(By.ID, "precision-note").text
    # The tag counts next to each tag are for the new range (and ignore the tag choice itself).
    for name in ("cat", "bird", "truck"):
        count = driver.find_element(By.CSS_SELECTOR, f".count[data-tag={name}]").text
        assert int(count.replace(",", "")) == len(expected_ids(lines, {name}, 0.5))
    # Each tile says how often its tag at its vote count was right on held-out images.
    precision_of = {str(l["id"]): l["expected_precision"] for l in lines}
    for tile in shown:
        marks = tile.find_elements(By.CSS_SELECTOR, ".right")
        want_precision = precision_of[tile.get_attribute("data-id")]
        if want_precision is None:
            assert marks == []
        else:
            assert marks[0].text == f"right {round(want_precision * 100)}%"
            assert marks[0].get_attribute("title").startswith("On held-out images, ")
    assert any(precision_of[t.get_attribute("data-id")] is not None for t in shown)

    # Next to the filter, each chosen tag's precision at this threshold (5 of 10 votes), from the card.
    def per_tag_shown():
        return {item.get_attribute("data-tag"): item.text
                for item in driver.find_elements(By.CSS_SELECTOR, "#tag-precision li")}

    def per_tag_wanted(votes):
        want = {}
        for tag in ("cat", "dog"):
            row = next(r for r in card["per_class_agreement"][tag] if r["min_votes"] == votes)
            want[tag] = (f"{tag} at ≥ {votes * 10}%: no test images" if row["precision"] is None else
                         f"{tag} at ≥ {votes * 10}%: right {round(row['precision'] * 100)}% ({row['images']:,} test images)")
        return want

    assert per_tag_shown() == per_tag_wanted(5)
    # While the slider moves (input events, before the page reloads), the script redoes the list.
    move = ("var s = document.getElementById('min-agreement'); s.value = arguments[0];"
            "s.dispatchEvent(new Event('input', {bubbles: true}));")
    driver.execute_script(move, "0.7")
    wait.until(lambda d: per_tag_shown() == per_tag_wanted(7))
    assert "7 of 10" in driver.find_element(By.ID, "precision-note").text
    driver.execute_script(move, "0.5")
    wait.until(lambda d: per_tag_shown() == per_tag_wanted(5))

    # Every image on the page really loaded (naturalWidth is 0 for a broken image).
    assert driver.execute_script(
        "return Array.from(document.querySelectorAll('#grid img')).every(i => i.complete && i.naturalWidth === 32)")

    # Page forward: the next images in order, none repeated.
    driver.find_element(By.ID, "next-page").click()
    loaded_with("cursor=")
    assert [t.get_attribute("data-id") for t in tiles()] == want[ROWS:2 * ROWS]
    assert f"showing {ROWS + 1}–{2 * ROWS}" in driver.find_element(By.ID, "results-summary").text
    wait.until(lambda d: d.execute_script(
        "return Array.from(document.querySelectorAll('#grid img')).every(i => i.complete && i.naturalWidth === 32)"))

    # Cursors only go forward; Previous walks back through the tab's history to the first page.
    driver.find_element(By.ID, "prev-page").click()
    wait.until(lambda d: "cursor=" not in d.current_url)
    assert [t.get_attribute("data-id") for t in tiles()] == want[:ROWS]
    driver.find_element(By.ID, "next-page").click()
    loaded_with("cursor=")

    # The URL holds the whole search: reloading it shows the same page.
    driver.get(driver.current_url)
    assert [t.get_attribute("data-id") for t in tiles()] == want[ROWS:2 * ROWS]

    # The whole page, not just the first screen: make the viewport as tall as the document.
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": 1440, "height": min(height, 2400), "deviceScaleFactor": 1, "mobile": False})
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    assert driver.save_screenshot(str(SCREENSHOT))
    assert SCREENSHOT.stat().st_size > 20_000


def test_bad_search_shows_a_friendly_notice_not_a_trace(driver, site):
    from selenium.webdriver.common.by import By

    base, _, _ = site
    driver.get(f"{base}/?tags=<script>window.hacked=1</script>&min_agreement=0.2")
    notice = driver.find_element(By.ID, "search-error").text
    assert "unknown tag '<script>window.hacked=1</script>'" in notice
    assert driver.execute_script("return window.hacked === undefined")
    assert "Traceback" not in driver.page_source
