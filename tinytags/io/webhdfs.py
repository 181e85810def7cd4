"""The hdfs:// backend of the storage layer (tinytags/io/storage.py): WebHDFS through HdfsCLI, from any
process (Spark's Python workers included), one client and connection pool per address and user.

A DataNode that dies under a read or a write is left out instead of failing the request: the
NameNode is asked again with it in WebHDFS's ``excludedatanodes`` (its data transfer address, which
the NameNode's JMX list of live DataNodes maps from the HTTP address its redirect named), and a read
goes on from the byte it had reached, on another replica. Without this, every request the NameNode
sends to a DataNode killed a moment ago (until it calls it stale) fails, and with it the Spark task,
which then waits for its retry. A write whose data went out already cannot be sent again: that one
still fails (the caller's task retry writes it anew).
"""

from __future__ import annotations

import contextlib
import io
import json
from urllib.parse import urlsplit

import requests
import urllib3
from hdfs import InsecureClient
from hdfs.util import HdfsError

from tinytags.io.storage import Entry, walk_listing

# What a DataNode dying under a request raises: refused or reset, or its stream cut short.
DATANODE_LOST = (requests.exceptions.ConnectionError, requests.exceptions.ChunkedEncodingError,
                 urllib3.exceptions.HTTPError, ConnectionError)


class WebHdfs:
    """One WebHDFS address and user (see the module docstring)."""

    def __init__(self, url, user):
        self.client = InsecureClient(url, user=user)
        self.url = url.rstrip("/")
        self._transfer: dict[str, str] = {}  # a DataNode's HTTP host:port -> its data transfer host:port

    @staticmethod
    def _path(path):
        return urlsplit(path).path or "/"

    def status(self, path):
        status = self.client.status(self._path(path), strict=False)
        if status is None:
            return None
        return ("dir" if status["type"] == "DIRECTORY" else "file", int(status["length"]))

    def list(self, folder):
        return [Entry(name, "dir" if s["type"] == "DIRECTORY" else "file", int(s["length"]))
                for name, s in self.client.list(self._path(folder), status=True)]

    def list_times(self, folder):
        return [(name, "dir" if s["type"] == "DIRECTORY" else "file", int(s["length"]), s["modificationTime"] / 1000)
                for name, s in self.client.list(self._path(folder), status=True)]

    def mtime(self, path):
        return self.client.status(self._path(path))["modificationTime"] / 1000

    def exclude(self, excluded: list[str], url: str | None, error: BaseException) -> None:
        """Add the DataNode that served ``url`` to ``excluded``, or raise ``error`` when ``url`` is no
        DataNode the NameNode lists (the NameNode itself failed) or was left out already. Once every
        replica's DataNode is out, the NameNode refuses the request (HdfsError)."""
        address = self.transfer_address(url) if url else None
        if address is None or address in excluded:
            raise error
        excluded.append(address)

    def transfer_address(self, url: str) -> str | None:
        """The data transfer address (what excludedatanodes takes) of the DataNode whose HTTP address
        serves ``url``, from the NameNode's list of live DataNodes (JMX NameNodeInfo)."""
        http = urlsplit(url).netloc
        if http not in self._transfer:
            try:
                bean = requests.get(f"{self.url}/jmx", params={"qry": "Hadoop:service=NameNode,name=NameNodeInfo"},
                                    timeout=10).json()["beans"][0]
                for name, node in json.loads(bean["LiveNodes"]).items():
                    port = node["infoAddr"].rsplit(":", 1)[1]
                    self._transfer[node["infoAddr"]] = node["xferaddr"]
                    self._transfer[f"{name.rsplit(':', 1)[0]}:{port}"] = node["xferaddr"]
            except (*DATANODE_LOST, ValueError, KeyError, IndexError):
                return None
        return self._transfer.get(http)

    def open_at(self, path, offset, length, excluded):
        """The WebHDFS OPEN response (streamed) of a byte range, the DataNodes in ``excluded`` left out."""
        # HdfsCLI's raw endpoint: its read() takes no excludedatanodes.
        return self.client._open(self._path(path), offset=offset, length=length,  # noqa: SLF001
                                 excludedatanodes=",".join(excluded) or None)

    @contextlib.contextmanager
    def open_range(self, path, offset, length):
        # WebHDFS's own errors do not name the file ("No active and not excluded nodes contain this
        # block" when every DataNode holding one of its blocks is gone): say which file it was.
        reader = None
        try:
            reader = _DataNodeRead(self, path, offset, length)
            yield reader
        except HdfsError as error:
            hint = (" (every DataNode holding a replica of one of its blocks is down: start one of them "
                    "again, or write the file anew)" if "contain this block" in str(error) else "")
            raise HdfsError(f"{path}: cannot read: {error}{hint}") from error
        finally:
            if reader is not None:
                reader.close()

    def walk(self, top):
        yield from walk_listing(self, top)

    def makedirs(self, folder):
        self.client.makedirs(self._path(folder))

    def write(self, path, chunks):
        chunks, excluded = _Started(chunks), []
        while True:
            # HdfsCLI's raw CREATE (its write() takes no excludedatanodes): the NameNode's redirect
            # names the DataNode that takes the data.
            location = self.client._create(self._path(path), overwrite=True,  # noqa: SLF001
                                           excludedatanodes=",".join(excluded) or None).headers["location"]
            try:
                response = self.client._request("PUT", location, data=chunks)  # noqa: SLF001
            except DATANODE_LOST as error:
                if chunks.started:  # data went out already and cannot be sent again: the caller retries
                    raise
                self.exclude(excluded, location, error)
                continue
            if not response.ok:
                try:
                    message = response.json()["RemoteException"]["message"]
                except (ValueError, KeyError, TypeError):
                    message = f"HTTP {response.status_code}: {response.text[:300]}"
                raise HdfsError(f"{path}: cannot write: {message}")
            return

    def rename(self, source, target):
        self.client.rename(self._path(source), self._path(target))

    def delete(self, path):
        self.client.delete(self._path(path), recursive=True)


