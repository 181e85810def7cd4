"""tinytags/core/tagging.py: ids and blocks, the batch tagger's JSON lines, the manifest's books (no Spark)."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from tinytags.core.contract import (
    CLASSES,
    InputError,
    min_votes_for,
    shard_name,
    shard_number,
)
from tinytags.core.forest import Forest
from tinytags.core.solr_docs import validate_line
from tinytags.core.tagger import Tagger
from tinytags.core.tagging import (
    BlockTask,
    LineFormat,
    Range,
    Shard,
    TaggedBlock,
    batches,
    build_manifest,
    check_shards,
    failure_reason,
    identity_differences,
    manifest_text,
    plan_tag_blocks,
    progress_text,
    run_identity,
    tag_batch,
)

R = 3072  # bytes per record


# --- names, shards ---------------------------------------------------------------------------------


@pytest.mark.parametrize("number, name", [(0, "tiny_00000.bin"), (42, "tiny_00042.bin"), (123456, "tiny_123456.bin")])
def test_shard_names_round_trip(number, name):
    assert shard_name(number) == name
    assert shard_number(name) == number


@pytest.mark.parametrize("name", ["tiny_.bin", "tiny_00001.bin.tmp-1234", "tiny_00001.labels", "other_00001.bin",
                                  "_shards.json", "tiny_0000a.bin"])
def test_other_file_names_are_not_shards(name):
    assert shard_number(name) is None


@pytest.mark.parametrize("size, records, tail", [(0, 0, 0), (R, 1, 0), (5 * R + 7, 5, 7), (R - 1, 0, R - 1)])
def test_records_and_tail(size, records, tail):
    shard = Shard("x/tiny_00000.bin", 0, size)
    assert (shard.records, shard.tail_bytes) == (records, tail)


def test_a_cut_off_shard_is_an_error_naming_file_and_size():
    shard = Shard("hdfs://nn:9000/tiny/tiny_00003.bin", 3, 10 * R + 100)
    with pytest.raises(InputError) as error:
        check_shards([shard], 1000, allow_partial=False)
    message = str(error.value)
    assert "tiny_00003.bin" in message and f"{10 * R + 100:,} bytes" in message and "--allow-partial" in message


def test_allow_partial_turns_the_cut_into_a_warning():
    warnings = check_shards([Shard("a/tiny_00000.bin", 0, 10 * R + 100)], 1000, allow_partial=True)
    assert len(warnings) == 1 and "100 bytes" in warnings[0] and "dropping" in warnings[0]


def test_a_shard_larger_than_the_shard_size_is_an_error():
    with pytest.raises(InputError, match="more than the shard size 10"):
        check_shards([Shard("a/tiny_00000.bin", 0, 11 * R)], 10, allow_partial=False)


def test_two_files_with_the_same_shard_number_are_an_error():
    with pytest.raises(InputError, match="both shard 1"):
        check_shards([Shard("a/tiny_00001.bin", 1, R), Shard("b/tiny_00001.bin", 1, R)], 10, allow_partial=False)


def test_a_short_shard_before_the_last_one_warns_about_missing_ids():
    shards = [Shard("a/tiny_00000.bin", 0, 4 * R), Shard("a/tiny_00001.bin", 1, 3 * R)]
    warnings = check_shards(shards, 10, allow_partial=False)
    assert len(warnings) == 1 and "tiny_00000.bin" in warnings[0] and "ids 4 to 9" in warnings[0]


# --- plan: ranges per block ------------------------------------------------------------------------


def _ids_by_block(shards, shard_size, block_size):
    """Independent expectation: enumerate every image id, group by id // block_size."""
    expected: dict[int, list[tuple[int, int, int]]] = {}
    for shard in shards:
        for record in range(shard.records):
            image_id = shard.number * shard_size + record
            expected.setdefault(image_id // block_size, []).append((image_id, shard.number, record))
    return {block: sorted(items) for block, items in expected.items()}


@pytest.mark.parametrize("sizes, shard_size, block_size", [
    ({0: 100}, 100, 20),              # shard size a multiple of the block size
    ({0: 100, 1: 100, 2: 37}, 100, 30),  # blocks straddle shards; short last shard
    ({3: 50, 1: 100}, 100, 40),        # shards out of order and a gap (no shard 0 or 2)
    ({0: 7}, 1_000_000, 20_000),       # one small shard, default sizes
    ({0: 0, 1: 5}, 5, 5),              # an empty shard
    ({0: 10}, 10, 1),                  # one image per block
])
def test_plan_covers_every_id_once_in_its_block(sizes, shard_size, block_size):
    shards = [Shard(f"s/tiny_{n:05d}.bin", n, count * R) for n, count in sizes.items()]
    tasks = plan_tag_blocks(shards, shard_size, block_size)
    got = {}
    for task in tasks:
        items = []
        for part in task.ranges:
            assert part.path == f"s/tiny_{part.shard:05d}.bin"
            assert part.byte_offset == part.first_record * R
            items += [(part.first_id + k, part.shard, part.first_record + k) for k in range(part.count)]
        assert all(image_id // block_size == task.block for image_id, _, _ in items)
        assert task.images == len(items)
        got[task.block] = items
    assert got == _ids_by_block(shards, shard_size, block_size)
    assert [t.block for t in tasks] == sorted(got)


def test_plan_reads_whole_ranges_not_records():
    tasks = plan_tag_blocks([Shard("s/tiny_00000.bin", 0, 1_000_000 * R)], 1_000_000, 20_000)
    assert len(tasks) == 50
    assert all(len(t.ranges) == 1 and t.ranges[0].count == 20_000 for t in tasks)


@pytest.mark.parametrize("first, count, size, expected", [
    (0, 10, 4, [(0, 4), (4, 4), (8, 2)]),
    (100, 3, 4, [(100, 3)]),
    (5, 8, 8, [(5, 8)]),
    (0, 0, 8, []),
])
def test_batches_split_a_range(first, count, size, expected):
    assert batches(Range("p", 0, first, count, first), size) == expected


@pytest.mark.parametrize("bad", [0, -1])
def test_bad_sizes_are_input_errors(bad):
    with pytest.raises(InputError, match="--block-size"):
        plan_tag_blocks([], 10, bad)
    with pytest.raises(InputError, match="--batch-size"):
        batches(Range("p", 0, 0, 1, 0), bad)
    with pytest.raises(InputError, match="--shard-size"):
        check_shards([], bad, allow_partial=False)


# --- votes needed and JSON lines -------------------------------------------------------------------


@pytest.mark.parametrize("agreement, trees, votes", [
    (0.4, 10, 4), (0.35, 10, 4), (0.3, 10, 3), (0.41, 10, 5), (1.0, 10, 10), (0.0, 10, 1),
    (0.5, 3, 2), (1 / 3, 3, 1), (0.4, 25, 10), (0.7, 10, 7), (0.1, 1, 1),
])
def test_min_votes_is_the_least_count_reaching_the_threshold(agreement, trees, votes):
    assert min_votes_for(agreement, trees) == votes
    # Independent check with exact integer arithmetic on the decimal threshold.
    # A top class always has at least one vote, so the least count is at least 1.
    assert votes == next(v for v in range(1, trees + 1) if v / trees >= agreement - 1e-12)


@pytest.mark.parametrize("agreement", [-0.1, 1.5, float("nan")])
def test_thresholds_outside_zero_one_are_refused(agreement):
    with pytest.raises(InputError, match="--min-agreement"):
        min_votes_for(agreement, 10)


@pytest.mark.parametrize("trees", [1, 3, 7, 10, 25])
def test_agreement_text_parses_back_to_votes_over_trees(trees):
    fmt = LineFormat("m", trees, 100)
    assert [json.loads(text) for text in fmt.agreement] == [v / trees for v in range(trees + 1)]


# Depth-1 trees: (CIFAR-layout feature, threshold, class if <=, class if >). Features with row !=
# column, so reading the Tiny bytes without the transpose would test other pixels.
STUMPS = [(0 * 1024 + 1 * 32 + 5, 127, 3, 5), (1 * 1024 + 7 * 32 + 2, 100, 3, 1), (2 * 1024 + 30 * 32 + 4, 60, 8, 3),
          (0 * 1024 + 9 * 32 + 20, 200, 3, 0), (2 * 1024 + 2 * 32 + 29, 127, 9, 9)]


def _stump_forest() -> Forest:
    feature, threshold, left, right, leaf, roots = [], [], [], [], [], []
    for t, (f, th, low, high) in enumerate(STUMPS):
        root = 3 * t
        roots.append(root)
        feature += [f, 0, 0]
        threshold += [th + 0.5, 0, 0]
        left += [root + 1, root + 1, root + 2]
        right += [root + 2, root + 1, root + 2]
        leaf += [-1, low, high]
    return Forest(np.array(feature, np.int32), np.array(threshold, np.float32), np.array(left, np.int32),
                  np.array(right, np.int32), np.array(leaf, np.int16), np.array(roots, np.int32), 10)


def _images(n, seed=0):
    """n random HWC images, their CIFAR-layout bytes and their Tiny-layout bytes (the layouts' documented formulas)."""
    hwc = np.random.default_rng(seed).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    cifar = np.stack([img.transpose(2, 0, 1).ravel() for img in hwc])          # plane, row, column
    tiny = np.stack([img.ravel(order="F") for img in hwc])                      # reshape(32,32,3,order="F")
    return hwc, cifar, tiny


def _expected_votes(cifar_row):
    counts = [0] * 10
    for f, th, low, high in STUMPS:
        counts[low if cifar_row[f] <= th else high] += 1
    return counts


def test_tag_batch_votes_on_the_cifar_layout_and_writes_the_contract_fields():
    _, cifar, tiny = _images(300)
    fmt = LineFormat("abc123def456", len(STUMPS), 40)
    first_id, shard, first_offset = 1_000_120, 1, 120  # shard 1 of size 1,000,000
    result = tag_batch(Tagger(_stump_forest()), tiny, first_id, shard, first_offset, 3, fmt)
    lines = [json.loads(line) for line in result.lines.decode().splitlines()]
    expected_kept = []
    for i, row in enumerate(cifar):
        counts = _expected_votes(row)
        top = max(counts)
        if top >= 3:
            label = counts.index(top)  # ties: the lower class index
            expected_kept.append({
                "id": first_id + i, "block": (first_id + i) // 40, "label": label, "tag": CLASSES[label],
                "votes": top, "agreement": top / len(STUMPS), "vote_counts": counts, "model": "abc123def456",
                "shard": shard, "offset": first_offset + i, "expected_precision": None,
                "pixels": base64.b64encode(row.tobytes()).decode(),
                # no "vector": a raw-pixel model's colour layout is computed by the indexer
            })
    assert 0 < len(expected_kept) < len(cifar)  # the threshold really filters
    assert lines == expected_kept
    assert (result.read, result.kept) == (len(cifar), len(expected_kept))
    assert result.kept_per_class.tolist() == [sum(1 for e in expected_kept if e["label"] == c) for c in range(10)]
    assert result.lines.endswith(b"\n") and result.lines.count(b"\n") == len(lines)
    for line in lines:
        assert len(validate_line(line)) == R  # the Solr document builder accepts every line


def test_tag_batch_keeping_nothing_gives_no_lines():
    _, _, tiny = _images(20, seed=3)
    result = tag_batch(Tagger(_stump_forest()), tiny, 0, 0, 0, len(STUMPS) + 1, LineFormat("m", len(STUMPS), 10))
    assert (result.lines, result.read, result.kept) == (b"", 20, 0)
    assert result.kept_per_class.tolist() == [0] * 10


def test_model_names_are_json_escaped():
    _, _, tiny = _images(5, seed=4)
    result = tag_batch(Tagger(_stump_forest()), tiny, 0, 0, 0, 0, LineFormat('we"ird\\', len(STUMPS), 10))
    assert {json.loads(line)["model"] for line in result.lines.decode().splitlines()} == {'we"ird\\'}


def test_lines_carry_the_cards_precision_for_their_tag_and_votes():
    _, cifar, tiny = _images(200, seed=6)
    # A table that makes every (class, votes) cell different: 0.01 * class + 0.1 * votes / 2.
    table = {name: [round(0.01 * c + 0.05 * v, 4) for v in range(len(STUMPS) + 1)] for c, name in enumerate(CLASSES)}
    table["ship"][3] = None  # a cell the card could not measure
    result = tag_batch(Tagger(_stump_forest()), tiny, 0, 0, 0, 1, LineFormat("m", len(STUMPS), 10, table))
    lines = [json.loads(line) for line in result.lines.decode().splitlines()]
    assert len(lines) == 200
    for line in lines:
        expected = table[line["tag"]][line["votes"]]
        assert line["expected_precision"] == expected
        assert len(validate_line(line)) == R


# --- run identity, manifest, failures, progress ----------------------------------------------------


SHARDS = [Shard("hdfs://nn/t/tiny_00000.bin", 0, 50 * R), Shard("hdfs://nn/t/tiny_00001.bin", 1, 30 * R + 5)]


def test_same_run_has_no_differences_even_through_another_uri():
    a = run_identity("v1", 0.4, 20, 50, SHARDS)
    b = run_identity("v1", 0.4, 20, 50, [Shard(s.path.replace("hdfs://nn", "hdfs://nn.example:9000"), s.number, s.size)
                                         for s in SHARDS])
    assert identity_differences(a, b) == []


@pytest.mark.parametrize("change, word", [
    ({"model": "v2"}, "model"), ({"min_agreement": 0.5}, "min_agreement"), ({"block_size": 10}, "block_size"),
    ({"shard_size": 60}, "shard_size"), ({"shards": SHARDS[:1]}, "inputs"),
])
def test_different_runs_say_what_differs(change, word):
    base = {"model": "v1", "min_agreement": 0.4, "block_size": 20, "shard_size": 50, "shards": SHARDS}
    other = dict(base, **change)
    differences = identity_differences(run_identity(**base), run_identity(**other))
    assert len(differences) == 1 and differences[0].startswith(word)


def _results(tasks, kept_share=0.5):
    results = []
    for task in tasks:
        kept = int(task.images * kept_share)
        results.append(TaggedBlock(task.block, task.images, kept, task.images - kept, [kept] + [0] * 9))
    return results


def test_manifest_balances_per_block_and_in_total():
    tasks = plan_tag_blocks(SHARDS, 50, 20)
    identity = run_identity("v1", 0.4, 20, 50, SHARDS)
    manifest = build_manifest(identity, tasks, _results(tasks), SHARDS, trees=10, seconds=2.0)
    assert manifest["model"] == "v1" and manifest["min_agreement"] == 0.4 and manifest["min_votes"] == 4
    assert set(manifest["blocks"]) == {"0", "1", "2", "3"}  # ids 0-49 and 50-79
    assert manifest["blocks"]["2"] == {"read": 20, "kept": 10, "dropped": 10, "none": 0}
    for counts in manifest["blocks"].values():
        assert counts["read"] == counts["kept"] + counts["dropped"]
    assert manifest["totals"]["read"] == 80 == manifest["totals"]["kept"] + manifest["totals"]["dropped"]
    assert manifest["partial"] == [{"path": SHARDS[1].path, "records": 30, "bytes_dropped": 5}]
    assert manifest["totals"]["partial_records"] == 1
    assert manifest["kept_per_tag"]["airplane"] == manifest["totals"]["kept"]
    assert manifest["images_per_second"] == 40.0
    assert json.loads(manifest_text(manifest)) == manifest


def test_manifest_refuses_a_missing_or_unbalanced_block():
    tasks = plan_tag_blocks(SHARDS, 50, 20)
    identity = run_identity("v1", 0.4, 20, 50, SHARDS)
    with pytest.raises(ValueError, match="no result for block 3"):
        build_manifest(identity, tasks, _results(tasks)[:3], SHARDS, 10, 1.0)
    short = _results(tasks)
    short[1] = TaggedBlock(1, 19, 9, 10, [9] + [0] * 9)
    with pytest.raises(ValueError, match="block 1 does not balance: planned 20, read 19"):
        build_manifest(identity, tasks, short, SHARDS, 10, 1.0)


def test_manifest_text_puts_one_block_on_a_line():
    tasks = [BlockTask(b, (Range("p", 0, 10 * b, 10, 10 * b),)) for b in range(3)]
    manifest = build_manifest(run_identity("v", 0.4, 10, 100, []), tasks, _results(tasks), [], 10, 1.0)
    text = manifest_text(manifest)
    assert '  "1": {"read": 10, "kept": 5, "dropped": 5, "none": 0},' in text.splitlines()
    assert '  "2": {"read": 10, "kept": 5, "dropped": 5, "none": 0}' in text.splitlines()


@pytest.mark.parametrize("data, error", [
    ({"block": 1, "read": 10, "kept": 4, "dropped": 6, "kept_per_class": [4] + [0] * 9}, None),
    ({"block": 1, "read": 10, "kept": 4, "dropped": 5, "kept_per_class": [4] + [0] * 9}, "!= read 10"),
    ({"block": 1, "read": "10", "kept": 4, "dropped": 6, "kept_per_class": [4] + [0] * 9}, "'read'"),
    ({"block": 1, "read": 10, "kept": 4, "dropped": 6}, "'kept_per_class'"),
    ([], "'block'"),
])
def test_block_info_is_checked_when_resuming(data, error):
    if error is None:
        assert TaggedBlock.from_dict(data, "x").as_dict()["read"] == 10
    else:
        with pytest.raises(InputError, match=error):
            TaggedBlock.from_dict(data, "out/block=1/_block.json")


@pytest.mark.parametrize("text, reason", [
    ("An error occurred while calling o87.collectAndServe.\n: org.apache.spark.SparkException: Job aborted\n"
     "Traceback (most recent call last):\n  File \"x.py\", line 3, in f\n"
     "OSError: block 4: tiny_00000.bin records 0..9: ended after 3,072 of 30,720 bytes\n\n\tat org.apache.X(Y.java:1)\n"
     "Caused by: org.apache.spark.api.python.PythonException: whatever",
     "OSError: block 4: tiny_00000.bin records 0..9: ended after 3,072 of 30,720 bytes"),
    ("hdfs.util.HdfsError: Unable to rename '/a' to '/b'.", "hdfs.util.HdfsError: Unable to rename '/a' to '/b'."),
    ("\nsomething odd happened\nmore", "something odd happened"),
])
def test_failure_reason_is_the_tasks_own_exception(text, reason):
    assert failure_reason(text) == reason


def test_progress_text():
    assert progress_text(5, 50, 100_000, 1_000_000, 2.0) == (
        "blocks 5/50 done, images 100,000/1,000,000 (50,000 images/s, ~18 s left)")
    assert progress_text(0, 3, 0, 60, 1.0) == "blocks 0/3 done, images 0/60 (0 images/s)"
