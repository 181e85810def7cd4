"""The one storage layer: local paths, hdfs:// over WebHDFS, and any other Hadoop scheme through the JVM.

Every job, deploy/ script, the web app and the benchmarks read and write files through ``Storage``.
A path is one of three kinds, decided by ``kind`` alone:

- ``local``: a plain path or ``file:`` URI, read with the operating system;
- ``hdfs``: ``hdfs://namenode:port/...``, reached over WebHDFS with HdfsCLI (tinytags/io/webhdfs.py,
  which also steps around a DataNode that dies under a read or write). WebHDFS works from
  any process, Spark's Python workers included, and streams large byte ranges without the JVM
  (a probe on 1M images: a quarter less CPU than ``binaryRecords``). Its HTTP address defaults to
  ``http://<namenode host>:9870``; ``TINYTAGS_WEBHDFS_URL`` or ``webhdfs=`` overrides it;
- ``hadoop``: any other scheme (``s3a://``, ``abfs://``, ``viewfs://``, ...), through Hadoop's
  FileSystem in the Spark driver's JVM. Only a Storage made with ``spark=`` (on the driver) can
  reach these; elsewhere a StorageError says so.

``Storage`` is small and picklable (the Spark handle is dropped when it is shipped to a task).
Writes that readers must see whole (manifests, ledgers) go through ``write_atomic``. ``walk``
lists a whole tree (the photo packer's input) and reports what it cannot list instead of raising:
an unreadable folder, a broken symlink, a symlink loop (a folder that leads back to one it is in).
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import posixpath
import shutil
import stat
from dataclasses import dataclass, field
from typing import IO, Any, Iterable, Iterator, NamedTuple
from urllib.parse import urlsplit

from hdfs.util import HdfsError

from tinytags.settings import WEBHDFS_PORT, env


class StorageError(OSError):
    """A path this process cannot reach (e.g. an s3a:// path without the Spark driver's JVM)."""


FILE_ERRORS = (OSError, HdfsError)  # what a file operation raises, on any kind of path


def kind(path: str) -> str:
    """``local`` (plain path, file:), ``hdfs`` (hdfs://) or ``hadoop`` (any other scheme)."""
    if path.startswith("hdfs://"):
        return "hdfs"
    if "://" not in path or path.startswith("file:"):
        return "local"
    return "hadoop"


def local_path(path: str) -> str:
    """A local path without its file: scheme."""
    return urlsplit(path).path if path.startswith("file:") else path


def join(folder: str, name: str) -> str:
    """folder/name for any kind of path."""
    return folder.rstrip("/") + "/" + name


def parent(path: str) -> str:
    """The folder holding a path."""
    return path.rstrip("/").rsplit("/", 1)[0] or "/"


def basename(path: str) -> str:
    """The last part of a path."""
    return path.rstrip("/").rsplit("/", 1)[-1]


class Entry(NamedTuple):
    """One entry of a folder listing."""

    name: str
    kind: str  # "file" or "dir"
    size: int


class Found(NamedTuple):
    """One file of a walked tree, or (``problem`` set) an entry the walk could not follow."""

    path: str
    size: int
    mtime: float  # seconds since the epoch
    problem: str | None = None
    kind: str = "file"  # "dir" for a folder that could not be listed or loops


def within(root: str, path: str) -> bool:
    """True when ``path`` lies inside ``root`` once symlinks (local) and ``..`` are resolved.

    What a server reads on a stored path's behalf must not escape the folder it was given:
    local paths are compared by their real paths; hdfs:// ones (no symlinks) by scheme, host and
    normalised path.
    """
    if kind(root) == "local" and kind(path) == "local":
        real_root = os.path.realpath(local_path(root))
        real = os.path.realpath(local_path(path))
        return real == real_root or real.startswith(real_root.rstrip("/") + "/")
    if kind(root) != kind(path):
        return False
    root_parts, parts = urlsplit(root), urlsplit(path)
    if (root_parts.scheme, root_parts.netloc) != (parts.scheme, parts.netloc) or ".." in parts.path.split("/"):
        return False
    folder = posixpath.normpath(root_parts.path or "/").rstrip("/") + "/"
    return posixpath.normpath(parts.path or "/").startswith(folder)


@dataclass(frozen=True)
class Storage:
    """File operations on local, hdfs:// and Hadoop paths with one interface (see the module docstring)."""

    webhdfs: str | None = None
    user: str | None = None
    spark: Any = field(default=None, compare=False, repr=False)

    join = staticmethod(join)

    def __getstate__(self):
        return {"webhdfs": self.webhdfs, "user": self.user, "spark": None}

    def __setstate__(self, state):
        for name, value in state.items():
            object.__setattr__(self, name, value)

    # -- reading
    def status(self, path: str) -> tuple[str, int] | None:
        """("file" | "dir", size in bytes) or None when nothing is there."""
        return self._backend(path).status(path)

    def exists(self, path: str) -> bool:
        """True when a file or folder is there."""
        return self.status(path) is not None

    def list(self, folder: str) -> list[Entry]:
        """Every entry of a folder, sorted by name."""
        return sorted(self._backend(folder).list(folder), key=lambda e: e.name)

    def read_bytes(self, path: str) -> bytes:
        """A whole (small) file."""
        with self.open_range(path, 0, None) as reader:
            return reader.read()

    def read_text(self, path: str) -> str | None:
        """A file's text, or None when it does not exist (nor the spare of an interrupted write_atomic)."""
        for candidate in (path, path + ".tmp"):
            if self.status(candidate) is not None:
                return self.read_bytes(candidate).decode("utf-8")
        return None

    @contextlib.contextmanager
    def open_range(self, path: str, offset: int, length: int | None) -> Iterator[IO[bytes]]:
        """A reader of ``length`` bytes (None: to the end) from ``offset``: one seek or one HTTP request."""
        with self._backend(path).open_range(path, offset, length) as reader:
            yield reader

    def walk(self, top: str) -> Iterator[Found]:
        """Every file under ``top`` (or ``top`` itself), depth first in name order; problems as Found entries."""
        return self._backend(top).walk(top)

    # -- writing
    def makedirs(self, folder: str) -> None:
        """Create a folder and its parents (no error if it exists)."""
        self._backend(folder).makedirs(folder)

    def write(self, path: str, chunks: Iterable[bytes] | bytes) -> None:
        """Create or replace a file from bytes or an iterable of byte chunks (streamed)."""
        if isinstance(chunks, (bytes, bytearray, memoryview)):
            chunks = [bytes(chunks)]
        self._backend(path).write(path, chunks)

    def rename(self, source: str, target: str) -> None:
        """Move a file or folder to a path that does not exist yet (FileExistsError if it does)."""
        if self.status(target) is not None:  # WebHDFS and Hadoop would move the source *into* a folder
            raise FileExistsError(f"cannot rename {source} to {target}: it exists")
        self._backend(source).rename(source, target)

    def delete(self, path: str) -> None:
        """Delete a file or a folder with its contents (no error if nothing is there)."""
        self._backend(path).delete(path)

    def write_atomic(self, path: str, chunks: Iterable[bytes] | bytes | str) -> None:
        """Write ``path.tmp``, then rename it over ``path``: readers see the old file or the whole new one."""
        if isinstance(chunks, str):
            chunks = chunks.encode("utf-8")
        spare = path + ".tmp"
        self.write(spare, chunks)
        if self.status(path) is not None:
            self.delete(path)
        self.rename(spare, path)

    def copy_file(self, source: str, target: str, chunk_bytes: int = 4 << 20) -> int:
        """Stream a file to another path (any kinds), under a spare name renamed when whole; returns bytes."""
        size = self.status(source)
        if size is None or size[0] != "file":
            raise FileNotFoundError(f"{source}: no such file")

        def chunks():
            with self.open_range(source, 0, None) as reader:
                while chunk := reader.read(chunk_bytes):
                    yield chunk

        self.write_atomic(target, chunks())
        written = self.status(target)
        if written is None or written[1] != size[1]:
            raise OSError(f"{target}: wrote {written[1] if written else 0:,} bytes, expected {size[1]:,}")
        return size[1]

    def qualify(self, path: str) -> str:
        """An absolute URI (file:/..., hdfs://...) that every process resolves the same way."""
        if kind(path) == "local":
            return "file:" + os.path.abspath(local_path(path))
        return path.rstrip("/")

    # -- backends
    def _backend(self, path: str):
        which = kind(path)
        if which == "local":
            return _LOCAL
        if which == "hdfs":
            url = self.webhdfs or env("TINYTAGS_WEBHDFS_URL") or f"http://{urlsplit(path).hostname}:{WEBHDFS_PORT}"
            user = self.user or env("TINYTAGS_HDFS_USER") or env("USER", "tinytags")
            from tinytags.io.webhdfs import webhdfs  # here: local-only use needs no HDFS client

            return webhdfs(url, user)
        if self.spark is None:
            raise StorageError(f"{path}: {urlsplit(path).scheme}:// paths are reached through Hadoop's "
                               "FileSystem in the Spark driver; use hdfs:// or a local path here")
        return _Hadoop(self.spark)


class _Local:
    @staticmethod
    def status(path):
        local = local_path(path)
        if os.path.isdir(local):
            return ("dir", 0)
        if os.path.isfile(local):
            return ("file", os.path.getsize(local))
        return None

    @staticmethod
    def list(folder):
        return [Entry(e.name, "dir" if e.is_dir() else "file", e.stat().st_size if e.is_file() else 0)
                for e in os.scandir(local_path(folder))]

    @staticmethod
    def walk(top):
        try:
            info = os.stat(local_path(top))
        except OSError as error:
            yield Found(top, 0, 0.0, _os_problem(error, os.path.islink(local_path(top))))
            return
        if not stat.S_ISDIR(info.st_mode):
            yield Found(top, info.st_size, info.st_mtime)
            return
        # Iterative, so a deep tree cannot overflow the stack; each folder carries its ancestors'
        # (device, inode) so that a symlink back to one of them is reported instead of followed.
        stack = [(top.rstrip("/") or "/", {(info.st_dev, info.st_ino): top})]
        while stack:
            folder, ancestors = stack.pop()
            try:
                with os.scandir(local_path(folder)) as listing:
                    entries = sorted(listing, key=lambda e: e.name)
            except OSError as error:
                yield Found(folder, 0, 0.0, f"cannot list the folder: {_os_problem(error, False)}", "dir")
                continue
            folders = []
            for entry in entries:
                path = join(folder, entry.name)
                try:
                    info = entry.stat()  # follows symlinks
                except OSError as error:
                    yield Found(path, 0, 0.0, _os_problem(error, entry.is_symlink()))
                    continue
                if stat.S_ISDIR(info.st_mode):
                    key = (info.st_dev, info.st_ino)
                    if key in ancestors:
                        yield Found(path, 0, 0.0, f"symlink loop: leads back to {ancestors[key]}", "dir")
                    else:
                        folders.append((path, {**ancestors, key: path}))
                elif stat.S_ISREG(info.st_mode):
                    yield Found(path, info.st_size, info.st_mtime)
            stack.extend(reversed(folders))  # depth first, in name order

    @staticmethod
    @contextlib.contextmanager
    def open_range(path, offset, length):
        with open(local_path(path), "rb", buffering=0) as reader:
            reader.seek(offset)
            yield reader if length is None else _Limited(reader, length)

    @staticmethod
    def makedirs(folder):
        os.makedirs(local_path(folder), exist_ok=True)

    @staticmethod
    def write(path, chunks):
        with open(local_path(path), "wb") as out:
            for chunk in chunks:
                out.write(chunk)

    @staticmethod
    def rename(source, target):
        os.rename(local_path(source), local_path(target))

    @staticmethod
    def delete(path):
        local = local_path(path)
        if os.path.isdir(local) and not os.path.islink(local):
            shutil.rmtree(local, ignore_errors=True)
        elif os.path.lexists(local):
            os.remove(local)


def _os_problem(error: OSError, is_link: bool) -> str:
    """Why a path could not be followed, in words (a walk reports these instead of raising)."""
    if error.errno == errno.ELOOP:
        return "symlink loop: the link leads back to itself"
    if is_link and error.errno == errno.ENOENT:
        return "broken symlink: its target does not exist"
    if error.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    return error.strerror or str(error)


class _Limited(io.RawIOBase):
    """At most ``left`` bytes of a reader (a local range behaves like WebHDFS's length=)."""

    def __init__(self, reader, left):
        self._reader, self._left = reader, left

    def readable(self):
        return True

    def read(self, size=-1):
        if self._left <= 0:
            return b""
        size = self._left if size is None or size < 0 else min(size, self._left)
        data = self._reader.read(size)
        self._left -= len(data)
        return data


_LOCAL = _Local()


def walk_listing(backend, top):
    """A walk through a backend's status/list (HDFS and Hadoop file systems: no symlinks to follow)."""
    try:
        status = backend.status(top)
    except FILE_ERRORS as error:
        yield Found(top, 0, 0.0, f"cannot read: {error}")
        return
    if status is None:
        yield Found(top, 0, 0.0, "no such file or folder")
        return
    if status[0] == "file":
        yield Found(top, status[1], backend.mtime(top))
        return
    stack = [top.rstrip("/")]
    while stack:
        folder = stack.pop()
        try:
            entries = sorted(backend.list_times(folder))
        except FILE_ERRORS as error:
            yield Found(folder, 0, 0.0, f"cannot list the folder: {error}", "dir")
            continue
        folders = []
        for name, entry_kind, size, mtime in entries:
            path = join(folder, name)
            if entry_kind == "dir":
                folders.append(path)
            else:
                yield Found(path, size, mtime)
        stack.extend(reversed(folders))


class _Hadoop:
    """Hadoop's FileSystem in the Spark driver's JVM, for schemes WebHDFS does not serve."""

    def __init__(self, spark):
        context = getattr(spark, "sparkContext", spark)
        self._jvm = context._jvm  # noqa: SLF001 - Hadoop's FileSystem has no Python API
        self._conf = context._jsc.hadoopConfiguration()  # noqa: SLF001

    def _fs(self, uri):
        path = self._jvm.org.apache.hadoop.fs.Path(uri)
        return path.getFileSystem(self._conf), path

    def status(self, path):
        fs, jpath = self._fs(path)
        if not fs.exists(jpath):
            return None
        status = fs.getFileStatus(jpath)
        return ("dir", 0) if status.isDirectory() else ("file", int(status.getLen()))

    def list(self, folder):
        fs, jpath = self._fs(folder)
        return [Entry(s.getPath().getName(), "dir" if s.isDirectory() else "file",
                      0 if s.isDirectory() else int(s.getLen())) for s in fs.listStatus(jpath)]

    def list_times(self, folder):
        fs, jpath = self._fs(folder)
        return [(s.getPath().getName(), "dir" if s.isDirectory() else "file",
                 0 if s.isDirectory() else int(s.getLen()), s.getModificationTime() / 1000)
                for s in fs.listStatus(jpath)]

    def mtime(self, path):
        fs, jpath = self._fs(path)
        return fs.getFileStatus(jpath).getModificationTime() / 1000

    def walk(self, top):
        yield from walk_listing(self, top)

    @contextlib.contextmanager
    def open_range(self, path, offset, length):
        fs, jpath = self._fs(path)
        size = int(fs.getFileStatus(jpath).getLen())
        length = size - offset if length is None else min(length, size - offset)
        stream = fs.open(jpath)
        try:
            stream.seek(offset)
            data = bytes(self._jvm.org.apache.hadoop.io.IOUtils.readFullyToByteArray(stream))
            yield io.BytesIO(data[:length])
        finally:
            stream.close()

    def makedirs(self, folder):
        fs, jpath = self._fs(folder)
        fs.mkdirs(jpath)

    def write(self, path, chunks):
        fs, jpath = self._fs(path)
        out = fs.create(jpath, True)
        try:
            for chunk in chunks:
                out.write(bytearray(chunk))
        finally:
            out.close()

    def rename(self, source, target):
        fs, jsource = self._fs(source)
        if not fs.rename(jsource, self._fs(target)[1]):
            raise OSError(f"could not rename {source} to {target}")

    def delete(self, path):
        fs, jpath = self._fs(path)
        fs.delete(jpath, True)

