"""docker-compose.yml, checked statically (no Docker engine here): pinned images, healthchecks,
dependencies on health, named volumes, hostnames/ports that agree with the app's configuration,
and the lock-down: no admin port beyond the host's loopback, Solr BasicAuth from Docker secrets,
no credentials in the compose file, the Dockerfile, the env files or the image's build context."""

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
            continue  # a user-supplied folder (e.g. TINYTAGS_INPUTS), documented in docs/cluster.md
        if source.startswith((".", "/")):
            assert (ROOT / source).exists(), f"{name} mounts missing path {source}"
        else:
            assert source in declared, f"{name} uses undeclared volume {source}"
    for path in _env_files(SERVICES[name]):
        assert (ROOT / path).is_file(), f"{name}: env file {path} missing"


def test_app_configuration_points_at_services_that_exist_on_those_ports():
    nodes = [urlparse(url) for url in APP_ENV["TINYTAGS_SOLR_URL"].split(",")]
    assert sorted(solr.hostname for solr in nodes) == ["solr1", "solr2"]  # failover to the other node
    for solr in nodes:
        assert solr.hostname in SERVICES and SERVICES[solr.hostname]["image"].startswith("tinytags/solr:9.10.1-")
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


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "solr.Dockerfile"])
def test_the_image_builds_copy_paths_that_exist(dockerfile):
    ignored = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    for line in (ROOT / "deploy" / "compose" / dockerfile).read_text().splitlines():
        if line.startswith("COPY ") and "--from=" not in line:  # --from copies from another image
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists(), f"{dockerfile} copies missing {source}"
            assert not _dockerignored(line.split()[1].rstrip("/"), ignored), f"{dockerfile}: {line} is .dockerignored"
    assert COMPOSE["x-tinytags-image"]["build"]["dockerfile"] == "deploy/compose/Dockerfile"


def test_the_solr_nodes_run_an_image_with_the_codec_factory_solrconfig_names():
    config = (ROOT / "solr_conf" / "solrconfig.xml").read_text()
    factory = re.search(r'<codecFactory class="([\w.]+)"', config).group(1)
    source = ROOT / "deploy" / "solr" / "src" / "main" / "java" / (factory.replace(".", "/") + ".java")
    assert source.is_file(), f"solrconfig.xml names {factory}, which deploy/solr does not build"
    build = (ROOT / "deploy" / "compose" / "solr.Dockerfile").read_text()
    assert "/src/tinytags/solr/*.java" in build and "WEB-INF/lib" in build
    for node in ("solr1", "solr2"):
        assert SERVICES[node]["build"]["dockerfile"] == "deploy/compose/solr.Dockerfile"


def test_pipeline_scripts_exist_and_use_the_job_entry_points():
    pipeline = (ROOT / "deploy" / "compose" / "pipeline.sh").read_text()
    for job in ("jobs/train.py", "jobs/tag.py", "jobs/index.py"):
        assert job in pipeline
        assert (ROOT / job).is_file(), f"{job} missing"


# --- the locked-down stack: ports, Solr auth, credentials -----------------------------------------

PUBLIC_SERVICES = {"webapp"}  # the one service users reach; everything else is an admin endpoint
LOOPBACK = ("127.0.0.1", "::1", "[::1]")


def published(spec) -> tuple[str | None, str | None]:
    """(host IP or None, host port or None) of a compose port spec, short ("[ip:]host:container",
    "container") or long ({"host_ip", "published", "target"}). No host IP means every interface."""
    if isinstance(spec, dict):
        port = spec.get("published")
        return spec.get("host_ip"), str(port) if port is not None else None
    text = str(spec).split("/")[0]
    if text.startswith("["):  # "[::1]:8983:8983"
        ip, _, rest = text[1:].partition("]:")
        return ip, rest.split(":")[0]
    parts = text.split(":")
    if len(parts) == 3:
        return parts[0], parts[1]
    if len(parts) == 2:
        return None, parts[0]
    return None, None  # only a container port: Docker picks a host port on every interface


