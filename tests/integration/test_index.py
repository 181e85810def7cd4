"""jobs/index.py against the real Solr: counts per block, re-runs, dead letters, faults, resume, HDFS."""

from __future__ import annotations

import base64
import json
import os
import socket
import sys
import threading
import time
import xml.etree.ElementTree as ElementTree

import numpy as np
import pytest
import requests

from deploy.stack import supervisor
from deploy.stack.services import services
from jobs import index
from tests.helpers import MODEL, ROOT, spark_submit, wait_for_ledger, write_tag_output
from tinytags.core.images import embedding
from tinytags.core.solr_docs import to_solr_docs
from tinytags.io.solr import SolrClient, SolrRejected, backoff_delays, send_bisecting
from tinytags.pipeline import index as index_pipeline
from tinytags.settings import stack_settings

# The in-process SparkSession's Python workers must be this interpreter (numpy, the jobs package).
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)

def run_index(spark, out, solr, *flags):
    return index_pipeline.run(spark, index.parse_args(["--input", str(out), "--solr", solr, *flags]))


def block_counts(solr: str) -> dict[int, int]:
    answer = requests.get(f"{solr}/select", params={"rows": 0, "facet": "true", "facet.field": "block",
                                                    "facet.limit": -1, "facet.mincount": 1, "wt": "json"}, timeout=30).json()
    flat = answer["facet_counts"]["facet_fields"]["block"]
    return {int(value): count for value, count in zip(flat[::2], flat[1::2])}


def all_docs(solr: str, fl: str = "*") -> list[dict]:
    answer = requests.get(f"{solr}/select", params={"q": "*:*", "rows": 100_000, "fl": fl, "sort": "image_id asc",
                                                    "wt": "json"}, timeout=60).json()
    return answer["response"]["docs"]


def test_configset_is_well_formed_and_declares_what_the_indexer_needs():
    # Solr reads solr_conf/ only when it starts: a broken file would surface at the next restart.
    schema = ElementTree.parse(ROOT / "solr_conf" / "managed-schema.xml").getroot()
    fields = {f.get("name"): f.attrib for f in schema.iter("field")}
    assert set(index_pipeline.SCHEMA_FIELDS) <= set(fields)
    assert schema.findtext("uniqueKey") == "id"
    assert fields["pixels"].get("type") == "stored_text" and "indexed" not in fields["pixels"]
    types = {t.get("name"): t.attrib for t in schema.iter("fieldType")}
    assert types["stored_text"]["indexed"] == "false" and types["stored_text"]["stored"] == "true"
    assert types["knn_vector_48"]["vectorDimension"] == "48"
    config = ElementTree.parse(ROOT / "solr_conf" / "solrconfig.xml").getroot()
    assert config.find("schemaFactory/bool[@name='mutable']").text == "false"  # schemaless off
    assert config.findtext("updateHandler/autoCommit/maxTime").startswith("${")
    assert not [c for c in config.iter("processor") if "AddSchemaFields" in c.get("class", "")]


