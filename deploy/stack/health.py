"""Health checks: how the supervisor knows that a service answers (compose's ``healthcheck``).

Each check is a small frozen value that is called with no arguments and returns True once the
service answers, False while it does not (never raising). They are values rather than lambdas so
that the services table reads as data and a test can compare them.
"""

from __future__ import annotations

import http.client
import json
import socket
import urllib.request
from dataclasses import dataclass
from typing import Callable

from tinytags.io.storage import FILE_ERRORS, Storage
from tinytags.settings import LOOPBACK


def port_in_use(port: int) -> bool:
    """True when something already listens on 127.0.0.1:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1)
        return sock.connect_ex((LOOPBACK, port)) == 0


def http_get(url: str, headers: dict[str, str] | None = None) -> bytes | None:
    """The body of a 200 answer, or None (no answer, another status, a timeout)."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=3) as response:
            return response.read() if response.status == 200 else None
    except (OSError, ValueError, http.client.HTTPException):
        return None


@dataclass(frozen=True)
class Http:
    """Answers 200 at ``url``, with ``contains`` in the body; ``headers`` is asked at each probe
    (the standalone Solr's login appears when `up --auth` writes its security.json)."""

    url: str
    contains: bytes = b""
    headers: Callable[[], dict[str, str]] | None = None

    def __call__(self) -> bool:
        body = http_get(self.url, self.headers() if self.headers else None)
        return body is not None and self.contains in body


@dataclass(frozen=True)
class Hdfs:
    """The NameNode is out of safe mode with a live DataNode, and the storage layer can read ``uri``.

    WebHDFS answers before the DataNode has reported its blocks; reading a file then fails with
    "No active and not excluded nodes contain this block". Safe mode ends once the blocks are in,
    which the NameNode's JMX page (plain HTTP) tells.
    """

    namenode_http: str  # http://127.0.0.1:9870
    uri: str  # hdfs://127.0.0.1:9000

    def __call__(self) -> bool:
        body = http_get(f"{self.namenode_http}/jmx?qry=Hadoop:service=NameNode,name=FSNamesystemState")
        try:
            state = json.loads(body)["beans"][0] if body else {}
        except (ValueError, TypeError, KeyError, IndexError):
            return False
        if state.get("FSState") != "Operational" or state.get("NumLiveDataNodes", 0) < 1:
            return False
        try:
            return Storage(webhdfs=self.namenode_http).status(self.uri + "/") is not None
        except FILE_ERRORS:
            return False


def live_datanodes(namenode_http: str) -> dict[str, dict]:
    """The DataNodes the NameNode counts live, by name (host:data port), with their addresses
    (``xferaddr``, ``infoAddr``); empty when it does not answer."""
    body = http_get(f"{namenode_http}/jmx?qry=Hadoop:service=NameNode,name=NameNodeInfo")
    try:
        return json.loads(json.loads(body)["beans"][0]["LiveNodes"]) if body else {}
    except (ValueError, TypeError, KeyError, IndexError):
        return {}


@dataclass(frozen=True)
class DataNode:
    """The NameNode counts the DataNode whose data transfer port is ``port`` live (it registered)."""

    namenode_http: str
    port: int

    def __call__(self) -> bool:
        return any(node.get("xferaddr", "").endswith(f":{self.port}")
                   for node in live_datanodes(self.namenode_http).values())


def alive_workers(master_ui: str) -> int:
    """How many workers the Spark master reports ALIVE (0 when it does not answer)."""
    body = http_get(f"{master_ui}/json/")
    try:
        workers = json.loads(body).get("workers", []) if body else []
    except (ValueError, AttributeError):
        return 0
    return sum(1 for worker in workers if worker.get("state") == "ALIVE")


@dataclass(frozen=True)
class SparkWorkers:
    """The Spark master counts at least ``count`` ALIVE workers (worker n waits for n)."""

    master_ui: str
    count: int

    def __call__(self) -> bool:
        return alive_workers(self.master_ui) >= self.count


@dataclass(frozen=True)
class ZooKeeper:
    """ZooKeeper answers its `ruok` four-letter command with `imok`."""

    port: int

    def __call__(self) -> bool:
        try:
            with socket.create_connection((LOOPBACK, self.port), timeout=3) as sock:
                sock.sendall(b"ruok")
                return sock.recv(16) == b"imok"
        except OSError:
            return False


@dataclass(frozen=True)
class YarnNode:
    """The ResourceManager lists the NodeManager on ``nm_port`` as RUNNING."""

    rm_web: str
    nm_port: int

    def __call__(self) -> bool:
        body = http_get(f"{self.rm_web}/ws/v1/cluster/nodes?states=RUNNING")
        try:
            nodes = ((json.loads(body).get("nodes") or {}).get("node") or []) if body else []
        except (ValueError, AttributeError):
            return False
        return any(str(node.get("id", "")).endswith(f":{self.nm_port}") for node in nodes)
