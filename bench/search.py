"""bench/search: latency and throughput of /api/search and /api/similar at scale, beside the original way.

    .venv/bin/python -m bench.search                       # 1,000,000 documents, 16 clients
    .venv/bin/python -m bench.search --docs 50000 --duration 10
    .venv/bin/python -m bench.search --reuse               # keep the loaded bench core from last time
    .venv/bin/python -m bench.search --load-only           # load the core now, measure later with --reuse
    .venv/bin/python -m bench.search --reuse --targets every,similar,during --during-index 500000

It (1) loads its own Solr core (default ``tinytags_bench``, made with CoreAdmin from the
``tinytags`` configset) with generated documents built by tinytags.core.solr_docs.to_solr_docs,
bulk-POSTed as JSON to /update and committed once; with --reuse an existing core holding exactly
--docs documents is used as it is, and one holding fewer is topped up; the core is kept
afterwards (--drop removes it); (2) serves the app with gunicorn (--app-setting adds settings);
(3) sends requests from --clients concurrent keep-alive clients for --duration seconds to each
target of --targets:
  - mix: GET /api/search over a fixed mix of tags, agreement ranges, the two index-ordered
    sorts, first pages and page 21; nocache: the same with the app's caches off
  - every: GET /api/search over every sort, tags and thresholds, pages 1, 2 and 6 (cursors from
    the app), each sort's figures apart; beside it the original way, each page one Solr query
    sorted as asked
  - similar: GET /api/similar/<id>?tags=<tag> over many distinct images, as configured (exact or
    HNSW by the number of matches) and the original way (HNSW always)
  - solr: the /select pair the app sends per search of the mix (the floor), and the original
    UI's page query (every match counted, pixels returned)
  - during: --during-index new documents fed to the core (--feed-batch per POST, a commit every
    --commit-every) alone, then while the every target's searches run (and again with the app's
    TINYTAGS_SOLR_POOL at --during-pool): search p95 against idle, docs/s against alone
and prints p50/p95/p99 latency and requests/s side by side, with the goals' verdicts.
Clients, Solr and gunicorn share the machine: figures are for the whole box under that load.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlencode

import numpy as np
import requests

from bench.load import Request, load
from tinytags.core.contract import CLASSES
from tinytags.core.images import RECORD_BYTES
from tinytags.core.solr_docs import to_solr_docs
from tinytags.io.solr import SolrClient
from tinytags.settings import stack_settings
from webapp.queries import SORTS, Search, facet_params, results_params

ROOT = Path(__file__).resolve().parent.parent

TREES = 10
MODEL = "0be0c4a1b2d3"


def log(message: str) -> None:
    print(f"[bench/search {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def solr_root(url: str) -> str:
    """Solr's root from TINYTAGS_SOLR_URL, whether that names the root or a core under it."""
    url = url.rstrip("/")
    return url if url.endswith("/solr") else url.rsplit("/", 1)[0]


# ---------------------------------------------------------------- documents

def generate_lines(start: int, count: int, seed: int) -> list[dict]:
    """Tag-output JSON lines for images start..start+count: random pixels, votes like a 10-tree forest."""
    rng = np.random.default_rng([seed, start])
    labels = rng.integers(0, len(CLASSES), count)
    # Agreement is kept >= 0.4 by the tag job; lower vote counts are more common.
    votes = rng.choice(np.arange(4, TREES + 1), count, p=[.24, .21, .17, .14, .11, .08, .05])
    rest = TREES - votes
    first = np.minimum(rest, votes - 1)          # the runner-up stays below the winner
    second = rest - first                        # at most votes - 1 as well (rest <= 6)
    offset1 = rng.integers(1, len(CLASSES), count)
    offset2 = offset1 % (len(CLASSES) - 1) + 1   # another class, never the winner nor the runner-up
    counts = np.zeros((count, len(CLASSES)), np.int64)
    rows = np.arange(count)
    counts[rows, labels] = votes
    counts[rows, (labels + offset1) % len(CLASSES)] += first
    counts[rows, (labels + offset2) % len(CLASSES)] += second
    pixels = rng.integers(0, 256, (count, RECORD_BYTES), dtype=np.uint8)
    lines = []
    for i in range(count):
        # Spread over the 79M Tiny Images ids, as a tagged subset would be.
        image_id = (start + i) * 79
        lines.append({
            "id": image_id, "block": image_id // 20_000, "label": int(labels[i]),
            "tag": CLASSES[labels[i]], "votes": int(votes[i]), "agreement": int(votes[i]) / TREES,
            "vote_counts": counts[i].tolist(), "model": MODEL,
            "pixels": base64.b64encode(pixels[i].tobytes()).decode(),
        })
    return lines


