"""tinytags/core/indexing.py: manifest and block planning, ledger, dead letters, decoding, summary (retries and bisection: test_solr.py)."""

from __future__ import annotations

import bz2
import gzip
import json

import pytest

from tinytags.core.contract import InputError, block_number
from tinytags.core.indexing import (
    BlockCounts,
    BlockDecoder,
    IndexedBlock,
    Manifest,
    Summary,
    blocks_to_index,
    chunks,
    completed_blocks,
    count_lines,
    dead_letter,
    dead_letters_text,
    empty_ledger,
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

GOOD_MANIFEST = {"model": "abc123", "min_agreement": 0.4,
                 "blocks": {"0": {"read": 10, "kept": 6, "dropped": 4}, "2": {"read": 5, "kept": 0, "dropped": 5}}}


def test_manifest_is_decoded_with_its_blocks():
    manifest = parse_manifest(json.dumps(GOOD_MANIFEST), "OUT/_manifest.json")
    assert manifest == Manifest("abc123", 0.4, {0: BlockCounts(10, 6, 4), 2: BlockCounts(5, 0, 5)})


@pytest.mark.parametrize(
    "text, message",
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "expected a JSON object, got list"),
        (json.dumps({**GOOD_MANIFEST, "model": None}), "field 'model' has the wrong type"),
        (json.dumps({k: v for k, v in GOOD_MANIFEST.items() if k != "blocks"}), "missing field 'blocks'"),
        (json.dumps({**GOOD_MANIFEST, "blocks": {"x": {"read": 1, "kept": 1, "dropped": 0}}}), "'x' should be a block number"),
        (json.dumps({**GOOD_MANIFEST, "blocks": {"1": {"read": 1, "kept": -1, "dropped": 2}}}), r"blocks\['1'\].kept should be a non-negative"),
        (json.dumps({**GOOD_MANIFEST, "blocks": {"1": {"read": 9, "kept": 1, "dropped": 2}}}), r"kept 1 \+ dropped 2 != read 9"),
    ],
)
def test_bad_manifests_name_the_file_and_field(text, message):
    with pytest.raises(InputError, match=message) as caught:
        parse_manifest(text, "hdfs://nn/out/_manifest.json")
    assert str(caught.value).startswith("hdfs://nn/out/_manifest.json: ")


@pytest.mark.parametrize("name, expected", [("block=0", 0), ("block=3965", 3965), ("block=x", None),
                                            ("_temporary", None), ("block=1.tmp", None)])
def test_block_folder_names(name, expected):
    assert block_number(name) == expected


@pytest.mark.parametrize(
    "folders, expected, message",
    [
        ({0, 2}, [0, 2], None),
        ({0}, [0, 2], None),  # block 2 kept nothing: no folder needed, still planned (deletes old docs)
        ({2}, None, "lists block 0 with kept=6 but there is no folder block=0"),
        ({0, 1, 7}, None, r"folder block=1 \(and 1 more\) is not in _manifest.json"),
    ],
)
def test_plan_checks_folders_against_the_manifest(folders, expected, message):
    manifest = parse_manifest(json.dumps(GOOD_MANIFEST), "m")
    if message:
        with pytest.raises(InputError, match=message):
            blocks_to_index(manifest, folders, "OUT")
    else:
        assert blocks_to_index(manifest, folders, "OUT") == expected


@pytest.mark.parametrize("blocks, per_wave, expected", [
    ([1, 2, 3, 4, 5], 2, [[1, 2], [3, 4], [5]]),
    ([1, 2], 8, [[1, 2]]),
    (list(range(13)), 8, [list(range(7)), list(range(7, 13))]),  # 7 + 6, not 8 + 5
    (list(range(16)), 8, [list(range(8)), list(range(8, 16))]),
    ([], 3, []),
])
def test_waves(blocks, per_wave, expected):
    assert waves(blocks, per_wave) == expected


