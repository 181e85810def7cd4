"""The local real stack: HDFS, Solr, a Spark standalone cluster (and SolrCloud, YARN, the web UI) as
plain processes on 127.0.0.1.

    .venv/bin/python -m deploy.stack up|down|status [--only solr,hdfs,spark,cloud,yarn,webapp]
                                                    [--cloud] [--yarn] [--webapp] [--auth] [--started-file F]

(from the checkout, as `make up|down|status` runs it: deploy/ is not part of the installed package).

Each service runs in its own process group with its log in .stack/logs/ and its pid in
.stack/run/. `up` is idempotent (a running service is left alone), waits until every service
answers and prints its URL; `down` stops only what this stack started, by pid. HDFS data and the
Solr index live under .stack/ and survive down/up. Ports and folders come from the environment
(TINYTAGS_STACK_DIR, TINYTAGS_SOLR_PORT, ...) through ``tinytags.settings.stack_settings``, the
settings place the jobs and the web app read too.

The modules, one job each:

- ``services``: the table of services (name, command, ports, health check, dependencies), read by
- ``supervisor``: the only code that starts, waits for, stops and restarts processes;
- ``health``: the checks that say a service answers;
- ``launchers``: what a command needs at launch (the Java launchers' classpaths, Spark's home);
- ``hadoop_conf``: the HADOOP_CONF_DIR that `up --yarn` writes;
- ``spark_archive``: Spark's jars staged on HDFS for YARN, through ``tinytags.io.storage``;
- ``solr_cloud``: the SolrCloud configset and collection;
- ``security``: the standalone Solr's BasicAuth (`up --auth`), from deploy/solr_security.py;
- ``cli`` (run by ``__main__``): the flags and the order of the steps of up, down and status.
"""

from __future__ import annotations

from pathlib import Path

# The checkout: solr_conf/, deploy/<launcher>/target and the working folder of every service.
ROOT = Path(__file__).resolve().parents[2]


class StackError(Exception):
    """A service could not be started or stopped; the message names it and its log."""
