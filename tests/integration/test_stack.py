"""The local real stack: each service is real and usable from Python (python -m deploy.stack)."""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
import uuid

import numpy as np
import pysolr
import pytest
import requests

from deploy.stack import StackError, supervisor
from deploy.stack.hadoop_conf import write_hadoop_conf
from deploy.stack.health import port_in_use
from deploy.stack.services import select
from deploy.stack.supervisor import Service
from tests.helpers import run_stack
from tinytags.settings import stack_settings


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
def test_stack_status_reports_every_service(stack):
    result = run_stack("status")
    assert result.returncode == 0, result.stdout + result.stderr
    for name in ("hdfs", "solr", "spark-master", "spark-worker-1", "spark-worker-2"):
        assert any(line.startswith(name) and " up " in line for line in result.stdout.splitlines()), name


# --- the supervisor's own error paths, no services needed -----------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_start_refuses_a_port_taken_by_someone_else(tmp_path):
    settings = stack_settings(stack_dir=tmp_path)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        service = Service(
            name="probe", command=["sleep", "30"], ports=(port,), url=f"http://127.0.0.1:{port}",
            ready=lambda: False,
        )
        with pytest.raises(StackError, match=f"127.0.0.1:{port} is already in use"):
            supervisor.start(settings, service)
    assert not (tmp_path / "run" / "probe.pid").exists()


def test_a_service_that_dies_reports_its_exit_and_log(tmp_path):
    settings = stack_settings(stack_dir=tmp_path)
    marker = uuid.uuid4().hex
    service = Service(
        name="dies", command=["sh", "-c", f"echo {marker}; exit 3"], ports=(_free_port(),),
        url="nowhere", ready=lambda: False, timeout=10,
    )
    with pytest.raises(StackError) as error:
        supervisor.start(settings, service)
    message = str(error.value)
    assert "exited with code 3" in message and marker in message
    assert str(tmp_path / "logs" / "dies.log") in message


def test_up_is_idempotent_and_down_stops_the_whole_process_group(tmp_path):
    settings = stack_settings(stack_dir=tmp_path)
    port = _free_port()
    # A leader that forks a child listening on the port: down must stop both.
    command = [sys.executable, "-c", (
        "import socket,subprocess,sys,time;"
        f"subprocess.Popen([sys.executable,'-c','import socket,time;s=socket.socket();s.bind((\"127.0.0.1\",{port}));s.listen();time.sleep(120)']);"
        "time.sleep(120)"
    )]
    service = Service(
        name="pair", command=command, ports=(port,), url=f"tcp://127.0.0.1:{port}",
        ready=lambda: port_in_use(port), timeout=20,
    )
    first = supervisor.start(settings, service)
    assert "started" in first
    second = supervisor.start(settings, service)
    assert "already running" in second
    assert "stopped" in supervisor.stop(settings, "pair")
    assert not port_in_use(port)
    assert supervisor.running_pid(settings, "pair") is None


def test_only_rejects_unknown_service_names(tmp_path):
    settings = stack_settings(stack_dir=tmp_path)
    with pytest.raises(StackError, match="unknown service"):
        select(settings, "solr,mongo")
    names = [s.name for s in select(settings, "spark")]
    assert names == ["spark-master", "spark-worker-1", "spark-worker-2"]


