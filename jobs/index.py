"""Index a tag output (jobs/tag.py) into Solr block by block: resumable, idempotent, fast.

    PYSPARK_PYTHON=$PWD/.venv/bin/python .venv/bin/spark-submit --master spark://127.0.0.1:7077 \\
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
the block; nothing verified is lost, and --resume finishes the rest. Exit 2: bad input or setup.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path[0] = str(Path(__file__).resolve().parent.parent)  # noqa: E402 - see jobs/runtime.py

import argparse
import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import partial
from typing import Any, Iterable, Iterator

import requests

from jobs.indexing import (
    DEAD_LETTERS_NAME, LEDGER_NAME, MANIFEST_NAME, BlockDecoder, BlockResult, InputError,
    SolrRejected, SolrUnavailable, Summary, TooManyRejects, backoff_delays, block_number, chunks,
    completed_blocks, count_lines, dead_letter, part_text, dead_letters_text, ledger_blocks, ledger_entry,
    ledger_text, merge_dead_letters, parse_dead_letters, parse_ledger, parse_manifest, plan_blocks,
    send_bisecting, split_lines, verify, waves, with_blocks, with_retries,
)
from jobs.runtime import env_default, log, spark_session
from jobs.solr_docs import DocumentError, to_solr_json, validate_line

JOB = "index"
# Fields the web app and this job rely on; a core made from another configset is refused up front
# instead of dead-lettering every document.
SCHEMA_FIELDS = ("id", "image_id", "block", "shard", "offset", "label", "tag", "votes", "agreement",
                 "vote_counts", "model", "pixels", "vector", "indexed_at")
# Errors after which a block may hold part of its documents in Solr (the driver removes them).
TOUCHED_SOLR = ("unavailable", "rejected", "solr")


class SolrError(RuntimeError):
    """Solr answered in a way no retry can fix (no such collection, wrong schema, HTTP 4xx)."""


# --------------------------------------------------------------------------- Solr over HTTP


@dataclass(frozen=True)
class SolrSettings:
    """How to reach Solr; small and picklable, so every Spark task builds its own client."""

    url: str
    timeout: float = 300.0
    retries: int = 5
    backoff: float = 1.0


class SolrClient:
    """The collection's JSON update and select handlers, with retries on unreachable/5xx."""

    def __init__(self, settings: SolrSettings):
        self.settings = settings
        self.url = settings.url.rstrip("/")
        self.delays = backoff_delays(settings.retries, settings.backoff)
        self.http = requests.Session()

    def _request(self, method: str, path: str, what: str, retry: bool = True, **kwargs) -> dict[str, Any]:
        def call():
            try:
                response = self.http.request(method, self.url + path, timeout=(5, self.settings.timeout), **kwargs)
            except (requests.ConnectionError, requests.Timeout) as error:
                raise SolrUnavailable(f"{type(error).__name__} at {self.url}: {str(error)[:200]}") from error
            message = _solr_message(response)
            # Solr blames one document with "[doc=<id>]", and for some field errors (a vector of the
            # wrong length) it does so with HTTP 500: no retry fixes those, bisection finds them.
            if response.status_code == 400 or (response.status_code >= 500 and "[doc=" in message):
                raise SolrRejected(message)
            if response.status_code >= 500 or response.status_code in (408, 429):
                raise SolrUnavailable(f"HTTP {response.status_code} from {self.url}: {message}")
            if response.status_code != 200:
                raise SolrError(f"{what}: HTTP {response.status_code} from {response.url}: {message}")
            return response.json()

        return with_retries(call, self.delays if retry else [], what)

    def _update(self, body: bytes, what: str, **params) -> dict[str, Any]:
        return self._request("POST", "/update", what, params={"wt": "json", **params}, data=body,
                             headers={"Content-Type": "application/json"})

    def add(self, docs: list[dict[str, Any]]) -> None:
        """Add (or replace, by id) documents; no commit: the driver commits once per wave."""
        self._update(json.dumps(docs).encode(), f"add {len(docs)} documents")

    def add_json(self, docs: list[str]) -> None:
        """``add`` for documents already serialised (jobs.solr_docs.to_solr_json)."""
        self._update(("[" + ",".join(docs) + "]").encode(), f"add {len(docs)} documents")

    def delete_blocks(self, blocks: Iterable[int]) -> None:
        """Delete every document of these blocks (not visible until the next commit)."""
        blocks = sorted(blocks)
        query = "{!terms f=block}" + ",".join(map(str, blocks))
        self._update(json.dumps({"delete": {"query": query}}).encode(), f"delete blocks {_span(blocks)}")

    def commit(self) -> None:
        """Hard commit that opens a new searcher and waits for it, so the counts that follow see it."""
        self._update(b'{"commit": {"waitSearcher": true}}', "commit")

    def block_counts(self, blocks: Iterable[int]) -> dict[int, int]:
        """Documents per block for these blocks (blocks with none are absent)."""
        blocks = sorted(blocks)
        if not blocks:
            return {}
        form = {"q": "*:*", "rows": 0, "fq": "{!terms f=block}" + ",".join(map(str, blocks)),
                "facet": "true", "facet.field": "block", "facet.limit": -1, "facet.mincount": 1,
                "wt": "json"}
        # POST: a wave's or a ledger's block list can outgrow a URL.
        answer = self._request("POST", "/select", f"count blocks {_span(blocks)}", data=form)
        flat = answer["facet_counts"]["facet_fields"]["block"]
        return {int(value): count for value, count in zip(flat[::2], flat[1::2])}

    def check_schema(self) -> None:
        """Fail early, with the fix, when the URL is not a collection made from solr_conf/."""
        try:
            answer = self._request("GET", "/schema/fields", "read the schema", params={"wt": "json"})
        except SolrError as error:
            raise SolrError(f"no Solr collection at {self.url} ({error}); --solr should name the "
                            "collection, e.g. http://127.0.0.1:8983/solr/tinytags") from error
        names = {entry["name"] for entry in answer.get("fields", [])}
        missing = [name for name in SCHEMA_FIELDS if name not in names]
        if missing:
            raise SolrError(f"the schema at {self.url} lacks fields {missing}; create the collection "
                            "from the tinytags configset (solr_conf/)")


