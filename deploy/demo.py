"""make demo: the whole platform on the local real stack, then the web UI.

    .venv/bin/python deploy/demo.py [--cifar PATH] [--tiny PATH] [--master spark://127.0.0.1:7077]

1. the local stack up (HDFS, Solr, Spark master + 2 workers);
2. CIFAR-10 into HDFS: --cifar / $CIFAR / $TINYTAGS_CIFAR, else the official archive is downloaded
   (where the network allows it; if not, the error says how to pass a path);
3. Tiny Images shards into HDFS: --tiny / $TINY (a tiny_images.bin-format file, split into shards),
   else a SAMPLE shard made from the CIFAR-10 test images in Tiny Images' byte layout, labelled so;
4. train -> tag -> index with spark-submit on the Spark standalone cluster (the default model: a
   small network under the forest; TINYTAGS_CNN_EPOCHS and TINYTAGS_EXTRA are passed on);
5. the web UI on gunicorn (stays up; `make down` stops it with the rest), and its URL.

Every step prints its wall time; the run ends with a table of them. Re-running is safe: uploads
skip what is there, tag output is per model version, the indexer resumes.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

from tinytags.io.storage import Storage, parent  # noqa: E402
from tinytags.settings import env, solr_collection_url, stack_settings  # noqa: E402

PY = sys.executable
CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
HDFS_DIR = "/tinytags/demo"


class DemoError(Exception):
    """A step failed; the message says which and how to go on."""


def step(name: str, timings: list[tuple[str, float]]):
    """Context manager that prints and records a step's wall time."""
    class _Step:
        def __enter__(self):
            print(f"\n== {name}", flush=True)
            self.began = time.monotonic()

        def __exit__(self, kind, value, trace):
            seconds = time.monotonic() - self.began
            timings.append((name, seconds))
            print(f"== {name}: {'done' if kind is None else 'FAILED'} in {seconds:.1f} s", flush=True)
    return _Step()


def run(*command: str, env: dict[str, str] | None = None) -> None:
    """Run a command with its output shown; a non-zero exit is a DemoError naming it."""
    print("$ " + " ".join(command), flush=True)
    result = subprocess.run(command, cwd=ROOT, env={**os.environ, **(env or {})})
    if result.returncode != 0:
        raise DemoError(f"`{' '.join(command[:3])} …` exited with {result.returncode} (output above)")


def spark_submit(master: str, script: str, *args: str) -> None:
    """spark-submit a job from jobs/ on the given master, with this venv's Python everywhere (bin/spark-submit)."""
    run(str(ROOT / "bin" / "spark-submit"), "--master", master, "--conf", "spark.executor.memory=3g",
        "--conf", "spark.driver.memory=4g", script, *args)


def demo_dir() -> Path:
    """Where the demo keeps its download and model: inside the stack's folder (TINYTAGS_STACK_DIR)."""
    return stack_settings().stack_dir / "demo"


def cifar_source(given: str | None) -> Path:
    """The CIFAR-10 archive to use: the one given, a cached download, or a fresh download."""
    if given:
        path = Path(given).expanduser()
        if not path.exists():
            raise DemoError(f"CIFAR-10 archive {path} does not exist")
        return path.resolve()
    cached = demo_dir() / "cifar-10-binary.tar.gz"
    if cached.exists():
        return cached
    print(f"no CIFAR-10 archive given; downloading {CIFAR_URL}", flush=True)
    cached.parent.mkdir(parents=True, exist_ok=True)
    partial = cached.with_suffix(".part")
    try:
        with urllib.request.urlopen(CIFAR_URL, timeout=30) as response, open(partial, "wb") as out:
            while chunk := response.read(1 << 20):
                out.write(chunk)
    except OSError as error:
        partial.unlink(missing_ok=True)
        raise DemoError(
            f"could not download {CIFAR_URL} ({error}). This machine may have no internet access: "
            "pass a local copy of cifar-10-binary.tar.gz (or cifar-10-python.tar.gz, or an extracted "
            "folder) with `make demo CIFAR=/path/to/cifar-10-binary.tar.gz`"
        ) from error
    partial.rename(cached)
    return cached