@pytest.mark.parametrize("spec, want", [
    ("8983:8983", (None, "8983")),
    ("127.0.0.1:8983:8983", ("127.0.0.1", "8983")),
    ("0.0.0.0:9870:9870", ("0.0.0.0", "9870")),
    ("[::1]:8080:8080/tcp", ("::1", "8080")),
    ("2181", (None, None)),
    ({"target": 8983, "published": 8983, "host_ip": "127.0.0.1"}, ("127.0.0.1", "8983")),
    ({"target": 8983, "published": "8983"}, (None, "8983")),
])
def test_port_specs_are_read_with_their_interface(spec, want):
    assert published(spec) == want


def _is_public(spec) -> bool:
    host_ip, _ = published(spec)
    return host_ip not in LOOPBACK


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_no_admin_port_is_published_beyond_loopback(name):
    for spec in SERVICES[name].get("ports", []):
        if name not in PUBLIC_SERVICES:
            assert not _is_public(spec), f"{name} publishes {spec!r} on every interface; bind it to 127.0.0.1"


def test_only_the_web_app_is_public_and_zookeeper_is_not_published():
    public = {name for name, service in SERVICES.items() if any(map(_is_public, service.get("ports", [])))}
    assert public == PUBLIC_SERVICES
    assert not SERVICES["zookeeper"].get("ports")
    # The admin UIs that are published at all are on the host's loopback only.
    assert {published(spec) for name in ("namenode", "spark-master", "solr1")
            for spec in SERVICES[name]["ports"]} == {("127.0.0.1", "9870"), ("127.0.0.1", "8080"), ("127.0.0.1", "8983")}


def _secret_targets(service: dict) -> set[str]:
    return {s if isinstance(s, str) else s.get("target", s["source"]) for s in service.get("secrets", [])}


def test_solr_runs_with_basic_auth_made_from_secrets_before_any_node_starts():
    from deploy import solr_security

    users = set(solr_security.USERS)
    files = {f"solr-{user}.password" for user in users}
    assert set(COMPOSE["secrets"]) == files
    for name, secret in COMPOSE["secrets"].items():
        assert secret["file"] == f"./deploy/compose/secrets/{name}", name  # a host file, not in the YAML
    generator = SERVICES["solr-security"]
    command = " ".join(generator["command"])
    assert "python -m deploy.solr_security --secrets /run/secrets --out /security/security.json" in command
    assert _secret_targets(generator) == files and "solr-security:/security" in generator["volumes"]
    init = SERVICES["solr-init"]
    script = " ".join(init["command"])
    assert "solr-security:/security:ro" in init["volumes"]
    assert script.index("zk cp file:/security/security.json zk:/security.json") < script.index("zk upconfig")
    assert init["depends_on"]["solr-security"]["condition"] == "service_completed_successfully"
    for node in ("solr1", "solr2"):
        assert SERVICES[node]["depends_on"] == {"solr-init": {"condition": "service_completed_successfully"}}
        # Their healthcheck is the one request the rules let through without a login.
        assert "/solr/admin/info/health" in " ".join(SERVICES[node]["healthcheck"]["test"])
    assert [p["name"] for p in solr_security.PERMISSIONS if p["role"] is None] == ["health"]
    assert SERVICES["solr-collection"]["depends_on"] == {
        "solr1": {"condition": "service_healthy"}, "solr2": {"condition": "service_healthy"}}
    assert _secret_targets(SERVICES["solr-collection"]) == {"solr-admin.password"}


@pytest.mark.parametrize("service, user", [("webapp", "search"), ("jobs", "indexer")])
def test_the_web_app_and_the_jobs_log_in_as_their_own_user_from_a_secret(service, user):
    env = {}
    for path in _env_files(SERVICES[service]):
        env.update(_env_file(path))
    assert env["TINYTAGS_SOLR_USER"] == user
    assert env["TINYTAGS_SOLR_PASSWORD_FILE"] == f"/run/secrets/solr-{user}.password"
    assert "TINYTAGS_SOLR_PASSWORD" not in env
    assert _secret_targets(SERVICES[service]) == {f"solr-{user}.password"}  # no other user's password
    assert SERVICES[service]["depends_on"]["solr-collection"]["condition"] == "service_completed_successfully"