def _result(block, lines, dead=0, docs=None, error=None):
    result = IndexedBlock(block, lines=lines, docs=lines - dead if docs is None else docs, error=error)
    result.dead_letters = [dead_letter(block, "block=%d/part-00000" % block, n + 1, "bad", "x") for n in range(dead)]
    return result


def test_ledger_round_trip_per_solr_target():
    ledger = empty_ledger()
    entry = ledger_entry(_result(3, 10, dead=1), "abc123", "2026-01-01T00:00:00+00:00")
    assert entry == {"lines": 10, "docs": 9, "dead_letters": 1, "model": "abc123", "indexed_at": "2026-01-01T00:00:00+00:00"}
    ledger = with_blocks(ledger, "http://solr/a/", {3: entry, 12: entry})
    ledger = with_blocks(ledger, "http://solr/b", {4: entry})
    reread = parse_ledger(ledger_text(ledger), "L")
    assert ledger_blocks(reread, "http://solr/a") == {3: entry, 12: entry}  # trailing slash: same target
    assert ledger_blocks(reread, "http://solr/b") == {4: entry}
    assert ledger_blocks(reread, "http://solr/c") == {}
    assert ledger_blocks(with_blocks(reread, "http://solr/a", {3: None}), "http://solr/a") == {12: entry}
    assert ledger_blocks(reread, "http://solr/a") == {3: entry, 12: entry}  # with_blocks copies


@pytest.mark.parametrize("text, message", [("{", "damaged ledger"), ('{"format": 99, "targets": {}}', "format 1")])
def test_damaged_ledger_is_an_error_not_a_fresh_start(text, message):
    with pytest.raises(InputError, match=message):
        parse_ledger(text, "OUT/_index_ledger.json")


def test_missing_ledger_is_empty():
    assert parse_ledger(None, "L") == empty_ledger()


MANIFEST = Manifest("m2", 0.4, {0: BlockCounts(10, 8, 2), 1: BlockCounts(10, 9, 1), 2: BlockCounts(10, 7, 3),
                                3: BlockCounts(10, 6, 4), 4: BlockCounts(10, 5, 5)})


@pytest.mark.parametrize(
    "block, entry, solr_count, skipped",
    [
        (0, {"model": "m2", "lines": 8, "docs": 8}, 8, True),
        (1, {"model": "m2", "lines": 9, "docs": 8}, 8, True),   # one dead letter: 8 docs is complete
        (2, {"model": "m1", "lines": 7, "docs": 7}, 7, False),  # ledgered for an older model
        (3, {"model": "m2", "lines": 5, "docs": 5}, 5, False),  # the tag output changed since
        (4, {"model": "m2", "lines": 5, "docs": 5}, 0, False),  # Solr lost them (new core, wiped index)
        (9, {"model": "m2", "lines": 5, "docs": 5}, 5, False),  # not in this manifest
    ],
)
def test_resume_skips_only_blocks_that_are_ledgered_and_still_in_solr(block, entry, solr_count, skipped):
    assert (block in completed_blocks({block: entry}, MANIFEST, {block: solr_count})) is skipped


def test_verify_compares_solr_counts_with_lines_minus_dead_letters():
    results = [_result(0, 10), _result(1, 10, dead=2), _result(2, 10), _result(3, 10, error="Solr unavailable: x")]
    done, failed = verify(results, {0: 10, 1: 8, 2: 9})
    assert [r.block for r in done] == [0, 1]
    assert failed == {2: "Solr holds 9 documents for block 2 after the commit, expected 10 (10 lines - 0 dead letters)",
                      3: "Solr unavailable: x"}


def test_dead_letters_merge_keeps_blocks_not_redone():
    old = [dead_letter(1, "block=1/part-00000", 4, "old", "a"), dead_letter(2, "block=2/part-00000", 9, "old", "b")]
    new = [dead_letter(2, "block=2/part-00001", 1, "new", "c")]
    merged = merge_dead_letters(old, redone=[2, 3], new=new)
    assert [(r["block"], r["reason"]) for r in merged] == [(1, "old"), (2, "new")]
    assert parse_dead_letters(dead_letters_text(merged)) == merged


