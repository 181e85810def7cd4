"""Solr with BasicAuth (`python -m deploy.stack up --auth`, security.json from deploy/solr_security.py):
the refusals Solr itself gives, the indexer as `indexer`, the web app as `search`.

The Solr here is a private one (its own stack dir and port, started and stopped by this module),
so the shared Solr of the other tests stays open.
"""

from __future__ import annotations

import html
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from jobs import index
from tests.helpers import MODEL_A, ROOT, hwc_of, make_lines, png_of, run_stack, spark_submit
from tinytags.io.solr import SolrAuthError
from tinytags.pipeline import index as index_pipeline
from webapp import create_app

pytestmark = pytest.mark.integration

os.environ.setdefault("PYSPARK_PYTHON", sys.executable)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _stack(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return run_stack(*args, env=env, timeout=300)


@pytest.fixture(scope="module")
def auth_solr(tmp_path_factory):
    """`python -m deploy.stack up --only solr --auth` in a stack dir of its own -> (core URL, password file per user)."""
    stack_dir = tmp_path_factory.mktemp("auth-stack")
    port = _free_port()
    env = {"TINYTAGS_STACK_DIR": str(stack_dir), "TINYTAGS_SOLR_PORT": str(port), "TINYTAGS_SOLR_HEAP": "512m"}
    up = _stack(env, "up", "--only", "solr", "--auth")
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        files = {user: stack_dir / "secrets" / f"solr-{user}.password" for user in ("admin", "indexer", "search")}
        for user, path in files.items():  # made once, readable by their owner only, named in the output
            assert path.stat().st_mode & 0o777 == 0o600 and str(path) in up.stdout, user
        # A running Solr keeps its mode: `up` without --auth says how to switch, and changes nothing.
        open_up = _stack(env, "up", "--only", "solr")
        assert open_up.returncode == 1 and "running with BasicAuth; to start it without, stop it first" in open_up.stderr
        assert (stack_dir / "data" / "solr" / "security.json").is_file()
        yield f"http://127.0.0.1:{port}/solr/tinytags", files
    finally:
        _stack(env, "down", "--only", "solr")


def _login(files: dict[str, Path], user: str) -> tuple[str, str]:
    return user, files[user].read_text().strip()


def _update(url: str, auth=None) -> requests.Response:
    return requests.post(f"{url}/update", json=[{"id": "1", "image_id": 1}], auth=auth, timeout=30)


def test_solr_refuses_anonymous_and_read_only_updates_and_lets_search_read(auth_solr):
    url, files = auth_solr
    assert _update(url).status_code == 401
    assert _update(url, _login(files, "search")).status_code == 403
    assert _update(url, ("search", "not-the-password")).status_code == 401
    read = requests.get(f"{url}/select", params={"q": "*:*", "rows": 0, "wt": "json"},
                        auth=_login(files, "search"), timeout=30)
    assert read.status_code == 200 and "numFound" in read.json()["response"]
    assert requests.get(f"{url}/select", params={"q": "*:*"}, timeout=30).status_code == 401
    # Core admin is the admin's alone; the health check needs no login (compose healthchecks).
    cores = url.rsplit("/", 1)[0] + "/admin/cores"
    assert requests.get(cores, params={"action": "STATUS"}, auth=_login(files, "indexer"), timeout=30).status_code == 403
    assert requests.get(cores, params={"action": "STATUS"}, auth=_login(files, "admin"), timeout=30).status_code == 200
    assert requests.get(url.rsplit("/", 1)[0] + "/admin/info/health", timeout=30).status_code == 200


def _tag_output(root: Path, lines: list[dict]) -> None:
    """A tag output as jobs/tag.py writes it: block=<n>/part-00000 JSON lines and the manifest."""
    blocks: dict[int, list[dict]] = {}
    for line in lines:
        blocks.setdefault(line["block"], []).append({**line, "model": MODEL_A})
    for block, block_lines in blocks.items():
        folder = root / f"block={block}"
        folder.mkdir(parents=True)
        (folder / "part-00000").write_text("".join(json.dumps(line) + "\n" for line in block_lines))
    manifest = {"model": MODEL_A, "min_agreement": 0.4,
                "blocks": {str(b): {"read": 100, "kept": len(ls), "dropped": 100 - len(ls)} for b, ls in blocks.items()}}
    (root / "_manifest.json").write_text(json.dumps(manifest))


def _use(monkeypatch, files: dict[str, Path] | None, user: str | None) -> None:
    monkeypatch.delenv("TINYTAGS_SOLR_PASSWORD", raising=False)
    if user is None:
        monkeypatch.delenv("TINYTAGS_SOLR_USER", raising=False)
        monkeypatch.delenv("TINYTAGS_SOLR_PASSWORD_FILE", raising=False)
    else:
        monkeypatch.setenv("TINYTAGS_SOLR_USER", user)
        monkeypatch.setenv("TINYTAGS_SOLR_PASSWORD_FILE", str(files[user]))


@pytest.mark.slow
def test_indexer_loads_as_indexer_and_the_web_app_finds_the_images_as_search(spark, auth_solr, tmp_path, monkeypatch):
    url, files = auth_solr
    lines = make_lines(120)
    out = tmp_path / "tags"
    _tag_output(out, lines)
    admin = _login(files, "admin")

    # Anonymous and read-only indexers are stopped before any block, with whom Solr refused.
    _use(monkeypatch, files, None)
    with pytest.raises(SolrAuthError, match="read the schema needs a login"):
        index_pipeline.run(spark, index.parse_args(["--input", str(out), "--solr", url]))
    _use(monkeypatch, files, "search")
    with pytest.raises(SolrAuthError, match="user 'search' is not allowed to commit"):
        index_pipeline.run(spark, index.parse_args(["--input", str(out), "--solr", url]))

    # As `indexer`. The variables are gone before the run: the Spark tasks can only log in with
    # the credentials that travel in their pickled client.
    _use(monkeypatch, files, "indexer")
    options = index.parse_args(["--input", str(out), "--solr", url, "--parallelism", "2", "--batch-size", "25"])
    _use(monkeypatch, files, None)
    summary = index_pipeline.run(spark, options)
    assert summary.exit_code == 0 and summary.failed == {}, summary.text()
    docs = requests.get(f"{url}/select", params={"q": "*:*", "rows": 1000, "fl": "id", "wt": "json"},
                        auth=admin, timeout=30).json()["response"]["docs"]
    assert sorted(int(d["id"]) for d in docs) == sorted(line["id"] for line in lines)

    # The web app as `search`, credentials from the environment as in compose (a password file).
    _use(monkeypatch, files, "search")
    client = create_app({"SOLR_URL": url, "TESTING": True}).test_client()
    found = client.get("/api/search", query_string={"tags": "cat", "rows": 200, "sort": "id_asc"}).get_json()
    cats = sorted(line["id"] for line in lines if line["tag"] == "cat")
    assert found["numFound"] == len(cats) and [int(r["id"]) for r in found["results"]] == cats
    assert client.get("/api/health").get_json() == {"status": "ok", "documents": len(lines)}
    png = client.get(f"/api/images/{lines[0]['id']}.png")
    assert png.status_code == 200 and png.data == png_of(hwc_of(lines[0]))


@pytest.mark.parametrize("user, password, says", [
    (None, None, "asks for a login the web app was not given"),
    ("search", "wrong", "did not accept the web app's login as 'search'"),
    ("nobody", "pw-of-nobody-7", "did not accept the web app's login as 'nobody'"),
])
def test_a_web_app_solr_refuses_answers_503_naming_the_user(auth_solr, tmp_path, monkeypatch, user, password, says):
    url, _ = auth_solr
    _use(monkeypatch, None, None)
    if user:
        monkeypatch.setenv("TINYTAGS_SOLR_USER", user)
        monkeypatch.setenv("TINYTAGS_SOLR_PASSWORD", password)
    client = create_app({"SOLR_URL": url, "TESTING": True}).test_client()
    for path in ("/api/search", "/api/health", "/api/similar/7"):
        response = client.get(path)
        assert response.status_code == 503, path
        body = response.get_json()
        assert says in body["error"] and "Traceback" not in response.get_data(as_text=True)
        assert not password or password not in body["error"]
    page = client.get("/")
    assert page.status_code == 503 and says in html.unescape(page.get_data(as_text=True))


def test_the_clients_403_names_the_user_and_what_was_refused(auth_solr):
    from tinytags.io.solr import SolrClient

    url, files = auth_solr
    client = SolrClient(url.rsplit("/", 1)[0] + "/admin", auth=_login(files, "search"))
    with pytest.raises(SolrAuthError, match="user 'search' is not allowed to core status") as refused:
        client.request("cores", query={"action": "STATUS", "wt": "json"}, method="GET", what="core status")
    assert refused.value.status == 403 and refused.value.user == "search"


@pytest.mark.slow
def test_spark_submit_of_the_indexer_as_search_stops_with_the_refusal(auth_solr, tmp_path, monkeypatch):
    url, files = auth_solr
    out = tmp_path / "tags"
    _tag_output(out, make_lines(20))
    _use(monkeypatch, files, "search")
    result = spark_submit(ROOT / "jobs" / "index.py", "--input", str(out), "--solr", url, master="local[1]")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "user 'search' is not allowed to commit" in result.stdout + result.stderr
    assert files["search"].read_text().strip() not in result.stdout + result.stderr