def _dockerignored(relative: str, patterns: list[str]) -> bool:
    import fnmatch

    for pattern in patterns:
        bare = pattern.rstrip("/").removeprefix("**/")
        if relative == bare or relative.startswith(bare + "/") or fnmatch.fnmatch(relative, bare) \
                or fnmatch.fnmatch(relative.rsplit("/", 1)[-1], bare):
            return True
    return False


_CREDENTIAL = re.compile(r"(?i)(password|passwd|secret|token|credential)[\w.-]*\s*[=:]\s*[^\s/$]")
_URL_LOGIN = re.compile(r"://[^/\s:@]+:[^/\s@]+@")


def test_no_credentials_in_the_compose_file_the_dockerfile_or_the_env_files():
    texts = {"docker-compose.yml": (ROOT / "docker-compose.yml").read_text(),
             "deploy/compose/Dockerfile": (ROOT / "deploy" / "compose" / "Dockerfile").read_text()}
    texts.update({str(p.relative_to(ROOT)): p.read_text() for p in (ROOT / "deploy" / "compose").glob("*.env")})
    for name, text in texts.items():
        for line in text.splitlines():
            if line.lstrip().startswith("#"):
                continue
            # Allowed: the secrets' names and where they are mounted, never a value.
            cleaned = re.sub(r"solr-\w+\.password|/run/secrets/\S+|PASSWORD_FILE=\S+|secrets:", "", line)
            assert not _CREDENTIAL.search(cleaned), f"{name}: looks like a credential: {line.strip()}"
            assert not _URL_LOGIN.search(line), f"{name}: a URL with a login: {line.strip()}"
            assert not re.search(r"curl[^|]*\s(-u|--user)\s", line), f"{name}: curl with a login: {line.strip()}"
    dockerfile = texts["deploy/compose/Dockerfile"]
    assert not re.search(r"(?im)^\s*(ENV|ARG)\b.*(PASSWORD|SECRET|TOKEN)", dockerfile)


def test_secrets_and_local_state_stay_out_of_git_and_the_image_build_context():
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    for private in ("deploy/compose/secrets", "deploy/compose/secrets/solr-admin.password", ".stack",
                    ".stack/secrets/solr-search.password", ".stack/data/solr/security.json", ".venv"):
        assert _dockerignored(private, patterns), f".dockerignore lets {private} into the build context"
    assert "/deploy/compose/secrets/" in (ROOT / ".gitignore").read_text().splitlines()
    # What the image copies: no password file or security.json in it, whatever lies around here.
    sources = [part for line in (ROOT / "deploy" / "compose" / "Dockerfile").read_text().splitlines()
               if line.startswith("COPY ") for part in line.split()[1:-1]]
    for source in sources:
        root = ROOT / source
        for path in ([root] if root.is_file() else root.rglob("*")):
            relative = str(path.relative_to(ROOT))
            if path.is_file() and not _dockerignored(relative, patterns):
                assert not path.name.endswith(".password") and path.name != "security.json", relative


# --- the same ports as the local stack (tinytags/settings.py, the one settings place) -------------

def _command_flag(service: str, flag: str) -> int:
    """The number after ``flag`` in a service's command (a list, or a bash -c string)."""
    command = " ".join(SERVICES[service]["command"])
    return int(re.search(rf"{re.escape(flag)}[ =](?:\S*:)?(\d+)", command).group(1))


def _healthcheck_port(service: str) -> int:
    return int(re.search(r"localhost:(\d+)", " ".join(SERVICES[service]["healthcheck"]["test"])).group(1))


def _published_ports(service: str) -> set[tuple[str, str]]:
    """(host port, container port) of each published port."""
    return {tuple(str(spec).split("/")[0].split(":")[-2:]) for spec in SERVICES[service].get("ports", [])}


