"""What every spark-submit job shares: its SparkSession and its progress lines.

The jobs import the installed ``tinytags`` package (``make setup`` installs it, editable, into the
venv that the driver and, on one machine, the executors run). A cluster whose nodes lack it gets
the package with ``--py-files dist/tinytags.zip`` (``make dist``).
"""

from __future__ import annotations

import os
import sys
import time

from tinytags.settings import env

_STARTED = time.monotonic()


def log(job: str, message: str) -> None:
    """One progress line on stderr, with the seconds since the job started."""
    print(f"[{job} {time.monotonic() - _STARTED:7.1f}s] {message}", file=sys.stderr, flush=True)


def task_cores() -> int:
    """The cores Spark gave the running task (spark.task.cpus), 1 outside a task."""
    from pyspark import TaskContext

    context = TaskContext.get()
    return max(1, int(context.cpus())) if context is not None else 1


def spark_session(app_name: str, conf: dict[str, str] | None = None):
    """The job's SparkSession (master from spark-submit, else TINYTAGS_SPARK_MASTER or local[*])."""
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
    return session

