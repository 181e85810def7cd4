"""The services table: every process of the local stack as data (name, command, ports, health
check, dependencies), in the spirit of a compose file; deploy/stack/supervisor.py runs it.

Groups beyond the base stack (HDFS, Solr, Spark master + workers) join with the flags of `up`:
``cloud`` (ZooKeeper + SolrCloud nodes), ``yarn`` (Hadoop's own ResourceManager and NodeManager
from deploy/yarn's Maven classpath, 2 vcores and 6 GB by default) and ``webapp`` (gunicorn
serving webapp:create_app()). Every address comes from ``tinytags.settings.StackSettings``.
"""

from __future__ import annotations

import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Sequence

from deploy.stack import ROOT, StackError
from deploy.stack.hadoop_conf import hadoop_conf_dir
from deploy.stack.health import DataNode, Hdfs, Http, SparkWorkers, YarnNode, ZooKeeper
from deploy.stack.launchers import JAVA_OPENS, SPARK_CLASS, SPARK_HOME, classpath, java_home
from deploy.stack.security import solr_admin_headers
from deploy.stack.supervisor import HEALTHY, STARTED, Service
from tinytags.settings import LOOPBACK, StackSettings

GROUPS = ("hdfs", "solr", "spark", "cloud", "yarn", "webapp")  # what --only accepts besides names


def services(settings: StackSettings, cloud: bool = False, webapp: bool = False,
             yarn: bool = False) -> list[Service]:
    """The table: the base stack, then SolrCloud, YARN and the web UI when asked for."""
    table = base_services(settings)
    if cloud:
        table += cloud_services(settings)
    if yarn:
        table += yarn_services(settings)
    if webapp:
        table.append(webapp_service(settings))
    return table


def base_services(settings: StackSettings) -> list[Service]:
    """HDFS, the standalone Solr, the Spark master and its workers."""
    data = settings.stack_dir / "data"
    java = settings.java
    solr = settings.solr_root
    master_ui = f"http://{LOOPBACK}:{settings.spark_ui_port}"
    spark_env = {"SPARK_HOME": SPARK_HOME, "SPARK_LOG_DIR": settings.stack_dir / "logs",
                 "PYSPARK_PYTHON": os.environ.get("PYSPARK_PYTHON", sys.executable)}
    table = [
        Service(
            name="hdfs", group="hdfs",
            command=[java, f"-Xmx{settings.hdfs_heap}", *JAVA_OPENS, "-cp", classpath("hdfs"),
                     "tinytags.HdfsLauncher", "--base", data / "hdfs",
                     "--rpc-port", settings.hdfs_rpc_port, "--http-port", settings.hdfs_http_port],
            ports=(settings.hdfs_rpc_port, settings.hdfs_http_port),
            url=f"{settings.hdfs_uri}  (WebHDFS {settings.namenode_http})",
            ready=Hdfs(settings.namenode_http, settings.hdfs_uri),
            leftovers=("data/hdfs/**/in_use.lock",),
        ),
        Service(
            name="solr", group="solr",
            command=[java, f"-Xmx{settings.solr_heap}", *JAVA_OPENS,
                     f"-Dsolr.log.dir={settings.stack_dir / 'logs'}", f"-Dsolr.install.dir={data / 'solr'}",
                     "-cp", classpath("solr"), "tinytags.SolrLauncher",
                     "--home", data / "solr", "--configset", ROOT / "solr_conf",
                     "--port", settings.solr_port, "--core", "tinytags"],
            ports=(settings.solr_port,),
            url=f"{solr}  (collection tinytags: {solr}/tinytags/select)",
            ready=Http(f"{solr}/tinytags/admin/ping?wt=json", b'"OK"', lambda: solr_admin_headers(settings)),
            leftovers=("data/solr/**/write.lock",),
        ),
        Service(
            name="spark-master", group="spark",
            command=[SPARK_CLASS, "org.apache.spark.deploy.master.Master", "--host", LOOPBACK,
                     "--port", settings.spark_port, "--webui-port", settings.spark_ui_port],
            ports=(settings.spark_port, settings.spark_ui_port),
            url=f"{settings.spark_master}  (UI {master_ui})",
            ready=Http(f"{master_ui}/json/"),
            env=spark_env,
        ),
    ]
    for n in range(1, settings.spark_workers + 1):
        ui_port = settings.spark_ui_port + n
        table.append(Service(
            name=f"spark-worker-{n}", group="spark",
            command=[SPARK_CLASS, "org.apache.spark.deploy.worker.Worker", settings.spark_master,
                     "--host", LOOPBACK, "--cores", settings.worker_cores, "--memory", settings.worker_memory,
                     "--webui-port", ui_port, "--work-dir", data / f"spark-worker-{n}"],
            ports=(ui_port,),
            url=f"http://{LOOPBACK}:{ui_port}",
            ready=SparkWorkers(master_ui, n),  # the master counts it: it registered
            depends_on={"spark-master": HEALTHY},
            env=spark_env,
        ))
    return table