def _solr_message(response: requests.Response) -> str:
    try:
        return str(response.json()["error"]["msg"])[:500]
    except (ValueError, KeyError, TypeError):
        return response.text[:500]


def _span(blocks: list[int]) -> str:
    return f"{blocks[0]}" if len(blocks) == 1 else f"{blocks[0]}..{blocks[-1]} ({len(blocks)} blocks)"


# --------------------------------------------------------------------------- the Spark task


@dataclass(frozen=True)
class TaskContext:
    """Everything a block task needs, shipped with the closure."""

    solr: SolrSettings
    model: str
    kept: dict[int, int]
    wave_id: str
    batch_size: int
    max_rejects: int
    strict: bool


# Waves in which Solr was found unreachable, per Python worker: later blocks of the same wave in
# the same worker give up at once instead of each waiting through the whole retry schedule.
_UNAVAILABLE_WAVES: set[str] = set()


def index_block(context: TaskContext, block: int, records: Iterator[tuple[str, bytes]]) -> Iterator[BlockResult]:
    """Spark mapPartitions function over one block's (path, bytes) files -> its one result."""
    started = time.monotonic()
    result = BlockResult(block)
    try:
        if context.wave_id in _UNAVAILABLE_WAVES:
            result.error, result.error_kind = "not attempted: Solr was unavailable earlier in this wave", "skipped"
        else:
            files = sorted((_relative(path), part_text(path, data)) for path, data in records)
            _index_block(context, block, files, result)
    except SolrUnavailable as error:
        _UNAVAILABLE_WAVES.add(context.wave_id)
        result.error, result.error_kind = f"Solr unavailable: {error}", "unavailable"
    except TooManyRejects as error:
        result.error, result.error_kind = f"{error}{' (--strict)' if context.strict else ''}", "rejected"
    except SolrError as error:
        result.error, result.error_kind = str(error), "solr"
    result.seconds = time.monotonic() - started
    # Progress, per block: in local mode on the console, on a cluster in the executor's stderr log.
    log(JOB, f"block {block}: {result.docs:,} documents sent, {len(result.dead_letters)} dead letters, "
             f"{result.seconds:.1f} s" + (f"; FAILED: {result.error}" if result.error else ""))
    yield result


