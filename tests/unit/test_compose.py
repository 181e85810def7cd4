"""docker-compose.yml, checked statically (no Docker engine here): pinned images, healthchecks,
dependencies on health, named volumes, and hostnames/ports that agree with the app's configuration."""

from __future__ import annotations

import re
from urllib.parse import urlparse

import pytest
import yaml

from tests.helpers import ROOT

COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]


def _env_file(path: str) -> dict[str, str]:
    pairs = {}
    for line in (ROOT / path).read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            pairs[key.strip()] = value.strip()
    return pairs


def _env_files(service: dict) -> list[str]:
    files = service.get("env_file", [])
    return [files] if isinstance(files, str) else files


APP_ENV = _env_file("deploy/compose/app.env")


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_every_service_has_a_pinned_image_and_a_healthcheck(name):
    service = SERVICES[name]
    image = service.get("image", "")
    assert re.fullmatch(r"[\w./-]+:[\w.-]+", image), f"{name}: image {image!r} has no pinned tag"
    assert not image.endswith(":latest"), f"{name}: :latest is not a pin"
    check = service.get("healthcheck", {})
    assert check.get("test"), f"{name}: no healthcheck"
    assert "container_name" not in service, f"{name}: container_name stops scaling"


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_dependencies_wait_for_health_of_existing_services(name):
    for dependency, spec in SERVICES[name].get("depends_on", {}).items():
        assert dependency in SERVICES, f"{name} depends on unknown service {dependency}"
        assert spec["condition"] in ("service_healthy", "service_completed_successfully")
        if spec["condition"] == "service_completed_successfully":
            assert SERVICES[dependency].get("restart") == "no", f"{dependency} must be one-shot"


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_volumes_are_named_or_existing_project_paths(name):
    declared = set(COMPOSE.get("volumes", {}))
    for volume in SERVICES[name].get("volumes", []):
        source = volume.split(":")[0]
        if source.startswith("${"):
            continue  # a user-supplied folder (e.g. TINYTAGS_INPUTS), documented in README
        if source.startswith((".", "/")):
            assert (ROOT / source).exists(), f"{name} mounts missing path {source}"
        else:
            assert source in declared, f"{name} uses undeclared volume {source}"
    for path in _env_files(SERVICES[name]):
        assert (ROOT / path).is_file(), f"{name}: env file {path} missing"


def test_app_configuration_points_at_services_that_exist_on_those_ports():
    solr = urlparse(APP_ENV["TINYTAGS_SOLR_URL"])
    assert solr.hostname in SERVICES and SERVICES[solr.hostname]["image"].startswith("solr:")
    assert solr.port == 8983 and solr.path == "/solr/tinytags"

    hdfs = urlparse(APP_ENV["TINYTAGS_HDFS_URI"])
    hadoop = _env_file("deploy/compose/hadoop.env")
    assert hadoop["CORE-SITE.XML_fs.defaultFS"] == APP_ENV["TINYTAGS_HDFS_URI"]
    assert hadoop["HDFS-SITE.XML_dfs.namenode.rpc-address"] == f"{hdfs.hostname}:{hdfs.port}"
    webhdfs = urlparse(APP_ENV["TINYTAGS_WEBHDFS_URL"])
    assert webhdfs.hostname == hdfs.hostname and hadoop["HDFS-SITE.XML_dfs.namenode.http-address"].endswith(
        f":{webhdfs.port}")

    master = urlparse(APP_ENV["TINYTAGS_SPARK_MASTER"])
    command = SERVICES[master.hostname]["command"]
    assert command[command.index("--port") + 1] == str(master.port)
    spark = _env_file("deploy/compose/spark.env")
    assert spark["SPARK_MASTER_URL"] == APP_ENV["TINYTAGS_SPARK_MASTER"]

    zk = _env_file("deploy/compose/solr.env")["ZK_HOST"].split(":")[0]
    assert zk in SERVICES


def test_web_app_is_served_by_gunicorn_from_the_app_factory():
    command = SERVICES["webapp"]["command"]
    assert command[0] == "gunicorn" and "webapp:create_app()" in command
    assert "5000:5000" in SERVICES["webapp"]["ports"]


def test_the_image_build_copies_paths_that_exist():
    dockerfile = ROOT / "deploy" / "compose" / "Dockerfile"
    for line in dockerfile.read_text().splitlines():
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists(), f"Dockerfile copies missing {source}"
    assert COMPOSE["x-tinytags-image"]["build"]["dockerfile"] == "deploy/compose/Dockerfile"


def test_pipeline_scripts_exist_and_use_the_job_entry_points():
    pipeline = (ROOT / "deploy" / "compose" / "pipeline.sh").read_text()
    for job in ("jobs/train.py", "jobs/tag.py", "jobs/index.py"):
        assert job in pipeline
        assert (ROOT / job).is_file(), f"{job} missing"