def test_dead_letter_keeps_only_the_start_of_a_long_line():
    record = dead_letter(5, "block=5/part-00000", 17, "malformed JSON", "x" * 5000)
    assert len(record["text"]) == 300 and record["line"] == 17 and record["block"] == 5


@pytest.mark.parametrize(
    "content, expected",
    [
        ("a\nb\n", [(1, "a"), (2, "b")]),
        ("a\n\n  \nb", [(1, "a"), (4, "b")]),  # blank lines are skipped but still numbered
        ("", []),
    ],
)
def test_split_and_count_lines(content, expected):
    assert list(split_lines(content)) == expected
    assert count_lines(content) == len(expected)


@pytest.mark.parametrize(
    "path, data, expected",
    [
        ("block=1/part-00000", b'{"id": 1}\n', '{"id": 1}\n'),
        ("block=1/part-00000.gz", gzip.compress(b"a\nb\n"), "a\nb\n"),
        ("block=1/part-00000.bz2", bz2.compress(b"a\n"), "a\n"),
        ("block=1/part-00000", b'{"tag": "c\xffat"}\n', '{"tag": "c\ufffdat"}\n'),  # bad UTF-8: that line only
    ],
)
def test_part_text(path, data, expected):
    assert part_text(path, data) == expected


def _line(image_id, block=3, model="m2", **extra):
    return json.dumps({"id": image_id, "block": block, "model": model, **extra})


@pytest.mark.parametrize(
    "text, reason",
    [
        ('{"id": 1, "block": 3', "malformed JSON"),
        ("[1, 2]", "expected a JSON object, got list"),
        (_line(7, block=4), "field 'block' is 4 but the line is in folder block=3"),
        (_line(7, model="old"), "field 'model' is 'old' but _manifest.json says 'm2'"),
        (_line(5), "duplicate id 5 (first at block=3/part-00000:1)"),
    ],
)
def test_decoder_dead_letters_what_cannot_belong_to_the_block(text, reason):
    decoder = BlockDecoder(3, "m2")
    good, dead = decoder.decode("block=3/part-00000", [(1, _line(5)), (2, text)])
    assert [number for number, _ in good] == [1]
    assert dead == [dead_letter(3, "block=3/part-00000", 2, dead[0]["reason"], text)]
    assert dead[0]["reason"].startswith(reason)


def test_decoder_leaves_field_checks_to_the_document_builder():
    good, dead = BlockDecoder(3, "m2").decode("f", [(1, json.dumps({"id": "7", "tag": 5}))])
    assert dead == [] and good == [(1, {"id": "7", "tag": 5})]


@pytest.mark.parametrize("size, expected", [(2, [[1, 2], [3, 4], [5]]), (5, [[1, 2, 3, 4, 5]]), (9, [[1, 2, 3, 4, 5]])])
def test_chunks(size, expected):
    assert [list(c) for c in chunks([1, 2, 3, 4, 5], size)] == expected


def test_summary_text_and_exit_code():
    summary = Summary(done=[0, 1], skipped=[2], failed={3: "Solr unavailable: down"}, not_attempted=[4],
                      docs=30_000, dead_letters=2, seconds=3.0)
    assert summary.exit_code == 1
    assert summary.text().splitlines() == [
        "2 blocks done, 1 skipped, 1 failed, 1 not attempted; 30,000 documents in 3.0 s (10,000 docs/s); 2 dead letters",
        "  block 3 FAILED: Solr unavailable: down",
    ]
    assert summary.as_dict()["docs_per_s"] == 10_000.0
    assert Summary(done=[1], docs=5, seconds=1).exit_code == 0

