"""Tag Tiny Images shards with the model: features, per-tree votes, junk refused, keep agreement >= 0.4, JSON lines per block.

    bin/spark-submit --master spark://127.0.0.1:7077 \\
        --conf spark.cores.max=2 jobs/tag.py --model "$MODEL" \\
        --input hdfs://127.0.0.1:9000/tiny --output hdfs://127.0.0.1:9000/tags \\
        [--min-agreement 0.4 --block-size 20000 --shard-size 1000000 --allow-partial --resume]

--input: shard files ``tiny_NNNNN.bin``, folders of them, or globs (local or hdfs://; several
allowed). Image ids are global: with shard size S (--shard-size, else ``_shards.json`` beside the
shards as written by jobs/shards.py, else 1,000,000) record r of shard NNNNN is image
``NNNNN*S + r``, and ``block = id // --block-size``. Shards packed from photos (``python -m
jobs.shards pack``) have ``_sources.jsonl`` beside them: each task reads the lines of its own ids
(a bisection of range reads) and adds ``source``, ``width`` and ``height`` to those images' lines.

One Spark task per block reads the block's records as a few large byte ranges (local reads, or
WebHDFS for hdfs://, streamed in batches of --batch-size images), converts Tiny Images' column-major
planes to the CIFAR layout the model was trained on, evaluates all trees over the batch
(tinytags.core.tagger.Tagger: the model's features, then every tree; broadcast once), drops images the
model calls junk (counted as ``none``), keeps images whose top class has at least
min_agreement x trees votes and writes them as JSON lines (tinytags/core/tagging.py). Why tasks do their
own I/O instead of sc.binaryRecords + saveAsTextFile: records cross from the JVM to Python one by
one, a task's image ids would have to be recovered from Hadoop's input splits, and
saveAsTextFile cannot write one folder per block (DataFrame partitionBy can, through a sort and
two more copies). Probes found byte-range reads cheaper in CPU than binaryRecords (even with
2,000-record super-records), and writing each block's file directly cheaper than saveAsTextFile
or partitionBy (bench/RESULTS.md).

Output: ``OUT/block=<n>/part-00000.jsonl`` (+ ``_block.json`` with the block's counts) and, last,
``OUT/_manifest.json``: the model version, threshold and per block read/kept/dropped. A block is
built in ``OUT/_temporary/`` and renamed into place whole, so a block folder is always complete;
a re-run of the same run replaces blocks one by one (--resume keeps those already there). An
output folder holding a different run (``OUT/_run.json``: model, threshold, id scheme, inputs) is
refused. Exit codes: 0 done, 1 a task failed (blocks already written stay; --resume), 2 bad input.
"""

from __future__ import annotations

import argparse
import sys
import time

from tinytags.core.contract import (
    BLOCK_SIZE,
    MIN_AGREEMENT,
    SHARD_SIZE,
    InputError,
)
from tinytags.core.forest import ModelError
from tinytags.core.tagging import (
    BATCH_SIZE,
    failure_reason,
)
from tinytags.io.spark import log, spark_session
from tinytags.io.storage import FILE_ERRORS
from tinytags.pipeline.tag import JOB, finish, prepare, summary_text, tag
from tinytags.settings import add_hdfs_flags, env


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Flags, with TINYTAGS_* environment defaults."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=env("TINYTAGS_MODEL_DIR"),
                        help="model dir with forest.npz and model_card.json, local or hdfs:// (env TINYTAGS_MODEL_DIR)")
    parser.add_argument("--input", nargs="+", default=[p for p in (env("TINYTAGS_SHARDS") or "").split(",") if p],
                        help="shards: tiny_NNNNN.bin files, folders or globs, local or hdfs:// (env TINYTAGS_SHARDS, comma-separated)")
    parser.add_argument("--output", default=env("TINYTAGS_TAG_OUTPUT"),
                        help="output folder, local or hdfs:// (env TINYTAGS_TAG_OUTPUT)")
    parser.add_argument("--min-agreement", type=float, default=float(env("TINYTAGS_MIN_AGREEMENT", str(MIN_AGREEMENT))),
                        help=f"keep an image when its top class has at least this share of the votes (default {MIN_AGREEMENT})")
    parser.add_argument("--block-size", type=int, default=int(env("TINYTAGS_BLOCK_SIZE", str(BLOCK_SIZE))),
                        help=f"images per output block (default {BLOCK_SIZE:,})")
    parser.add_argument("--shard-size", type=int, default=int(env("TINYTAGS_SHARD_SIZE", "0")) or None,
                        help=f"images per shard (default: _shards.json beside the shards, else {SHARD_SIZE:,})")
    parser.add_argument("--allow-partial", action="store_true",
                        help="tag a shard whose size is not a multiple of 3072, dropping its cut-off last record")
    parser.add_argument("--resume", action="store_true", help="keep block folders a previous attempt of this run finished")
    parser.add_argument("--batch-size", type=int, default=int(env("TINYTAGS_TAG_BATCH_SIZE", str(BATCH_SIZE))),
                        help=f"images read and evaluated at once per task (default {BATCH_SIZE})")
    parser.add_argument("--progress-seconds", type=float, default=float(env("TINYTAGS_PROGRESS_SECONDS", "10")),
                        help="seconds between progress lines")
    add_hdfs_flags(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Parse flags, check inputs, start Spark, tag, write the manifest."""
    options = parse_args(argv)
    try:
        plan = prepare(options)
    except (InputError, ModelError, *FILE_ERRORS) as error:
        log(JOB, f"error: {error}")
        return 2
    spark = spark_session("tinytags-tag", {"spark.ui.showConsoleProgress": "false"})
    started = time.monotonic()
    try:
        results = tag(spark, plan, options)
        manifest = finish(plan, results, time.monotonic() - started)
    except Exception as error:  # noqa: BLE001 - a failed task: say which, keep what is done
        log(JOB, f"failed: {failure_reason(str(error))}; finished blocks stay in {plan.output}, "
                 "run again with --resume to do the rest")
        return 1
    finally:
        spark.stop()
    log(JOB, summary_text(manifest, plan.output))
    return 0


if __name__ == "__main__":
    sys.exit(main())


