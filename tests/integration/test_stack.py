"""The local real stack: each service is real and usable from Python (deploy/stack.py)."""

from __future__ import annotations

import socket
import subprocess
import sys
import uuid

import numpy as np
import pysolr
import pytest
import requests

from deploy import stack as stack_module
from tests.helpers import ROOT, spark_submit


@pytest.mark.integration
def test_solr_is_a_real_solr_9(stack):
    info = requests.get(f"{stack['solr']}/admin/info/system", params={"wt": "json"}, timeout=10).json()
    assert info["lucene"]["solr-spec-version"].startswith("9.")
    assert info["mode"] == "std"


def _doc(image_id: int, **overrides):
    doc = {
        "id": str(image_id), "image_id": image_id, "block": image_id // 20000, "label": 3,
        "tag": "cat", "votes": 6, "agreement": 0.6, "vote_counts": [0, 0, 1, 6, 1, 1, 0, 0, 1, 0],
        "model": "test-model", "pixels": "AAAA",
    }
    doc.update(overrides)
    return doc


@pytest.mark.integration
def test_pysolr_adds_commits_and_queries(solr_core):
    solr = pysolr.Solr(solr_core, timeout=30)
    docs = [_doc(i, tag="cat" if i % 3 else "dog", agreement=(i % 10) / 10) for i in range(1, 301)]
    solr.add(docs, commit=True)
    expected_dogs_high = sum(1 for d in docs if d["tag"] == "dog" and d["agreement"] >= 0.5)
    found = solr.search("*:*", fq=["tag:dog", "agreement:[0.5 TO *]"], rows=0)
    assert found.hits == expected_dogs_high
    one = list(solr.search("id:42", fl="*"))[0]
    assert one["vote_counts"] == docs[41]["vote_counts"]
    assert one["indexed_at"].endswith("Z")  # stamped by the configset's update chain
    # Re-adding the same ids replaces them (uniqueKey), never duplicates.
    solr.add(docs[:50], commit=True)
    assert solr.search("*:*", rows=0).hits == len(docs)


@pytest.mark.integration
@pytest.mark.parametrize(
    "bad, field",
    [
        ({"votes": "many"}, "votes"),
        ({"agreement": "high"}, "agreement"),
        ({"colour": "red"}, "colour"),  # schemaless is off: unknown fields are rejected
    ],
)
def test_schema_rejects_wrong_types_and_unknown_fields(solr_core, bad, field):
    solr = pysolr.Solr(solr_core, timeout=30)
    with pytest.raises(pysolr.SolrError) as error:
        solr.add([_doc(7, **bad)], commit=True)
    assert field in str(error.value)
    assert solr.search("*:*", rows=0).hits == 0


@pytest.mark.integration
def test_schema_requires_contract_fields(solr_core):
    solr = pysolr.Solr(solr_core, timeout=30)
    doc = _doc(8)
    del doc["tag"]
    with pytest.raises(pysolr.SolrError, match="tag"):
        solr.add([doc], commit=True)


@pytest.mark.integration
def test_hdfscli_writes_lists_and_reads_back(hdfs_client, hdfs_dir):
    payload = np.random.default_rng(1).integers(0, 256, 100_000, dtype=np.uint8).tobytes()
    hdfs_client.write(f"{hdfs_dir}/blob.bin", data=payload)
    assert hdfs_client.list(hdfs_dir) == ["blob.bin"]
    assert hdfs_client.status(f"{hdfs_dir}/blob.bin")["length"] == len(payload)
    with hdfs_client.read(f"{hdfs_dir}/blob.bin") as reader:
        assert reader.read() == payload


@pytest.mark.integration
@pytest.mark.slow
def test_spark_cluster_reads_a_file_written_with_hdfscli(stack, hdfs_client, hdfs_dir):
    records = np.random.default_rng(2).integers(0, 256, (5_000, 3072), dtype=np.uint8)
    hdfs_client.write(f"{hdfs_dir}/records.bin", data=records.tobytes())
    result = spark_submit(
        ROOT / "tests" / "scripts" / "count_records.py",
        f"{stack['hdfs']}{hdfs_dir}/records.bin", "3072",
        master=stack["spark"],
    )
    assert result.returncode == 0, result.stderr[-3000:]
    line = next(l for l in result.stdout.splitlines() if l.startswith("records="))
    fields = dict(part.split("=", 1) for part in line.split())
    assert int(fields["records"]) == len(records)
    assert int(fields["byte_sum"]) == int(records.sum(dtype=np.int64))
    assert fields["master"] == stack["spark"]
    assert int(fields["executors"]) == 2  # one per standalone worker


@pytest.mark.integration
def test_stack_status_reports_every_service(stack):
    result = subprocess.run(
        [sys.executable, str(ROOT / "deploy" / "stack.py"), "status"], capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for name in ("hdfs", "solr", "spark-master", "spark-worker-1", "spark-worker-2"):
        assert any(line.startswith(name) and " up " in line for line in result.stdout.splitlines()), name


# --- stack.py's own error paths, no services needed -----------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_start_refuses_a_port_taken_by_someone_else(tmp_path):
    settings = stack_module.Settings(stack_dir=tmp_path)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        service = stack_module.Service(
            name="probe", command=["sleep", "30"], port=port, url=f"http://127.0.0.1:{port}",
            ready=lambda: False,
        )
        with pytest.raises(stack_module.StackError, match=f"127.0.0.1:{port} is already in use"):
            stack_module.start(settings, service)
    assert not (tmp_path / "run" / "probe.pid").exists()


def test_a_service_that_dies_reports_its_exit_and_log(tmp_path):
    settings = stack_module.Settings(stack_dir=tmp_path)
    marker = uuid.uuid4().hex
    service = stack_module.Service(
        name="dies", command=["sh", "-c", f"echo {marker}; exit 3"], port=_free_port(),
        url="nowhere", ready=lambda: False, timeout=10,
    )
    with pytest.raises(stack_module.StackError) as error:
        stack_module.start(settings, service)
    message = str(error.value)
    assert "exited with code 3" in message and marker in message
    assert str(tmp_path / "logs" / "dies.log") in message


def test_up_is_idempotent_and_down_stops_the_whole_process_group(tmp_path):
    settings = stack_module.Settings(stack_dir=tmp_path)
    port = _free_port()
    # A leader that forks a child listening on the port: down must stop both.
    command = [sys.executable, "-c", (
        "import socket,subprocess,sys,time;"
        f"subprocess.Popen([sys.executable,'-c','import socket,time;s=socket.socket();s.bind((\"127.0.0.1\",{port}));s.listen();time.sleep(120)']);"
        "time.sleep(120)"
    )]
    service = stack_module.Service(
        name="pair", command=command, port=port, url=f"tcp://127.0.0.1:{port}",
        ready=lambda: stack_module.port_in_use(port), timeout=20,
    )
    first = stack_module.start(settings, service)
    assert "started" in first
    second = stack_module.start(settings, service)
    assert "already running" in second
    assert "stopped" in stack_module.stop(settings, "pair")
    assert not stack_module.port_in_use(port)
    assert stack_module.running_pid(settings, "pair") is None


def test_only_rejects_unknown_service_names(tmp_path):
    settings = stack_module.Settings(stack_dir=tmp_path)
    with pytest.raises(stack_module.StackError, match="unknown service"):
        stack_module.select(settings, "solr,mongo")
    names = [s.name for s in stack_module.select(settings, "spark")]
    assert names == ["spark-master", "spark-worker-1", "spark-worker-2"]
