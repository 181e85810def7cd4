"""Local real stack: HDFS, Solr, a Spark standalone cluster (and YARN) as plain processes on 127.0.0.1.

    python deploy/stack.py up|down|status [--only solr,hdfs,spark,cloud,yarn,webapp]
                                          [--cloud] [--yarn] [--webapp] [--auth]

Each service runs in its own process group with its log in .stack/logs/ and its pid in
.stack/run/. `up` is idempotent (a running service is left alone), waits until every service
answers and prints its URL; `down` stops only what this stack started, by pid. HDFS data and the
Solr index live under .stack/ and survive down/up. Ports and folders come from the environment
(TINYTAGS_STACK_DIR, TINYTAGS_SOLR_PORT, ...), see `Settings`.

`up` after a crash: a service whose recorded process group no longer runs (killed, crashed, or a
zombie nobody has reaped yet) is started afresh at once, after its port has closed, its pid file
and the lock files it left (Solr's write.lock, HDFS's in_use.lock) are removed. One that runs but
does not answer yet is waited for, unless its processes go away meanwhile.

`up --yarn` (make up YARN=1) adds Hadoop's own ResourceManager and NodeManager daemons (the
NodeManager offers 2 vcores and 6 GB by default) from deploy/yarn's Maven classpath, writes the
HADOOP_CONF_DIR they and spark-submit read (.stack/conf/hadoop: core-site.xml with fs.defaultFS =
this HDFS, yarn-site.xml, capacity-scheduler.xml), and stages the pinned pyspark's jars on HDFS
once as spark.yarn.archive (hdfs:///tinytags/spark/spark-jars.zip).

`up --auth` (make up AUTH=1) starts the standalone Solr with BasicAuth and rule-based authorisation:
the same security.json as the compose stack (deploy/solr_security.py), written into Solr's home,
where a standalone Solr reads it at start, from passwords made once into .stack/secrets/
(solr-admin/indexer/search.password, mode 600). `up` without it removes that file again. A running
Solr keeps the mode it started with: switching needs `down` first, and `up` says so.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent


class StackError(Exception):
    """A service could not be started or stopped; the message names it and its log."""


@dataclass(frozen=True)
class Settings:
    """Ports and folders of the local stack, from the environment with loopback defaults."""

    stack_dir: Path = Path(os.environ.get("TINYTAGS_STACK_DIR", ROOT / ".stack"))
    solr_port: int = int(os.environ.get("TINYTAGS_SOLR_PORT", "8983"))
    hdfs_rpc_port: int = int(os.environ.get("TINYTAGS_HDFS_PORT", "9000"))
    hdfs_http_port: int = int(os.environ.get("TINYTAGS_WEBHDFS_PORT", "9870"))
    spark_port: int = int(os.environ.get("TINYTAGS_SPARK_PORT", "7077"))
    spark_ui_port: int = int(os.environ.get("TINYTAGS_SPARK_UI_PORT", "8080"))
    spark_workers: int = int(os.environ.get("TINYTAGS_SPARK_WORKERS", "2"))
    worker_cores: int = int(os.environ.get("TINYTAGS_SPARK_WORKER_CORES", "1"))
    worker_memory: str = os.environ.get("TINYTAGS_SPARK_WORKER_MEMORY", "4g")
    solr_heap: str = os.environ.get("TINYTAGS_SOLR_HEAP", "2g")
    hdfs_heap: str = os.environ.get("TINYTAGS_HDFS_HEAP", "1g")
    # SolrCloud (up --cloud): a ZooKeeper and two Solr nodes, collection with two shards.
    zk_port: int = int(os.environ.get("TINYTAGS_ZK_PORT", "9983"))
    cloud_ports: tuple[int, ...] = tuple(
        int(p) for p in os.environ.get("TINYTAGS_SOLR_CLOUD_PORTS", "8985,8986").split(",")
    )
    cloud_shards: int = int(os.environ.get("TINYTAGS_SOLR_CLOUD_SHARDS", "2"))
    cloud_heap: str = os.environ.get("TINYTAGS_SOLR_CLOUD_HEAP", "1g")
    # The web UI (up --webapp, as make demo does): gunicorn serving webapp:create_app().
    web_port: int = int(os.environ.get("TINYTAGS_WEB_PORT", "5000"))
    web_workers: int = int(os.environ.get("TINYTAGS_WEB_WORKERS", "2"))
    # YARN (up --yarn): a ResourceManager and one NodeManager, Hadoop's default ports on 127.0.0.1.
    yarn_rm_port: int = int(os.environ.get("TINYTAGS_YARN_RM_PORT", "8032"))
    yarn_scheduler_port: int = int(os.environ.get("TINYTAGS_YARN_SCHEDULER_PORT", "8030"))
    yarn_tracker_port: int = int(os.environ.get("TINYTAGS_YARN_TRACKER_PORT", "8031"))
    yarn_admin_port: int = int(os.environ.get("TINYTAGS_YARN_ADMIN_PORT", "8033"))
    yarn_web_port: int = int(os.environ.get("TINYTAGS_YARN_WEB_PORT", "8088"))
    yarn_nm_port: int = int(os.environ.get("TINYTAGS_YARN_NM_PORT", "8041"))
    yarn_nm_localizer_port: int = int(os.environ.get("TINYTAGS_YARN_NM_LOCALIZER_PORT", "8040"))
    yarn_nm_web_port: int = int(os.environ.get("TINYTAGS_YARN_NM_WEB_PORT", "8042"))
    yarn_nm_memory_mb: int = int(os.environ.get("TINYTAGS_YARN_NM_MEMORY_MB", "6144"))
    yarn_nm_vcores: int = int(os.environ.get("TINYTAGS_YARN_NM_VCORES", "2"))
    yarn_heap: str = os.environ.get("TINYTAGS_YARN_HEAP", "512m")


@dataclass
class Service:
    """One process of the stack: how to start it and how to know that it answers."""

    name: str
    command: list[str]
    port: int
    url: str
    ready: Callable[[], bool]
    env: dict[str, str] = field(default_factory=dict)
    timeout: float = 120.0
    # What a killed process leaves behind under the stack dir (globs): cleared before a fresh start.
    leftovers: tuple[str, ...] = ()
    # True: `up` launches the next service before this one answers (the next one copes, e.g. a
    # NodeManager retries registering with its ResourceManager), and waits for both after.
    overlap: bool = False


JAVA_OPENS = [
    "--add-opens=java.base/java.lang=ALL-UNNAMED",
    "--add-opens=java.base/java.util=ALL-UNNAMED",
    "--add-opens=java.base/java.nio=ALL-UNNAMED",
    "--add-opens=java.base/sun.nio.ch=ALL-UNNAMED",
]


def launcher_classpath(module: str) -> str:
    """Classpath of a compiled launcher in deploy/<module>, or a StackError saying how to build it."""
    target = ROOT / "deploy" / module / "target"
    if not (target / "classes").is_dir() or not (target / "lib").is_dir():
        raise StackError(
            f"{module}: launcher not built ({target} missing); run `make setup` first"
        )
    return f"{target / 'classes'}:{target / 'lib'}/*"


def spark_home() -> Path:
    """The Spark distribution inside the installed pyspark package."""
    import pyspark

    return Path(pyspark.__file__).resolve().parent


def http_ok(url: str, predicate: Callable[[bytes], bool] = lambda body: True,
            headers: dict[str, str] | None = None) -> bool:
    """True when the URL answers 200 and its body satisfies the predicate."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=3) as response:
            return response.status == 200 and predicate(response.read())
    except (OSError, ValueError):
        return False


