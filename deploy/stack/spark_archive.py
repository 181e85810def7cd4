"""Spark's jars staged on the stack's HDFS once, as spark.yarn.archive, for `up --yarn`.

YARN caches the archive on the NodeManager, so submits neither upload nor unpack Spark's ~460 MB
of jars again. Every HDFS call goes through ``tinytags.io.storage.Storage``, the one storage layer.
"""

from __future__ import annotations

import time
import zipfile
from pathlib import Path

from deploy.stack import StackError
from deploy.stack.launchers import spark_home
from tinytags.io.storage import FILE_ERRORS, Storage, parent
from tinytags.settings import StackSettings

SPARK_ARCHIVE = "/tinytags/spark/spark-jars.zip"  # on the stack's HDFS: spark.yarn.archive=hdfs://<this>


def ensure_spark_archive(settings: StackSettings, jars: Path | None = None, target: str | None = None,
                         storage: Storage | None = None) -> str:
    """Stage the pinned pyspark's jars/ as ``target`` (default: SPARK_ARCHIVE on the stack's HDFS)
    once; a status line. Idempotent.

    A zip of jars/ (stored, not deflated: jars are compressed already) goes to the target; a
    marker beside it names the pyspark version and the jars' count and size, so a second call
    only reads the marker, and a new pyspark replaces the archive. Both are written under a
    spare name and renamed (Storage.copy_file, write_atomic), so a crash never leaves a partial
    archive in place; the marker is written last.
    """
    import pyspark  # here: only staging needs its version

    jars = jars or spark_home() / "jars"
    target = target or settings.hdfs_uri + SPARK_ARCHIVE
    storage = storage or Storage(webhdfs=settings.namenode_http)
    names = sorted(p.name for p in jars.glob("*.jar"))
    size = sum((jars / name).stat().st_size for name in names)
    marker = f"pyspark {pyspark.__version__}, {len(names)} jars, {size} bytes\n"
    marker_path = target + ".version"
    began = time.monotonic()
    try:
        if storage.status(target) is not None and storage.read_text(marker_path) == marker:
            return f"{'spark jars':15} staged  {target}"
        local = settings.stack_dir / "cache" / "spark-jars.zip"
        local.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(local, "w", zipfile.ZIP_STORED) as archive:
            for name in names:
                archive.write(jars / name, name)
        storage.makedirs(parent(target))
        storage.copy_file(str(local), target)
        storage.write_atomic(marker_path, marker)
        local.unlink()
    except FILE_ERRORS as error:
        raise StackError(f"spark jars: could not stage {jars} as {target}: {error}") from error
    took = time.monotonic() - began
    return f"{'spark jars':15} staged now ({len(names)} jars, {size / 1e6:.0f} MB, {took:.1f} s)  {target}"