def core_doc_count(root: str, core: str) -> int | None:
    """Documents in a core, or None when it does not exist."""
    status = requests.get(f"{root}/admin/cores", params={"action": "STATUS", "core": core, "wt": "json"}, timeout=60)
    status.raise_for_status()
    info = status.json()["status"].get(core) or {}
    return info.get("index", {}).get("numDocs") if info else None


def core_index(root: str, core: str) -> dict:
    """CoreAdmin's index figures of a core (sizeInBytes, segmentCount, numDocs, ...)."""
    status = requests.get(f"{root}/admin/cores", params={"action": "STATUS", "core": core, "wt": "json"}, timeout=60)
    return status.json()["status"][core]["index"]


def core_bytes(root: str, core: str) -> int:
    """The core's index size on disk."""
    return int(core_index(root, core)["sizeInBytes"])


def merge_core(root: str, core: str, max_segments: int) -> None:
    """Merge a core down to at most max_segments segments (what jobs/index.py --merge-segments does)."""
    have = core_index(root, core)["segmentCount"]
    if have <= max_segments:
        return
    log(f"merging core {core}: {have} segments -> at most {max_segments} (minutes at 1M documents)")
    began = time.monotonic()
    SolrClient(f"{root}/{core}", timeout=7200).merge_segments(max_segments)
    log(f"merged in {time.monotonic() - began:,.0f} s")


def growth_table(rows: list[tuple[int, dict[str, dict], int]], target_docs: int = 50_000_000) -> str:
    """p95 of every target at every size, the growth from the smallest to the largest size, and
    a power-law extrapolation (p95 = a * docs^k through the two ends) to target_docs with the disk."""
    names = list(rows[0][1])
    head = "| target | " + " | ".join(f"p95 ms at {docs:,}" for docs, _, _ in rows) + \
        f" | largest / smallest | extrapolated to {target_docs:,} |"
    lines = [head, "|---|" + "---:|" * (len(rows) + 2)]
    (small, first, _), (large, last, size_large) = rows[0], rows[-1]
    for name in names:
        cells = [f"{figures[name]['all'].get('p95', float('nan')):.1f}" for _, figures, _ in rows]
        a, b = first[name]["all"].get("p95"), last[name]["all"].get("p95")
        if a and b and large > small:
            k = np.log(b / a) / np.log(large / small)
            extra = f"{b * (target_docs / large) ** k:,.0f} ms (k={k:.2f})"
            ratio = f"{b / a:.2f}x"
        else:
            extra = ratio = "–"
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {ratio} | {extra} |")
    per_doc = size_large / large
    lines += ["", f"disk: {per_doc:,.0f} bytes per document at {large:,} documents (pixels, vectors, HNSW graph, "
                  f"doc values) -> about {per_doc * target_docs / 1e9:,.0f} GB for {target_docs:,} documents"]
    return "\n".join(lines)


