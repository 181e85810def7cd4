"""Index a tag output (jobs/tag.py) into Solr block by block: resumable, idempotent, fast.

    bin/spark-submit --master spark://127.0.0.1:7077 \\
        --conf spark.cores.max=2 jobs/index.py --input OUT --solr http://127.0.0.1:8983/solr/tinytags [--resume]

OUT is a local folder or hdfs://... holding OUT/_manifest.json and OUT/block=<n>/part-* JSON lines.
For each block one Spark task checks the block's line count against the manifest, deletes the
block's documents in Solr (when it holds any), then adds the block's documents in large JSON
batches (ids are the global image ids, so a retried batch replaces instead of duplicating). Blocks run in waves of
--blocks-per-commit; after each wave the driver sends the only commit, asks Solr for the count of
every block of the wave and records the blocks whose count equals their lines minus dead letters
in the ledger (OUT/_index_ledger.json). --resume skips ledgered blocks that Solr still holds.

Bad lines (malformed JSON, contract violations, documents Solr rejects) go to the dead-letter file
(OUT/_index_dead_letters.jsonl) with block, file and line number; --strict fails the block instead.
Solr down or answering 5xx: retries with exponential backoff, then the job stops (exit 1) naming
the block; nothing verified is lost, and --resume finishes the rest. Exit 2: bad input or setup,
among them a Solr that refuses the job's user (TINYTAGS_SOLR_USER with TINYTAGS_SOLR_PASSWORD_FILE or
TINYTAGS_SOLR_PASSWORD; the client, credentials included, is shipped to the tasks with the closure).
"""

from __future__ import annotations

import argparse
import json
import sys

from tinytags.core.contract import (
    DEAD_LETTERS_NAME,
    LEDGER_NAME,
    InputError,
)
from tinytags.io.solr import (
    SolrError,
    SolrUnavailable,
)
from tinytags.io.spark import log, spark_session
from tinytags.pipeline.index import JOB, run
from tinytags.settings import env, solr_collection_url, solr_credentials


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Flags, with TINYTAGS_* environment defaults."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", default=env("TINYTAGS_TAG_OUTPUT"),
                        help="tag output folder, local or hdfs:// (env TINYTAGS_TAG_OUTPUT)")
    parser.add_argument("--solr", default=env("TINYTAGS_SOLR_URL"),
                        help="Solr collection URL, or Solr's root + TINYTAGS_SOLR_COLLECTION (env TINYTAGS_SOLR_URL)")
    parser.add_argument("--resume", action="store_true", help="skip blocks the ledger has and Solr still holds")
    parser.add_argument("--strict", action="store_true",
                        help="fail a block on its first bad line instead of dead-lettering it")
    parser.add_argument("--parallelism", type=int, default=int(env("TINYTAGS_INDEX_PARALLELISM", "0")),
                        help="blocks indexed at once (default: the Spark app's cores)")
    parser.add_argument("--blocks-per-commit", type=int,
                        default=int(env("TINYTAGS_INDEX_BLOCKS_PER_COMMIT", "8")),
                        help="blocks per wave; one commit and one verification per wave")
    parser.add_argument("--batch-size", type=int, default=int(env("TINYTAGS_INDEX_BATCH_SIZE", "2000")),
                        help="documents per update request")
    parser.add_argument("--retries", type=int, default=int(env("TINYTAGS_INDEX_RETRIES", "5")),
                        help="retries of a Solr request that fails to connect or answers 5xx")
    parser.add_argument("--backoff", type=float, default=float(env("TINYTAGS_INDEX_BACKOFF", "1.0")),
                        help="seconds before the first retry; doubled for each next one (max 30)")
    parser.add_argument("--timeout", type=float, default=float(env("TINYTAGS_INDEX_TIMEOUT", "300")),
                        help="seconds to wait for one Solr answer")
    parser.add_argument("--max-rejects", type=int, default=int(env("TINYTAGS_INDEX_MAX_REJECTS", "100")),
                        help="documents Solr may reject per block before the block fails")
    parser.add_argument("--merge-segments", type=int, default=int(env("TINYTAGS_INDEX_MERGE_SEGMENTS", "0")),
                        help="after a run that verified every block, merge the collection down to at most this many "
                             "segments per shard (faster k-NN and sorted pages; 0: leave the merge policy alone)")
    parser.add_argument("--ledger", default=env("TINYTAGS_INDEX_LEDGER"),
                        help=f"ledger file (default OUT/{LEDGER_NAME})")
    parser.add_argument("--dead-letters", default=env("TINYTAGS_INDEX_DEAD_LETTERS"),
                        help=f"dead-letter file (default OUT/{DEAD_LETTERS_NAME})")
    options = parser.parse_args(argv)
    options.solr = solr_collection_url(options.solr)
    try:
        options.solr_auth = solr_credentials()
    except ValueError as error:
        parser.error(str(error))
    if not options.input:
        parser.error("--input is required (or set TINYTAGS_TAG_OUTPUT)")
    for name in ("blocks_per_commit", "batch_size"):
        if getattr(options, name) < 1:
            parser.error(f"--{name.replace('_', '-')} should be >= 1")
    if options.parallelism < 0 or options.retries < 0 or options.max_rejects < 0 or options.merge_segments < 0:
        parser.error("--parallelism, --retries, --max-rejects and --merge-segments should be >= 0")
    return options


def main(argv: list[str] | None = None) -> int:
    """Parse flags, start Spark, index, print the summary; the exit code says how it went."""
    options = parse_args(argv)
    spark = spark_session("tinytags-index")
    try:
        summary = run(spark, options)
    except SolrUnavailable as error:
        log(JOB, f"error: {error}")
        return 1
    except (InputError, SolrError) as error:
        log(JOB, f"error: {error}")
        return 2
    finally:
        spark.stop()
    log(JOB, summary.text())
    print(json.dumps(summary.as_dict()), flush=True)
    return summary.exit_code


if __name__ == "__main__":
    sys.exit(main())


