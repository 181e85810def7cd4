"""The flags of ``python -m deploy.stack up|down|status`` and the steps of each action.

`up --cloud` (make up CLOUD=1) adds SolrCloud and creates its replicated collection (`status` then
lists each replica's state); `up --yarn` (make up
YARN=1) writes the HADOOP_CONF_DIR first and stages Spark's jars on HDFS after; `up --auth` (make
up AUTH=1) starts the standalone Solr with BasicAuth. `down` and `status` also cover SolrCloud,
YARN and the web UI whenever any of them runs, so nothing is left behind.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from deploy.stack import StackError, supervisor
from deploy.stack.hadoop_conf import hadoop_conf_dir, write_hadoop_conf
from deploy.stack.security import configure_solr_auth, webapp_login
from deploy.stack.services import GROUPS, cloud_services, select, yarn_services
from deploy.stack.solr_cloud import ensure_cloud_collection, replica_lines
from deploy.stack.spark_archive import ensure_spark_archive
from tinytags.settings import StackSettings, env, stack_settings


def _env_flag(name: str) -> bool:
    return env(name, "0") != "0"


def parser() -> argparse.ArgumentParser:
    """The command line (the same flags as the Makefile's CLOUD=1, YARN=1, AUTH=1)."""
    result = argparse.ArgumentParser(
        prog="python -m deploy.stack",
        description="Local real stack: HDFS, Solr, a Spark standalone cluster (and YARN) as plain processes on 127.0.0.1.",
    )
    result.add_argument("action", choices=["up", "down", "status"])
    result.add_argument("--only", help=f"comma-separated subset: service names or {', '.join(GROUPS)}")
    result.add_argument("--webapp", action="store_true", help="also the web UI on gunicorn (make demo)")
    result.add_argument("--cloud", action="store_true", default=_env_flag("CLOUD"),
                        help="also SolrCloud: ZooKeeper + 2 Solr nodes + the tinytags collection (env CLOUD=1)")
    result.add_argument("--yarn", action="store_true", default=_env_flag("YARN"),
                        help="also YARN: ResourceManager + NodeManager, their HADOOP_CONF_DIR, Spark's jars on HDFS (env YARN=1)")
    result.add_argument("--auth", action="store_true", default=_env_flag("AUTH"),
                        help="with up: the standalone Solr with BasicAuth (security.json from .stack/secrets; env AUTH=1)")
    result.add_argument("--started-file", type=Path,
                        help="with up: write the names of the services this call started (for a later down --only)")
    return result


def main(argv: list[str] | None = None) -> int:
    """Run one action; 0 when it worked (status: every service answers), else 1."""
    args = parser().parse_args(argv)
    try:
        settings = stack_settings()
    except ValueError as error:  # a TINYTAGS_* port or count that is not a number
        print(f"error: {error}", file=sys.stderr)
        return 1
    try:
        if args.action == "up":
            chosen = select(settings, args.only, cloud=args.cloud, webapp=args.webapp, yarn=args.yarn)
            up(settings, chosen, args.auth, args.started_file)
            return 0
        # down and status also cover the optional groups that run, so nothing is left behind.
        chosen = select(settings, args.only, cloud=args.cloud or _any_running(settings, cloud_services(settings)),
                        webapp=args.webapp or supervisor.running_pid(settings, "webapp") is not None,
                        yarn=args.yarn or _any_running(settings, yarn_services(settings)))
        if args.action == "down":
            for line in supervisor.down(settings, chosen):
                print(line, flush=True)
            return 0
        lines, not_up = supervisor.status(settings, chosen)
        if any(s.name.startswith("solr-cloud-") and supervisor.running_pid(settings, s.name) for s in chosen):
            lines += replica_lines(settings)  # each replica's node and state, from the cluster state
        print("\n".join(lines))
        return 1 if not_up else 0
    except StackError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


def _any_running(settings: StackSettings, table: list[supervisor.Service]) -> bool:
    return any(supervisor.running_pid(settings, service.name) for service in table)


def up(settings: StackSettings, chosen: list[supervisor.Service], auth: bool, started_file: Path | None) -> None:
    """Configure, start and wait for the chosen services, then create what needs them running."""
    began = time.monotonic()
    names = {s.name for s in chosen}
    groups = {s.group for s in chosen}
    if "solr" in names:
        line = configure_solr_auth(settings, auth)
        if line:
            print(line, flush=True)
    for service in chosen:
        if service.name == "webapp":
            service.env.update(webapp_login(settings))
    if "yarn" in groups:
        write_hadoop_conf(settings)
    started: list[str] = []
    try:
        for line in supervisor.up(settings, chosen, started):
            print(line, flush=True)
        if any(name.startswith("solr-cloud-") for name in names):
            print(ensure_cloud_collection(settings), flush=True)
        if "yarn" in groups:
            if "hdfs" in names or supervisor.running_pid(settings, "hdfs"):
                print(ensure_spark_archive(settings), flush=True)
            print(f"{'hadoop conf':15} HADOOP_CONF_DIR={hadoop_conf_dir(settings)} "
                  f"(bin/spark-submit --master yarn uses it)", flush=True)
    finally:
        if started_file:
            started_file.write_text(",".join(started))
    print(f"stack up in {time.monotonic() - began:.1f} s; logs in {settings.stack_dir / 'logs'}")
