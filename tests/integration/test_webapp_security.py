"""Web app hardening against the real Solr: security headers on every answer, a CSP that fits the
pages as served, no stack traces, Solr timeouts, a bounded number of uploads classified at once,
and the upload and decompression-bomb limits."""

from __future__ import annotations

import io
import socket
import threading
import time
from html.parser import HTMLParser

import pytest
import requests

from tests.helpers import _png_header, hwc_of, make_lines, png_of
from tinytags.core.solr_docs import to_solr_docs
from webapp import create_app

pytestmark = pytest.mark.integration

FRAME_DENIED = "frame-ancestors 'none'"


def _directives(policy: str) -> dict[str, list[str]]:
    parts = (part.split() for part in policy.split(";") if part.strip())
    return {words[0]: words[1:] for words in parts}


def _assert_hardened(response, what):
    headers = response.headers
    assert headers.get("X-Content-Type-Options") == "nosniff", what
    assert headers.get("X-Frame-Options") == "DENY", what
    assert headers.get("Referrer-Policy") == "same-origin", what
    policy = _directives(headers.get("Content-Security-Policy", ""))
    assert policy.get("frame-ancestors") == ["'none'"], what
    assert "'unsafe-inline'" not in policy.get("script-src", policy.get("default-src", [])), what
    assert b"Traceback" not in response.get_data(), what


def _upload(data: bytes, name: str = "x.png"):
    return {"data": {"image": (io.BytesIO(data), name)}, "content_type": "multipart/form-data"}


def test_every_answer_carries_the_security_headers(loaded, model_dir, unreachable_solr_url):
    path, _, _ = model_dir
    client = create_app({"SOLR_URL": loaded.url, "MODEL_DIR": str(path), "TESTING": True,
                         "MAX_CONTENT_LENGTH": 10_000}).test_client()
    first = loaded.lines[0]["id"]
    answers = {
        "search page": client.get("/?tags=cat"), "image page": client.get(f"/images/{first}"),
        "stats page": client.get("/stats"), "classify page": client.get("/classify"),
        "API search": client.get("/api/search?tags=cat"), "PNG": client.get(f"/api/images/{first}.png"),
        "document": client.get(f"/api/documents/{first}"), "similar": client.get(f"/api/similar/{first}"),
        "health": client.get("/api/health"), "style sheet": client.get("/static/style.css"),
        "script": client.get("/static/search.js"),
        "400": client.get("/api/search?min_agreement=2"), "400 page": client.get("/?min_agreement=2"),
        "404": client.get("/api/nothing"), "404 page": client.get("/nothing"),
        "405": client.post("/api/search"), "413": client.post("/api/classify", **_upload(b"\0" * 20_000)),
        "413 page": client.post("/classify", **_upload(b"\0" * 20_000)),
        "503": create_app({"SOLR_URL": unreachable_solr_url, "TESTING": True}).test_client().get("/api/search"),
    }
    statuses = {what: response.status_code for what, response in answers.items()}
    assert statuses == {**{what: 200 for what in answers}, "400": 400, "400 page": 400, "404": 404, "404 page": 404,
                        "405": 405, "413": 413, "413 page": 413, "503": 503}
    for what, response in answers.items():
        _assert_hardened(response, what)
    # Pages get the page policy (own script and styles); everything else may load nothing.
    assert "script-src" in answers["search page"].headers["Content-Security-Policy"]
    assert _directives(answers["API search"].headers["Content-Security-Policy"])["default-src"] == ["'none'"]


class _Page(HTMLParser):
    """What of a page a Content-Security-Policy decides: scripts, styles, handlers, URLs."""

    def __init__(self):
        super().__init__()
        self.scripts, self.style_elements, self.handlers, self.urls, self.style_attributes = [], 0, [], [], 0
        self._in_script = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.handlers += [name for name in attrs if name.startswith("on")]
        self.style_attributes += "style" in attrs
        for name in ("src", "href", "action"):
            if attrs.get(name) is not None:
                self.urls.append((tag, name, attrs[name]))
        if tag == "style":
            self.style_elements += 1
        if tag == "script":
            self._in_script = {"src": attrs.get("src"), "type": attrs.get("type"), "code": ""}
            self.scripts.append(self._in_script)

    def handle_endtag(self, tag):
        if tag == "script":
            self._in_script = None

    def handle_data(self, data):
        if self._in_script is not None:
            self._in_script["code"] += data