def port_in_use(port: int) -> bool:
    """True when something already listens on 127.0.0.1:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def hdfs_ok(webhdfs: str) -> bool:
    """True when WebHDFS answers and the NameNode is out of safe mode with a live DataNode.

    WebHDFS answers before the DataNode has reported its blocks; reading a file then fails with
    "No active and not excluded nodes contain this block". Safe mode ends once the blocks are in.
    """
    try:
        url = f"{webhdfs}/jmx?qry=Hadoop:service=NameNode,name=FSNamesystemState"
        with urllib.request.urlopen(url, timeout=3) as response:
            state = json.loads(response.read())["beans"][0]
    except (OSError, ValueError, KeyError, IndexError):
        return False
    return (state.get("FSState") == "Operational" and state.get("NumLiveDataNodes", 0) >= 1
            and http_ok(f"{webhdfs}/webhdfs/v1/?op=GETFILESTATUS&user.name=tinytags"))


def alive_workers(settings: Settings) -> int:
    """How many workers the Spark master reports ALIVE (0 when it does not answer)."""
    try:
        url = f"http://127.0.0.1:{settings.spark_ui_port}/json/"
        with urllib.request.urlopen(url, timeout=3) as response:
            state = json.loads(response.read())
        return sum(1 for worker in state.get("workers", []) if worker.get("state") == "ALIVE")
    except (OSError, ValueError):
        return 0


def services(settings: Settings, cloud: bool = False, webapp: bool = False,
             yarn: bool = False) -> list[Service]:
    """The stack's services in start order (stop order is the reverse).

    cloud adds SolrCloud, yarn a ResourceManager and a NodeManager, webapp the web UI (it needs
    Solr up, so it comes last).
    """
    data = settings.stack_dir / "data"
    solr_url = f"http://127.0.0.1:{settings.solr_port}/solr"
    webhdfs = f"http://127.0.0.1:{settings.hdfs_http_port}"
    master = f"spark://127.0.0.1:{settings.spark_port}"
    java = os.environ.get("JAVA", "java")
    result = [
        Service(
            name="hdfs",
            command=[
                java, f"-Xmx{settings.hdfs_heap}", *JAVA_OPENS,
                "-cp", "{classpath:hdfs}", "tinytags.HdfsLauncher",
                "--base", str(data / "hdfs"),
                "--rpc-port", str(settings.hdfs_rpc_port),
                "--http-port", str(settings.hdfs_http_port),
            ],
            port=settings.hdfs_rpc_port,
            url=f"hdfs://127.0.0.1:{settings.hdfs_rpc_port}  (WebHDFS {webhdfs})",
            ready=lambda: hdfs_ok(webhdfs),
            leftovers=("data/hdfs/**/in_use.lock",),
        ),
        Service(
            name="solr",
            command=[
                java, f"-Xmx{settings.solr_heap}", *JAVA_OPENS,
                f"-Dsolr.log.dir={settings.stack_dir / 'logs'}",
                "-Dsolr.install.dir=" + str(data / "solr"),
                "-cp", "{classpath:solr}", "tinytags.SolrLauncher",
                "--home", str(data / "solr"),
                "--configset", str(ROOT / "solr_conf"),
                "--port", str(settings.solr_port),
                "--core", "tinytags",
            ],
            port=settings.solr_port,
            url=f"{solr_url}  (collection tinytags: {solr_url}/tinytags/select)",
            ready=lambda: http_ok(
                f"{solr_url}/tinytags/admin/ping?wt=json", lambda body: b'"OK"' in body,
                solr_admin_headers(settings),
            ),
            leftovers=("data/solr/**/write.lock",),
        ),
        Service(
            name="spark-master",
            command=[
                "{spark_class}", "org.apache.spark.deploy.master.Master",
                "--host", "127.0.0.1", "--port", str(settings.spark_port),
                "--webui-port", str(settings.spark_ui_port),
            ],
            port=settings.spark_port,
            url=f"{master}  (UI http://127.0.0.1:{settings.spark_ui_port})",
            ready=lambda: http_ok(f"http://127.0.0.1:{settings.spark_ui_port}/json/"),
        ),
    ]
    for n in range(1, settings.spark_workers + 1):
        ui_port = settings.spark_ui_port + n
        result.append(
            Service(
                name=f"spark-worker-{n}",
                command=[
                    "{spark_class}", "org.apache.spark.deploy.worker.Worker", master,
                    "--host", "127.0.0.1", "--cores", str(settings.worker_cores),
                    "--memory", settings.worker_memory, "--webui-port", str(ui_port),
                    "--work-dir", str(data / f"spark-worker-{n}"),
                ],
                port=ui_port,
                url=f"http://127.0.0.1:{ui_port}",
                ready=lambda n=n: alive_workers(settings) >= n,
            )
        )
    if cloud:
        result.extend(cloud_services(settings, java))
    if yarn:
        result.extend(yarn_services(settings, java))
    if webapp:
        result.append(webapp_service(settings))
    return result


def cloud_services(settings: Settings, java: str) -> list[Service]:
    """ZooKeeper and the SolrCloud nodes (the same launcher as the standalone Solr, with --zk-host)."""
    data = settings.stack_dir / "data"
    zk_host = f"127.0.0.1:{settings.zk_port}"
    result = [
        Service(
            name="zookeeper",
            command=[
                java, "-Xmx256m", "-Dzookeeper.admin.enableServer=false",
                "-Dzookeeper.4lw.commands.whitelist=ruok,srvr",
                "-cp", "{classpath:solr}", "org.apache.zookeeper.server.ZooKeeperServerMain",
                str(settings.zk_port), str(data / "zookeeper"),
            ],
            port=settings.zk_port,
            url=f"zk://{zk_host}",
            ready=lambda: zk_ok(settings.zk_port),
        )
    ]
    for n, port in enumerate(settings.cloud_ports, start=1):
        base = f"http://127.0.0.1:{port}/solr"
        result.append(
            Service(
                name=f"solr-cloud-{n}",
                command=[
                    java, f"-Xmx{settings.cloud_heap}", *JAVA_OPENS,
                    f"-Dsolr.log.dir={settings.stack_dir / 'logs'}",
                    "-cp", "{classpath:solr}", "tinytags.SolrLauncher",
                    "--home", str(data / f"solr-cloud-{n}"),
                    "--configset", str(ROOT / "solr_conf"),
                    "--port", str(port), "--zk-host", zk_host,
                ],
                port=port,
                url=f"{base}  (collection tinytags: {base}/tinytags/select)",
                ready=lambda base=base: http_ok(f"{base}/admin/info/system?wt=json"),
                leftovers=(f"data/solr-cloud-{n}/**/write.lock",),
            )
        )
    return result


# --- YARN (up --yarn): the Hadoop daemons' own main classes, configured by one HADOOP_CONF_DIR ----

SPARK_ARCHIVE = "/tinytags/spark/spark-jars.zip"  # on the stack's HDFS: spark.yarn.archive=hdfs://<this>


def hadoop_conf_dir(settings: Settings) -> Path:
    """The HADOOP_CONF_DIR that up --yarn writes: what the YARN daemons and spark-submit read."""
    return settings.stack_dir / "conf" / "hadoop"


def _site_xml(properties: dict[str, object]) -> str:
    from xml.sax.saxutils import escape

    rows = "".join(
        f"  <property><name>{escape(name)}</name><value>{escape(str(value))}</value></property>\n"
        for name, value in properties.items()
    )
    return ('<?xml version="1.0"?>\n'
            "<!-- written by deploy/stack.py at every start of YARN; edits are overwritten -->\n"
            f"<configuration>\n{rows}</configuration>\n")


def write_hadoop_conf(settings: Settings) -> Path:
    """core-site.xml (fs.defaultFS = the stack's HDFS), yarn-site.xml and capacity-scheduler.xml.

    Every address is 127.0.0.1 and comes from Settings. The NodeManager offers yarn_nm_memory_mb
    and yarn_nm_vcores; the smallest container is 128 MB, so small executors fit. Virtual memory
    is not checked (a JVM reserves far more address space than it uses; the physical memory
    check stays on). Container logs go to the stack's logs folder.
    """
    conf = hadoop_conf_dir(settings)
    conf.mkdir(parents=True, exist_ok=True)
    data = settings.stack_dir / "data" / "yarn"
    host = "127.0.0.1"
    files = {
        "core-site.xml": {"fs.defaultFS": f"hdfs://{host}:{settings.hdfs_rpc_port}"},
        "yarn-site.xml": {
            "yarn.resourcemanager.hostname": host,
            "yarn.resourcemanager.bind-host": host,
            "yarn.resourcemanager.address": f"{host}:{settings.yarn_rm_port}",
            "yarn.resourcemanager.scheduler.address": f"{host}:{settings.yarn_scheduler_port}",
            "yarn.resourcemanager.resource-tracker.address": f"{host}:{settings.yarn_tracker_port}",
            "yarn.resourcemanager.admin.address": f"{host}:{settings.yarn_admin_port}",
            "yarn.resourcemanager.webapp.address": f"{host}:{settings.yarn_web_port}",
            "yarn.nodemanager.hostname": host,
            "yarn.nodemanager.bind-host": host,
            "yarn.nodemanager.address": f"{host}:{settings.yarn_nm_port}",
            "yarn.nodemanager.localizer.address": f"{host}:{settings.yarn_nm_localizer_port}",
            "yarn.nodemanager.webapp.address": f"{host}:{settings.yarn_nm_web_port}",
            "yarn.nodemanager.resource.memory-mb": settings.yarn_nm_memory_mb,
            "yarn.nodemanager.resource.cpu-vcores": settings.yarn_nm_vcores,
            "yarn.scheduler.minimum-allocation-mb": 128,
            "yarn.scheduler.maximum-allocation-mb": settings.yarn_nm_memory_mb,
            "yarn.scheduler.maximum-allocation-vcores": settings.yarn_nm_vcores,
            "yarn.nodemanager.vmem-check-enabled": "false",
            "yarn.nodemanager.local-dirs": data / "nm-local",
            "yarn.nodemanager.log-dirs": settings.stack_dir / "logs" / "yarn-containers",
            # A development disk may be fuller than YARN's 90% default before it calls it bad.
            "yarn.nodemanager.disk-health-checker.max-disk-utilization-per-disk-percentage": 99,
            "yarn.nodemanager.recovery.enabled": "false",
        },
        "capacity-scheduler.xml": {
            "yarn.scheduler.capacity.root.queues": "default",
            "yarn.scheduler.capacity.root.default.capacity": 100,
            "yarn.scheduler.capacity.root.default.maximum-capacity": 100,
            # Two applications (an AM each) may run side by side on the one small node.
            "yarn.scheduler.capacity.maximum-am-resource-percent": 0.5,
        },
    }
    for name, properties in files.items():
        (conf / name).write_text(_site_xml(properties))
    return conf


def _java_home(java: str) -> str:
    """JAVA_HOME for YARN containers ($JAVA_HOME/bin/java starts every executor)."""
    import shutil

    if os.environ.get("JAVA_HOME"):
        return os.environ["JAVA_HOME"]
    found = shutil.which(java)
    return str(Path(found).resolve().parent.parent) if found else ""


def _yarn_nodes_running(settings: Settings) -> bool:
    """True when the ResourceManager lists this stack's NodeManager as RUNNING."""
    try:
        url = f"http://127.0.0.1:{settings.yarn_web_port}/ws/v1/cluster/nodes?states=RUNNING"
        with urllib.request.urlopen(url, timeout=3) as response:
            nodes = (json.loads(response.read()).get("nodes") or {}).get("node") or []
        return any(str(node.get("id", "")).endswith(f":{settings.yarn_nm_port}") for node in nodes)
    except (OSError, ValueError):
        return False


def yarn_services(settings: Settings, java: str) -> list[Service]:
    """A ResourceManager and a NodeManager: Hadoop's own daemons, each its own JVM (deploy/yarn)."""
    conf = hadoop_conf_dir(settings)
    web = f"http://127.0.0.1:{settings.yarn_web_port}"
    common = [java, f"-Xmx{settings.yarn_heap}", *JAVA_OPENS,
              f"-Dhadoop.log.dir={settings.stack_dir / 'logs'}",
              "-cp", f"{conf}:{{classpath:yarn}}"]
    env = {"HADOOP_CONF_DIR": str(conf), "JAVA_HOME": _java_home(java)}
    return [
        Service(
            name="yarn-rm",
            command=[*common, "org.apache.hadoop.yarn.server.resourcemanager.ResourceManager"],
            port=settings.yarn_rm_port,
            url=f"127.0.0.1:{settings.yarn_rm_port}  (UI {web})",
            ready=lambda: http_ok(f"{web}/ws/v1/cluster/info", lambda body: b'"STARTED"' in body),
            env=env,
            overlap=True,  # the NodeManager starts meanwhile: each JVM takes ~20 s to come up here
        ),
        Service(
            name="yarn-nm",
            command=[*common, "org.apache.hadoop.yarn.server.nodemanager.NodeManager"],
            port=settings.yarn_nm_port,
            url=(f"127.0.0.1:{settings.yarn_nm_port}, {settings.yarn_nm_vcores} vcores, "
                 f"{settings.yarn_nm_memory_mb} MB  (UI http://127.0.0.1:{settings.yarn_nm_web_port})"),
            ready=lambda: _yarn_nodes_running(settings),
            env=env,
        ),
    ]


def ensure_spark_archive(settings: Settings) -> str:
    """Stage the pinned pyspark's jars/ on the stack's HDFS once, as spark.yarn.archive. Idempotent.

    A zip of jars/ (stored, not deflated: jars are compressed already) goes to SPARK_ARCHIVE; a
    marker beside it names the pyspark version and size, so a second call only reads the marker,
    and a new pyspark replaces the archive. Written under a temporary name and renamed, so a
    crash never leaves a partial archive in place. YARN caches it on the NodeManager, so
    submits neither upload nor unpack Spark's ~460 MB of jars again.
    """
    import zipfile

    import pyspark
    from hdfs import InsecureClient

    jars = spark_home() / "jars"
    names = sorted(p.name for p in jars.glob("*.jar"))
    size = sum((jars / name).stat().st_size for name in names)
    marker = f"pyspark {pyspark.__version__}, {len(names)} jars, {size} bytes\n"
    client = InsecureClient(f"http://127.0.0.1:{settings.hdfs_http_port}",
                            user=os.environ.get("USER", "tinytags"))
    marker_path = SPARK_ARCHIVE + ".version"
    where = f"hdfs://127.0.0.1:{settings.hdfs_rpc_port}{SPARK_ARCHIVE}"
    try:
        if client.status(SPARK_ARCHIVE, strict=False) and client.status(marker_path, strict=False):
            with client.read(marker_path, encoding="utf-8") as reader:
                if reader.read() == marker:
                    return f"{'spark jars':15} staged  {where}"
        began = time.monotonic()
        local = settings.stack_dir / "cache" / "spark-jars.zip"
        local.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(local, "w", zipfile.ZIP_STORED) as archive:
            for name in names:
                archive.write(jars / name, name)
        partial = SPARK_ARCHIVE + ".partial"
        client.makedirs(SPARK_ARCHIVE.rsplit("/", 1)[0])
        client.upload(partial, str(local), overwrite=True)
        client.delete(SPARK_ARCHIVE)
        client.rename(partial, SPARK_ARCHIVE)
        client.write(marker_path, data=marker, encoding="utf-8", overwrite=True)
        local.unlink()
    except Exception as error:  # HdfsCLI raises HdfsError, requests errors, OSError: all mean the same
        raise StackError(f"spark jars: could not stage {jars} as {where}: {error}") from error
    took = time.monotonic() - began
    return f"{'spark jars':15} staged now ({len(names)} jars, {size / 1e6:.0f} MB, {took:.1f} s)  {where}"


def webapp_service(settings: Settings) -> Service:
    """gunicorn serving the Flask app factory; Solr URL and model dir come from TINYTAGS_* env."""
    url = f"http://127.0.0.1:{settings.web_port}"
    return Service(
        name="webapp",
        command=[
            str(Path(sys.executable).parent / "gunicorn"), "webapp:create_app()",
            "--bind", f"127.0.0.1:{settings.web_port}", "--worker-class", "gthread",
            "--workers", str(settings.web_workers), "--threads", "8",
            "--access-logfile", "-",
        ],
        port=settings.web_port,
        url=url,
        ready=lambda: http_ok(f"{url}/api/health"),
        timeout=60,
    )


def _solr_security():
    """deploy/solr_security.py, also when this file runs as a script (deploy/ first on sys.path)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from deploy import solr_security

    return solr_security


def solr_admin_headers(settings: Settings) -> dict[str, str]:
    """The admin's BasicAuth header when the standalone Solr's home holds a security.json, else none."""
    if not (settings.stack_dir / "data" / "solr" / "security.json").exists():
        return {}
    import base64

    path = _solr_security().password_file(settings.stack_dir / "secrets", "admin")
    try:
        password = path.read_text().rstrip("\r\n")
    except OSError:
        return {}
    return {"Authorization": "Basic " + base64.b64encode(f"admin:{password}".encode()).decode()}


def configure_solr_auth(settings: Settings, auth: bool) -> str | None:
    """Put security.json into the standalone Solr's home (auth) or take it out; a status line or None.

    A running Solr read its security.json when it started: asking for the other mode is a
    StackError that says to stop it first.
    """
    home_file = settings.stack_dir / "data" / "solr" / "security.json"
    if running_pid(settings, "solr"):
        try:
            url = f"http://127.0.0.1:{settings.solr_port}/solr/admin/info/system?wt=json"
            urllib.request.urlopen(url, timeout=3).close()
            running = False
        except urllib.error.HTTPError as error:
            running = error.code == 401 if error.code in (401, 403) else None
        except OSError:
            running = None  # not answering (yet): start() deals with it
        if running is not None and running != auth:
            now, wanted = ("with", "without") if running else ("without", "with")
            raise StackError(f"solr: running {now} BasicAuth; to start it {wanted}, stop it first "
                             f"(make down, then make up{' AUTH=1' if auth else ''})")
    if not auth:
        if home_file.exists():
            home_file.unlink()
            return f"{'solr auth':15} off (removed {home_file})"
        return None
    security = _solr_security()
    secrets_dir = settings.stack_dir / "secrets"
    try:
        security.write_security_json(secrets_dir, home_file, create=True)
    except ValueError as error:
        raise StackError(f"solr auth: {error}") from None
    users = ", ".join(f"{user} ({security.password_file(secrets_dir, user)})" for user in security.USERS)
    return f"{'solr auth':15} BasicAuth on; users and password files: {users}"


def zk_ok(port: int) -> bool:
    """True when ZooKeeper answers its `ruok` four-letter command with `imok`."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=3) as sock:
            sock.sendall(b"ruok")
            return sock.recv(16) == b"imok"
    except OSError:
        return False


def ensure_cloud_collection(settings: Settings, name: str = "tinytags") -> str:
    """Upload solr_conf/ as configset `tinytags` and create (or reload) the collection. Idempotent."""
    import io
    import zipfile

    base = f"http://127.0.0.1:{settings.cloud_ports[0]}/solr"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted((ROOT / "solr_conf").rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(ROOT / "solr_conf"))
    _solr_admin(f"{base}/admin/configs?action=UPLOAD&name=tinytags&overwrite=true&wt=json",
                data=buffer.getvalue())
    existing = _solr_admin(f"{base}/admin/collections?action=LIST&wt=json").get("collections", [])
    if name in existing:
        _solr_admin(f"{base}/admin/collections?action=RELOAD&name={name}&wt=json")
        return f"{'collection':15} {name} reloaded with solr_conf/  {base}/{name}"
    _solr_admin(
        f"{base}/admin/collections?action=CREATE&name={name}&numShards={settings.cloud_shards}"
        f"&replicationFactor=1&collection.configName=tinytags&wt=json"
    )
    return f"{'collection':15} {name} created ({settings.cloud_shards} shards)  {base}/{name}"


def _solr_admin(url: str, data: bytes | None = None) -> dict:
    request = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    if data is not None:
        request.add_header("Content-Type", "application/octet-stream")
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as error:
        raise StackError(f"SolrCloud admin call failed: {url}: {error.read()[:500]!r}") from error
    except OSError as error:
        raise StackError(f"SolrCloud admin call failed: {url}: {error}") from error


def _pid_file(settings: Settings, name: str) -> Path:
    return settings.stack_dir / "run" / f"{name}.pid"


def _log_file(settings: Settings, name: str) -> Path:
    return settings.stack_dir / "logs" / f"{name}.log"


def recorded_pid(settings: Settings, name: str) -> int | None:
    """The pid in the service's pid file (alive or not), or None when there is none."""
    try:
        return int(_pid_file(settings, name).read_text().strip())
    except (OSError, ValueError):
        return None


def running_pid(settings: Settings, name: str) -> int | None:
    """The pid of the service when this stack started it and its process group still runs."""
    pid = recorded_pid(settings, name)
    return pid if pid is not None and _group_alive(pid) else None


def _resolve(command: list[str]) -> list[str]:
    import re

    resolved = []
    for part in command:
        if "{classpath:" in part:  # a launcher's classpath, alone or after other entries
            part = re.sub(r"\{classpath:(\w+)\}", lambda m: launcher_classpath(m.group(1)), part)
        elif part == "{spark_class}":
            part = str(spark_home() / "bin" / "spark-class")
        resolved.append(part)
    return resolved


def _tail(path: Path, lines: int = 8) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join("    " + line for line in text[-lines:])


def start(settings: Settings, service: Service) -> str:
    """Start one service unless it already runs; wait until it answers. Returns a status line."""
    return launch(settings, service)[0]()


def launch(settings: Settings, service: Service) -> tuple[Callable[[], str], bool]:
    """Start one service unless it already runs, without waiting for its answer.

    Returns (a call that waits until it answers and returns the status line, whether a new
    process was started).
    """
    log = _log_file(settings, service.name)
    previous = recorded_pid(settings, service.name)
    after_crash = ""
    if previous is not None:
        if _group_alive(previous) and (service.ready() or wait_ready(settings, service, log, pgid=previous)):
            return (lambda: f"{service.name:15} already running  {service.url}"), False
        # Its processes are gone (killed, crashed) or went while we waited for an answer.
        after_crash = clear_after_exit(settings, service, previous)
    if port_in_use(service.port):
        raise StackError(
            f"{service.name}: port 127.0.0.1:{service.port} is already in use by a process this "
            f"stack did not start; stop it or set another port (see deploy/stack.py Settings)"
        )
    command = _resolve(service.command)
    for folder in (log.parent, _pid_file(settings, service.name).parent):
        folder.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.update(
        SPARK_HOME=str(spark_home()) if "{spark_class}" in service.command else env.get("SPARK_HOME", ""),
        PYSPARK_PYTHON=env.get("PYSPARK_PYTHON", sys.executable),
        SPARK_LOG_DIR=str(settings.stack_dir / "logs"),
        **service.env,
    )
    with open(log, "ab") as out:
        out.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} starting: {' '.join(command)}\n".encode())
        out.flush()
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=env, cwd=ROOT, start_new_session=True,
        )
    _pid_file(settings, service.name).write_text(str(process.pid))

    def finish() -> str:
        wait_ready(settings, service, log, process)
        return f"{service.name:15} started (pid {process.pid}){after_crash}  {service.url}"

    return finish, True