def _relative(path: str) -> str:
    return "/".join(path.rstrip("/").split("/")[-2:])  # block=<n>/part-xxxxx


def _index_block(context: TaskContext, block: int, files: list[tuple[str, str]], result: BlockResult) -> None:
    result.lines = sum(count_lines(content) for _, content in files)
    kept = context.kept[block]
    if result.lines != kept:
        result.error = (f"block={block} has {result.lines} JSON lines in {len(files)} part files but "
                        f"{MANIFEST_NAME} says kept={kept}")
        result.error_kind = "input"
        return
    if context.strict:
        problem = _first_bad_line(context, block, files)
        if problem:
            result.error, result.error_kind = f"{problem} (--strict)", "strict"
            return
    client = SolrClient(context.solr)
    # A delete-by-query makes Solr flush its indexing buffer (it reopens its real-time searcher), so
    # it is sent only when the block has documents to replace. The driver committed before this
    # wave, so the count sees everything earlier runs left, committed or not.
    if client.block_counts([block]):
        client.delete_blocks([block])
    decoder = BlockDecoder(block, context.model)
    max_rejects = 0 if context.strict else context.max_rejects
    # One sender thread: the next batch is decoded and built while Solr indexes the previous one.
    rejects = 0
    with ThreadPoolExecutor(max_workers=1) as sender:
        pending = None
        for file, content in files:
            for batch in chunks(list(split_lines(content)), context.batch_size):
                texts = dict(batch)
                good, dead = decoder.decode(file, batch)
                docs, errors = to_solr_json([line for _, line in good], [texts[number] for number, _ in good])
                bad = {index for index, _ in errors}
                for index, error in errors:
                    number = good[index][0]
                    dead.append(dead_letter(block, file, number, str(error), texts[number]))
                numbers = [number for index, (number, _) in enumerate(good) if index not in bad]
                result.dead_letters.extend(dead)
                if pending is not None:
                    rejects += _collect(pending.result(), result)
                pending = sender.submit(_send, client, docs, numbers, texts, block, file, max_rejects - rejects)
        if pending is not None:
            _collect(pending.result(), result)


def _send(client: SolrClient, docs, numbers, texts, block, file, budget):
    rejected = send_bisecting(docs, client.add_json, max(budget, 0)) if docs else []
    dead = [dead_letter(block, file, numbers[index], f"rejected by Solr: {reason}", texts[numbers[index]])
            for index, reason in rejected]
    return len(docs) - len(rejected), dead


def _collect(outcome, result: BlockResult) -> int:
    """Add a sent batch's outcome to the block's result; returns how many documents Solr refused."""
    accepted, dead = outcome
    result.docs += accepted
    result.dead_letters.extend(dead)
    return len(dead)


def _first_bad_line(context: TaskContext, block: int, files: list[tuple[str, str]]) -> str | None:
    """--strict: the first line that would be dead-lettered, checked before Solr is touched."""
    decoder = BlockDecoder(block, context.model)
    for file, content in files:
        good, dead = decoder.decode(file, split_lines(content))
        if dead:
            return f"{file} line {dead[0]['line']}: {dead[0]['reason']}"
        for number, line in good:
            try:
                validate_line(line)
            except DocumentError as error:
                return f"{file} line {number}: {error}"
    return None


# --------------------------------------------------------------------------- files (local or HDFS)