def prepare_core(root: str, core: str, docs: int, reuse: bool, batch: int, seed: int) -> str:
    """A core holding exactly `docs` generated documents; with --reuse an existing core is kept when it
    matches, and topped up when it holds fewer (the first of the same documents a fresh load makes)."""
    url = f"{root}/{core}"
    have = core_doc_count(root, core)
    if reuse and have == docs:
        log(f"reusing core {core} with {have:,} documents")
        return url
    if reuse and have and have < docs and have % batch == 0:
        log(f"topping up core {core} from {have:,} to {docs:,} documents")
        feed(url, have, docs - have, batch, seed)
        requests.get(f"{url}/update", params={"commit": "true", "wt": "json"}, timeout=3600).raise_for_status()
        return url
    if have is not None:
        log(f"dropping core {core} ({have:,} documents; want {docs:,})")
        drop_core(root, core)
    created = requests.get(f"{root}/admin/cores", timeout=120, params={
        "action": "CREATE", "name": core, "configSet": "tinytags", "wt": "json"})
    if created.status_code != 200:
        raise SystemExit(f"could not create core {core} at {root}: {created.text[:300]}")
    started = time.monotonic()
    feed(url, 0, docs, batch, seed)
    log("committing (builds the k-NN graph; minutes at 1M)")
    requests.get(f"{url}/update", params={"commit": "true", "wt": "json"}, timeout=3600).raise_for_status()
    have = core_doc_count(root, core)
    if have != docs:
        raise SystemExit(f"core {core} holds {have} documents after loading, expected {docs}")
    log(f"core {core} ready: {docs:,} documents in {time.monotonic() - started:,.0f} s")
    return url


def feed(url: str, first: int, count: int, batch: int, seed: int, commit_every: int = 0,
         stop: threading.Event | None = None) -> list[tuple[float, int]]:
    """Bulk-POST generated documents first..first+count (ids i * 79) to a core, committing every
    `commit_every` documents (0: never); -> (time.monotonic(), documents sent so far) after each batch."""
    session = requests.Session()
    started = time.monotonic()
    progress = [(started, 0)]

    def body_of(start: int) -> str:
        return json.dumps(to_solr_docs(generate_lines(start, min(batch, first + count - start), seed)))

    # The next batch is built while Solr indexes this one (Solr, not Python, is the slow side).
    with ThreadPoolExecutor(1) as builder:
        upcoming = builder.submit(body_of, first)
        for start in range(first, first + count, batch):
            if stop is not None and stop.is_set():
                break
            body = upcoming.result()
            if start + batch < first + count:
                upcoming = builder.submit(body_of, start + batch)
            response = session.post(f"{url}/update", data=body, timeout=600,
                                    headers={"Content-Type": "application/json"})
            if response.status_code != 200:
                raise SystemExit(f"loading {url} failed at document {start}: {response.text[:300]}")
            done = min(start + batch, first + count) - first
            if commit_every and done // commit_every != (done - batch) // commit_every:
                session.get(f"{url}/update", params={"commit": "true", "wt": "json"}, timeout=3600).raise_for_status()
            progress.append((time.monotonic(), done))
            if done % (10 * batch) == 0 or done == count:
                log(f"loaded {done:,}/{count:,} documents ({done / (time.monotonic() - started):,.0f}/s)")
    return progress


def docs_per_second(progress: list[tuple[float, int]], ended: float) -> float:
    """Documents per second a feed reached by a moment (from its progress; when not even its first
    batch was done by then, up to that batch)."""
    (start, _), done = progress[0], [(t, n) for t, n in progress[1:] if t <= ended]
    t, n = done[-1] if done else progress[1] if len(progress) > 1 else (ended, 0)
    return n / (t - start)


def delete_fed(url: str, first: int) -> None:
    """Remove what feed() added from `first` on, so the bench core holds its --docs again."""
    requests.post(f"{url}/update", params={"commit": "true", "wt": "json"}, timeout=3600,
                  json={"delete": {"query": f"image_id:[{first * 79} TO *]"}}).raise_for_status()


def drop_core(root: str, core: str) -> None:
    requests.get(f"{root}/admin/cores", timeout=300, params={
        "action": "UNLOAD", "core": core, "deleteInstanceDir": "true", "wt": "json"}).raise_for_status()


