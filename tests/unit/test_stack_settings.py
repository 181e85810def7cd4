"""The local stack's settings (tinytags/settings.py: stack_settings) and its declarative parts, checked
without starting anything: the services table, the Hadoop config it writes, Spark's jars staged
through the storage layer (onto a local folder here), and the rule that only the storage layer
speaks WebHDFS."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
import zipfile
from dataclasses import fields

import pytest

from deploy.stack import ROOT, StackError
from deploy.stack.cli import main
from deploy.stack.hadoop_conf import write_hadoop_conf
from deploy.stack.health import Hdfs, Http
from deploy.stack.services import GROUPS, select, services
from deploy.stack.spark_archive import ensure_spark_archive
from deploy.stack.supervisor import HEALTHY, STARTED, Service, start_order
from tinytags import settings as settings_module
from tinytags.io.storage import Storage
from tinytags.settings import STACK_ENV, StackSettings, solr_collection_url, stack_settings


@pytest.fixture(autouse=True)
def no_stack_environment(monkeypatch):
    """Each test sees the built-in defaults unless it sets a variable itself."""
    for variable, _ in STACK_ENV.values():
        monkeypatch.delenv(variable, raising=False)
    for variable in ("TINYTAGS_SOLR_URL", "TINYTAGS_SOLR_COLLECTION"):
        monkeypatch.delenv(variable, raising=False)


def test_the_environment_is_read_when_asked_for_not_at_import(monkeypatch, tmp_path):
    assert stack_settings().solr_port == 8983
    monkeypatch.setenv("TINYTAGS_SOLR_PORT", "18983")
    monkeypatch.setenv("TINYTAGS_STACK_DIR", str(tmp_path))
    monkeypatch.setenv("TINYTAGS_SOLR_CLOUD_PORTS", "18985, 18986,18987")
    monkeypatch.setenv("TINYTAGS_SPARK_WORKER_MEMORY", "1g")
    monkeypatch.setenv("TINYTAGS_WEB_PORT", "")  # empty counts as unset
    now = stack_settings()
    assert (now.solr_port, now.stack_dir, now.cloud_ports) == (18983, tmp_path, (18985, 18986, 18987))
    assert (now.worker_memory, now.web_port) == ("1g", 5000)
    assert now.solr_root == "http://127.0.0.1:18983/solr"
    assert now.solr_cloud_root == "http://127.0.0.1:18985/solr"


def test_overrides_win_over_the_environment_and_unknown_ones_are_refused(monkeypatch, tmp_path):
    monkeypatch.setenv("TINYTAGS_SOLR_PORT", "not checked: overridden")
    monkeypatch.setenv("TINYTAGS_HDFS_PORT", "19000")
    chosen = stack_settings(stack_dir=tmp_path, solr_port=1234)
    assert (chosen.stack_dir, chosen.solr_port, chosen.hdfs_rpc_port) == (tmp_path, 1234, 19000)
    with pytest.raises(TypeError, match="solr_prot"):
        stack_settings(solr_prot=1)


@pytest.mark.parametrize("variable, value", [
    ("TINYTAGS_SOLR_PORT", "89a3"),
    ("TINYTAGS_SPARK_WORKERS", "two"),
    ("TINYTAGS_SOLR_CLOUD_PORTS", "8985;8986"),
])
def test_a_setting_that_does_not_parse_names_its_variable(monkeypatch, variable, value):
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValueError, match=f"{variable} should be .*{re.escape(repr(value))}"):
        stack_settings()


def test_every_field_has_one_variable_and_the_module_docstring_lists_each():
    assert set(STACK_ENV) == {f.name for f in fields(StackSettings)}
    variables = [variable for variable, _ in STACK_ENV.values()]
    assert len(set(variables)) == len(variables)
    missing = [v for v in variables if not re.search(rf"\b{v}\b", settings_module.__doc__)]
    assert not missing, f"tinytags/settings.py's docstring table lacks {missing}"


def test_the_jobs_and_web_apps_default_solr_url_is_the_stacks_solr():
    assert solr_collection_url() == "http://127.0.0.1:8983/solr/tinytags"
    assert solr_collection_url() == stack_settings().solr_root + "/tinytags"


# --- the services table ---------------------------------------------------------------------------

def _full_table(settings: StackSettings) -> list[Service]:
    return services(settings, cloud=True, webapp=True, yarn=True)


def test_dependencies_name_services_of_the_table_with_a_known_condition(tmp_path):
    table = _full_table(stack_settings(stack_dir=tmp_path))
    names = [s.name for s in table]
    assert len(set(names)) == len(names)
    for service in table:
        assert service.group in GROUPS, service.name
        for dependency, condition in service.depends_on.items():
            assert dependency in names and condition in (HEALTHY, STARTED), (service.name, dependency)


@pytest.mark.parametrize("workers", [2, 5])
def test_no_two_services_share_a_port(tmp_path, workers):
    table = _full_table(stack_settings(stack_dir=tmp_path, spark_workers=workers))
    owners: dict[int, str] = {}
    for service in table:
        for port in service.ports:
            assert port not in owners, f"{service.name} and {owners[port]} both use {port}"
            owners[port] = service.name
    assert len([s for s in table if s.name.startswith("spark-worker-")]) == workers


def test_ports_paths_and_checks_come_from_the_settings(tmp_path):
    chosen = stack_settings(stack_dir=tmp_path, solr_port=18983, hdfs_rpc_port=19000, hdfs_http_port=19870)
    table = {s.name: s for s in services(chosen)}
    solr, hdfs = table["solr"], table["hdfs"]
    command = [str(part) for part in solr.command if "classpath" not in repr(part)]
    assert command[command.index("--port") + 1] == "18983" and solr.ports == (18983,)
    assert command[command.index("--home") + 1] == str(tmp_path / "data" / "solr")
    assert command[command.index("--configset") + 1] == str(ROOT / "solr_conf")
    assert isinstance(solr.ready, Http) and solr.ready.url == "http://127.0.0.1:18983/solr/tinytags/admin/ping?wt=json"
    assert hdfs.ready == Hdfs("http://127.0.0.1:19870", "hdfs://127.0.0.1:19000")
    assert hdfs.ports == (19000, 19870)


def test_start_order_puts_dependencies_first_and_keeps_the_table_order_otherwise(tmp_path):
    table = _full_table(stack_settings(stack_dir=tmp_path))
    assert [s.name for s in start_order(table)] == [s.name for s in table]
    shuffled = list(reversed(table))
    order = [s.name for s in start_order(shuffled)]
    for service in table:
        for dependency in service.depends_on:
            assert order.index(dependency) < order.index(service.name), (dependency, service.name)
    # --only leaves dependencies out; they do not block the order.
    assert [s.name for s in start_order([table[-1]])] == ["webapp"]


def test_a_dependency_cycle_is_an_error():
    def row(name, after):
        return Service(name=name, command=["true"], ports=(), url="", ready=lambda: True, depends_on={after: HEALTHY})

    with pytest.raises(StackError, match="cycle"):
        start_order([row("a", "b"), row("b", "a")])


@pytest.mark.parametrize("only, expected", [
    ("spark", ["spark-master", "spark-worker-1", "spark-worker-2"]),
    ("hdfs,yarn", ["hdfs", "yarn-rm", "yarn-nm"]),
    # What `up --started-file` wrote, given back to `down --only` without the flags that started them.
    ("solr,zookeeper,solr-cloud-1,yarn-nm,webapp", ["solr", "zookeeper", "solr-cloud-1", "yarn-nm", "webapp"]),
])
def test_only_picks_groups_and_names(tmp_path, only, expected):
    assert [s.name for s in select(stack_settings(stack_dir=tmp_path), only)] == expected


def test_without_only_the_flags_choose_the_groups(tmp_path):
    chosen = stack_settings(stack_dir=tmp_path)
    assert {s.group for s in select(chosen, None)} == {"hdfs", "solr", "spark"}
    assert {s.group for s in select(chosen, "", cloud=True, yarn=True)} == {"hdfs", "solr", "spark", "cloud", "yarn"}


def test_the_node_manager_starts_beside_its_resource_manager(tmp_path):
    table = {s.name: s for s in services(stack_settings(stack_dir=tmp_path), yarn=True)}
    assert table["yarn-nm"].depends_on == {"yarn-rm": STARTED}
    assert table["spark-worker-2"].depends_on == {"spark-master": HEALTHY}


def test_hadoop_conf_uses_every_yarn_port_of_the_settings(tmp_path):
    chosen = stack_settings(stack_dir=tmp_path, yarn_scheduler_port=18030, yarn_nm_web_port=18042)
    conf = write_hadoop_conf(chosen)
    root = ET.parse(conf / "yarn-site.xml").getroot()
    values = {p.findtext("name"): p.findtext("value") for p in root.iter("property")}
    assert values["yarn.resourcemanager.scheduler.address"] == "127.0.0.1:18030"
    assert values["yarn.nodemanager.webapp.address"] == "127.0.0.1:18042"
    assert values["yarn.nodemanager.local-dirs"] == str(tmp_path / "data" / "yarn" / "nm-local")


def test_status_of_a_stack_that_never_ran_says_down_and_fails(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("TINYTAGS_STACK_DIR", str(tmp_path))
    assert main(["status", "--yarn"]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == [
        "hdfs", "solr", "spark-master", "spark-worker-1", "spark-worker-2", "yarn-rm", "yarn-nm"]
    assert all(line.split()[1:] == ["down"] for line in lines)


@pytest.mark.parametrize("variable, value, args, message", [
    ("TINYTAGS_SPARK_PORT", "seventy", ["status"], "TINYTAGS_SPARK_PORT should be a number"),
    ("TINYTAGS_WEB_WORKERS", "2", ["up", "--only", "solr,mongo"], "unknown service(s) ['mongo']"),
])
def test_the_cli_reports_bad_settings_and_names_in_one_line(monkeypatch, tmp_path, capsys, variable, value, args,
                                                            message):
    monkeypatch.setenv("TINYTAGS_STACK_DIR", str(tmp_path))
    monkeypatch.setenv(variable, value)
    assert main(args) == 1
    assert capsys.readouterr().err.startswith(f"error: {message}")
    assert not (tmp_path / "run").exists()  # nothing was started


# --- Spark's jars for YARN, through the storage layer ---------------------------------------------

def test_spark_jars_are_staged_once_and_again_when_they_change(tmp_path):
    jars = tmp_path / "jars"
    jars.mkdir()
    (jars / "a.jar").write_bytes(b"A" * 100)
    (jars / "b.jar").write_bytes(b"B" * 50)
    (jars / "notes.txt").write_text("not a jar")
    target = str(tmp_path / "hdfs" / "tinytags" / "spark" / "spark-jars.zip")
    chosen = stack_settings(stack_dir=tmp_path / "stack")

    first = ensure_spark_archive(chosen, jars=jars, target=target, storage=Storage())
    assert "staged now (2 jars" in first and target in first
    with zipfile.ZipFile(target) as archive:
        assert sorted(archive.namelist()) == ["a.jar", "b.jar"]
        assert archive.read("a.jar") == b"A" * 100
        assert {info.compress_type for info in archive.infolist()} == {zipfile.ZIP_STORED}
    marker = open(target + ".version").read()
    assert marker.endswith(", 2 jars, 150 bytes\n")
    assert not (tmp_path / "stack" / "cache" / "spark-jars.zip").exists()  # the local copy is gone

    again = ensure_spark_archive(chosen, jars=jars, target=target, storage=Storage())
    assert "staged now" not in again and "staged" in again

    (jars / "c.jar").write_bytes(b"C" * 10)  # a new pyspark: the archive is replaced
    third = ensure_spark_archive(chosen, jars=jars, target=target, storage=Storage())
    assert "staged now (3 jars" in third
    with zipfile.ZipFile(target) as archive:
        assert sorted(archive.namelist()) == ["a.jar", "b.jar", "c.jar"]


def test_only_the_storage_layer_speaks_webhdfs():
    """deploy/ may probe a port over plain HTTP; files on HDFS go through tinytags.io.storage."""
    speaking = re.compile(r"webhdfs/v1|[?&]op=|InsecureClient|^\s*(from|import) hdfs\b", re.M)
    offenders = [str(path.relative_to(ROOT)) for path in sorted((ROOT / "deploy").rglob("*.py"))
                 if "target" not in path.parts and speaking.search(path.read_text())]
    assert not offenders