def copy_to_storage(local: Path, target: str) -> str:
    """Copy a local file to a storage path (hdfs://...) unless a file of the same size is already there."""
    storage = Storage()
    if storage.status(target) == ("file", local.stat().st_size):
        print(f"{target} already there ({local.stat().st_size:,} bytes)")
    else:
        storage.makedirs(parent(target))
        storage.copy_file(str(local), target)
        print(f"uploaded {local} -> {target}")
    return target


def main(argv: list[str] | None = None) -> int:
    stack = stack_settings()
    parser = argparse.ArgumentParser(description="TinyTags end to end on the local real stack")
    parser.add_argument("--cifar", default=os.environ.get("CIFAR") or os.environ.get("TINYTAGS_CIFAR"))
    parser.add_argument("--tiny", default=os.environ.get("TINY") or os.environ.get("TINYTAGS_TINY"))
    parser.add_argument("--master", default=env("TINYTAGS_SPARK_MASTER", stack.spark_master))
    parser.add_argument("--no-webapp", action="store_true", help="stop after indexing")
    args = parser.parse_args(argv)
    hdfs = env("TINYTAGS_HDFS_URI", stack.hdfs_uri)
    solr = solr_collection_url()
    timings: list[tuple[str, float]] = []
    began = time.monotonic()
    model_dir = demo_dir() / "model"
    try:
        with step("local stack up", timings):
            run(PY, "-m", "deploy.stack", "up")
        with step("CIFAR-10 into HDFS", timings):
            archive = cifar_source(args.cifar)
            if archive.is_dir():
                cifar_uri = str(archive)  # a folder is read in place (the readers take folders)
            else:
                cifar_uri = copy_to_storage(archive, f"{hdfs}{HDFS_DIR}/cifar/{archive.name}")
        shards = f"{hdfs}{HDFS_DIR}/shards"
        with step("Tiny Images shards into HDFS", timings):
            if args.tiny:
                run(PY, "-m", "jobs.shards", "split", args.tiny, "--out", shards)
            else:
                print("no Tiny Images file given (TINY=...): making a SAMPLE shard from the CIFAR-10 "
                      "test images, written in Tiny Images' column-major byte layout. Its tags are "
                      "CIFAR-10 test images, not real Tiny Images.", flush=True)
                run(PY, "-m", "jobs.shards", "make-sample", "--cifar", cifar_uri, "--out", shards)
        with step("train (spark-submit jobs/train.py)", timings):
            spark_submit(args.master, "jobs/train.py", "--cifar", cifar_uri, "--model", str(model_dir))
        version = _model_version(model_dir)
        tags = f"{hdfs}{HDFS_DIR}/tags-{version}"
        with step("tag (spark-submit jobs/tag.py)", timings):
            spark_submit(args.master, "jobs/tag.py", "--model", str(model_dir), "--input", shards,
                         "--output", tags, "--resume")
        with step("index (spark-submit jobs/index.py)", timings):
            spark_submit(args.master, "jobs/index.py", "--input", tags, "--solr", solr, "--resume")
        if not args.no_webapp:
            with step("web UI (gunicorn)", timings):
                # A web app from an earlier demo may hold an older model: restart it.
                run(PY, "-m", "deploy.stack", "down", "--only", "webapp")
                os.environ.update(TINYTAGS_SOLR_URL=solr, TINYTAGS_MODEL_DIR=str(model_dir))
                run(PY, "-m", "deploy.stack", "up", "--only", "webapp")
    except DemoError as error:
        print(f"\nerror: {error}", file=sys.stderr)
        return 1
    print("\nstep times:")
    for name, seconds in timings:
        print(f"  {name:40} {seconds:7.1f} s")
    print(f"  {'total':40} {time.monotonic() - began:7.1f} s")
    if not args.no_webapp:
        print(f"\nTinyTags is up: {stack.web_url}/   (API: {stack.web_url}/api/search?tags=cat)")
        print(f"Solr: {solr}/select?q=*:*   Spark: http://127.0.0.1:{stack.spark_ui_port}   "
              "`make down` stops everything.")
    return 0


def _model_version(model_dir: Path) -> str:
    import json

    card = json.loads((model_dir / "model_card.json").read_text())
    return card["version"]


if __name__ == "__main__":
    sys.exit(main())