def clear_after_exit(settings: Settings, service: Service, pid: int, port_wait: float = 15.0) -> str:
    """Clean up after a service whose processes died: wait for its port to close (a dying process may
    hold it a moment longer), remove its pid file and the lock files it left (Service.leftovers).

    Only called once no process of its group runs, so no lock removed here is still held.
    Returns a note for the status line.
    """
    deadline = time.monotonic() + port_wait
    while port_in_use(service.port) and time.monotonic() < deadline:
        time.sleep(0.2)
    _pid_file(settings, service.name).unlink(missing_ok=True)
    removed = []
    for pattern in service.leftovers:
        for path in sorted(settings.stack_dir.glob(pattern)):
            path.unlink(missing_ok=True)
            removed.append(path)
    log = _log_file(settings, service.name)
    if log.parent.is_dir():
        with open(log, "a") as out:
            out.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} pid {pid} is gone; removed its pid file"
                      + "".join(f"\n    and {path}" for path in removed) + "\n")
    return f" after pid {pid} died; removed {len(removed)} stale lock file(s)"


def wait_ready(settings: Settings, service: Service, log: Path, process=None,
               pgid: int | None = None) -> bool:
    """Poll until the service answers (True); a dead process or a timeout is a StackError with the log.

    With pgid (a service started earlier, not answering yet), False as soon as no process of that
    group runs any more: the caller starts a fresh one instead of waiting out the timeout.
    """
    deadline = time.monotonic() + service.timeout
    while time.monotonic() < deadline:
        if service.ready():
            return True
        if pgid is not None and not _group_alive(pgid):
            return False
        if process is not None and process.poll() is not None:
            _pid_file(settings, service.name).unlink(missing_ok=True)
            raise StackError(
                f"{service.name}: exited with code {process.returncode} before answering; "
                f"log: {log}\n{_tail(log)}"
            )
        time.sleep(0.5)
    raise StackError(
        f"{service.name}: no answer at {service.url} after {service.timeout:.0f} s; log: {log}\n{_tail(log)}"
    )