def replicated_hdfs_services(settings: StackSettings, datanode_ports: Sequence[tuple[int, int, int]]) -> list[Service]:
    """An HDFS whose DataNodes each run in their own process, so that one can die alone: the NameNode
    (no DataNode inside it, replication = the number of DataNodes, a silent DataNode stale after 3 s
    and dead after about 14) and a DataNode per (data, HTTP, IPC) port triple, started beside it (a
    DataNode retries until its NameNode answers). The node-loss test and bench/node_loss.py kill one."""
    namenode = next(s for s in base_services(settings) if s.name == "hdfs")
    table = [replace(namenode, command=[*namenode.command, "--datanodes", 0, "--replication", len(datanode_ports),
                                        "--fast-dead"],
                     ready=Http(f"{settings.namenode_http}/jmx?qry=Hadoop:service=NameNode,name=FSNamesystemState",
                                b'"Operational"'))]
    for n, (data, http, ipc) in enumerate(datanode_ports, start=1):
        table.append(Service(
            name=f"datanode-{n}", group="hdfs",
            command=[settings.java, "-Xmx256m", *JAVA_OPENS, "-cp", classpath("hdfs"), "tinytags.HdfsLauncher",
                     "--datanode", settings.hdfs_uri, "--base", settings.stack_dir / "data" / f"datanode-{n}",
                     "--port", data, "--http-port", http, "--ipc-port", ipc],
            ports=(data, http, ipc),
            url=f"{LOOPBACK}:{data}  (HTTP http://{LOOPBACK}:{http})",
            ready=DataNode(settings.namenode_http, data),
            depends_on={"hdfs": STARTED},
        ))
    return table


def cloud_services(settings: StackSettings) -> list[Service]:
    """ZooKeeper and the SolrCloud nodes (the same launcher as the standalone Solr, with --zk-host);
    deploy/stack/solr_cloud.py puts every shard on each node."""
    data = settings.stack_dir / "data"
    zk_host = f"{LOOPBACK}:{settings.zk_port}"
    table = [Service(
        name="zookeeper", group="cloud",
        command=[settings.java, "-Xmx256m", "-Dzookeeper.admin.enableServer=false",
                 "-Dzookeeper.4lw.commands.whitelist=ruok,srvr", "-cp", classpath("solr"),
                 "org.apache.zookeeper.server.ZooKeeperServerMain", settings.zk_port, data / "zookeeper"],
        ports=(settings.zk_port,),
        url=f"zk://{zk_host}",
        ready=ZooKeeper(settings.zk_port),
    )]
    for n, port in enumerate(settings.cloud_ports, start=1):
        base = f"http://{LOOPBACK}:{port}/solr"
        table.append(Service(
            name=f"solr-cloud-{n}", group="cloud",
            # zkClientTimeout: ZooKeeper ends a killed node's session, so its replicas stop leading
            # and the other node takes over, after 10 s instead of Solr's 30.
            command=[settings.java, f"-Xmx{settings.cloud_heap}", *JAVA_OPENS, "-DzkClientTimeout=10000",
                     f"-Dsolr.log.dir={settings.stack_dir / 'logs'}", "-cp", classpath("solr"),
                     "tinytags.SolrLauncher", "--home", data / f"solr-cloud-{n}",
                     "--configset", ROOT / "solr_conf", "--port", port, "--zk-host", zk_host],
            ports=(port,),
            url=f"{base}  (collection tinytags: {base}/tinytags/select)",
            ready=Http(f"{base}/admin/info/system?wt=json"),
            depends_on={"zookeeper": HEALTHY},
            leftovers=(f"data/solr-cloud-{n}/**/write.lock",),
        ))
    return table


