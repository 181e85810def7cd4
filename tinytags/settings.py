"""The one settings place: every TINYTAGS_* environment variable is read here, when it is asked for.

Flags take their defaults from these (jobs), and so does the web app's config; nothing reads the
environment at import time, so a test or a driver can set a variable and call a function.

| variable | what | default |
|---|---|---|
| TINYTAGS_SOLR_URL | Solr collection URL, or Solr's root (``.../solr``); on SolrCloud a comma-separated list of nodes to fail over to | http://127.0.0.1:8983/solr/tinytags |
| TINYTAGS_SOLR_COLLECTION | collection appended to a root URL | tinytags |
| TINYTAGS_SOLR_USER | Solr BasicAuth user (jobs: ``indexer``, web app: ``search``) | none (anonymous) |
| TINYTAGS_SOLR_PASSWORD_FILE, TINYTAGS_SOLR_PASSWORD | its password: a file holding it (Docker secrets), or the value | none |
| TINYTAGS_WEBHDFS_URL | WebHDFS address for hdfs:// paths | http://<namenode host>:9870 |
| TINYTAGS_HDFS_USER | HDFS user | $USER |
| TINYTAGS_MODEL_DIR, TINYTAGS_CIFAR, TINYTAGS_SHARDS, TINYTAGS_TAG_OUTPUT | paths for the jobs | none |
| TINYTAGS_SPARK_MASTER | master when a job runs under plain python | local[*] |
| TINYTAGS_PACK_WORKERS | decoding processes of ``python -m jobs.shards pack`` | every core |
| TINYTAGS_SOURCE_ROOT | web app: the folder (local or hdfs://) whose packed originals it may read for previews | none (no previews) |
| TINYTAGS_PREVIEW_SIDE, TINYTAGS_PREVIEW_MAX_BYTES | web app: preview size in pixels; largest original it reads | 512; 50 MiB |

Job-specific tunables (TINYTAGS_INDEX_*, TINYTAGS_TAG_*) are listed in each job's ``--help``.

The local real stack (``python -m deploy.stack``) takes its ports and folders from ``stack_settings()``,
and the defaults above derive from the same port constants, so the jobs, the web app and the stack
agree on where Solr, HDFS and Spark are (tests/unit/test_stack_settings.py holds docker-compose.yml
and deploy/compose/*.env to them too). Every service listens on 127.0.0.1.

| variable | what | default |
|---|---|---|
| TINYTAGS_STACK_DIR | data, logs, pid files, secrets, generated config | .stack in the checkout |
| TINYTAGS_SOLR_PORT, TINYTAGS_SOLR_HEAP | standalone Solr | 8983, 2g |
| TINYTAGS_HDFS_PORT, TINYTAGS_WEBHDFS_PORT, TINYTAGS_HDFS_HEAP | NameNode RPC, its HTTP (WebHDFS) | 9000, 9870, 1g |
| TINYTAGS_SPARK_PORT, TINYTAGS_SPARK_UI_PORT | Spark standalone master; worker n's UI is UI port + n | 7077, 8080 |
| TINYTAGS_SPARK_WORKERS, TINYTAGS_SPARK_WORKER_CORES, TINYTAGS_SPARK_WORKER_MEMORY | the workers | 2, 1, 4g |
| TINYTAGS_ZK_PORT, TINYTAGS_SOLR_CLOUD_PORTS, TINYTAGS_SOLR_CLOUD_SHARDS, TINYTAGS_SOLR_CLOUD_HEAP | SolrCloud (``--cloud``) | 9983, 8985,8986, 2, 1g |
| TINYTAGS_SOLR_CLOUD_REPLICAS, TINYTAGS_SOLR_CLOUD_REPLICA_TYPE | copies of each shard (on different nodes), their type: nrt or tlog | 2, nrt |
| TINYTAGS_WEB_PORT, TINYTAGS_WEB_WORKERS | the web UI on gunicorn (``--webapp``) | 5000, 2 |
| TINYTAGS_YARN_RM_PORT, TINYTAGS_YARN_SCHEDULER_PORT, TINYTAGS_YARN_TRACKER_PORT, TINYTAGS_YARN_ADMIN_PORT, TINYTAGS_YARN_WEB_PORT | ResourceManager (``--yarn``) | 8032, 8030, 8031, 8033, 8088 |
| TINYTAGS_YARN_NM_PORT, TINYTAGS_YARN_NM_LOCALIZER_PORT, TINYTAGS_YARN_NM_WEB_PORT | NodeManager | 8041, 8040, 8042 |
| TINYTAGS_YARN_NM_MEMORY_MB, TINYTAGS_YARN_NM_VCORES, TINYTAGS_YARN_HEAP | what the NodeManager offers; daemon heap | 6144, 2, 512m |
| JAVA | the java binary of the stack's JVMs | java |
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path

# The default ports, written only here: the stack's defaults, the jobs' and the web app's default
# URLs and the storage layer's WebHDFS port all derive from these.
LOOPBACK = "127.0.0.1"
SOLR_PORT = 8983
HDFS_PORT = 9000
WEBHDFS_PORT = 9870
SPARK_PORT = 7077
SPARK_UI_PORT = 8080
WEB_PORT = 5000

DEFAULT_COLLECTION = "tinytags"
DEFAULT_SOLR_URL = f"http://{LOOPBACK}:{SOLR_PORT}/solr/{DEFAULT_COLLECTION}"
# deploy/, bench/ and tests/ run from a checkout that has tinytags installed editable (make setup),
# so the folder above this package is that checkout.
CHECKOUT = Path(__file__).resolve().parent.parent


def env(name: str, default: str | None = None) -> str | None:
    """A setting from the environment (TINYTAGS_*), read now; empty counts as unset."""
    value = os.environ.get(name)
    return value if value not in (None, "") else default


def env_number(name: str, default: float, kind=float):
    """A numeric setting; a ValueError names the variable when it is not a number."""
    value = env(name)
    if value is None:
        return default
    try:
        return kind(value)
    except ValueError:
        raise ValueError(f"{name} should be a number, got {value!r}") from None


def solr_collection_url(url: str | None = None) -> str:
    """The Solr collection URL: ``url`` (else TINYTAGS_SOLR_URL, else the local default).

    Solr's root URL (ending in ``/solr``) names no collection: TINYTAGS_SOLR_COLLECTION (default
    tinytags) is appended, so one TINYTAGS_SOLR_URL serves the jobs and the web app alike. A
    comma-separated list (SolrCloud nodes the client fails over between) is read part by part.
    """
    url = (url or env("TINYTAGS_SOLR_URL") or "").strip().rstrip("/")
    if "," in url:
        return ",".join(solr_collection_url(part) for part in url.split(",") if part.strip())
    if not url:
        collection = env("TINYTAGS_SOLR_COLLECTION")
        return DEFAULT_SOLR_URL.rsplit("/", 1)[0] + "/" + collection if collection else DEFAULT_SOLR_URL
    if url.endswith("/solr"):
        return f"{url}/{env('TINYTAGS_SOLR_COLLECTION', DEFAULT_COLLECTION)}"
    return url


def solr_credentials() -> tuple[str, str] | None:
    """(user, password) for Solr's BasicAuth from TINYTAGS_SOLR_USER and TINYTAGS_SOLR_PASSWORD_FILE
    (a file, e.g. a Docker secret; trailing newline dropped) or TINYTAGS_SOLR_PASSWORD; None when no
    user is set. A user without a password, or an unreadable file, is a ValueError naming the variable."""
    user = env("TINYTAGS_SOLR_USER")
    password_file, password = env("TINYTAGS_SOLR_PASSWORD_FILE"), env("TINYTAGS_SOLR_PASSWORD")
    if user is None:
        if password_file or password:
            raise ValueError("TINYTAGS_SOLR_PASSWORD(_FILE) is set but TINYTAGS_SOLR_USER is not")
        return None
    if password_file:
        try:
            with open(password_file, encoding="utf-8") as handle:
                password = handle.read().rstrip("\r\n")
        except OSError as error:
            raise ValueError(f"TINYTAGS_SOLR_PASSWORD_FILE={password_file}: cannot read the password of "
                             f"Solr user {user!r}: {error.strerror}") from None
    if not password:
        raise ValueError(f"TINYTAGS_SOLR_USER={user} needs TINYTAGS_SOLR_PASSWORD_FILE or TINYTAGS_SOLR_PASSWORD")
    return user, password


def add_hdfs_flags(parser) -> None:
    """--webhdfs and --hdfs-user, the flags of every command that reads or writes hdfs:// paths."""
    parser.add_argument("--webhdfs", default=env("TINYTAGS_WEBHDFS_URL"),
                        help=f"WebHDFS URL for hdfs:// paths (env TINYTAGS_WEBHDFS_URL; default namenode host:{WEBHDFS_PORT})")
    parser.add_argument("--hdfs-user", default=env("TINYTAGS_HDFS_USER"),
                        help="HDFS user (env TINYTAGS_HDFS_USER, else $USER)")