def test_the_page_policy_fits_every_page_as_served(loaded, model_dir):
    path, _, _ = model_dir
    client = create_app({"SOLR_URL": loaded.url, "MODEL_DIR": str(path), "TESTING": True}).test_client()
    line = loaded.lines[0]
    pages = {
        "search": client.get("/?tags=cat,dog&min_agreement=0.5"), "image": client.get(f"/images/{line['id']}"),
        "stats": client.get("/stats"), "classify": client.get("/classify"),
        "classified": client.post("/classify", **_upload(png_of(hwc_of(line)))),
        "error": client.get("/?min_agreement=2"),
    }
    seen_style_attributes = 0
    for name, response in pages.items():
        policy = _directives(response.headers["Content-Security-Policy"])
        assert policy["script-src"] == ["'self'"] and policy["style-src-elem"] == ["'self'"], name
        assert policy["object-src"] == ["'none'"] and policy["base-uri"] == ["'none'"], name
        page = _Page()
        page.feed(response.get_data(as_text=True))
        # Script only from our own files; inline <script> only as JSON data, which never runs.
        for script in page.scripts:
            if script["src"]:
                assert script["src"].startswith("/static/") and not script["code"].strip(), (name, script)
            else:
                assert script["type"] == "application/json", (name, script)
        assert page.style_elements == 0 and page.handlers == [], name
        for tag, attribute, url in page.urls:
            assert not url.lower().startswith("javascript:"), (name, url)
            if tag in ("script", "link", "img") and attribute in ("src", "href"):
                # 'self' (a path), or data: where img-src allows it (the upload shown back, the icon)
                assert url.startswith("/") and not url.startswith("//") or (
                    url.startswith("data:") and tag in ("img", "link")), (name, tag, url)
            if attribute == "action":
                assert url.startswith("/") and not url.startswith("//"), (name, url)
        seen_style_attributes += page.style_attributes
    # The bars are inline style attributes, which is why style-src keeps 'unsafe-inline'.
    assert seen_style_attributes > 0
    assert "'unsafe-inline'" in _directives(pages["stats"].headers["Content-Security-Policy"])["style-src"]


def test_an_internal_error_shows_no_trace_even_with_flask_debug_set(solr_core, monkeypatch):
    monkeypatch.setenv("FLASK_DEBUG", "1")
    line = make_lines(1)[0]
    doc = to_solr_docs([line])
    doc[0]["pixels"] = "AAAA"  # 3 bytes, not 3072: Solr stores it, our PNG renderer cannot use it
    response = requests.post(f"{solr_core}/update", params={"commit": "true"}, json=doc, timeout=60)
    assert response.status_code == 200, response.text
    app = create_app({"SOLR_URL": solr_core, "TESTING": True})
    assert app.debug is False
    answer = app.test_client().get(f"/api/images/{line['id']}.png")
    text = answer.get_data(as_text=True)
    assert answer.status_code == 500 and answer.get_json() == {"error": "Something went wrong on our side; it has been logged."}
    for leak in ("Traceback", "ValueError", "3072", "pixels", ".py"):
        assert leak not in text


