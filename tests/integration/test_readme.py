"""The documented commands, run as a user pastes them: every ```sh block of README.md and of
docs/*.md, in a fresh bash, no venv on PATH.

The blocks run in one sequence, README.md first, then docs/*.md in name order, so a docs page may
build on what the README's commands made (the model, the shards, the tag output, the Solr
documents); no docs page depends on another. The blocks use six variables (CIFAR, MODEL, HDFS,
SOLR, PORT, PHOTOS) that README asks the user to set; here they point at the CIFAR-10 sample, a
temporary model dir, a throwaway HDFS folder, a throwaway Solr core, a free port and a small
folder of photos made from CIFAR-10 test images (with two files that are no photos). This run's
TINYTAGS_* settings are passed on, so a stack on other ports is the one used; three more make the
default network test-sized (TINYTAGS_CNN_EPOCHS=1, TINYTAGS_CNN_WIDTHS=8,16,16,
TINYTAGS_JUNK_IMAGES=500), so that the training command as documented runs in CI's time. Each
stage's result is checked against what it should hold, computed here independently (the sample's
sizes, Solr's own counts, the photos made here).

Not run here, each for the reason in `skip_reason`: the CI run's own commands, the YARN block
(tests/integration/test_yarn.py runs it) and the docker compose block (no Docker engine).
Commands that need the user's own data are ```text blocks, which no test runs.
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

from tests.helpers import CNN_TINY_ENV, HDFS_URI, ROOT, documents, make_photo_tree, section_sh_blocks, sh_blocks
from tinytags.io import cifar_files

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# Whole blocks that CI runs itself, or that would disturb this run.
CI_COMMANDS = {
    "make setup": "CI's set-up: make test depends on it",
    "make check": "make test runs it first",
    "make test": "the CI run itself",
    "make demo": "long-running; serves the web UI on the default port until make down",
}
# docs/cluster.md's "On YARN" block runs in tests/integration/test_yarn.py, against the YARN it makes sure runs.
YARN_BLOCKS = set(section_sh_blocks(ROOT / "docs" / "cluster.md", "On YARN"))
PHOTOS = 12  # photos in $PHOTOS


def skip_reason(block: str) -> str | None:
    """Why a documented ```sh block is not run here, or None: it is run."""
    if block in CI_COMMANDS:
        return CI_COMMANDS[block]
    if block in YARN_BLOCKS:
        return "run by tests/integration/test_yarn.py"
    if "docker compose" in block:
        return "needs a Docker engine, which the CI machines do not have"
    return None


def documented_blocks() -> list[tuple[str, str]]:
    """(file, block) for every ```sh block, README.md first, then docs/*.md in name order."""
    return [(path.relative_to(ROOT).as_posix(), block) for path in documents() for block in sh_blocks(path)]


def test_docs_show_the_commands_this_test_runs():
    blocks = documented_blocks()
    readme = [block for name, block in blocks if name == "README.md"]
    assert set(CI_COMMANDS) <= set(readme), "README lost one of its make commands"
    assert YARN_BLOCKS, "docs/cluster.md has no On YARN block"
    skipped = [(name, skip_reason(block)) for name, block in blocks if skip_reason(block)]
    # Exactly these are skipped: the four CI commands, the YARN block, one docker compose block.
    assert sorted(skipped) == sorted([("README.md", reason) for reason in CI_COMMANDS.values()]
                                     + [("docs/cluster.md", "run by tests/integration/test_yarn.py")]
                                     + [("docs/cluster.md", "needs a Docker engine, which the CI machines do not have")])
    run = [name for name, block in blocks if not skip_reason(block)]
    assert "README.md" in run, "README has no per-job commands"
    assert any(name.startswith("docs/") for name in run), "no docs page has a command this test runs"


def _shell_env(variables: dict[str, str]) -> dict[str, str]:
    """A new login-like shell's environment: system PATH (no venv), HOME, this run's TINYTAGS_*
    settings and the README's variables."""
    path = ":".join(p for p in os.environ.get("PATH", "/usr/bin:/bin").split(":") if ".venv" not in p)
    keep = {name: value for name, value in os.environ.items()
            if name in ("HOME", "USER", "LANG", "JAVA_HOME", "CI") or name.startswith("TINYTAGS_")}
    return {"PATH": path, **keep, **variables}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _run(name: str, block: str, env: dict[str, str], timeout: float = 900) -> subprocess.CompletedProcess:
    result = subprocess.run(["bash", "-c", "set -euo pipefail\n" + block], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{name} block failed:\n{block}\n--- stdout\n{result.stdout[-3000:]}" \
                                   f"\n--- stderr\n{result.stderr[-5000:]}"
    return result


def _solr_count(core: str, **params) -> int:
    answer = requests.get(f"{core}/select", params={"q": "*:*", "rows": 0, "wt": "json", **params}, timeout=30)
    return answer.json()["response"]["numFound"]


def test_every_documented_command_works_as_pasted(stack, cifar_sample, solr_core, hdfs_dir, hdfs_client, tmp_path):
    photos = make_photo_tree(tmp_path / "photos", cifar_files.read_local(cifar_sample).test.pixels, PHOTOS)
    (tmp_path / "photos" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a JPEG")
    (tmp_path / "photos" / "empty.png").write_bytes(b"")
    variables = {"CIFAR": str(cifar_sample), "MODEL": str(tmp_path / "model"), "HDFS": f"{HDFS_URI}{hdfs_dir}",
                 "SOLR": solr_core, "PORT": str(_free_port()), "PHOTOS": str(tmp_path / "photos")}
    env = {**_shell_env(variables), **CNN_TINY_ENV}  # the default network at test size (tests/helpers.py)
    variables["_photos"] = json.dumps({str(p.path): [p.width, p.height] for p in photos})  # for the checks only
    blocks = [(name, block) for name, block in documented_blocks() if not skip_reason(block)]
    server = None
    ran = []
    try:
        for name, block in blocks:
            started = time.monotonic()
            if "gunicorn" in block:  # a server: start it, wait until it answers, go on
                server = subprocess.Popen(["bash", "-c", block], cwd=ROOT, env=env, start_new_session=True,
                                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                _wait_for(f"http://127.0.0.1:{variables['PORT']}/api/health", server)
            else:
                result = _run(name, block, env)
                _check_stage(block, result, variables, hdfs_client, hdfs_dir)
            ran.append(f"{time.monotonic() - started:6.1f} s  {name}: {block.splitlines()[0][:80]}")
    finally:
        if server is not None:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)
    print("\n".join(ran))
    # Every stage of the walkthrough ran: train, sample shards, tag, index, pack, photos tagged,
    # the web app, an API query, the stack's status.
    joined = "\n".join(block for _, block in blocks)
    for needed in ("jobs/train.py", "jobs.shards make-sample", "jobs.shards pack", "jobs/tag.py", "photo-tags",
                   "jobs/index.py", "gunicorn", "curl", "make status"):
        assert needed in joined, f"the documented commands lost their {needed} step"
    assert len(ran) == len(blocks)


def _wait_for(url: str, server: subprocess.Popen, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"the documented gunicorn command exited with {server.returncode}:\n{server.stdout.read()}")
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
    if "make status" in block:
        # The `stack` fixture made sure the base services answer: status must say each is up, none down.
        for service in ("hdfs", "solr", "spark-master", "spark-worker-1", "spark-worker-2"):
            assert re.search(rf"^{service} +up \(pid \d+\)", result.stdout, re.M), result.stdout
        assert not re.search(r"^\S+ +(down|starting or unhealthy)", result.stdout, re.M), result.stdout