def yarn_services(settings: StackSettings) -> list[Service]:
    """A ResourceManager and a NodeManager: Hadoop's own daemons, each its own JVM, both reading the
    HADOOP_CONF_DIR that deploy/stack/hadoop_conf.py writes."""
    conf = hadoop_conf_dir(settings)
    web = f"http://{LOOPBACK}:{settings.yarn_web_port}"
    common = [settings.java, f"-Xmx{settings.yarn_heap}", *JAVA_OPENS,
              f"-Dhadoop.log.dir={settings.stack_dir / 'logs'}", "-cp", classpath("yarn", before=str(conf))]
    env = {"HADOOP_CONF_DIR": conf, "JAVA_HOME": java_home(settings.java)}
    return [
        Service(
            name="yarn-rm", group="yarn",
            command=[*common, "org.apache.hadoop.yarn.server.resourcemanager.ResourceManager"],
            ports=(settings.yarn_rm_port, settings.yarn_scheduler_port, settings.yarn_tracker_port,
                   settings.yarn_admin_port, settings.yarn_web_port),
            url=f"{LOOPBACK}:{settings.yarn_rm_port}  (UI {web})",
            ready=Http(f"{web}/ws/v1/cluster/info", b'"STARTED"'),
            env=env,
        ),
        Service(
            name="yarn-nm", group="yarn",
            command=[*common, "org.apache.hadoop.yarn.server.nodemanager.NodeManager"],
            ports=(settings.yarn_nm_port, settings.yarn_nm_localizer_port, settings.yarn_nm_web_port),
            url=(f"{LOOPBACK}:{settings.yarn_nm_port}, {settings.yarn_nm_vcores} vcores, "
                 f"{settings.yarn_nm_memory_mb} MB  (UI http://{LOOPBACK}:{settings.yarn_nm_web_port})"),
            ready=YarnNode(web, settings.yarn_nm_port),
            # Started beside the ResourceManager, not after it (each JVM takes a while to come up
            # here): a NodeManager retries registering until its ResourceManager answers.
            depends_on={"yarn-rm": STARTED},
            env=env,
        ),
    ]


def webapp_service(settings: StackSettings) -> Service:
    """gunicorn serving the Flask app factory; Solr URL and model dir come from TINYTAGS_* env."""
    return Service(
        name="webapp", group="webapp",
        command=[Path(sys.executable).parent / "gunicorn", "webapp:create_app()",
                 "--bind", f"{LOOPBACK}:{settings.web_port}", "--worker-class", "gthread",
                 "--workers", settings.web_workers, "--threads", "8", "--access-logfile", "-"],
        ports=(settings.web_port,),
        url=settings.web_url,
        ready=Http(f"{settings.web_url}/api/health"),
        depends_on={"solr": HEALTHY},
        timeout=60,
    )


def select(settings: StackSettings, only: str | None, cloud: bool = False,
           webapp: bool = False, yarn: bool = False) -> list[Service]:
    """The services named in --only (comma separated: names or the groups in GROUPS), or all.

    --only may name any service, also of a group whose flag is off (`down --only` gets the names
    that `up --started-file` wrote).
    """
    wanted = {name.strip() for name in (only or "").split(",") if name.strip()}
    if not wanted:
        return services(settings, cloud=cloud, webapp=webapp, yarn=yarn)
    table = services(settings, cloud=True, webapp=True, yarn=True)
    known = set(GROUPS) | {s.name for s in table}
    unknown = wanted - known
    if unknown:
        raise StackError(f"unknown service(s) {sorted(unknown)}; expected some of {sorted(known)}")
    return [s for s in table if s.name in wanted or s.group in wanted]