# ---------------------------------------------------------------- the app under gunicorn

def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_app(core_url: str, workers: int, threads: int, settings: dict[str, str]) -> tuple[subprocess.Popen, str]:
    """gunicorn serving webapp:create_app() on a free port (with these TINYTAGS_* settings, the
    rest at their defaults); returns (process, base URL) once it answers."""
    port = free_port()
    gunicorn = Path(sys.executable).parent / "gunicorn"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TINYTAGS_")}
    env.update(TINYTAGS_SOLR_URL=core_url, **settings)
    process = subprocess.Popen(
        [str(gunicorn), "webapp:create_app()", "-b", f"127.0.0.1:{port}", "-k", "gthread",
         "--workers", str(workers), "--threads", str(threads), "--log-level", "warning"],
        cwd=ROOT, env=env, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"gunicorn exited with {process.returncode}")
        try:
            if requests.get(f"{base}/api/search?rows=0", timeout=5).status_code == 200:
                return process, base
        except requests.ConnectionError:
            pass
        time.sleep(0.3)
    stop_app(process)
    raise SystemExit("gunicorn did not answer within 60 s")


def stop_app(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


# ---------------------------------------------------------------- the query mix

def searches(rows: int) -> list[Search]:
    """A fixed mix of what people search: one or a few tags or all, agreement ranges, both sorts."""
    mix = []
    for tags in [(), ("cat",), ("dog",), ("cat", "dog"), ("airplane", "ship"), ("truck",), ("bird", "frog", "deer"),
                 ("horse",), ("automobile", "truck")]:
        for low, high in [(0.0, 1.0), (0.5, 1.0), (0.7, 1.0), (0.4, 0.6)]:
            for sort in ("agreement_desc", "id_asc"):
                mix.append(Search(tags=tags, min_agreement=low, max_agreement=high, sort=sort, rows=rows))
    return mix


def every_search(rows: int) -> list[Search]:
    """The API's whole space, not only the bench's mix: every sort, thresholds up to 0.9, 0-3 tags."""
    mix = []
    for tags in [(), ("cat",), ("ship",), ("dog", "horse"), ("airplane", "bird", "truck"), ("frog", "deer")]:
        for low, high in [(0.0, 1.0), (0.6, 1.0), (0.9, 1.0), (0.4, 0.5), (0.5, 0.8)]:
            for sort in SORTS:
                mix.append(Search(tags=tags, min_agreement=low, max_agreement=high, sort=sort, rows=rows))
    return mix


def with_depths(core_url: str, mix: list[Search], depths: tuple[int, ...]) -> list[Search]:
    """Each search's first page plus its pages at these depths (Solr's cursors, fetched beforehand)."""
    out = []
    for search in mix:
        out.append(search)
        cursor, page = "*", 0
        for depth in depths:
            while page < depth:
                answer = requests.get(f"{core_url}/select", params=results_params(replace(search, cursor=cursor)),
                                      timeout=60).json()
                cursor, page = answer["nextCursorMark"], page + 1
            out.append(replace(search, cursor=cursor))
    return out


def app_depths(base: str, mix: list[Search], depths: tuple[int, ...]) -> list[Search]:
    """Each search's first page plus its pages at these depths, with the app's own cursors (the
    API's next_cursor: some orders page through the app, not Solr alone)."""
    out = []
    session = requests.Session()
    for search in mix:
        out.append(search)
        cursor, page = "*", 0
        for depth in depths:
            while page < depth and cursor is not None:
                answer = session.get(f"{base}/api/search?{replace(search, cursor=cursor).query_string()}", timeout=60)
                answer.raise_for_status()
                cursor, page = answer.json()["next_cursor"], page + 1
            if cursor is not None:
                out.append(replace(search, cursor=cursor))
    return out


SIMILAR_PROBES = 4000


def similar_requests(base: str, docs: int, seed: int, count: int = SIMILAR_PROBES) -> list[Request]:
    """GET /api/similar/<id>?tags=<tag>: the images nearest one, among one tag's (bench ids are i * 79).

    Many distinct (image, tag) pairs, so that a repeated request (which Solr's result cache would
    answer) is rare."""
    rng = random.Random(seed)
    return [(("first",), [f"{base}/api/similar/{rng.randrange(docs) * 79}?rows=12&tags={rng.choice(CLASSES)}"])
            for _ in range(count)]




def _kind(search: Search) -> tuple[str, ...]:
    return ("first" if search.cursor == "*" else "deep",)


def app_requests(base: str, mix: list[Search]) -> list[Request]:
    """One GET /api/search per search."""
    return [(_kind(s), [f"{base}/api/search?{s.query_string()}"]) for s in mix]


def every_sort_requests(base: str, pages: list[Search]) -> list[Request]:
    """One GET /api/search per page, labelled by its sort too (each sort's figures apart)."""
    return [((*_kind(s), s.sort), [f"{base}/api/search?{s.query_string()}"]) for s in pages]


def solr_requests(core_url: str, mix: list[Search]) -> dict[str, list[Request]]:
    """The Solr-direct targets, the same searches in the same order."""
    select = f"{core_url}/select?"
    original_fields = "id,tag,agreement,votes,pixels"

    def original(search: Search) -> str:
        # The original UI's query: q=*:*, every match counted, pixels for the browser to draw.
        params = [(k, {"fl": original_fields, "q": "*:*"}.get(k, v)) for k, v in results_params(search)
                  if k != "minExactCount"]
        return select + urlencode(params)

    return {
        # What the app asks Solr for one page (its tag counts are cached per index version).
        "solr: the app's page query": [(_kind(s), [select + urlencode(results_params(s))]) for s in mix],
        # The app's two queries with nothing cached: the page, then the tag counts.
        "solr: page + tag counts": [
            (_kind(s), [select + urlencode(results_params(s)), select + urlencode(facet_params(s))]) for s in mix],
        "original-style: /select + pixels": [(_kind(s), [original(s)]) for s in mix],
    }


def _row(name: str, f: dict[str, float]) -> str:
    if not f.get("requests"):
        return f"| {name} | – | – | – | – | {f.get('errors', 0)} |"
    return f"| {name} | {f['rps']:,.0f} | {f['p50']:.1f} | {f['p95']:.1f} | {f['p99']:.1f} | {f['errors']} |"


def report(figures: dict[str, dict[str, dict]], args, docs: int, load_avg: tuple[float, float],
           during: list[dict] | None = None) -> str:
    lines = [
        f"search bench: {docs:,} documents in {getattr(args, 'segments', '?')} segments, {args.clients} concurrent "
        f"clients, {args.duration:.0f} s per target "
        f"(after {args.warmup:.0f} s warm-up), rows={args.rows}, {len(searches(args.rows)) * 2} distinct searches "
        f"(each a first page and page {args.deep_page + 1}, picked at random; the every-sort target: "
        f"{len(every_search(args.rows))} searches x pages 1, 2 and 6), gunicorn gthread "
        f"{args.workers}x{args.threads}; {os.cpu_count()} cores, load average {load_avg[0]:.1f} before and "
        f"{load_avg[1]:.1f} after (clients, Solr and the app share the machine)",
        "",
        "| target | req/s | p50 ms | p95 ms | p99 ms | errors |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, parts in figures.items():
        lines.append(_row(name, parts["all"]))
    lines += ["", "first pages / deep pages apart:", "",
              "| target, pages | req/s | p50 ms | p95 ms | p99 ms | errors |", "|---|---:|---:|---:|---:|---:|"]
    for name, parts in figures.items():
        for kind in ("first", "deep"):
            if kind in parts:
                lines.append(_row(f"{name}, {kind}", parts[kind]))
    for name in (OURS_EVERY, SOLR_EVERY_PLAIN, *[run["name"] for run in during or []]):
        if name in figures:
            lines += ["", f"{name}, each sort apart:", "",
                      "| sort | req/s | p50 ms | p95 ms | p99 ms | errors |", "|---|---:|---:|---:|---:|---:|"]
            lines += [_row(sort, figures[name][sort]) for sort in SORTS if sort in figures[name]]
    ours = figures.get(OURS, {}).get("all", {})
    if ours.get("requests"):
        verdict = "met" if ours["p95"] < 30 else "NOT met"
        lines += ["", f"goal /api/search p95 < 30 ms at >= 1,000,000 documents: {verdict} "
                      f"(p95 {ours['p95']:.1f} ms at {docs:,} documents)"]
    every = figures.get(OURS_EVERY, {}).get("all", {})
    if every.get("requests"):
        verdict = "met" if every["p95"] < 30 else "NOT met"
        lines.append(f"goal every sort, thresholds, pages 1/2/6 p95 < 30 ms: {verdict} (p95 {every['p95']:.1f} ms)")
    similar = figures.get(SIMILAR, {}).get("all", {})
    if similar.get("requests"):
        verdict = "met" if similar["p95"] < 50 else "NOT met"
        lines.append(f"goal /api/similar with a tag filter p95 < 50 ms at >= 1,000,000 vectors: {verdict} "
                     f"(p95 {similar['p95']:.1f} ms at {docs:,})")
    for run in during or []:
        while_indexing = figures.get(run["name"], {}).get("all", {})
        if while_indexing.get("requests") and every.get("requests"):
            ratio, kept = while_indexing["p95"] / every["p95"], run["during"] / run["idle"]
            lines.append(f"{run['name']} ({run['documents']:,} documents): p95 {while_indexing['p95']:.1f} ms, "
                         f"{ratio:.2f}x idle (goal <= 2x: {'met' if ratio <= 2 else 'NOT met'}); the index run fed "
                         f"{run['during']:,.0f} docs/s against {run['idle']:,.0f} alone, {kept:.0%} "
                         f"(goal >= 50%: {'met' if kept >= 0.5 else 'NOT met'})")
    return "\n".join(lines)


OURS = "ours: /api/search"
OURS_NO_CACHE = "ours: /api/search, caches off"
OURS_EVERY = "ours: /api/search, every sort, pages 1/2/6"
SOLR_EVERY_PLAIN = "original: Solr, every sort as one sorted query, pages 1/2/6"
OURS_DURING = "ours: /api/search, every sort, pages 1/2/6, while indexing"
SIMILAR = "ours: /api/similar with a tag filter (exact or HNSW by the matches)"
SIMILAR_HNSW = "original: /api/similar with a tag filter, HNSW always"
NO_CACHES = {"TINYTAGS_SEARCH_CACHE_SECONDS": "0", "TINYTAGS_FACET_CACHE_SECONDS": "0"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--solr", default=solr_root(os.environ.get("TINYTAGS_SOLR_URL", stack_settings().solr_root)),
                        help="Solr root URL (env TINYTAGS_SOLR_URL; a core URL is cut to its root)")
    parser.add_argument("--core", default=os.environ.get("TINYTAGS_BENCH_CORE", "tinytags_bench"))
    parser.add_argument("--docs", type=int, default=int(os.environ.get("TINYTAGS_BENCH_DOCS", "1000000")))
    parser.add_argument("--sizes", help="comma-separated document counts: measure each (core CORE_<n>) and print "
                                        "the growth, e.g. 100000,1000000,3000000 (instead of --docs)")
    parser.add_argument("--reuse", action="store_true", help="use the bench core as it is if it holds --docs documents")
    parser.add_argument("--drop", action="store_true", help="remove the bench core afterwards")
    parser.add_argument("--batch", type=int, default=10_000, help="documents per bulk POST")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--processes", type=int, default=4, help="load-generator processes the clients are spread over")
    parser.add_argument("--duration", type=float, default=30.0, help="measured seconds per target")
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--rows", type=int, default=50)
    parser.add_argument("--deep-page", type=int, default=20, help="how deep the cursor pages in the mix are")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn worker processes")
    parser.add_argument("--threads", type=int, default=8, help="gunicorn threads per worker")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--skip-original", action="store_true", help="leave out the original-style target")
    parser.add_argument("--load-only", action="store_true", help="prepare the bench core, measure nothing")
    parser.add_argument("--targets", default="mix,nocache,every,similar,solr",
                        help="what to measure, comma-separated: mix (the bench mix), nocache (the same, caches off), "
                             "every (every sort, pages 1/2/6), similar (filtered similar images, both ways), solr "
                             "(the Solr-direct and original-style targets), during (search while indexing "
                             "--during-index documents, and that indexing beside idle)")
    parser.add_argument("--during-index", type=int, default=500_000, help="documents the during target indexes")
    parser.add_argument("--app-setting", action="append", default=[], metavar="TINYTAGS_NAME=VALUE",
                        help="a web app setting for every app this bench starts (repeatable), e.g. TINYTAGS_SOLR_POOL=4")
    parser.add_argument("--during-pool", type=int, default=0,
                        help="also measure search while indexing with the app's TINYTAGS_SOLR_POOL at this (0: not)")
    parser.add_argument("--feed-batch", type=int, default=2000,
                        help="documents per POST of the during target's index run (jobs/index.py's --batch-size)")
    parser.add_argument("--commit-every", type=int, default=160_000,
                        help="the during target's index run commits every this many documents (jobs/index.py: "
                             "8 blocks of 20,000 per wave)")
    parser.add_argument("--merge-segments", type=int, default=0,
                        help="merge the core down to at most this many segments before measuring (0: as loaded)")
    args = parser.parse_args(argv)
    args.app_env = {}
    for item in args.app_setting:
        name, _, value = item.partition("=")
        if not name.startswith("TINYTAGS_") or not value:
            parser.error(f"--app-setting takes TINYTAGS_NAME=VALUE, got {item!r}")
        args.app_env[name] = value

    if args.sizes:
        sizes = [int(n.replace("_", "")) for n in args.sizes.split(",") if n.strip()]
        rows = []
        for docs in sizes:
            core = f"{args.core}_{docs}"
            run_args = argparse.Namespace(**{**vars(args), "docs": docs, "core": core, "sizes": None})
            measured = measure_size(run_args)
            if measured is not None:
                rows.append((docs, *measured))
        if len(rows) > 1:
            print("\nsearch p95 as the index grows:\n")
            print(growth_table(rows))
        return 0
    return 0 if measure_size(args) is not None or args.load_only else 1


def measure_size(args) -> tuple[dict[str, dict], int] | None:
    """Load (or reuse) the core for args.docs, measure every target, print the report; -> (the
    figures, the core's bytes on disk)."""
    core_url = prepare_core(args.solr, args.core, args.docs, args.reuse, args.batch, args.seed)
    if args.merge_segments:
        merge_core(args.solr, args.core, args.merge_segments)
    if args.load_only:
        return None
    args.segments = core_index(args.solr, args.core)["segmentCount"]
    targets = set(args.targets.split(","))
    mix = with_depths(core_url, searches(args.rows), (args.deep_page,)) if targets & {"mix", "nocache", "solr"} else []
    load_before = os.getloadavg()[0]
    figures: dict[str, dict] = {}

    def measure(name: str, requests_: list[Request], duration: float | None = None) -> None:
        seconds = duration or args.duration
        log(f"{name}: {args.clients} clients for {args.warmup:.0f}+{seconds:.0f} s")
        figures[name] = load(requests_, args.clients, args.processes, args.warmup, seconds)
        log(f"{name}: {figures[name]['all']}")

    every_pages: list[Search] = []

    def every(base: str) -> list[Request]:
        if not every_pages:  # the app's cursors, fetched once (they stay valid: the index does not change)
            every_pages.extend(app_depths(base, every_search(args.rows), (1, 5)))
        return every_sort_requests(base, every_pages)

    for target, name, settings, requests_of in (
            ("mix", OURS, {}, lambda base: app_requests(base, mix)),
            ("nocache", OURS_NO_CACHE, NO_CACHES, lambda base: app_requests(base, mix)),
            ("every", OURS_EVERY, {}, every),
            ("similar", SIMILAR, {}, lambda base: similar_requests(base, args.docs, args.seed)),
            ("similar", SIMILAR_HNSW, {"TINYTAGS_SIMILAR_EXACT_MAX": "0"},
             lambda base: similar_requests(base, args.docs, args.seed))):
        if target not in targets:
            continue
        process, base = start_app(core_url, args.workers, args.threads, {**args.app_env, **settings})
        try:
            measure(name, requests_of(base))
        finally:
            stop_app(process)
    if "every" in targets:
        # The original way for the same searches and pages: one Solr query sorted as asked, Solr's cursor.
        select = f"{core_url}/select?"
        plain = [((*_kind(s), s.sort), [select + urlencode(results_params(s))])
                 for s in with_depths(core_url, every_search(args.rows), (1, 5))]
        measure(SOLR_EVERY_PLAIN, plain)
    if "solr" in targets:
        for name, requests_ in solr_requests(core_url, mix).items():
            if not (args.skip_original and name.startswith("original")):
                measure(name, requests_)
    during = [during_index(args, core_url, measure, every)] if "during" in targets else []
    if during and args.during_pool:
        # Again with each app process holding at most --during-pool Solr requests at once.
        during.append(during_index(args, core_url, measure, every, {"TINYTAGS_SOLR_POOL": str(args.during_pool)},
                                   f"{OURS_DURING}, TINYTAGS_SOLR_POOL={args.during_pool}", idle=during[0]["idle"]))
    size = core_bytes(args.solr, args.core)
    if args.drop:
        drop_core(args.solr, args.core)
    print(report(figures, args, args.docs, (load_before, os.getloadavg()[0]), during), flush=True)
    return figures, size


def during_index(args, core_url: str, measure, every, settings: dict[str, str] | None = None,
                 name: str = "", idle: float | None = None) -> dict[str, float]:
    """Search while indexing and indexing while searching: --during-index documents fed to the
    bench core (new ids, a commit every --commit-every, as jobs/index.py commits per wave) alone
    (unless its docs/s is given), then again while the every-sort searches run through an app with
    these settings; the fed documents are deleted after each run."""
    count, first = args.during_index, args.docs
    if idle is None:
        log(f"indexing {count:,} documents alone")
        progress = feed(core_url, first, count, args.feed_batch, args.seed + 1, args.commit_every)
        idle = count / (progress[-1][0] - progress[0][0])
        delete_fed(core_url, first)
    idle_rate = idle
    process, base = start_app(core_url, args.workers, args.threads, {**args.app_env, **(settings or {})})
    try:
        requests_ = every(base)
        # The searches run for as long as the index run is expected to take alone, so the two overlap fully.
        seconds = max(args.duration, count / idle_rate)
        progress_box: list = []
        stop = threading.Event()
        feeder = threading.Thread(target=lambda: progress_box.append(
            feed(core_url, first, count, args.feed_batch, args.seed + 1, args.commit_every, stop)))
        feeder.start()
        measure(name or OURS_DURING, requests_, seconds)
        ended = time.monotonic()
        stop.set()
        feeder.join()
    finally:
        stop_app(process)
    # Only the time both ran counts (the load generator's warm-up included).
    during_rate = docs_per_second(progress_box[0], ended)
    delete_fed(core_url, first)
    log(f"index docs/s alone {idle_rate:,.0f}, during searches {during_rate:,.0f}")
    return {"name": name or OURS_DURING, "documents": count, "idle": idle_rate, "during": during_rate}


if __name__ == "__main__":
    sys.exit(main())
