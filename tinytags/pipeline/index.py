"""The index job on Spark: one task per block sends its documents to Solr; the driver verifies, keeps the ledger.

The entry point is jobs/index.py, whose docstring documents resumption, dead letters and the exit codes.
"""

from __future__ import annotations

import argparse
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import partial
from typing import Any, Iterator

from tinytags.core.contract import (
    DEAD_LETTERS_NAME,
    LEDGER_NAME,
    MANIFEST_NAME,
    InputError,
    block_folder,
    block_number,
)
from tinytags.core.indexing import (
    BlockDecoder,
    IndexedBlock,
    Summary,
    blocks_to_index,
    chunks,
    completed_blocks,
    count_lines,
    dead_letter,
    dead_letters_text,
    ledger_blocks,
    ledger_entry,
    ledger_text,
    merge_dead_letters,
    parse_dead_letters,
    parse_ledger,
    parse_manifest,
    part_text,
    split_lines,
    verify,
    waves,
    with_blocks,
)
from tinytags.core.solr_docs import DocumentError, to_solr_json, validate_line
from tinytags.io.solr import (
    SolrClient,
    SolrError,
    SolrUnavailable,
    TooManyRejects,
    send_bisecting,
    span,
)
from tinytags.io.spark import log
from tinytags.io.storage import Storage

JOB = "index"
# Fields the web app and this job rely on; a core made from another configset is refused up front
# instead of dead-lettering every document.
SCHEMA_FIELDS = ("id", "image_id", "block", "shard", "offset", "label", "tag", "votes", "agreement",
                 "vote_counts", "model", "pixels", "vector", "indexed_at", "expected_precision")
# Errors after which a block may hold part of its documents in Solr (the driver removes them).
TOUCHED_SOLR = ("unavailable", "rejected", "solr")


# --------------------------------------------------------------------------- the Spark task


@dataclass(frozen=True)
class IndexTaskContext:
    """Everything a block task needs, shipped with the closure (the client pickles without its pool)."""

    solr: SolrClient
    model: str
    kept: dict[int, int]
    wave_id: str
    batch_size: int
    max_rejects: int
    strict: bool
    # The collection stores the vector compactly (vector_f32 stored: tinytags.vector.compact=true),
    # so documents carry that copy; older schemas lack the field and would refuse it.
    compact_vector: bool = False


# Waves in which Solr was found unreachable, per Python worker: later blocks of the same wave in
# the same worker give up at once instead of each waiting through the whole retry schedule.
_UNAVAILABLE_WAVES: set[str] = set()


def index_block(context: IndexTaskContext, block: int, records: Iterator[tuple[str, bytes]]) -> Iterator[IndexedBlock]:
    """Spark mapPartitions function over one block's (path, bytes) files -> its one result."""
    started = time.monotonic()
    result = IndexedBlock(block)
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


def _index_block(context: IndexTaskContext, block: int, files: list[tuple[str, str]], result: IndexedBlock) -> None:
    result.lines = sum(count_lines(content) for _, content in files)
    kept = context.kept[block]
    if result.lines != kept:
        result.error = (f"{block_folder(block)} has {result.lines} JSON lines in {len(files)} part files but "
                        f"{MANIFEST_NAME} says kept={kept}")
        result.error_kind = "input"
        return
    if context.strict:
        problem = _first_bad_line(context, block, files)
        if problem:
            result.error, result.error_kind = f"{problem} (--strict)", "strict"
            return
    client = context.solr
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
                docs, errors = to_solr_json([line for _, line in good], [texts[number] for number, _ in good],
                                            compact_vector=context.compact_vector)
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


def _collect(outcome, result: IndexedBlock) -> int:
    """Add a sent batch's outcome to the block's result; returns how many documents Solr refused."""
    accepted, dead = outcome
    result.docs += accepted
    result.dead_letters.extend(dead)
    return len(dead)


def _first_bad_line(context: IndexTaskContext, block: int, files: list[tuple[str, str]]) -> str | None:
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


def block_folders(storage: Storage, out: str) -> dict[int, tuple[str, int]]:
    """block number -> (folder URI, number of data files) for every block=<n> folder of a tag output."""
    status = storage.status(out)
    if status is None or status[0] != "dir":
        raise InputError(f"{out}: no such folder (expected a tag output from jobs/tag.py --output)")
    folders = {}
    for entry in storage.list(out):
        block = block_number(entry.name)
        if entry.kind == "dir" and block is not None:
            folder = storage.join(out, entry.name)
            data = [e for e in storage.list(folder) if e.kind == "file" and not e.name.startswith(("_", "."))]
            folders[block] = (folder, len(data))
    return folders


# --------------------------------------------------------------------------- the driver


def index_wave(spark, wave: list[int], folders: dict[int, tuple[str, int]], context: IndexTaskContext,
               parallelism: int) -> list[IndexedBlock]:
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
        by_block.setdefault(block, IndexedBlock(block, error="no result from its Spark task", error_kind="solr"))
    return [by_block[block] for block in wave]


