"""The HADOOP_CONF_DIR that `up --yarn` writes (.stack/conf/hadoop): what the YARN daemons and
spark-submit --master yarn read (bin/spark-submit points HADOOP_CONF_DIR at it).

core-site.xml names this stack's HDFS as fs.defaultFS, yarn-site.xml puts every YARN address on
127.0.0.1 at the ports of ``StackSettings``, capacity-scheduler.xml has one queue. Rewritten at
every start of YARN, so a changed port takes effect with the next `up`.
"""

from __future__ import annotations

from pathlib import Path
from xml.sax.saxutils import escape

from tinytags.settings import LOOPBACK, StackSettings


def hadoop_conf_dir(settings: StackSettings) -> Path:
    """The HADOOP_CONF_DIR that up --yarn writes: what the YARN daemons and spark-submit read."""
    return settings.stack_dir / "conf" / "hadoop"


def site_xml(properties: dict[str, object]) -> str:
    """A Hadoop *-site.xml holding these properties, values escaped."""
    rows = "".join(
        f"  <property><name>{escape(name)}</name><value>{escape(str(value))}</value></property>\n"
        for name, value in properties.items()
    )
    return ('<?xml version="1.0"?>\n'
            # No "--" in the comment: XML forbids it there (so no "up --yarn").
            "<!-- written by deploy/stack/hadoop_conf.py at every start of YARN; edits are overwritten -->\n"
            f"<configuration>\n{rows}</configuration>\n")


def hadoop_conf(settings: StackSettings) -> dict[str, dict[str, object]]:
    """The properties of each file: core-site.xml, yarn-site.xml and capacity-scheduler.xml.

    The NodeManager offers yarn_nm_memory_mb and yarn_nm_vcores; the smallest container is 128 MB,
    so small executors fit. Virtual memory is not checked (a JVM reserves far more address space
    than it uses; the physical memory check stays on). Container logs go to the stack's logs folder.
    """
    data = settings.stack_dir / "data" / "yarn"
    host = LOOPBACK
    return {
        "core-site.xml": {"fs.defaultFS": settings.hdfs_uri},
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


def write_hadoop_conf(settings: StackSettings) -> Path:
    """Write the files of ``hadoop_conf`` into ``hadoop_conf_dir``; returns that folder."""
    conf = hadoop_conf_dir(settings)
    conf.mkdir(parents=True, exist_ok=True)
    for name, properties in hadoop_conf(settings).items():
        (conf / name).write_text(site_xml(properties))
    return conf