# Where compose names the same thing as a settings default: (where, what compose says, default's name).
# Not compared: ZooKeeper (compose's stays inside its network at the image's own 2181; the local one
# is a Solr-style 9983) and the SolrCloud nodes (in compose both listen on 8983, each its own host).
SAME_PORTS = [
    ("app.env TINYTAGS_SOLR_URL", lambda: urlparse(APP_ENV["TINYTAGS_SOLR_URL"].split(",")[0]).port, "SOLR_PORT"),
    ("solr1 published port", lambda: _published_ports("solr1"), "SOLR_PORT"),
    ("solr1 healthcheck", lambda: _healthcheck_port("solr1"), "SOLR_PORT"),
    ("app.env TINYTAGS_HDFS_URI", lambda: urlparse(APP_ENV["TINYTAGS_HDFS_URI"]).port, "HDFS_PORT"),
    ("hadoop.env fs.defaultFS", lambda: urlparse(_env_file("deploy/compose/hadoop.env")["CORE-SITE.XML_fs.defaultFS"]).port,
     "HDFS_PORT"),
    ("hadoop.env namenode rpc-address",
     lambda: int(_env_file("deploy/compose/hadoop.env")["HDFS-SITE.XML_dfs.namenode.rpc-address"].rsplit(":", 1)[1]),
     "HDFS_PORT"),
    ("app.env TINYTAGS_WEBHDFS_URL", lambda: urlparse(APP_ENV["TINYTAGS_WEBHDFS_URL"]).port, "WEBHDFS_PORT"),
    ("hadoop.env namenode http-address",
     lambda: int(_env_file("deploy/compose/hadoop.env")["HDFS-SITE.XML_dfs.namenode.http-address"].rsplit(":", 1)[1]),
     "WEBHDFS_PORT"),
    ("namenode published port", lambda: _published_ports("namenode"), "WEBHDFS_PORT"),
    ("namenode healthcheck", lambda: _healthcheck_port("namenode"), "WEBHDFS_PORT"),
    ("app.env TINYTAGS_SPARK_MASTER", lambda: urlparse(APP_ENV["TINYTAGS_SPARK_MASTER"]).port, "SPARK_PORT"),
    ("spark.env SPARK_MASTER_URL", lambda: urlparse(_env_file("deploy/compose/spark.env")["SPARK_MASTER_URL"]).port,
     "SPARK_PORT"),
    ("spark-master --port", lambda: _command_flag("spark-master", "--port"), "SPARK_PORT"),
    ("spark-master --webui-port", lambda: _command_flag("spark-master", "--webui-port"), "SPARK_UI_PORT"),
    ("spark-master published port", lambda: _published_ports("spark-master"), "SPARK_UI_PORT"),
    ("spark-master healthcheck", lambda: _healthcheck_port("spark-master"), "SPARK_UI_PORT"),
    ("webapp gunicorn --bind", lambda: _command_flag("webapp", "--bind"), "WEB_PORT"),
    ("webapp published port", lambda: _published_ports("webapp"), "WEB_PORT"),
    ("webapp healthcheck", lambda: _healthcheck_port("webapp"), "WEB_PORT"),
]


@pytest.mark.parametrize("where, read, default", SAME_PORTS, ids=[row[0] for row in SAME_PORTS])
def test_compose_uses_the_ports_of_the_settings_defaults(where, read, default):
    from tinytags import settings

    port = getattr(settings, default)
    found = read()
    assert found == ({(str(port), str(port))} if isinstance(found, set) else port), \
        f"{where}: {found}, but tinytags/settings.py has {default} = {port}"


def test_the_spark_workers_ui_port_is_the_local_first_workers():
    """Compose's workers (a host each) use the port the local stack gives worker 1: its master's UI + 1."""
    from tinytags.settings import SPARK_UI_PORT

    first_worker_ui = SPARK_UI_PORT + 1
    assert {_command_flag(name, "--webui-port") for name in ("spark-worker1", "spark-worker2")} == {first_worker_ui}
