"""Fixtures every test folder may use; the shared non-fixture code is in tests/helpers.py."""

from __future__ import annotations

import os
import sys
import tarfile
from pathlib import Path

import pytest

from tests.helpers import CIFAR_SAMPLE, need_shared


@pytest.fixture(scope="session")
def cifar_sample() -> Path:
    """The real CIFAR-10 sample archive from ../shared/data."""
    return need_shared(CIFAR_SAMPLE)


@pytest.fixture(scope="session")
def cifar_sample_dir(tmp_path_factory, cifar_sample) -> Path:
    """The sample archive extracted once (the cifar-10-batches-bin folder)."""
    target = tmp_path_factory.mktemp("cifar")
    with tarfile.open(cifar_sample) as archive:
        # The "data" filter arrived in Python 3.11.4; Debian 12's python3 is 3.11.2.
        safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        archive.extractall(target, **safe)
    return target / "cifar-10-batches-bin"


@pytest.fixture(scope="session")
def spark():
    """An in-process SparkSession on local[2] (jobs on the cluster run through spark-submit)."""
    from pyspark.sql import SparkSession

    # Python workers must run this venv's interpreter (numpy and the project's deps), not python3.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    session = (
        SparkSession.builder.master("local[2]")
        .appName("tinytags-tests")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "4")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    try:
        yield session
    finally:
        session.stop()