class HadoopFiles:
    """The driver's small reads and writes (manifest, ledger, dead letters, listings) through the
    Hadoop FileSystem of the Spark JVM, so local paths and hdfs:// work alike."""

    def __init__(self, spark_context):
        self._jvm = spark_context._jvm
        self._conf = spark_context._jsc.hadoopConfiguration()

    def _fs(self, uri: str):
        path = self._jvm.org.apache.hadoop.fs.Path(uri)
        fs = path.getFileSystem(self._conf)
        if fs.getScheme() == "file":
            fs = fs.getRawFileSystem()  # no .crc side files next to the ledger
        return fs, path

    def qualify(self, uri: str) -> str:
        """An absolute URI (file:/..., hdfs://...) that executors resolve the same way."""
        fs, path = self._fs(uri)
        return fs.makeQualified(path).toString().rstrip("/")

    def read_text(self, uri: str) -> str | None:
        """The file's text, or None when it does not exist."""
        fs, path = self._fs(uri)
        if not fs.exists(path):
            spare = self._jvm.org.apache.hadoop.fs.Path(uri + ".tmp")
            if not fs.exists(spare):  # a crash between write_text's delete and rename leaves only this
                return None
            path = spare
        stream = fs.open(path)
        try:
            return bytes(self._jvm.org.apache.hadoop.io.IOUtils.readFullyToByteArray(stream)).decode("utf-8")
        finally:
            stream.close()

    def write_text(self, uri: str, text: str) -> None:
        """Replace the file: write a sibling .tmp, then rename it over the old one."""
        fs, path = self._fs(uri)
        spare = self._jvm.org.apache.hadoop.fs.Path(uri + ".tmp")
        out = fs.create(spare, True)
        try:
            out.write(bytearray(text.encode("utf-8")))
        finally:
            out.close()
        fs.delete(path, False)
        if not fs.rename(spare, path):
            raise OSError(f"could not rename {uri}.tmp to {uri}")

    def block_folders(self, uri: str) -> dict[int, tuple[str, int]]:
        """block number -> (folder URI, number of data files) for every block=<n> folder."""
        fs, path = self._fs(uri)
        if not fs.exists(path) or not fs.getFileStatus(path).isDirectory():
            raise InputError(f"{uri}: no such folder (expected a tag output from jobs/tag.py --output)")
        folders = {}
        for status in fs.listStatus(path):
            block = block_number(status.getPath().getName())
            if status.isDirectory() and block is not None:
                files = [s for s in fs.listStatus(status.getPath())
                         if s.isFile() and not s.getPath().getName().startswith(("_", "."))]
                folders[block] = (status.getPath().toString(), len(files))
        return folders


# --------------------------------------------------------------------------- the driver


def index_wave(spark, wave: list[int], folders: dict[int, tuple[str, int]], context: TaskContext,
               parallelism: int) -> list[BlockResult]:
    """One Spark job: a single-partition input per block (so one task sees a whole block), all
    coalesced into at most ``parallelism`` tasks, which bounds the writers Solr sees at once."""
    sc = spark.sparkContext
    parts = []
    for block in wave:
        folder, files = folders.get(block, (None, 0))
        # binaryFiles, not wholeTextFiles: the JVM passes the bytes on as they are instead of
        # decoding them to Java strings and encoding them again (half the JVM's CPU per document).
        source = sc.binaryFiles(folder, minPartitions=1).coalesce(1) if files else sc.parallelize([], 1)
        parts.append(source.mapPartitions(partial(index_block, context, block)))
    results = sc.union(parts).coalesce(min(parallelism, len(parts))).collect()
    by_block = {result.block: result for result in results}
    for block in wave:  # cannot happen unless Spark loses a task's output; never let it pass silently
        by_block.setdefault(block, BlockResult(block, error="no result from its Spark task", error_kind="solr"))
    return [by_block[block] for block in wave]