@pytest.mark.parametrize(
    "env, argv, expected",
    [
        ({"TINYTAGS_TAG_OUTPUT": "hdfs://nn:9000/tags", "TINYTAGS_SOLR_URL": "http://solr:8983/solr/x"}, [],
         {"input": "hdfs://nn:9000/tags", "solr": "http://solr:8983/solr/x", "resume": False, "batch_size": 2000}),
        ({"TINYTAGS_INDEX_BATCH_SIZE": "500", "TINYTAGS_INDEX_RETRIES": "0"}, ["--input", "o", "--resume"],
         {"input": "o", "solr": "http://127.0.0.1:8983/solr/tinytags", "resume": True, "batch_size": 500, "retries": 0}),
        # Solr's root, as the web app and tests/conftest.py take it: the collection is appended.
        ({"TINYTAGS_SOLR_URL": "http://solr:8983/solr/"}, ["--input", "o"], {"solr": "http://solr:8983/solr/tinytags"}),
        ({"TINYTAGS_SOLR_COLLECTION": "c2"}, ["--input", "o", "--solr", "http://solr:8983/solr"],
         {"solr": "http://solr:8983/solr/c2"}),
    ],
)
def test_flags_default_from_the_environment(monkeypatch, env, argv, expected):
    for name in ("TINYTAGS_TAG_OUTPUT", "TINYTAGS_SOLR_URL", "TINYTAGS_SOLR_COLLECTION"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    options = vars(index.parse_args(argv))
    assert {name: options[name] for name in expected} == expected


@pytest.mark.parametrize("argv, message", [([], "--input is required"), (["--input", "o", "--batch-size", "0"], "--batch-size should be >= 1")])
def test_bad_flags_are_refused(monkeypatch, capsys, argv, message):
    monkeypatch.delenv("TINYTAGS_TAG_OUTPUT", raising=False)
    with pytest.raises(SystemExit):
        index.parse_args(argv)
    assert message in capsys.readouterr().err


@pytest.mark.integration
def test_index_counts_per_block_equal_the_manifest(spark, solr_core, tmp_path):
    out = tmp_path / "tags"
    lines = write_tag_output(out, {0: 300, 1: 250, 2: 0, 5: 120})
    summary = run_index(spark, out, solr_core, "--blocks-per-commit", "2", "--batch-size", "100")
    manifest = json.loads((out / "_manifest.json").read_text())
    expected = {int(b): c["kept"] for b, c in manifest["blocks"].items() if c["kept"]}
    assert block_counts(solr_core) == expected
    assert (summary.done, summary.skipped, summary.failed, summary.docs) == ([0, 1, 2, 5], [], {}, 670)
    ledger = json.loads((out / "_index_ledger.json").read_text())
    assert {int(b): e["docs"] for b, e in ledger["targets"][solr_core]["blocks"].items()} == {0: 300, 1: 250, 2: 0, 5: 120}
    # Every stored field is the line's; the vector is the embedding of the line's pixels.
    line = lines[1][17]
    (doc,) = requests.get(f"{solr_core}/select", params={"q": f"id:{line['id']}", "fl": "*", "wt": "json"}).json()["response"]["docs"]
    for name in ("block", "label", "tag", "votes", "agreement", "vote_counts", "model", "pixels", "shard", "offset"):
        assert doc[name] == line[name], name
    assert doc["id"] == str(line["id"]) and doc["image_id"] == line["id"]
    np.testing.assert_allclose(doc["vector"], embedding(base64.b64decode(line["pixels"]))[0], atol=1e-5)


@pytest.mark.integration
def test_reindexing_the_same_output_changes_nothing(spark, solr_core, tmp_path):
    out = tmp_path / "tags"
    write_tag_output(out, {0: 200, 3: 150}, parts=3)
    run_index(spark, out, solr_core)
    fields = "id,image_id,block,shard,offset,label,tag,votes,agreement,vote_counts,model,pixels,vector"
    before = all_docs(solr_core, fields)
    again = run_index(spark, out, solr_core)  # no --resume: every block deleted and added again
    after = all_docs(solr_core, fields)
    assert again.done == [0, 3] and again.docs == 350
    assert after == before and len(after) == 350
    assert len({doc["id"] for doc in after}) == 350


def _segments(url: str) -> list[int]:
    """Segments of every core behind a standalone core's or a SolrCloud collection's URL."""
    root, name = url.rsplit("/", 1)
    status = requests.get(f"{root}/admin/cores", params={"action": "STATUS", "core": name, "wt": "json"}, timeout=60)
    index = status.json()["status"].get(name, {}).get("index")
    if index is not None:
        return [index["segmentCount"]]
    cluster = requests.get(f"{root}/admin/collections", params={"action": "CLUSTERSTATUS", "collection": name,
                                                                 "wt": "json"}, timeout=60).json()
    counts = []
    for shard in cluster["cluster"]["collections"][name]["shards"].values():
        for replica in shard["replicas"].values():
            luke = requests.get(f"{replica['base_url']}/{replica['core']}/admin/luke",
                                params={"show": "index", "numTerms": "0", "wt": "json"}, timeout=60).json()
            counts.append(luke["index"]["segmentCount"])
    return counts


@pytest.mark.integration
def test_merge_segments_leaves_at_most_that_many_and_every_document(spark, solr_core, tmp_path):
    out = tmp_path / "tags"
    lines = write_tag_output(out, {block: 40 for block in range(6)})
    # One block per wave: a commit, so a segment, per block.
    run_index(spark, out, solr_core, "--blocks-per-commit", "1")
    assert max(_segments(solr_core)) > 1
    summary = run_index(spark, out, solr_core, "--resume", "--merge-segments", "1")
    assert summary.exit_code == 0 and summary.skipped == list(range(6))
    assert max(_segments(solr_core)) > 1  # nothing was indexed by this run: nothing merged
    write_tag_output(tmp_path / "more", {6: 40})
    summary = run_index(spark, tmp_path / "more", solr_core, "--merge-segments", "1")
    assert summary.exit_code == 0 and max(_segments(solr_core)) == 1  # on SolrCloud: per shard
    assert block_counts(solr_core) == {**{block: len(block_lines) for block, block_lines in lines.items()}, 6: 40}


@pytest.mark.integration
def test_a_stale_document_of_a_block_is_removed_when_the_block_is_redone(spark, solr_core, tmp_path):
    out = tmp_path / "tags"
    lines = write_tag_output(out, {4: 100})
    stale = dict(lines[4][0], id=4999, offset=4999 % 5000)  # kept by an older tag run, not by this one
    requests.post(f"{solr_core}/update", params={"commit": "true"}, json=to_solr_docs([stale]), timeout=30).raise_for_status()
    run_index(spark, out, solr_core)
    ids = {doc["image_id"] for doc in all_docs(solr_core, "image_id")}
    assert ids == {line["id"] for line in lines[4]}


@pytest.mark.integration
def test_bad_lines_are_dead_lettered_and_the_rest_indexed(spark, solr_core, tmp_path):
    out = tmp_path / "tags"
    lines = write_tag_output(out, {0: 100, 1: 100}, parts=1)
    part = out / "block=1" / "part-00000"
    text = part.read_text().splitlines()
    text[9] = text[9][:200]  # a truncated line (line 10)
    text[19] = json.dumps(dict(json.loads(text[19]), tag="truck"))  # a contract violation (line 20)
    part.write_text("\n".join(text) + "\n")
    summary = run_index(spark, out, solr_core)
    assert summary.failed == {} and summary.dead_letters == 2
    assert block_counts(solr_core) == {0: 100, 1: 98}
    dead = [json.loads(row) for row in (out / "_index_dead_letters.jsonl").read_text().splitlines()]
    assert [(d["block"], d["file"], d["line"]) for d in dead] == [(1, "block=1/part-00000", 10), (1, "block=1/part-00000", 20)]
    assert dead[0]["reason"].startswith("malformed JSON") and "label" in dead[1]["reason"]
    bad_ids = {lines[1][9]["id"], lines[1][19]["id"]}
    assert {doc["image_id"] for doc in all_docs(solr_core, "image_id")} == {
        line["id"] for block in lines.values() for line in block} - bad_ids
    ledger = json.loads((out / "_index_ledger.json").read_text())["targets"][solr_core]["blocks"]
    assert ledger["1"]["dead_letters"] == 2 and ledger["1"]["docs"] == 98
    # --strict fails the block instead, naming the file and line, before touching Solr.
    strict = run_index(spark, out, solr_core, "--strict", "--blocks-per-commit", "1")
    assert list(strict.failed) == [1] and strict.exit_code == 1
    assert "block=1/part-00000 line 10: malformed JSON" in strict.failed[1] and "(--strict)" in strict.failed[1]
    assert block_counts(solr_core) == {0: 100, 1: 98}


@pytest.mark.integration
def test_documents_solr_rejects_are_isolated_by_bisection(solr_core, tmp_path):
    lines = write_tag_output(tmp_path / "tags", {2: 40})[2]
    docs = to_solr_docs(lines)
    docs[7]["votes"] = "many"  # Solr refuses this one document (pint), with HTTP 400
    docs[30]["vector"] = [0.5] * 3  # and this one (48 dimensions expected)
    client = SolrClient(solr_core)

    def add(batch):
        client.add_json([json.dumps(doc) for doc in batch])

    with pytest.raises(SolrRejected):
        add(docs)
    rejected = send_bisecting(docs, add, max_rejects=10)
    assert [i for i, _ in rejected] == [7, 30]
    assert "votes" in rejected[0][1]
    client.commit()
    assert {doc["image_id"] for doc in all_docs(solr_core, "image_id")} == {line["id"] for line in lines} - {
        lines[7]["id"], lines[30]["id"]}


@pytest.mark.integration
def test_missing_manifest_and_miscounted_block_are_clear_errors(spark, solr_core, tmp_path):
    out = tmp_path / "tags"
    write_tag_output(out, {0: 50}, manifest=False)
    with pytest.raises(index_pipeline.InputError, match=r"_manifest.json not found: is .* a tag output"):
        run_index(spark, out, solr_core)
    manifest = {"model": MODEL, "min_agreement": 0.4, "blocks": {"0": {"read": 1000, "kept": 51, "dropped": 949}}}
    (out / "_manifest.json").write_text(json.dumps(manifest))
    summary = run_index(spark, out, solr_core)
    assert summary.failed == {0: "block=0 has 50 JSON lines in 2 part files but _manifest.json says kept=51"}
    assert summary.exit_code == 1 and block_counts(solr_core) == {}
    with pytest.raises(index_pipeline.SolrError, match="no Solr collection at"):
        run_index(spark, out, solr_core.rsplit("/", 1)[0] + "/no_such_core")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture()
def private_solr(tmp_path):
    """A Solr of our own (never the shared one on 8983), so a test may stop and restart it."""
    settings = stack_settings(stack_dir=tmp_path / "stack", solr_port=_free_port(), solr_heap="512m")
    service = next(s for s in services(settings) if s.name == "solr")
    supervisor.start(settings, service)
    try:
        yield settings, service, f"http://127.0.0.1:{settings.solr_port}/solr/tinytags"
    finally:
        supervisor.stop(settings, "solr")


@pytest.mark.integration
@pytest.mark.slow
def test_solr_stopped_mid_run_then_resume_is_exact(spark, private_solr, tmp_path):
    settings, service, solr = private_solr
    out = tmp_path / "tags"
    lines = write_tag_output(out, {block: 60 + block for block in range(24)}, parts=1)
    ledger_file = out / "_index_ledger.json"
    outcome = {}
    flags = ["--parallelism", "1", "--blocks-per-commit", "1", "--retries", "2", "--backoff", "0.2", "--batch-size", "20"]
    runner = threading.Thread(target=lambda: outcome.setdefault("summary", run_index(spark, out, solr, *flags)))
    runner.start()
    wait_for_ledger(ledger_file, solr, 3, timeout=120)  # stop Solr once a few blocks are in the ledger
    supervisor.stop(settings, "solr")
    runner.join(timeout=180)
    first = outcome["summary"]
    assert first.exit_code == 1 and len(first.failed) == 1, first.text()
    (block, reason), = first.failed.items()
    assert reason.startswith("Solr unavailable") or reason.startswith("not verified"), reason
    assert f"block {block} FAILED" in first.text()
    assert 3 <= len(first.done) < 24 and first.not_attempted

    supervisor.start(settings, service)
    second = run_index(spark, out, solr, "--resume", "--blocks-per-commit", "8")
    assert second.exit_code == 0 and second.failed == {}
    assert second.skipped == first.done
    assert sorted(second.done) == sorted(set(range(24)) - set(first.done))
    assert block_counts(solr) == {block: len(block_lines) for block, block_lines in lines.items()}
    ids = [doc["id"] for doc in all_docs(solr, "id")]
    expected = {str(line["id"]) for block_lines in lines.values() for line in block_lines}
    assert len(ids) == len(expected) and set(ids) == expected  # nothing lost, nothing twice


@pytest.mark.integration
@pytest.mark.slow
def test_solr_killed_mid_run_stops_within_one_backoff_cycle(spark, private_solr, tmp_path):
    """Solr dies (kill -9) while two tasks index a wave: the run gives up about one retry schedule
    later (not one schedule per block, nor another for the driver), names every block left, and a
    --resume after the restart makes the index exact."""
    settings, service, solr = private_solr
    out = tmp_path / "tags"
    lines = write_tag_output(out, {block: 150 for block in range(16)}, parts=1)
    ledger_file = out / "_index_ledger.json"
    retries, backoff = 3, 1.5
    cycle = sum(backoff_delays(retries, backoff))
    outcome = {}
    flags = ["--parallelism", "2", "--blocks-per-commit", "4", "--retries", str(retries), "--backoff", str(backoff),
             "--batch-size", "10"]
    runner = threading.Thread(target=lambda: outcome.setdefault("summary", run_index(spark, out, solr, *flags)))
    runner.start()
    wait_for_ledger(ledger_file, solr, 4, timeout=120)  # kill Solr once the first wave is in the ledger
    killed = time.monotonic()
    os.killpg(supervisor.running_pid(settings, "solr"), 9)
    runner.join(timeout=180)
    stopped_after = time.monotonic() - killed
    first = outcome["summary"]
    assert first.exit_code == 1, first.text()
    # One schedule (1.5 + 3 + 6 s) plus the wave in flight and Spark's own work, not one more for the
    # driver's clean-up (which used to wait out a second schedule before giving up).
    print(f"stopped {stopped_after:.1f} s after Solr died; one retry schedule is {cycle:.0f} s")
    assert stopped_after < cycle + 8, f"stopped {stopped_after:.1f} s after Solr died (one cycle is {cycle:.0f} s)"
    left = sorted(first.failed) + first.not_attempted
    assert sorted(first.done + left) == list(range(16)) and len(first.done) >= 4
    assert all(reason.startswith(("Solr unavailable", "not attempted", "not verified"))
               for reason in first.failed.values()), first.failed

    supervisor.stop(settings, "solr")
    supervisor.start(settings, service)
    second = run_index(spark, out, solr, "--resume")
    assert second.exit_code == 0 and sorted(second.done) == left and second.skipped == first.done
    assert block_counts(solr) == {block: len(block_lines) for block, block_lines in lines.items()}
    assert len(all_docs(solr, "id")) == 16 * 150  # nothing twice


@pytest.mark.integration
@pytest.mark.slow
def test_spark_submit_on_the_cluster_from_hdfs(stack, solr_core, hdfs_client, hdfs_dir, tmp_path):
    out = tmp_path / "tags"
    write_tag_output(out, {0: 120, 1: 80, 2: 0})
    hdfs_client.upload(f"{hdfs_dir}/tags", str(out))
    result = spark_submit(ROOT / "jobs" / "index.py", "--input", f"{stack['hdfs']}{hdfs_dir}/tags",
                          "--solr", solr_core, "--batch-size", "50")
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert (summary["blocks_done"], summary["blocks_failed"], summary["docs"]) == (3, 0, 200)
    assert block_counts(solr_core) == {0: 120, 1: 80}
    with hdfs_client.read(f"{hdfs_dir}/tags/_index_ledger.json") as reader:
        ledger = json.loads(reader.read())
    assert {b: e["docs"] for b, e in ledger["targets"][solr_core]["blocks"].items()} == {"0": 120, "1": 80, "2": 0}
    # spark-submit's PythonRunner merges the driver's stderr (progress lines) into its stdout.
    assert "3 blocks done, 0 skipped, 0 failed" in result.stdout
