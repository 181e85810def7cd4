"""The "On YARN" section of docs/cluster.md, run as pasted: train -> tag -> index with spark-submit
--master yarn on the local stack's real YARN (a ResourceManager and a NodeManager, `make up YARN=1`).

The blocks run in a fresh bash like tests/integration/test_readme.py runs the others (which skips
this section), with the README's variables pointed at throwaway places and the TINYTAGS_* settings
of this run passed on (so a stack on other ports is the one used). The expectation is computed
independently: the saved model evaluated in-process on the same CIFAR-10 test images (read by the
reader), the agreement rule written out here; YARN's own REST API must list the three applications
as finished and succeeded.
"""

from __future__ import annotations

import json
import os
import subprocess
import time

import numpy as np
import pytest
import requests

from tests.helpers import HDFS_URI, ROOT, section_sh_blocks, stack_services
from tinytags.core.contract import CLASSES
from tinytags.core.tagger import Tagger
from tinytags.io import cifar_files
from tinytags.settings import stack_settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DOC = ROOT / "docs" / "cluster.md"
SECTION = "On YARN"


@pytest.fixture(scope="module")
def yarn(stack):
    """Make sure YARN (and HDFS under it) runs; stop afterwards only what this fixture started."""
    with stack_services("--yarn", "--only", "hdfs,yarn", what="YARN"):
        yield f"http://127.0.0.1:{stack_settings().yarn_web_port}"


def _shell_env(variables: dict[str, str]) -> dict[str, str]:
    """A new shell's environment: system PATH (no venv), HOME, this run's TINYTAGS_* settings, the variables."""
    path = ":".join(p for p in os.environ.get("PATH", "/usr/bin:/bin").split(":") if ".venv" not in p)
    keep = {name: value for name, value in os.environ.items()
            if name in ("HOME", "USER", "LANG", "JAVA_HOME", "CI") or name.startswith("TINYTAGS_")}
    return {"PATH": path, **keep, **variables}


def _hdfs_lines(hdfs_client, folder: str) -> list[dict]:
    lines = []
    for block in sorted(name for name in hdfs_client.list(folder) if name.startswith("block=")):
        for part in sorted(hdfs_client.list(f"{folder}/{block}")):
            if part.startswith("part-"):
                with hdfs_client.read(f"{folder}/{block}/{part}") as reader:
                    lines.extend(json.loads(line) for line in reader.read().decode().splitlines() if line)
    return lines


def test_docs_on_yarn_trains_tags_and_indexes(yarn, cifar_sample, solr_core, hdfs_dir, hdfs_client, tmp_path):
    blocks = section_sh_blocks(DOC, SECTION)
    joined = "\n".join(blocks)
    for needed in ("make up YARN=1", "make dist", "jobs/train.py", "jobs/tag.py", "jobs/index.py",
                   "--master yarn", "--deploy-mode client", "--py-files dist/tinytags.zip",
                   "spark.yarn.archive=hdfs:///tinytags/spark/spark-jars.zip", "spark.pyspark.python="):
        assert needed in joined, f"the {SECTION} section of docs/cluster.md lost {needed!r}"
    model = tmp_path / "model"
    variables = {"CIFAR": str(cifar_sample), "MODEL": str(model), "HDFS": f"{HDFS_URI}{hdfs_dir}",
                 "SOLR": solr_core}
    env = _shell_env(variables)
    began = time.time()
    timings = []
    for block in blocks:
        t0 = time.monotonic()
        result = subprocess.run(["bash", "-c", "set -euo pipefail\n" + block], cwd=ROOT, env=env,
                                capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, f"docs/cluster.md block failed:\n{block}\n--- stdout\n{result.stdout[-3000:]}" \
                                       f"\n--- stderr\n{result.stderr[-5000:]}"
        timings.append(f"{time.monotonic() - t0:6.1f} s  {block.splitlines()[0][:90]}")
    print("\n".join(timings))

    # YARN ran the three jobs: its own API lists them, finished and succeeded, since this test began.
    apps = requests.get(f"{yarn}/ws/v1/cluster/apps", params={"startedTimeBegin": int(began * 1000)},
                        timeout=30).json()["apps"]["app"]
    by_name = {app["name"]: app for app in apps}
    for name in ("tinytags-train", "tinytags-tag", "tinytags-index"):
        assert name in by_name, f"{name} never reached YARN: {sorted(by_name)}"
        assert (by_name[name]["state"], by_name[name]["finalStatus"]) == ("FINISHED", "SUCCEEDED")

    # The images the pipeline must keep: the model evaluated here on the same test images.
    count = _sample_count(blocks)
    pixels = cifar_files.read_local(cifar_sample).test.pixels[:count]
    card = json.loads((model / "model_card.json").read_text())
    assert card["n_train"] == 10_000 and card["n_test"] == 5_000  # the sample's sizes
    features = model / "features.npz"
    tagger = Tagger.from_files((model / "forest.npz").read_bytes(),
                               features.read_bytes() if features.exists() else None, card)
    prediction = tagger.predict(pixels)
    keep = ~prediction.junk & (prediction.votes / tagger.n_trees >= 0.4 - 1e-9)
    want = {int(i): CLASSES[prediction.label[i]] for i in np.flatnonzero(keep)}

    tags = f"{hdfs_dir}/yarn-tags"
    with hdfs_client.read(f"{tags}/_manifest.json") as reader:
        manifest = json.loads(reader.read())
    assert manifest["totals"]["read"] == count
    assert manifest["totals"]["kept"] == len(want)
    assert {line["id"]: line["tag"] for line in _hdfs_lines(hdfs_client, tags)} == want

    # Indexed: Solr holds exactly the kept images, with their tags.
    answer = requests.get(f"{solr_core}/select", params={
        "q": "*:*", "rows": 0, "wt": "json", "facet": "true", "facet.field": "tag", "facet.limit": -1,
    }, timeout=30).json()
    assert answer["response"]["numFound"] == len(want)
    facets = answer["facet_counts"]["facet_fields"]["tag"]
    counted = {facets[i]: facets[i + 1] for i in range(0, len(facets), 2) if facets[i + 1]}
    assert counted == {tag: sum(1 for t in want.values() if t == tag) for tag in set(want.values())}


def _sample_count(blocks: list[str]) -> int:
    """The --count the section's make-sample uses (the number of Tiny-format images tagged)."""
    import re

    return int(re.search(r"make-sample [^\n]*--count (\d+)", "\n".join(blocks)).group(1))