class _DataNodeRead(io.RawIOBase):
    """A WebHDFS byte range that, when the DataNode streaming it dies, goes on from the byte it had
    reached on another replica (``WebHdfs.exclude``)."""

    def __init__(self, backend: WebHdfs, path: str, offset: int, length: int | None):
        self._backend, self._path, self._offset, self._left = backend, path, offset, length
        self._excluded: list[str] = []
        self._response = None
        self._response = self._open()

    def _open(self):
        while True:
            try:
                return self._backend.open_at(self._path, self._offset, self._left, self._excluded)
            except DATANODE_LOST as error:  # refused at the redirect: requests names the DataNode URL
                request = getattr(error, "request", None)
                self._backend.exclude(self._excluded, getattr(request, "url", None), error)

    def readable(self):
        return True

    def read(self, size=-1):
        if self._left == 0:
            return b""
        want = None if size is None or size < 0 else size
        if self._left is not None:
            want = self._left if want is None else min(want, self._left)
        while True:
            try:
                data = self._response.raw.read(want)
                break
            except DATANODE_LOST as error:
                self._response.close()
                self._backend.exclude(self._excluded, self._response.url, error)
                self._response = self._open()
        self._offset += len(data)
        if self._left is not None:
            self._left -= len(data)
        return data

    def close(self):
        if self._response is not None:
            self._response.close()
        super().close()


class _Started:
    """An iterable of chunks that records whether any was taken (a write not begun may be sent again)."""

    def __init__(self, chunks):
        self._chunks, self.started = iter(chunks), False

    def __iter__(self):
        for chunk in self._chunks:
            self.started = True
            yield chunk


_CLIENTS: dict[tuple[str, str], WebHdfs] = {}


def webhdfs(url: str, user: str) -> WebHdfs:
    """One HdfsCLI client (and its HTTP connection pool) per WebHDFS URL and user, per process."""
    key = (url, user)
    if key not in _CLIENTS:
        _CLIENTS[key] = WebHdfs(url, user)
    return _CLIENTS[key]


