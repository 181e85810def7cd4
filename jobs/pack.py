"""Pack folder trees of photos into Tiny-format shards with the decoding in Spark tasks (for big trees).

    bin/spark-submit --master spark://127.0.0.1:7077 jobs/pack.py ~/Pictures hdfs://127.0.0.1:9000/scans \\
        --out hdfs://127.0.0.1:9000/photos [--shard-size 20000 --files-per-task 64]

The same pack as ``python -m jobs.shards pack`` (tinytags/io/photo_files.py: the same folder
layout, ids, sidecar, error list and resumption), except that the files are read, hashed and
decoded by Spark tasks instead of local processes. The driver walks the sources and writes the
shards; the tasks return each file's 3072-byte record (a photo of megabytes becomes 3 KB, so the
driver's share is small). Tasks run in waves of ``--wave-files`` files, each wave one Spark job
whose results the driver writes while it logs files done, images/s and time left; an
interrupted run keeps every shard already committed. Sources must be readable by every
executor: hdfs://, or a local path on a shared file system (a warning says so on a cluster).
Exit codes: 0 packed (or all already packed), 1 nothing could be packed, 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import sys

from tinytags.core.contract import PACK_SHARD_SIZE, InputError
from tinytags.core.photos import pack_exit_code
from tinytags.core.tagging import failure_reason
from tinytags.io.photo_files import (
    pack,
    pack_summary_text,
    plan_pack,
)
from tinytags.io.spark import log, spark_session
from tinytags.io.storage import FILE_ERRORS, Storage, kind
from tinytags.pipeline.pack import spark_decoder
from tinytags.settings import add_hdfs_flags, env

JOB = "pack"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Flags, with TINYTAGS_* environment defaults."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sources", nargs="+", help="folders or image files, local or hdfs://")
    parser.add_argument("--out", default=env("TINYTAGS_SHARDS"), help="the pack folder, local or hdfs:// (env TINYTAGS_SHARDS)")
    parser.add_argument("--shard-size", type=int,
                        help=f"images per shard of a new pack folder (default {PACK_SHARD_SIZE:,}; an existing one keeps its own)")
    parser.add_argument("--files-per-task", type=int, default=64, help="files one Spark task decodes (default 64)")
    parser.add_argument("--wave-files", type=int, default=0,
                        help="files per Spark job (default: 16 tasks per core of the application)")
    parser.add_argument("--progress-seconds", type=float, default=10.0, help="seconds between progress lines")
    add_hdfs_flags(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Parse flags, walk and plan (before Spark starts), decode in Spark tasks, write shards and sidecar."""
    options = parse_args(argv)
    files = Storage(webhdfs=options.webhdfs, user=options.hdfs_user)
    try:
        if not options.out:
            raise InputError("--out is required")
        if options.files_per_task <= 0:
            raise InputError(f"--files-per-task must be positive, got {options.files_per_task}")
        plan = plan_pack(files, options.sources, options.out, options.shard_size)
    except (InputError, *FILE_ERRORS) as error:
        log(JOB, f"error: {error}")
        return 2
    spark = spark_session("tinytags-pack", {"spark.ui.showConsoleProgress": "false"})
    try:
        sc = spark.sparkContext
        local = [p for p in plan.sources if kind(p) == "local"]
        if local and not sc.master.startswith("local"):
            log(JOB, f"warning: {local[0]} is a local path and the master is {sc.master}: every worker must "
                     "see it at that path (a shared file system), or use hdfs://")
        wave = options.wave_files or 16 * options.files_per_task * sc.defaultParallelism
        summary = pack(plan, spark_decoder(sc, options.files_per_task, wave), options.progress_seconds)
    except Exception as error:  # noqa: BLE001 - a lost executor or storage error: keep what is committed
        log(JOB, f"failed: {failure_reason(str(error))}; committed shards stay in {plan.out}, "
                 "run again to do the rest")
        return 1
    finally:
        spark.stop()
    log(JOB, pack_summary_text(summary))
    print(json.dumps(summary), flush=True)
    return pack_exit_code(summary)


if __name__ == "__main__":
    sys.exit(main())