class _Silent:
    """A TCP server that accepts connections and never answers: a Solr that hangs."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.held, self.open = [], True
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while self.open:
            try:
                self.held.append(self.sock.accept()[0])
            except OSError:
                return

    def close(self):
        self.open = False
        for connection in self.held:
            connection.close()
        self.sock.close()


def test_a_hanging_solr_answers_503_after_the_solr_timeout(monkeypatch):
    silent = _Silent()
    try:
        monkeypatch.setenv("TINYTAGS_SOLR_TIMEOUT", "0.5")
        url = f"http://127.0.0.1:{silent.sock.getsockname()[1]}/solr/tinytags"
        client = create_app({"SOLR_URL": url, "TESTING": True}).test_client()
        for path in ("/api/search", "/api/health"):
            began = time.monotonic()
            response = client.get(path)
            took = time.monotonic() - began
            assert response.status_code == 503 and "not answering" in response.get_json()["error"], path
            assert 0.4 < took < 3.0, (path, took)  # the timeout, not the default 5 s, not forever
    finally:
        silent.close()


def test_classification_beyond_the_slots_gets_503_with_retry_after(loaded, model_dir):
    path, _, _ = model_dir
    app = create_app({"SOLR_URL": loaded.url, "MODEL_DIR": str(path), "TESTING": True,
                      "CLASSIFY_SLOTS": 2, "CLASSIFY_WAIT": 0.3})
    client = app.test_client()
    picture = png_of(hwc_of(loaded.lines[0]))
    slots = app.extensions["tinytags_classify_slots"]
    # Two classifications in progress elsewhere (each holds a slot as classify_upload does).
    assert slots.acquire(blocking=False)
    assert client.post("/api/classify", **_upload(picture)).status_code == 200  # one slot still free
    assert slots.acquire(blocking=False)
    try:
        began = time.monotonic()
        busy = client.post("/api/classify", **_upload(picture))
        waited = time.monotonic() - began
        assert busy.status_code == 503 and busy.headers["Retry-After"] == "5"
        assert "busy" in busy.get_json()["error"] and 0.3 <= waited < 2.0
        page = client.post("/classify", **_upload(picture))
        assert page.status_code == 503 and page.headers["Retry-After"] == "5"
        assert "The classifier is busy" in page.get_data(as_text=True)
        _assert_hardened(page, "busy page")
    finally:
        slots.release()
        slots.release()
    again = client.post("/api/classify", **_upload(picture))
    assert again.status_code == 200 and again.get_json()["similar"]["results"][0]["id"] == str(loaded.lines[0]["id"])
    # Every slot came back: a failed classification releases its slot too.
    assert client.post("/api/classify", **_upload(b"not an image")).status_code == 400
    assert all(slots.acquire(blocking=False) for _ in range(2)) and not slots.acquire(blocking=False)


def test_slots_come_from_the_environment_and_must_be_positive(monkeypatch):
    monkeypatch.setenv("TINYTAGS_CLASSIFY_SLOTS", "3")
    monkeypatch.setenv("TINYTAGS_CLASSIFY_WAIT", "0.25")
    app = create_app({"TESTING": True})
    assert (app.config["CLASSIFY_SLOTS"], app.config["CLASSIFY_WAIT"]) == (3, 0.25)
    monkeypatch.setenv("TINYTAGS_CLASSIFY_SLOTS", "0")
    with pytest.raises(ValueError, match="TINYTAGS_CLASSIFY_SLOTS"):
        create_app({"TESTING": True})


@pytest.mark.parametrize("data, status, says", [
    (_png_header(30000, 30000), 400, "decompression bomb"),  # a few bytes claiming 900 megapixels
    (_png_header(5000, 4000), 400, "5000x4000 is too large"),
    (b"\0" * 60_000, 413, "at most 50,000 bytes"),
])
def test_uploads_beyond_the_limits_are_refused_on_both_routes(loaded, model_dir, data, status, says):
    path, _, _ = model_dir
    client = create_app({"SOLR_URL": loaded.url, "MODEL_DIR": str(path), "TESTING": True,
                         "MAX_CONTENT_LENGTH": 50_000}).test_client()
    api = client.post("/api/classify", **_upload(data))
    assert api.status_code == status and says in api.get_json()["error"]
    page = client.post("/classify", **_upload(data))
    assert page.status_code == status and says in page.get_data(as_text=True)


@pytest.mark.browser
@pytest.mark.slow
def test_a_real_browser_reports_no_policy_violation_on_any_page(loaded, model_dir, tmp_path):
    """Headless Chromium loads every page and runs its script; its console must hold no CSP refusal.
    A probe page that breaks the policy on purpose proves that refusals do reach the console."""
    import shutil

    from werkzeug.serving import make_server

    from tests.helpers import IN_CI

    chromium, chromedriver = shutil.which("chromium") or shutil.which("chromium-browser"), shutil.which("chromedriver")
    if not (chromium and chromedriver):
        message = "chromium and chromedriver are needed (apt-get install chromium chromium-driver)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    path, _, _ = model_dir
    app = create_app({"SOLR_URL": loaded.url, "MODEL_DIR": str(path)})
    app.add_url_rule("/csp-probe", "csp_probe", lambda: (
        "<!doctype html><title>probe</title><style>body{color:red}</style>"
        "<script>document.title='ran'</script><p onclick=\"x()\">probe</p>"))
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", f"--user-data-dir={tmp_path / 'chromium'}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    browser = webdriver.Chrome(service=Service(chromedriver), options=options)
    base = f"http://127.0.0.1:{server.server_port}"
    try:
        def refusals(page: str) -> list[str]:
            browser.get(base + page)
            browser.execute_script("return document.readyState")
            time.sleep(0.3)  # deferred script and late images
            return [entry["message"] for entry in browser.get_log("browser")
                    if "Content Security Policy" in entry["message"] or "Refused to" in entry["message"]]

        probe = refusals("/csp-probe")
        assert any("style" in m for m in probe) and any("script" in m for m in probe), probe
        assert browser.title == "probe"  # the inline script did not run
        first = loaded.lines[0]["id"]
        for page in ("/", "/?tags=cat,dog&min_agreement=0.5&sort=id_asc", "/stats", "/classify",
                     f"/images/{first}", "/?min_agreement=2", "/nothing-here"):
            assert refusals(page) == [], page
    finally:
        browser.quit()
        server.shutdown()
        thread.join(timeout=10)
