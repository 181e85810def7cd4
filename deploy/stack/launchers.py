"""What a service's command needs at launch time, not when the table is read.

The Java launchers' classpaths (deploy/<module>/target, built by `make setup`) and Spark's home
(inside the installed pyspark) are looked up only when a process starts: `status` and `down` then
work without a build, and a missing build is a StackError that says how to make it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Callable

from deploy.stack import ROOT, StackError

# JDK 17 closes these packages; Solr, Hadoop and Spark reach into them.
JAVA_OPENS = (
    "--add-opens=java.base/java.lang=ALL-UNNAMED",
    "--add-opens=java.base/java.util=ALL-UNNAMED",
    "--add-opens=java.base/java.nio=ALL-UNNAMED",
    "--add-opens=java.base/sun.nio.ch=ALL-UNNAMED",
)


class AtLaunch:
    """A command-line part or environment value computed when the process starts (``str()`` of it)."""

    def __init__(self, describe: str, compute: Callable[[], str]):
        self.describe, self._compute = describe, compute

    def __str__(self) -> str:
        return self._compute()

    def __repr__(self) -> str:
        return f"<{self.describe}>"


def launcher_classpath(module: str) -> str:
    """Classpath of a compiled launcher in deploy/<module>, or a StackError saying how to build it."""
    target = ROOT / "deploy" / module / "target"
    if not (target / "classes").is_dir() or not (target / "lib").is_dir():
        raise StackError(f"{module}: launcher not built ({target} missing); run `make setup` first")
    return f"{target / 'classes'}:{target / 'lib'}/*"


def classpath(module: str, before: str = "") -> AtLaunch:
    """The launcher's classpath at launch, after ``before`` (e.g. a config folder) when given."""
    prefix = f"{before}:" if before else ""
    return AtLaunch(f"{prefix}classpath of deploy/{module}", lambda: prefix + launcher_classpath(module))


def spark_home() -> Path:
    """The Spark distribution inside the installed pyspark package."""
    import pyspark  # here: importing pyspark takes a while, and only Spark's services need it

    return Path(pyspark.__file__).resolve().parent


SPARK_HOME = AtLaunch("pyspark's Spark home", lambda: str(spark_home()))
SPARK_CLASS = AtLaunch("bin/spark-class", lambda: str(spark_home() / "bin" / "spark-class"))


def java_home(java: str) -> str:
    """JAVA_HOME for YARN containers ($JAVA_HOME/bin/java starts every executor)."""
    if os.environ.get("JAVA_HOME"):
        return os.environ["JAVA_HOME"]
    found = shutil.which(java)
    return str(Path(found).resolve().parent.parent) if found else ""