@dataclass(frozen=True)
class StackSettings:
    """Ports and folders of the local real stack (the table in the module docstring).

    The field defaults are the built-in ones; ``stack_settings()`` applies the environment.
    """

    stack_dir: Path = CHECKOUT / ".stack"
    solr_port: int = SOLR_PORT
    hdfs_rpc_port: int = HDFS_PORT
    hdfs_http_port: int = WEBHDFS_PORT
    spark_port: int = SPARK_PORT
    spark_ui_port: int = SPARK_UI_PORT
    spark_workers: int = 2
    worker_cores: int = 1
    worker_memory: str = "4g"
    solr_heap: str = "2g"
    hdfs_heap: str = "1g"
    # SolrCloud (up --cloud): a ZooKeeper and two Solr nodes, a collection with two shards, each
    # shard on both nodes (losing one node loses no documents; bench/RESULTS.md compares the types).
    zk_port: int = 9983
    cloud_ports: tuple[int, ...] = (8985, 8986)
    cloud_shards: int = 2
    cloud_replicas: int = 2
    cloud_replica_type: str = "nrt"
    cloud_heap: str = "1g"
    # The web UI (up --webapp, as make demo does): gunicorn serving webapp:create_app().
    web_port: int = WEB_PORT
    web_workers: int = 2
    # YARN (up --yarn): a ResourceManager and one NodeManager, Hadoop's default ports.
    yarn_rm_port: int = 8032
    yarn_scheduler_port: int = 8030
    yarn_tracker_port: int = 8031
    yarn_admin_port: int = 8033
    yarn_web_port: int = 8088
    yarn_nm_port: int = 8041
    yarn_nm_localizer_port: int = 8040
    yarn_nm_web_port: int = 8042
    yarn_nm_memory_mb: int = 6144
    yarn_nm_vcores: int = 2
    yarn_heap: str = "512m"
    java: str = "java"

    @property
    def solr_root(self) -> str:
        """The standalone Solr's root URL (``.../solr``, no collection)."""
        return f"http://{LOOPBACK}:{self.solr_port}/solr"

    @property
    def solr_cloud_root(self) -> str:
        """The first SolrCloud node's root URL."""
        return f"http://{LOOPBACK}:{self.cloud_ports[0]}/solr"

    @property
    def hdfs_uri(self) -> str:
        """The stack's HDFS, as hdfs:// paths name it."""
        return f"hdfs://{LOOPBACK}:{self.hdfs_rpc_port}"

    @property
    def namenode_http(self) -> str:
        """The NameNode's HTTP address (WebHDFS, JMX, its UI)."""
        return f"http://{LOOPBACK}:{self.hdfs_http_port}"

    @property
    def spark_master(self) -> str:
        """The standalone Spark master URL."""
        return f"spark://{LOOPBACK}:{self.spark_port}"

    @property
    def web_url(self) -> str:
        """The web UI."""
        return f"http://{LOOPBACK}:{self.web_port}"