def _wait_until_dead_unreaped(pid: int, timeout: float = 10.0) -> None:
    """Wait until the kernel has killed ``pid``: a zombie (state Z) or gone, without reaping it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            stat = open(f"/proc/{pid}/stat").read()
        except FileNotFoundError:
            return
        if stat[stat.rindex(")") + 2:].split()[0] in ("Z", "X"):
            return
        time.sleep(0.02)
    raise AssertionError(f"pid {pid} still runs {timeout} s after SIGKILL")


def test_up_after_kill_9_starts_a_fresh_process_and_clears_its_locks(tmp_path):
    settings = stack_settings(stack_dir=tmp_path)
    port = _free_port()
    listener = f"import socket,time;s=socket.socket();s.bind(('127.0.0.1',{port}));s.listen();time.sleep(120)"
    service = Service(
        name="victim", command=[sys.executable, "-c", listener], ports=(port,), url=f"tcp://127.0.0.1:{port}",
        ready=lambda: port_in_use(port), timeout=20, leftovers=("data/victim/**/write.lock",),
    )
    assert "started" in supervisor.start(settings, service)
    first = supervisor.running_pid(settings, "victim")
    lock = tmp_path / "data" / "victim" / "index" / "write.lock"
    lock.parent.mkdir(parents=True)
    lock.write_text("held by the process that is killed now")
    os.kill(first, signal.SIGKILL)
    _wait_until_dead_unreaped(first)  # SIGKILL is delivered asynchronously; nobody reaps it here
    began = time.monotonic()
    try:
        line = supervisor.start(settings, service)  # at once: the pid file still names the dead pid
        assert time.monotonic() - began < 15, "waited for the dead process instead of replacing it"
        assert f"after pid {first} died; removed 1 stale lock file(s)" in line
        second = supervisor.running_pid(settings, "victim")
        assert second not in (None, first) and port_in_use(port)
        assert not lock.exists()
    finally:
        supervisor.stop(settings, "victim")


@pytest.mark.slow
def test_make_up_right_after_solr_or_the_namenode_is_killed_brings_it_back_with_its_data(tmp_path):
    """A stack of its own (folder and ports): kill -9 Solr, `up` at once; then the same for HDFS."""
    from hdfs import InsecureClient

    solr_port, rpc_port, http_port = _free_port(), _free_port(), _free_port()
    env = {"TINYTAGS_STACK_DIR": str(tmp_path / "stack"), "TINYTAGS_SOLR_PORT": str(solr_port),
           "TINYTAGS_HDFS_PORT": str(rpc_port), "TINYTAGS_WEBHDFS_PORT": str(http_port),
           "TINYTAGS_SOLR_HEAP": "512m", "TINYTAGS_HDFS_HEAP": "512m", "AUTH": "", "CLOUD": "", "YARN": ""}
    settings = stack_settings(stack_dir=tmp_path / "stack")
    core = f"http://127.0.0.1:{solr_port}/solr/tinytags"

    def up() -> str:
        result = run_stack("up", "--only", "hdfs,solr", env=env, timeout=200)
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    def line_of(output: str, name: str) -> str:
        return next(line for line in output.splitlines() if line.startswith(name + " "))

    try:
        up()
        requests.post(f"{core}/update", params={"commit": "true"}, json=[_doc(424242)], timeout=60).raise_for_status()
        hdfs = InsecureClient(f"http://127.0.0.1:{http_port}", user="tinytags")
        payload = np.random.default_rng(3).integers(0, 256, 50_000, dtype=np.uint8).tobytes()
        hdfs.write("/crash-test/blob.bin", data=payload)

        for name in ("solr", "hdfs"):
            pid = supervisor.running_pid(settings, name)
            os.kill(pid, signal.SIGKILL)
            began = time.monotonic()
            output = up()  # right away: the pid file still names the killed process
            took = time.monotonic() - began
            line = line_of(output, name)
            assert f"after pid {pid} died; removed" in line and "removed 0 " not in line, line
            other = "hdfs" if name == "solr" else "solr"
            assert "already running" in line_of(output, other)
            assert took < 100, f"{name} came back after {took:.0f} s"
            # The data survived: the document is found, the file reads back whole.
            found = requests.get(f"{core}/select", params={"q": "id:424242", "wt": "json"}, timeout=30).json()
            assert found["response"]["numFound"] == 1
            with hdfs.read("/crash-test/blob.bin") as reader:
                assert reader.read() == payload
    finally:
        run_stack("down", env=env, timeout=120)


def test_hadoop_conf_points_spark_at_this_stacks_hdfs_and_yarn_on_loopback(tmp_path):
    import xml.etree.ElementTree as ET

    settings = stack_settings(stack_dir=tmp_path, hdfs_rpc_port=19100, yarn_rm_port=18132,
                              yarn_web_port=18188, yarn_nm_memory_mb=6144, yarn_nm_vcores=2)
    conf = write_hadoop_conf(settings)
    assert conf == tmp_path / "conf" / "hadoop"

    def properties(name: str) -> dict[str, str]:
        root = ET.parse(conf / name).getroot()
        return {p.findtext("name"): p.findtext("value") for p in root.iter("property")}

    assert properties("core-site.xml") == {"fs.defaultFS": "hdfs://127.0.0.1:19100"}
    yarn = properties("yarn-site.xml")
    assert yarn["yarn.resourcemanager.address"] == "127.0.0.1:18132"
    assert yarn["yarn.resourcemanager.webapp.address"] == "127.0.0.1:18188"
    assert (yarn["yarn.nodemanager.resource.memory-mb"], yarn["yarn.nodemanager.resource.cpu-vcores"]) == ("6144", "2")
    addresses = {k: v for k, v in yarn.items() if k.endswith((".address", "bind-host", ".hostname"))}
    assert len(addresses) >= 10 and all(v.startswith("127.0.0.1") for v in addresses.values()), addresses
    assert properties("capacity-scheduler.xml")["yarn.scheduler.capacity.root.queues"] == "default"