def stop(settings: Settings, name: str, grace: float = 20.0) -> str:
    """Stop one service's whole process group by its recorded pid. Returns a status line."""
    pid = running_pid(settings, name)
    pid_file = _pid_file(settings, name)
    if pid is None:
        pid_file.unlink(missing_ok=True)
        return f"{name:15} not running"
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and _group_alive(pid):
        time.sleep(0.2)
    if _group_alive(pid):
        os.killpg(pid, signal.SIGKILL)
        time.sleep(0.5)
    pid_file.unlink(missing_ok=True)
    return f"{name:15} stopped (pid {pid})"


def _group_alive(pgid: int) -> bool:
    """True while a process of the group runs; zombies (dead, not yet reaped) do not count."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie leader whose children are gone still "exists"; reap it if it is ours.
    try:
        finished, _ = os.waitpid(pgid, os.WNOHANG)
        if finished == pgid:
            return _group_alive(pgid)
    except ChildProcessError:
        pass
    # Not ours (its parent, e.g. an earlier `up`, is gone): a zombie until init reaps it, which
    # may take a while or never happen in a container. /proc tells the dead from the running.
    states = _group_states(pgid)
    return states is None or any(state not in ("Z", "X") for state in states)


def _group_states(pgid: int) -> list[str] | None:
    """The state letter (R, S, D, Z, ...) of each process in the group, from /proc; None without /proc."""
    proc = Path("/proc")
    if not (proc / "self" / "stat").exists():
        return None
    states = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # exited meanwhile
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) ": state ppid pgrp ...
        if len(fields) > 2 and int(fields[2]) == pgid:
            states.append(fields[0])
    return states


def select(settings: Settings, only: str | None, cloud: bool = False,
           webapp: bool = False, yarn: bool = False) -> list[Service]:
    """The services named in --only (comma separated: solr, hdfs, spark, cloud, yarn, webapp), or all."""
    chosen = services(settings, cloud=cloud or bool(only and "cloud" in only),
                      webapp=webapp or bool(only and "webapp" in only),
                      yarn=yarn or bool(only and "yarn" in only))
    if not only:
        return chosen
    wanted = {name.strip() for name in only.split(",") if name.strip()}
    known = {"solr", "hdfs", "spark", "cloud", "yarn", "webapp"} | {s.name for s in chosen}
    unknown = wanted - known
    if unknown:
        raise StackError(f"unknown service(s) {sorted(unknown)}; expected some of {sorted(known)}")
    return [
        s for s in chosen
        if s.name in wanted
        or ("spark" in wanted and s.name.startswith("spark-"))
        or ("cloud" in wanted and (s.name == "zookeeper" or s.name.startswith("solr-cloud-")))
        or ("yarn" in wanted and s.name.startswith("yarn-"))
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["up", "down", "status"])
    parser.add_argument("--only", help="comma-separated subset: hdfs, solr, spark, cloud, yarn, webapp")
    parser.add_argument("--webapp", action="store_true", help="also the web UI on gunicorn (make demo)")
    parser.add_argument(
        "--cloud", action="store_true",
        default=os.environ.get("CLOUD", "") not in ("", "0"),
        help="also SolrCloud: ZooKeeper + 2 Solr nodes + the tinytags collection (env CLOUD=1)",
    )
    parser.add_argument(
        "--yarn", action="store_true",
        default=os.environ.get("YARN", "") not in ("", "0"),
        help="also YARN: ResourceManager + NodeManager, their HADOOP_CONF_DIR, Spark's jars on HDFS (env YARN=1)",
    )
    parser.add_argument(
        "--auth", action="store_true", default=os.environ.get("AUTH", "") not in ("", "0"),
        help="with up: the standalone Solr with BasicAuth (security.json from .stack/secrets; env AUTH=1)",
    )
    parser.add_argument(
        "--started-file", type=Path,
        help="with up: write the names of the services this call started (for a later down --only)",
    )
    args = parser.parse_args(argv)
    settings = Settings()
    try:
        # down and status also cover SolrCloud when any of it runs, so nothing is left behind.
        cloud_running = any(
            running_pid(settings, s.name) for s in cloud_services(settings, "java")
        )
        cloud = args.cloud or (args.action != "up" and cloud_running)
        webapp = args.webapp or (args.action != "up" and running_pid(settings, "webapp") is not None)
        yarn_running = any(running_pid(settings, s.name) for s in yarn_services(settings, "java"))
        yarn = args.yarn or (args.action != "up" and yarn_running)
        chosen = select(settings, args.only, cloud=cloud, webapp=webapp, yarn=yarn)
        if args.action == "up":
            began = time.monotonic()
            started = []
            if any(s.name == "solr" for s in chosen):
                line = configure_solr_auth(settings, args.auth)
                if line:
                    print(line, flush=True)
            if solr_admin_headers(settings) and not os.environ.get("TINYTAGS_SOLR_USER"):
                # The stack's own web UI reads as `search` from an auth Solr, like the compose one.
                for service in chosen:
                    if service.name == "webapp":
                        service.env.update(TINYTAGS_SOLR_USER="search", TINYTAGS_SOLR_PASSWORD_FILE=str(
                            _solr_security().password_file(settings.stack_dir / "secrets", "search")))
            if any(s.name.startswith("yarn-") for s in chosen):
                write_hadoop_conf(settings)
            try:
                waiting = []  # launched, answer not awaited yet: services marked overlap, then the next one
                for service in chosen:
                    finish, fresh = launch(settings, service)
                    if fresh:
                        started.append(service.name)
                    waiting.append(finish)
                    if not service.overlap or service is chosen[-1]:
                        for finish in waiting:
                            print(finish(), flush=True)
                        waiting.clear()
                if any(s.name.startswith("solr-cloud-") for s in chosen):
                    print(ensure_cloud_collection(settings), flush=True)
                if any(s.name.startswith("yarn-") for s in chosen):
                    if any(s.name == "hdfs" for s in chosen) or running_pid(settings, "hdfs"):
                        print(ensure_spark_archive(settings), flush=True)
                    print(f"{'hadoop conf':15} HADOOP_CONF_DIR={hadoop_conf_dir(settings)} "
                          f"(bin/spark-submit --master yarn uses it)", flush=True)
            finally:
                if args.started_file:
                    args.started_file.write_text(",".join(started))
            print(f"stack up in {time.monotonic() - began:.1f} s; logs in {settings.stack_dir / 'logs'}")
        elif args.action == "down":
            for service in reversed(chosen):
                print(stop(settings, service.name), flush=True)
        else:
            down = 0
            for service in chosen:
                pid = running_pid(settings, service.name)
                if pid and service.ready():
                    print(f"{service.name:15} up (pid {pid})  {service.url}")
                elif pid:
                    print(f"{service.name:15} starting or unhealthy (pid {pid}); log: {_log_file(settings, service.name)}")
                    down += 1
                else:
                    print(f"{service.name:15} down")
                    down += 1
            return 1 if down else 0
    except StackError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