def run(spark, options: argparse.Namespace) -> Summary:
    """Index the tag output at options.input into options.solr; returns the run's summary."""
    files = HadoopFiles(spark.sparkContext)
    out = files.qualify(options.input)
    manifest_uri = f"{out}/{MANIFEST_NAME}"
    text = files.read_text(manifest_uri)
    if text is None:
        raise InputError(f"{manifest_uri} not found: is {options.input} a tag output? (jobs/tag.py writes "
                         "the manifest last, so a missing one can also mean that its run did not finish)")
    manifest = parse_manifest(text, manifest_uri)
    folders = files.block_folders(out)
    blocks = plan_blocks(manifest, folders, out)
    settings = SolrSettings(options.solr, options.timeout, options.retries, options.backoff)
    client = SolrClient(settings)
    client.check_schema()
    ledger_uri = options.ledger or f"{out}/{LEDGER_NAME}"
    dead_uri = options.dead_letters or f"{out}/{DEAD_LETTERS_NAME}"
    ledger = parse_ledger(files.read_text(ledger_uri), ledger_uri)
    dead_old = parse_dead_letters(files.read_text(dead_uri))

    summary = Summary()
    todo = blocks
    if options.resume:
        entries = ledger_blocks(ledger, options.solr)
        skip = completed_blocks(entries, manifest, client.block_counts(entries))
        summary.skipped = [block for block in blocks if block in skip]
        todo = [block for block in blocks if block not in skip]
    parallelism = options.parallelism or spark.sparkContext.defaultParallelism
    planned = waves(todo, options.blocks_per_commit)
    total_docs = sum(manifest.blocks[block].kept for block in todo)
    log(JOB, f"{out}: model {manifest.model}, {len(blocks)} blocks; {len(summary.skipped)} already indexed "
             f"(ledger {ledger_uri}), {len(todo)} to index ({total_docs:,} lines) in {len(planned)} waves, "
             f"{parallelism} at a time -> {client.url}")

    if todo:  # make what a crashed run left uncommitted visible to the tasks' per-block counts
        client.commit()
    started = time.monotonic()
    run_id = uuid.uuid4().hex[:12]
    new_dead: list[dict[str, Any]] = []
    for number, wave in enumerate(planned, start=1):
        wave_started = time.monotonic()
        # Forget the wave's blocks first: from now until they are verified their documents change.
        ledger = with_blocks(ledger, options.solr, {block: None for block in wave})
        files.write_text(ledger_uri, ledger_text(ledger))
        context = TaskContext(settings, manifest.model, {b: manifest.blocks[b].kept for b in wave},
                              f"{run_id}-{number}", options.batch_size, options.max_rejects, options.strict)
        results = index_wave(spark, wave, folders, context, parallelism)
        try:
            partial_blocks = [r.block for r in results if r.error_kind in TOUCHED_SOLR]
            if partial_blocks:  # never leave half a block searchable
                client.delete_blocks(partial_blocks)
            client.commit()
            done, failed = verify(results, client.block_counts(wave))
        except (SolrUnavailable, SolrError) as error:
            done = []
            failed = {r.block: r.error or f"not verified: commit or count failed: {error}" for r in results}
        stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
        ledger = with_blocks(ledger, options.solr, {r.block: ledger_entry(r, manifest.model, stamp) for r in done})
        files.write_text(ledger_uri, ledger_text(ledger))
        wave_dead = [record for r in results for record in r.dead_letters]
        new_dead.extend(wave_dead)
        if wave_dead or dead_old:
            redone = [block for w in planned[:number] for block in w]
            files.write_text(dead_uri, dead_letters_text(merge_dead_letters(dead_old, redone, new_dead)))
        summary.done.extend(r.block for r in done)
        summary.failed.update(failed)
        summary.docs += sum(r.docs for r in done)
        summary.dead_letters += len(wave_dead)
        wave_docs = sum(r.docs for r in results)
        elapsed = time.monotonic() - wave_started
        log(JOB, f"wave {number}/{len(planned)}: blocks {_span(wave)}: {len(done)} verified, {len(failed)} failed, "
                 f"{wave_docs:,} docs in {elapsed:.1f} s ({wave_docs / max(elapsed, 1e-9):,.0f} docs/s), "
                 f"{len(wave_dead)} dead letters; total {summary.docs:,}/{total_docs:,}")
        if failed:  # Solr down, bad input or --strict: stop here, --resume continues after the fix
            summary.not_attempted = [block for w in planned[number:] for block in w]
            break
    summary.seconds = time.monotonic() - started
    if summary.dead_letters:
        log(JOB, f"{summary.dead_letters} dead letters in {dead_uri}")
    return summary


