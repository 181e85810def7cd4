"""Local real stack: HDFS, Solr and a Spark standalone cluster as plain processes on 127.0.0.1.

    python deploy/stack.py up|down|status [--only solr,hdfs,spark,cloud,webapp] [--cloud] [--webapp]

Each service runs in its own process group with its log in .stack/logs/ and its pid in
.stack/run/. `up` is idempotent (a running service is left alone), waits until every service
answers and prints its URL; `down` stops only what this stack started, by pid. HDFS data and the
Solr index live under .stack/ and survive down/up. Ports and folders come from the environment
(TINYTAGS_STACK_DIR, TINYTAGS_SOLR_PORT, ...), see `Settings`.
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
    import pyspark  # noqa: PLC0415 - only needed for the Spark services

    return Path(pyspark.__file__).resolve().parent


def http_ok(url: str, predicate: Callable[[bytes], bool] = lambda body: True) -> bool:
    """True when the URL answers 200 and its body satisfies the predicate."""
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            return response.status == 200 and predicate(response.read())
    except (OSError, ValueError):
        return False


def port_in_use(port: int) -> bool:
    """True when something already listens on 127.0.0.1:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def alive_workers(settings: Settings) -> int:
    """How many workers the Spark master reports ALIVE (0 when it does not answer)."""
    try:
        url = f"http://127.0.0.1:{settings.spark_ui_port}/json/"
        with urllib.request.urlopen(url, timeout=3) as response:
            state = json.loads(response.read())
        return sum(1 for worker in state.get("workers", []) if worker.get("state") == "ALIVE")
    except (OSError, ValueError):
        return 0


def services(settings: Settings, cloud: bool = False, webapp: bool = False) -> list[Service]:
    """The stack's services in start order (stop order is the reverse).

    cloud adds SolrCloud, webapp adds the web UI (it needs Solr up, so it comes last).
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
            ready=lambda: http_ok(f"{webhdfs}/webhdfs/v1/?op=GETFILESTATUS&user.name=tinytags"),
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
                f"{solr_url}/tinytags/admin/ping?wt=json", lambda body: b'"OK"' in body
            ),
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
            )
        )
    return result


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
    import io  # noqa: PLC0415
    import zipfile  # noqa: PLC0415

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


def running_pid(settings: Settings, name: str) -> int | None:
    """The pid of the service when this stack started it and it is still alive."""
    pid_file = _pid_file(settings, name)
    try:
        pid = int(pid_file.read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def _resolve(command: list[str]) -> list[str]:
    resolved = []
    for part in command:
        if part.startswith("{classpath:"):
            part = launcher_classpath(part[len("{classpath:"):-1])
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
    log = _log_file(settings, service.name)
    if running_pid(settings, service.name):
        if not service.ready():
            wait_ready(settings, service, log)
        return f"{service.name:15} already running  {service.url}"
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
    wait_ready(settings, service, log, process)
    return f"{service.name:15} started (pid {process.pid})  {service.url}"


def wait_ready(settings: Settings, service: Service, log: Path, process=None) -> None:
    """Poll until the service answers; a dead process or a timeout is a StackError with the log."""
    deadline = time.monotonic() + service.timeout
    while time.monotonic() < deadline:
        if service.ready():
            return
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
    return True


def select(settings: Settings, only: str | None, cloud: bool = False,
           webapp: bool = False) -> list[Service]:
    """The services named in --only (comma separated: solr, hdfs, spark, cloud, webapp), or all."""
    chosen = services(settings, cloud=cloud or bool(only and "cloud" in only),
                      webapp=webapp or bool(only and "webapp" in only))
    if not only:
        return chosen
    wanted = {name.strip() for name in only.split(",") if name.strip()}
    known = {"solr", "hdfs", "spark", "cloud", "webapp"} | {s.name for s in chosen}
    unknown = wanted - known
    if unknown:
        raise StackError(f"unknown service(s) {sorted(unknown)}; expected some of {sorted(known)}")
    return [
        s for s in chosen
        if s.name in wanted
        or ("spark" in wanted and s.name.startswith("spark-"))
        or ("cloud" in wanted and (s.name == "zookeeper" or s.name.startswith("solr-cloud-")))
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["up", "down", "status"])
    parser.add_argument("--only", help="comma-separated subset: hdfs, solr, spark, cloud, webapp")
    parser.add_argument("--webapp", action="store_true", help="also the web UI on gunicorn (make demo)")
    parser.add_argument(
        "--cloud", action="store_true",
        default=os.environ.get("CLOUD", "") not in ("", "0"),
        help="also SolrCloud: ZooKeeper + 2 Solr nodes + the tinytags collection (env CLOUD=1)",
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
        chosen = select(settings, args.only, cloud=cloud, webapp=webapp)
        if args.action == "up":
            began = time.monotonic()
            started = []
            try:
                for service in chosen:
                    line = start(settings, service)
                    if " started " in line:
                        started.append(service.name)
                    print(line, flush=True)
                if any(s.name.startswith("solr-cloud-") for s in chosen):
                    print(ensure_cloud_collection(settings), flush=True)
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
