"""README.md's commands, run as a user pastes them: every ```sh block in a fresh bash, no venv on PATH.

The blocks use six variables (CIFAR, MODEL, HDFS, SOLR, PORT, PHOTOS) that README asks the user
to set; here they point at the CIFAR-10 sample, a temporary model dir, a throwaway HDFS folder, a
throwaway Solr core, a free port and a small folder of photos made from CIFAR-10 test images
(with two files that are no photos). Each stage's result is checked against what it should
hold, computed here independently (the sample's sizes, Solr's own counts).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time

import pytest
import requests

from tests.helpers import HDFS_URI, ROOT, make_photo_tree, readme_section_blocks
from tinytags.io import cifar_files

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# Run by CI itself (make test) or at its start (make setup), or long-running (make demo).
NOT_HERE = {"make setup", "make demo", "make test"}
# README's "On YARN" block runs in tests/integration/test_yarn.py, against the YARN it makes sure runs.
ELSEWHERE = set(readme_section_blocks("On YARN"))
PHOTOS = 12  # photos in $PHOTOS
FENCE = re.compile(r"^```sh\n(.*?)^```", re.S | re.M)


def readme_blocks() -> list[str]:
    """The ```sh blocks of README.md, in order."""
    return [block.strip() for block in FENCE.findall((ROOT / "README.md").read_text())]


def test_readme_shows_the_commands_this_test_runs():
    blocks = readme_blocks()
    assert NOT_HERE <= set(blocks)
    assert ELSEWHERE and ELSEWHERE <= set(blocks)
    assert [b for b in blocks if b not in NOT_HERE], "README has no per-job commands"


def _shell_env(variables: dict[str, str]) -> dict[str, str]:
    """A new login-like shell's environment: system PATH (no venv), HOME, and the README's variables."""
    path = ":".join(p for p in os.environ.get("PATH", "/usr/bin:/bin").split(":") if ".venv" not in p)
    keep = {name: os.environ[name] for name in ("HOME", "USER", "LANG", "JAVA_HOME", "CI") if name in os.environ}
    return {"PATH": path, **keep, **variables}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _run(block: str, env: dict[str, str], timeout: float = 900) -> subprocess.CompletedProcess:
    result = subprocess.run(["bash", "-c", "set -euo pipefail\n" + block], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"README block failed:\n{block}\n--- stdout\n{result.stdout[-3000:]}" \
                                   f"\n--- stderr\n{result.stderr[-5000:]}"
    return result


def _solr_count(core: str, **params) -> int:
    answer = requests.get(f"{core}/select", params={"q": "*:*", "rows": 0, "wt": "json", **params}, timeout=30)
    return answer.json()["response"]["numFound"]


def test_every_readme_command_works_as_pasted(stack, cifar_sample, solr_core, hdfs_dir, hdfs_client, tmp_path):
    photos = make_photo_tree(tmp_path / "photos", cifar_files.read_local(cifar_sample).test.pixels, PHOTOS)
    (tmp_path / "photos" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a JPEG")
    (tmp_path / "photos" / "empty.png").write_bytes(b"")
    variables = {"CIFAR": str(cifar_sample), "MODEL": str(tmp_path / "model"), "HDFS": f"{HDFS_URI}{hdfs_dir}",
                 "SOLR": solr_core, "PORT": str(_free_port()), "PHOTOS": str(tmp_path / "photos")}
    env = _shell_env(variables)
    variables["_photos"] = json.dumps({str(p.path): [p.width, p.height] for p in photos})  # for the checks only
    blocks = [b for b in readme_blocks() if b not in NOT_HERE and b not in ELSEWHERE]
    server = None
    ran = []
    try:
        for block in blocks:
            if "gunicorn" in block:  # a server: start it, wait until it answers, go on
                server = subprocess.Popen(["bash", "-c", block], cwd=ROOT, env=env, start_new_session=True,
                                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                _wait_for(f"http://127.0.0.1:{variables['PORT']}/api/health", server)
                ran.append("gunicorn")
                continue
            result = _run(block, env)
            ran.append(block.split()[0] + " " + " ".join(w for w in block.split() if w.startswith("jobs")))
            _check_stage(block, result, variables, hdfs_client, hdfs_dir)
    finally:
        if server is not None:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)
    # Every stage of the walkthrough ran: train, sample shards, tag, index, web app, an API query.
    joined = "\n".join(blocks)
    for needed in ("jobs/train.py", "jobs.shards make-sample", "jobs.shards pack", "jobs/tag.py", "jobs/index.py",
                   "gunicorn", "curl"):
        assert needed in joined, f"README's walkthrough lost its {needed} step"
    assert len(ran) == len(blocks)


def _wait_for(url: str, server: subprocess.Popen, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"the README's gunicorn command exited with {server.returncode}:\n{server.stdout.read()}")
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    pytest.fail(f"{url} did not answer within {seconds} s")


def _check_stage(block: str, result, variables: dict[str, str], hdfs_client, hdfs_dir: str) -> None:
    """What each documented stage must have produced, checked against independent expectations."""
    if "jobs/train.py" in block:
        card = json.loads((open(os.path.join(variables["MODEL"], "model_card.json"))).read())
        assert card["n_train"] == 10_000 and card["n_test"] == 5_000  # the sample's sizes
        assert len(card["agreement"]) == card["params"]["trees"]
    if "jobs.shards pack" in block:
        # Every photo made is packed with its path and shown size; the two other files are reported.
        want = json.loads(variables["_photos"])
        with hdfs_client.read(f"{hdfs_dir}/photos/_sources.jsonl") as reader:
            lines = [json.loads(line) for line in reader.read().decode().splitlines()]
        assert {line["path"]: [line["width"], line["height"]] for line in lines} == want
        assert [line["id"] for line in lines] == list(range(len(want)))
        with hdfs_client.read(f"{hdfs_dir}/photos/_pack_errors.jsonl") as reader:
            errors = [json.loads(line)["path"] for line in reader.read().decode().splitlines()]
        assert sorted(os.path.basename(path) for path in errors) == ["broken.jpg", "empty.png"]
    if "jobs/tag.py" in block and "photo-tags" in block:
        with hdfs_client.read(f"{hdfs_dir}/photo-tags/_manifest.json") as reader:
            manifest = json.loads(reader.read())
        assert manifest["totals"]["read"] == len(json.loads(variables["_photos"]))
        with hdfs_client.read(f"{hdfs_dir}/photo-tags/block=0/part-00000.jsonl") as reader:
            tagged = [json.loads(line) for line in reader.read().decode().splitlines()]
        assert len(tagged) == manifest["totals"]["kept"]
        assert all(line["source"] in json.loads(variables["_photos"]) for line in tagged)
    elif "jobs/tag.py" in block:
        with hdfs_client.read(f"{hdfs_dir}/tags/_manifest.json") as reader:
            manifest = json.loads(reader.read())
        # make-sample writes the sample's 5,000 test images; every one is read, kept or dropped.
        assert manifest["totals"]["read"] == 5_000
        assert manifest["totals"]["kept"] + manifest["totals"]["dropped"] == 5_000
        variables["_kept"] = str(manifest["totals"]["kept"])
    if "jobs/index.py" in block:
        summary = json.loads(result.stdout.strip().splitlines()[-1])
        assert summary["blocks_failed"] == 0
        assert _solr_count(variables["SOLR"]) == int(variables["_kept"])
    if block.startswith("curl"):
        answer = json.loads(result.stdout)
        expected = _solr_count(variables["SOLR"], fq=["tag:cat", "agreement:[0.6 TO *]"])
        assert answer["numFound"] == expected
        assert len(answer["results"]) == min(3, expected)
        assert all(r["tag"] == "cat" and r["agreement"] >= 0.6 for r in answer["results"])
