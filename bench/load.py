"""Load generation for the benches: concurrent keep-alive HTTP clients over several processes.

Each client sends GET requests back to back, picked at random from a list, until the run's end; each
request is one user action and may cost several URLs (the app's page, or the Solr queries behind
it). Latencies are recorded after a warm-up, per label as well as overall. Processes (not only
threads) carry the clients, since one Python process could not keep 16 clients busy.
"""

from __future__ import annotations

import http.client
import random
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from urllib.parse import urlsplit

import numpy as np

Request = tuple[tuple[str, ...], list[str]]  # (labels: "first"/"deep", a sort, ...; the URLs one user request costs)


def _client(requests_: list[Request], stop_at: float, record_from: float, seed: int, out: list, errors: list) -> None:
    """One keep-alive client: requests back to back until stop_at; (kind, latency) after record_from."""
    rng = random.Random(seed)
    first = urlsplit(requests_[0][1][0])
    connection = http.client.HTTPConnection(first.hostname, first.port, timeout=30)
    paths = [(kind, [urlsplit(u)._replace(scheme="", netloc="").geturl() for u in urls]) for kind, urls in requests_]
    while True:
        kind, request = paths[rng.randrange(len(paths))]
        began = time.perf_counter()
        if began >= stop_at:
            break
        ok = True
        for path in request:
            try:
                connection.request("GET", path)
                response = connection.getresponse()
                response.read()
                ok = ok and response.status == 200
            except (OSError, http.client.HTTPException):
                connection.close()
                connection = http.client.HTTPConnection(first.hostname, first.port, timeout=30)
                ok = False
        ended = time.perf_counter()
        if began >= record_from:
            (out if ok else errors).append((kind, ended - began))
    connection.close()


def _process(requests_: list[Request], clients: int, start_at: float, warmup: float, duration: float, seed: int):
    out: list[tuple[str, float]] = []
    errors: list[tuple[str, float]] = []
    # Every process starts at the same wall-clock time, so all clients overlap fully.
    time.sleep(max(0.0, start_at - time.time()))
    now = time.perf_counter()
    threads = [threading.Thread(target=_client, args=(requests_, now + warmup + duration, now + warmup,
                                                      seed * 100 + i, out, errors)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return out, len(errors)


def _figures(latencies_ms: np.ndarray, duration: float, errors: int) -> dict[str, float]:
    if latencies_ms.size == 0:
        return {"requests": 0, "errors": errors}
    p50, p95, p99 = np.percentile(latencies_ms, [50, 95, 99])
    return {"requests": int(latencies_ms.size), "errors": errors, "rps": latencies_ms.size / duration,
            "p50": float(p50), "p95": float(p95), "p99": float(p99)}


def load(requests_: list[Request], clients: int, processes: int, warmup: float, duration: float) -> dict[str, dict]:
    """Run `clients` concurrent clients spread over `processes` (the GIL would cap one process).

    Returns figures for all requests, and for each label apart (first and deep pages, sorts)."""
    share = [clients // processes + (1 if i < clients % processes else 0) for i in range(processes)]
    start_at = time.time() + 1.5
    with ProcessPoolExecutor(processes) as pool:
        results = list(pool.map(_process, [requests_] * processes, share, [start_at] * processes,
                                [warmup] * processes, [duration] * processes, range(processes)))
    samples = [x for out, _ in results for x in out]
    errors = sum(e for _, e in results)
    every = np.array([ms for _, ms in samples]) * 1000.0
    figures = {"all": _figures(every, duration, errors)}
    for label in sorted({label for labels, _ in samples for label in labels}):
        figures[label] = _figures(np.array([ms for labels, ms in samples if label in labels]) * 1000.0, duration, 0)
    return figures