def collection_url(url: str) -> str:
    """Solr's root URL (.../solr) names no collection: append TINYTAGS_SOLR_COLLECTION (default
    tinytags), as the web app does, so one TINYTAGS_SOLR_URL serves both."""
    url = url.rstrip("/")
    if url.endswith("/solr"):
        return f"{url}/{env_default('TINYTAGS_SOLR_COLLECTION', 'tinytags')}"
    return url


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Flags, with TINYTAGS_* environment defaults."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", default=env_default("TINYTAGS_TAG_OUTPUT"),
                        help="tag output folder, local or hdfs:// (env TINYTAGS_TAG_OUTPUT)")
    parser.add_argument("--solr", default=env_default("TINYTAGS_SOLR_URL", "http://127.0.0.1:8983/solr/tinytags"),
                        help="Solr collection URL, or Solr's root + TINYTAGS_SOLR_COLLECTION (env TINYTAGS_SOLR_URL)")
    parser.add_argument("--resume", action="store_true", help="skip blocks the ledger has and Solr still holds")
    parser.add_argument("--strict", action="store_true",
                        help="fail a block on its first bad line instead of dead-lettering it")
    parser.add_argument("--parallelism", type=int, default=int(env_default("TINYTAGS_INDEX_PARALLELISM", "0")),
                        help="blocks indexed at once (default: the Spark app's cores)")
    parser.add_argument("--blocks-per-commit", type=int,
                        default=int(env_default("TINYTAGS_INDEX_BLOCKS_PER_COMMIT", "8")),
                        help="blocks per wave; one commit and one verification per wave")
    parser.add_argument("--batch-size", type=int, default=int(env_default("TINYTAGS_INDEX_BATCH_SIZE", "2000")),
                        help="documents per update request")
    parser.add_argument("--retries", type=int, default=int(env_default("TINYTAGS_INDEX_RETRIES", "5")),
                        help="retries of a Solr request that fails to connect or answers 5xx")
    parser.add_argument("--backoff", type=float, default=float(env_default("TINYTAGS_INDEX_BACKOFF", "1.0")),
                        help="seconds before the first retry; doubled for each next one (max 30)")
    parser.add_argument("--timeout", type=float, default=float(env_default("TINYTAGS_INDEX_TIMEOUT", "300")),
                        help="seconds to wait for one Solr answer")
    parser.add_argument("--max-rejects", type=int, default=int(env_default("TINYTAGS_INDEX_MAX_REJECTS", "100")),
                        help="documents Solr may reject per block before the block fails")
    parser.add_argument("--ledger", default=env_default("TINYTAGS_INDEX_LEDGER"),
                        help=f"ledger file (default OUT/{LEDGER_NAME})")
    parser.add_argument("--dead-letters", default=env_default("TINYTAGS_INDEX_DEAD_LETTERS"),
                        help=f"dead-letter file (default OUT/{DEAD_LETTERS_NAME})")
    options = parser.parse_args(argv)
    options.solr = collection_url(options.solr)
    if not options.input:
        parser.error("--input is required (or set TINYTAGS_TAG_OUTPUT)")
    for name in ("blocks_per_commit", "batch_size"):
        if getattr(options, name) < 1:
            parser.error(f"--{name.replace('_', '-')} should be >= 1")
    if options.parallelism < 0 or options.retries < 0 or options.max_rejects < 0:
        parser.error("--parallelism, --retries and --max-rejects should be >= 0")
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