def _port_list(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(",") if part.strip())


# StackSettings field -> (environment variable, how its text is read). One row per field.
STACK_ENV: dict[str, tuple[str, object]] = {
    "stack_dir": ("TINYTAGS_STACK_DIR", Path),
    "solr_port": ("TINYTAGS_SOLR_PORT", int),
    "hdfs_rpc_port": ("TINYTAGS_HDFS_PORT", int),
    "hdfs_http_port": ("TINYTAGS_WEBHDFS_PORT", int),
    "spark_port": ("TINYTAGS_SPARK_PORT", int),
    "spark_ui_port": ("TINYTAGS_SPARK_UI_PORT", int),
    "spark_workers": ("TINYTAGS_SPARK_WORKERS", int),
    "worker_cores": ("TINYTAGS_SPARK_WORKER_CORES", int),
    "worker_memory": ("TINYTAGS_SPARK_WORKER_MEMORY", str),
    "solr_heap": ("TINYTAGS_SOLR_HEAP", str),
    "hdfs_heap": ("TINYTAGS_HDFS_HEAP", str),
    "zk_port": ("TINYTAGS_ZK_PORT", int),
    "cloud_ports": ("TINYTAGS_SOLR_CLOUD_PORTS", _port_list),
    "cloud_shards": ("TINYTAGS_SOLR_CLOUD_SHARDS", int),
    "cloud_replicas": ("TINYTAGS_SOLR_CLOUD_REPLICAS", int),
    "cloud_replica_type": ("TINYTAGS_SOLR_CLOUD_REPLICA_TYPE", str),
    "cloud_heap": ("TINYTAGS_SOLR_CLOUD_HEAP", str),
    "web_port": ("TINYTAGS_WEB_PORT", int),
    "web_workers": ("TINYTAGS_WEB_WORKERS", int),
    "yarn_rm_port": ("TINYTAGS_YARN_RM_PORT", int),
    "yarn_scheduler_port": ("TINYTAGS_YARN_SCHEDULER_PORT", int),
    "yarn_tracker_port": ("TINYTAGS_YARN_TRACKER_PORT", int),
    "yarn_admin_port": ("TINYTAGS_YARN_ADMIN_PORT", int),
    "yarn_web_port": ("TINYTAGS_YARN_WEB_PORT", int),
    "yarn_nm_port": ("TINYTAGS_YARN_NM_PORT", int),
    "yarn_nm_localizer_port": ("TINYTAGS_YARN_NM_LOCALIZER_PORT", int),
    "yarn_nm_web_port": ("TINYTAGS_YARN_NM_WEB_PORT", int),
    "yarn_nm_memory_mb": ("TINYTAGS_YARN_NM_MEMORY_MB", int),
    "yarn_nm_vcores": ("TINYTAGS_YARN_NM_VCORES", int),
    "yarn_heap": ("TINYTAGS_YARN_HEAP", str),
    "java": ("JAVA", str),
}


def stack_settings(**overrides) -> StackSettings:
    """The stack's settings from the environment, read now; ``overrides`` (field=value) win over both.

    A value that does not parse is a ValueError naming its variable.
    """
    unknown = set(overrides) - {f.name for f in fields(StackSettings)}
    if unknown:
        raise TypeError(f"StackSettings has no field(s) {sorted(unknown)}")
    values = {}
    for name, (variable, parse) in STACK_ENV.items():
        text = env(variable)
        if text is None or name in overrides:
            continue
        try:
            values[name] = parse(text)
        except ValueError:
            raise ValueError(f"{variable} should be {'a number' if parse is int else 'comma-separated ports'}, "
                             f"got {text!r}") from None
    return StackSettings(**{**values, **overrides})