def run(spark, options: argparse.Namespace) -> Summary:
    """Index the tag output at options.input into options.solr; returns the run's summary."""
    files = Storage(spark=spark)
    out = files.qualify(options.input)
    manifest_uri = f"{out}/{MANIFEST_NAME}"
    text = files.read_text(manifest_uri)
    if text is None:
        raise InputError(f"{manifest_uri} not found: is {options.input} a tag output? (jobs/tag.py writes "
                         "the manifest last, so a missing one can also mean that its run did not finish)")
    manifest = parse_manifest(text, manifest_uri)
    folders = block_folders(files, out)
    blocks = blocks_to_index(manifest, folders, out)
    client = SolrClient(options.solr, timeout=options.timeout, retries=options.retries, backoff=options.backoff,
                        auth=getattr(options, "solr_auth", None))
    compact_vector = bool(client.check_schema(SCHEMA_FIELDS).get("vector_f32", {}).get("stored"))
    client.discover()  # SolrCloud: every node of the collection, so tasks fail over when one dies
    # The ledger's key: the first node's URL, so that a --resume given more nodes (one died) or the
    # same node with a trailing slash finds the blocks its earlier run verified.
    target = client.url
    ledger_uri = options.ledger or f"{out}/{LEDGER_NAME}"
    dead_uri = options.dead_letters or f"{out}/{DEAD_LETTERS_NAME}"
    ledger = parse_ledger(files.read_text(ledger_uri), ledger_uri)
    dead_old = parse_dead_letters(files.read_text(dead_uri))

    summary = Summary()
    todo = blocks
    if options.resume:
        entries = ledger_blocks(ledger, target)
        skip = completed_blocks(entries, manifest, client.block_counts(entries))
        summary.skipped = [block for block in blocks if block in skip]
        todo = [block for block in blocks if block not in skip]
    parallelism = options.parallelism or spark.sparkContext.defaultParallelism
    planned = waves(todo, options.blocks_per_commit)
    total_docs = sum(manifest.blocks[block].kept for block in todo)
    log(JOB, f"{out}: model {manifest.model}, {len(blocks)} blocks; {len(summary.skipped)} already indexed "
             f"(ledger {ledger_uri}), {len(todo)} to index ({total_docs:,} lines) in {len(planned)} waves, "
             f"{parallelism} at a time -> {', '.join(client.urls)}")

    if todo:  # make what a crashed run left uncommitted visible to the tasks' per-block counts
        client.commit()
    started = time.monotonic()
    run_id = uuid.uuid4().hex[:12]
    new_dead: list[dict[str, Any]] = []
    for number, wave in enumerate(planned, start=1):
        wave_started = time.monotonic()
        # Forget the wave's blocks first: from now until they are verified their documents change.
        ledger = with_blocks(ledger, target, {block: None for block in wave})
        files.write_atomic(ledger_uri, ledger_text(ledger))
        context = IndexTaskContext(client, manifest.model, {b: manifest.blocks[b].kept for b in wave},
                              f"{run_id}-{number}", options.batch_size, options.max_rejects, options.strict,
                                   compact_vector)
        results = index_wave(spark, wave, folders, context, parallelism)
        # A task that found Solr unavailable has already waited out the whole retry schedule: the
        # driver then asks once more, without retries, and stops at once if Solr is still gone.
        solr_down = any(r.error_kind in ("unavailable", "skipped") for r in results)
        after = client.without_retries() if solr_down else client
        try:
            partial_blocks = [r.block for r in results if r.error_kind in TOUCHED_SOLR]
            if partial_blocks:  # never leave half a block searchable
                after.delete_blocks(partial_blocks)
            after.commit()
            done, failed = verify(results, after.block_counts(wave))
        except (SolrUnavailable, SolrError) as error:
            done = []
            failed = {r.block: r.error or f"not verified: commit or count failed: {error}" for r in results}
            if solr_down:
                # Uncommitted documents of these blocks may still become searchable when Solr comes
                # back (its update log); --resume deletes and re-indexes every block not ledgered.
                log(JOB, f"Solr is still unavailable ({error}); stopping now")
        stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
        ledger = with_blocks(ledger, target, {r.block: ledger_entry(r, manifest.model, stamp) for r in done})
        files.write_atomic(ledger_uri, ledger_text(ledger))
        wave_dead = [record for r in results for record in r.dead_letters]
        new_dead.extend(wave_dead)
        if wave_dead or dead_old:
            redone = [block for w in planned[:number] for block in w]
            files.write_atomic(dead_uri, dead_letters_text(merge_dead_letters(dead_old, redone, new_dead)))
        summary.done.extend(r.block for r in done)
        summary.failed.update(failed)
        summary.docs += sum(r.docs for r in done)
        summary.dead_letters += len(wave_dead)
        wave_docs = sum(r.docs for r in results)
        elapsed = time.monotonic() - wave_started
        log(JOB, f"wave {number}/{len(planned)}: blocks {span(wave)}: {len(done)} verified, {len(failed)} failed, "
                 f"{wave_docs:,} docs in {elapsed:.1f} s ({wave_docs / max(elapsed, 1e-9):,.0f} docs/s), "
                 f"{len(wave_dead)} dead letters; total {summary.docs:,}/{total_docs:,}")
        if failed:  # Solr down, bad input or --strict: stop here, --resume continues after the fix
            summary.not_attempted = [block for w in planned[number:] for block in w]
            redo = sorted(failed) + summary.not_attempted
            log(JOB, f"stopped: {len(redo)} blocks left for --resume: {', '.join(map(str, redo))}")
            break
    if options.merge_segments and summary.exit_code == 0 and summary.done:
        began = time.monotonic()
        log(JOB, f"merging {client.url} down to at most {options.merge_segments} segments (--merge-segments)")
        client.merge_segments(options.merge_segments)
        log(JOB, f"merged in {time.monotonic() - began:.1f} s")
    summary.seconds = time.monotonic() - started
    if summary.dead_letters:
        log(JOB, f"{summary.dead_letters} dead letters in {dead_uri}")
    return summary






