"""What every spark-submit job shares: its SparkSession, shipping this package, flags from env, logs.

Each job script starts with the same two lines so that ``spark-submit jobs/<verb>.py`` works from
a plain checkout (``jobs`` importable on the driver) ::

    if __package__ in (None, ""):
        sys.path[0] = str(Path(__file__).resolve().parent.parent)  # noqa: E402 - see jobs/infra/spark.py

(sys.path[0] is the script's folder; replacing it with the project root also stops jobs/*.py from
shadowing top-level modules). ``spark_session`` then ships the package to the executors, unless
it is already there through ``--py-files``.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from jobs.infra.settings import env

PACKAGE_DIR = Path(__file__).resolve().parent.parent  # the jobs package
_STARTED = time.monotonic()


def log(job: str, message: str) -> None:
    """One progress line on stderr, with the seconds since the job started."""
    print(f"[{job} {time.monotonic() - _STARTED:7.1f}s] {message}", file=sys.stderr, flush=True)


def package_zip(target_dir: str | Path | None = None) -> Path:
    """Zip the ``jobs`` package (sources only) for executors; returns the zip's path."""
    target = Path(target_dir or tempfile.mkdtemp(prefix="tinytags-pyfiles-")) / "tinytags_jobs.zip"
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for source in sorted(PACKAGE_DIR.rglob("*.py")):
            archive.write(source, Path("jobs") / source.relative_to(PACKAGE_DIR))
    return target


def spark_session(app_name: str, conf: dict[str, str] | None = None):
    """The job's SparkSession (master from spark-submit, else TINYTAGS_SPARK_MASTER or local[*]).

    When ``jobs`` is imported from a folder and no ``tinytags_jobs.zip`` came with --py-files, its
    sources are zipped and added with addPyFile, so the same command works on local[*], spark://
    and yarn. (Adding a second zip of that name would fail: Spark refuses a file name twice.)
    """
    from pyspark.sql import SparkSession

    # Executors' Python defaults to `python3` on the PATH, which may lack numpy; the driver's own
    # interpreter (this venv) is the right default on one machine. Clusters set PYSPARK_PYTHON.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    # Spark's own start-up chatter at INFO would bury the job's progress lines.
    builder = SparkSession.builder.appName(app_name).config(
        "spark.log.level", env("TINYTAGS_SPARK_LOG_LEVEL", "WARN")
    )
    if "PYSPARK_GATEWAY_PORT" not in os.environ:  # plain `python`, not spark-submit
        builder = builder.master(env("TINYTAGS_SPARK_MASTER", "local[*]"))
    for key, value in (conf or {}).items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel(env("TINYTAGS_SPARK_LOG_LEVEL", "WARN"))
    shipped = session.sparkContext.getConf().get("spark.submit.pyFiles", "") or ""
    if PACKAGE_DIR.is_dir() and not any(
        Path(entry).name == "tinytags_jobs.zip" for entry in shipped.split(",") if entry
    ):  # imported from a folder, and no `make dist` zip given with --py-files
        # Executors fetch the zip from the driver's file server while the job runs: keep it until exit.
        folder = tempfile.mkdtemp(prefix="tinytags-pyfiles-")
        atexit.register(shutil.rmtree, folder, True)
        session.sparkContext.addPyFile(str(package_zip(folder)))
    return session

