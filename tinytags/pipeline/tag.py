"""The tag job on Spark: plan the blocks before Spark starts, tag each block in one task, commit it atomically.

The entry point is jobs/tag.py, whose docstring documents the ids, the output layout and the exit codes.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
import uuid
from dataclasses import dataclass

import numpy as np

from tinytags.core.contract import (
    BLOCK_INFO_NAME,
    CARD_FILE,
    CLASSES,
    FOREST_FILE,
    MANIFEST_NAME,
    PART_NAME,
    RUN_NAME,
    SHARD_SIZE,
    STAGING_NAME,
    InputError,
    block_folder,
    block_number,
    min_votes_for,
)
from tinytags.core.features import FEATURES_FILE
from tinytags.core.forest import ModelError
from tinytags.core.images import RECORD_BYTES
from tinytags.core.photos import line_fields
from tinytags.core.tagger import Tagger, card_json
from tinytags.core.tagging import (
    BlockTask,
    LineFormat,
    Shard,
    TaggedBlock,
    batches,
    build_manifest,
    check_shards,
    identity_differences,
    manifest_text,
    plan_tag_blocks,
    progress_text,
    run_identity,
    tag_batch,
)
from tinytags.io.photo_files import read_sources, sidecars
from tinytags.io.shard_files import find_shards, shard_size_of
from tinytags.io.spark import log, task_cores
from tinytags.io.storage import Storage, kind, parent

JOB = "tag"


@dataclass(frozen=True)
class Plan:
    """Everything decided before Spark starts: the model, the shards, the blocks, the output."""

    tagger: Tagger
    shards: list[Shard]
    tasks: list[BlockTask]
    todo: list[BlockTask]
    resumed: list[TaggedBlock]
    identity: dict
    output: str
    files: Storage
    sources: dict[str, tuple[str, int]]  # shard folder -> (its _sources.jsonl, bytes), for packed photos


@dataclass(frozen=True)
class TagTaskContext:
    """What every task needs besides the model (small and picklable)."""

    files: Storage
    staging: str
    output: str
    min_votes: int
    batch_size: int
    fmt: LineFormat
    sources: dict[str, tuple[str, int]]


# --- extract: model, shards, plan, output folder ---------------------------------------------------


def load_model(files: Storage, model_dir: str) -> Tagger:
    """The model of a model dir (local or hdfs://): forest, features, card; the card must list our classes."""
    forest_path = files.join(model_dir, FOREST_FILE)
    card_path = files.join(model_dir, CARD_FILE)
    features_path = files.join(model_dir, FEATURES_FILE)
    if files.status(forest_path) is None:
        raise ModelError(f"no model at {model_dir}: {FOREST_FILE} is missing (train one with jobs/train.py)")
    if files.status(card_path) is None:
        raise ModelError(f"{card_path} is missing: the model dir is incomplete")
    card = card_json(files.read_bytes(card_path), card_path)
    classes = card.get("classes")
    if not isinstance(classes, list) or list(classes) != list(CLASSES):
        raise ModelError(f"{card_path}: classes {classes} are not the CIFAR-10 classes {list(CLASSES)} "
                         "this job tags with")
    features_bytes = files.read_bytes(features_path) if files.status(features_path) is not None else None
    return Tagger.from_files(files.read_bytes(forest_path), features_bytes, card, source=model_dir)


def prepare_output(files: Storage, output: str, identity: dict, tasks: list[BlockTask],
                   resume: bool) -> list[TaggedBlock]:
    """Claim the output folder for this run; returns the blocks --resume can keep.

    A folder of another run (different _run.json) or a non-empty folder that is no tag output is
    refused. For the same run, the old manifest goes first: until this run writes its own, no
    manifest claims blocks that are being replaced.
    """
    status = files.status(output)
    if status is not None and status[0] != "dir":
        raise InputError(f"--output {output} is a file, expected a folder")
    entries = files.list(output) if status else []
    names = {entry.name for entry in entries}
    run_path = files.join(output, RUN_NAME)
    if RUN_NAME in names:
        try:
            old = json.loads(files.read_bytes(run_path))
        except ValueError as error:
            raise InputError(f"{run_path} is not valid JSON ({error}); delete the folder to start over") from error
        differences = identity_differences(old, identity)
        if differences:
            raise InputError(f"--output {output} holds a different tag run: " + "; ".join(differences)
                                + ". Choose another --output, or delete that folder to replace it")
    elif names:
        raise InputError(f"--output {output} is not empty and holds no tag run ({RUN_NAME} is missing); "
                            "choose an empty or new folder")
    files.makedirs(output)
    files.write_atomic(run_path, (json.dumps(identity, indent=1) + "\n").encode())
    files.delete(files.join(output, MANIFEST_NAME))
    files.delete(files.join(output, STAGING_NAME))  # what a crashed run left half-built
    if not resume:
        return []
    planned = {t.block: t.images for t in tasks}
    kept = []
    for name, entry_kind, _ in entries:
        if entry_kind != "dir" or block_number(name) is None:
            continue
        info_path = files.join(files.join(output, name), BLOCK_INFO_NAME)
        try:
            result = TaggedBlock.from_dict(json.loads(files.read_bytes(info_path)), info_path)
        except (OSError, ValueError) as error:  # missing or damaged: the block is simply redone
            log(JOB, f"--resume: redoing {name} ({error})")
            continue
        if planned.get(result.block) == result.read and name == block_folder(result.block):
            kept.append(result)
    return kept


def prepare(options: argparse.Namespace) -> Plan:
    """Check the model, find and check the shards, plan the blocks, claim the output folder."""
    files = Storage(webhdfs=options.webhdfs, user=options.hdfs_user)
    for flag in ("model", "input", "output"):
        if not getattr(options, flag):
            raise InputError(f"--{flag} is required")
    tagger = load_model(files, options.model)
    shards = find_shards(files, options.input)
    recorded = shard_size_of(files, shards)
    if options.shard_size and recorded and options.shard_size != recorded:
        raise InputError(f"--shard-size {options.shard_size:,} but _shards.json beside the shards says "
                            f"{recorded:,}: ids would not match how the shards were split")
    shard_size = options.shard_size or recorded or SHARD_SIZE
    sources = sidecars(files, {parent(s.path) for s in shards})
    for warning in check_shards(shards, shard_size, options.allow_partial, packed=bool(sources)):
        log(JOB, f"warning: {warning}")
    min_votes_for(options.min_agreement, tagger.n_trees)  # validates the threshold early
    tasks = plan_tag_blocks(shards, shard_size, options.block_size)
    identity = run_identity(tagger.version, options.min_agreement, options.block_size, shard_size, shards)
    output = options.output.rstrip("/")
    resumed = prepare_output(files, output, identity, tasks, options.resume)
    done = {r.block for r in resumed}
    todo = [t for t in tasks if t.block not in done]
    return Plan(tagger, shards, tasks, todo, resumed, identity, output, files, sources)


# --- transform + load: one task per block -----------------------------------------------------------


def _read_exactly(reader, size: int, where: str) -> bytes:
    data = reader.read(size)
    if len(data) == size:
        return data
    parts = [data]
    got = len(data)
    while got < size:  # a short read from a socket; a local file only ends early if it shrank
        more = reader.read(size - got)
        if not more:
            raise OSError(f"{where}: ended after {got:,} of {size:,} bytes (did the shard change?)")
        parts.append(more)
        got += len(more)
    return b"".join(parts)


def _source_fields(context: TagTaskContext, part) -> dict[int, str] | None:
    """The source, width and height text of a range's packed photos, by id (None for Tiny Images shards)."""
    sidecar = context.sources.get(parent(part.path))
    if sidecar is None:
        return None
    found = read_sources(context.files, *sidecar, part.first_id, part.first_id + part.count)
    return {image_id: line_fields(source) for image_id, source in found.items()}


def tag_block(context: TagTaskContext, model_broadcast, task: BlockTask) -> TaggedBlock:
    """Tag one block and move its finished folder into place; returns its counts."""
    started = time.monotonic()
    files = context.files
    tagger = model_broadcast.value
    tagger.use_threads(task_cores())
    read = kept = none = 0
    per_class = np.zeros(len(CLASSES), np.int64)

    def lines():
        nonlocal read, kept, none, per_class
        for part in task.ranges:
            extras = _source_fields(context, part)
            with files.open_range(part.path, part.byte_offset, part.count * RECORD_BYTES) as reader:
                for first, count in batches(part, context.batch_size):
                    where = f"block {task.block}: {part.path} records {first:,}..{first + count - 1:,}"
                    data = _read_exactly(reader, count * RECORD_BYTES, where)
                    tiny = np.frombuffer(data, np.uint8).reshape(count, RECORD_BYTES)
                    result = tag_batch(tagger, tiny, part.first_id + first - part.first_record, part.shard,
                                       first, context.min_votes, context.fmt, extras)
                    read += result.read
                    kept += result.kept
                    none += result.none
                    per_class += result.kept_per_class
                    if result.lines:
                        yield result.lines

    attempt = f"{context.staging}/{block_folder(task.block)}-{uuid.uuid4().hex[:8]}"
    files.makedirs(attempt)
    files.write(f"{attempt}/{PART_NAME}", lines())
    result = TaggedBlock(task.block, read, kept, read - kept, per_class.tolist(), time.monotonic() - started,
                         none=none)
    if read != task.images:
        raise OSError(f"block {task.block}: read {read:,} images, planned {task.images:,}")
    files.write(f"{attempt}/{BLOCK_INFO_NAME}", json.dumps(result.as_dict()).encode())
    final = f"{context.output}/{block_folder(task.block)}"
    if files.status(final) is not None:  # a re-run: move the old (complete) block aside first
        old = f"{attempt}-old"
        files.rename(final, old)
        files.rename(attempt, final)
        files.delete(old)
    else:
        files.rename(attempt, final)
    return result


def task_context(plan: Plan, options: argparse.Namespace) -> TagTaskContext:
    """The settings every block task of this run shares (its own staging folder included)."""
    tagger = plan.tagger
    return TagTaskContext(
        files=plan.files, staging=f"{plan.output}/{STAGING_NAME}/{uuid.uuid4().hex[:12]}", output=plan.output,
        min_votes=min_votes_for(options.min_agreement, tagger.n_trees), batch_size=options.batch_size,
        fmt=LineFormat(tagger.version, tagger.n_trees, options.block_size, tagger.card.get("expected_precision")),
        sources=plan.sources,
    )


def tag(spark, plan: Plan, options: argparse.Namespace) -> list[TaggedBlock]:
    """Run the block tasks on Spark, logging progress; returns every block's result."""
    sc = spark.sparkContext
    tagger = plan.tagger
    context = task_context(plan, options)
    images_total = sum(t.images for t in plan.todo)
    local_paths = [p for p in [plan.output] + [s.path for s in plan.shards] if kind(p) == "local"]
    if local_paths and not sc.master.startswith("local"):
        log(JOB, f"warning: {local_paths[0]} is a local path and the master is {sc.master}: every worker must "
                 "see it at that path (a shared file system), or use hdfs://")
    log(JOB, f"model {tagger.version} ({tagger.features_name} features, {tagger.n_trees} trees; keep >= {context.min_votes} votes = "
             f"agreement >= {options.min_agreement}); {len(plan.shards)} shards, {len(plan.tasks)} blocks "
             f"of {options.block_size:,}: {len(plan.resumed)} already done (--resume), {len(plan.todo)} to tag "
             f"({images_total:,} images) -> {plan.output}")
    if not plan.todo:
        return list(plan.resumed)
    model_broadcast = sc.broadcast(tagger)
    images_done = sc.accumulator(0)
    blocks_done = sc.accumulator(0)

    def run_task(task: BlockTask) -> TaggedBlock:
        result = tag_block(context, model_broadcast, task)
        images_done.add(result.read)
        blocks_done.add(1)
        return result

    outcome: dict = {}

    def collect():
        try:
            outcome["results"] = sc.parallelize(plan.todo, len(plan.todo)).map(run_task).collect()
        except BaseException as error:  # noqa: BLE001 - re-raised in the driver's main thread
            outcome["error"] = error

    started = time.monotonic()
    worker = threading.Thread(target=collect, name="tag-collect", daemon=True)
    worker.start()
    while worker.is_alive():
        worker.join(options.progress_seconds)
        if worker.is_alive():
            log(JOB, progress_text(blocks_done.value, len(plan.todo), images_done.value, images_total,
                                   time.monotonic() - started))
    model_broadcast.unpersist()
    if "error" in outcome:
        raise outcome["error"]
    return list(plan.resumed) + outcome["results"]


def finish(plan: Plan, results: list[TaggedBlock], seconds: float) -> dict:
    """Write the manifest (last, atomically) and drop the staging folder; returns the manifest."""
    manifest = build_manifest(plan.identity, plan.tasks, results, plan.shards, plan.tagger.n_trees, seconds)
    manifest["features"] = plan.tagger.features_name
    plan.files.write_atomic(plan.files.join(plan.output, MANIFEST_NAME), manifest_text(manifest).encode())
    plan.files.delete(plan.files.join(plan.output, STAGING_NAME))
    return manifest


def summary_text(manifest: dict, output: str) -> str:
    """The end-of-run summary: counts, rate, tags kept."""
    totals = manifest["totals"]
    share = totals["kept"] / totals["read"] if totals["read"] else 0.0
    tags = ", ".join(f"{tag} {n:,}" for tag, n in sorted(manifest["kept_per_tag"].items(), key=lambda kv: -kv[1]))
    partial = f"; {totals['partial_records']} cut-off records dropped" if totals["partial_records"] else ""
    resumed = f" ({manifest['resumed_blocks']} blocks kept from before)" if manifest.get("resumed_blocks") else ""
    return (f"done: {totals['read']:,} images in {totals['blocks']:,} blocks{resumed}: kept {totals['kept']:,} "
            f"({share:.1%}), dropped {totals['dropped']:,} (of them {totals.get('none', 0):,} junk){partial}; "
            f"{manifest['seconds']:,.1f} s, "
            f"{manifest['images_per_second'] or 0:,.0f} images/s; kept per tag: {tags}; "
            f"manifest {output}/{MANIFEST_NAME}")






