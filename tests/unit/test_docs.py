"""README.md and docs/*.md, checked without services: size, links, fences, paths, and no measurements.

README is the front door and docs/ the manual; measured figures live only in bench/RESULTS.md,
where their machine and date are written beside them. The integration test
tests/integration/test_readme.py runs the ```sh blocks; this one checks what can be checked
statically, so that a broken link or a dated figure fails `make check`, not a user.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from pathlib import Path

import pytest

from tests.helpers import ROOT, documents

README_MAX_LINES = 250
DOCS = documents()
DOC_IDS = [path.relative_to(ROOT).as_posix() for path in DOCS]
FENCE = re.compile(r"^\s*```(.*)$")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
# Where a figure would be a measurement: a date, a timing, a rate, a CI run's duration, a speed-up.
MEASUREMENT = {
    "a date": re.compile(r"\b20\d\d-[01]\d(-[0-3]\d)?\b"),
    "a timing in ms or µs": re.compile(r"\d(?:[\d,]*\d)?(?:\.\d+)?\s?(?:ms|µs)\b"),
    "a rate": re.compile(r"\b\d(?:[\d,]*\d)?(?:\.\d+)?\s?(?:docs|documents|images|photos|JPEGs|req|requests)/s\b"),
    "a run's duration": re.compile(r"\b\d+ min \d+ s\b|\btook (?:about |~)?\d"),
    "a speed-up": re.compile(r"\b\d+(?:\.\d+)?\s?[x×] (?:faster|slower)\b"),
}
# In prose, measured accuracies and recalls too (code comments may name parameters such as a 99.5% quantile).
PROSE_MEASUREMENT = {
    **MEASUREMENT,
    "a percentage with decimals": re.compile(r"\b\d+\.\d+\s?%(?![0-9A-Fa-f]{2})"),  # not %20 in a URL
    "a ratio to three decimals": re.compile(r"\b0\.\d{3,}\b"),
}
GOAL = re.compile(r"[<>≤≥]\s*$")  # "p95 < 30 ms" states a goal, not a measurement
TOP_LEVEL = ("jobs", "tinytags", "webapp", "deploy", "bench", "tests", "solr_conf", "bin", "docs")
REPO_PATH = re.compile(rf"^(?:{'|'.join(TOP_LEVEL)})/[\w./-]*$")
COMMAND = re.compile(r"^\s*(?:make [a-z]|bin/spark-submit --|\.venv/bin/|python3? -m |curl |docker compose |export \w+=)")
MODULE = re.compile(r"python3? -m ((?:jobs|bench|deploy)\.[\w.]+)")


def _prose(text: str) -> str:
    """Markdown without fenced blocks and inline code: where links are links."""
    kept, inside = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            inside = not inside
            continue
        if not inside:
            kept.append(re.sub(r"`[^`]*`", "", line))
    return "\n".join(kept)


def _slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    headings = [line.lstrip("#").strip() for line in _prose(path.read_text()).splitlines()
                if re.match(r"^#{1,6} ", line)]
    return {_slug(heading) for heading in headings}


def _measurements(text: str, patterns: dict[str, re.Pattern]) -> list[str]:
    found = []
    for what, pattern in patterns.items():
        for match in pattern.finditer(text):
            if GOAL.search(text[max(0, match.start() - 3):match.start()]):
                continue
            line = text.count("\n", 0, match.start()) + 1
            found.append(f"line {line}: {what}: {match.group(0)!r}")
    return found


def test_readme_is_a_front_door():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move detail to docs/"


def test_docs_has_the_manual_pages():
    names = {path.name for path in DOCS}
    assert {"operations.md", "cluster.md", "security.md", "api.md", "models.md", "benchmarks.md"} <= names


@pytest.mark.parametrize("path", DOCS, ids=DOC_IDS)
def test_every_relative_link_points_at_a_file_and_heading(path):
    broken = []
    for target in LINK.findall(_prose(path.read_text())):
        if re.match(r"^[a-z]+:", target):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        if not linked.exists():
            broken.append(f"{target}: no such file")
        elif anchor and linked.suffix == ".md" and anchor not in _anchors(linked):
            broken.append(f"{target}: no heading #{anchor} in {linked.relative_to(ROOT)}")
    assert not broken, f"{path.relative_to(ROOT)}: " + "; ".join(broken)


@pytest.mark.parametrize("path", DOCS, ids=DOC_IDS)
def test_command_blocks_are_sh_or_text(path):
    """A ```sh block is run by tests/integration/test_readme.py, a ```text block is declared not to be;
    any other fence with a command in it would be neither tested nor marked."""
    problems, language, body = [], None, []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        match = FENCE.match(line)
        if not match:
            body.append(line)
            continue
        if language is None:  # an opening fence
            language, body, opened = match.group(1).strip(), [], number
            if language not in ("sh", "text", ""):
                problems.append(f"line {number}: ```{language} (use sh or text)")
            continue
        if language == "" and any(COMMAND.match(b) for b in body):
            problems.append(f"line {opened}: a command in a fence without a language (use sh or text)")
        language = None
    assert language is None, f"{path.relative_to(ROOT)}: a fence is never closed"
    assert not problems, f"{path.relative_to(ROOT)}: " + "; ".join(problems)


@pytest.mark.parametrize("path", DOCS, ids=DOC_IDS)
def test_no_measured_figures_in_readme_or_docs(path):
    found = _measurements(path.read_text(), PROSE_MEASUREMENT)
    assert not found, f"{path.relative_to(ROOT)} holds measurements; they belong in bench/RESULTS.md: {found}"


@pytest.mark.parametrize("path", DOCS, ids=DOC_IDS)
def test_named_paths_and_modules_exist(path):
    """Every repository path in backticks (`tinytags/core/forest.py`) and every `python -m` module exists."""
    text = path.read_text()
    missing = []
    for span in re.findall(r"`([^`\n]+)`", text):
        candidate = span.strip().rstrip(".,:;")
        if REPO_PATH.match(candidate) and not (ROOT / candidate).exists():
            missing.append(candidate)
    for module in MODULE.findall(text):
        file = ROOT / module.replace(".", "/")
        if not (file.with_suffix(".py").exists() or (file / "__main__.py").exists()):
            missing.append(f"python -m {module}")
    assert not missing, f"{path.relative_to(ROOT)} names what does not exist: {missing}"


@pytest.mark.parametrize("path", DOCS, ids=DOC_IDS)
def test_docs_cite_no_files_users_do_not_have(path):
    assert "shared/" not in path.read_text(), "the ../shared development folder is not part of the project"


def _python_comments(path: Path) -> str:
    """A module's docstrings (module, classes, functions) and # comments, one text."""
    source = path.read_text()
    parts = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            parts.append(ast.get_docstring(node) or "")
    parts += [token.string for token in tokenize.generate_tokens(io.StringIO(source).readline)
              if token.type == tokenize.COMMENT]
    return "\n".join(parts)


def _config_comments(path: Path) -> str:
    text = path.read_text()
    if path.suffix == ".xml":
        return "\n".join(re.findall(r"<!--(.*?)-->", text, re.S))
    return "\n".join(line for line in text.splitlines() if line.lstrip().startswith("#"))


def _commented_files() -> list[Path]:
    python = [p for folder in ("tinytags", "webapp", "jobs", "bench", "deploy") for p in (ROOT / folder).rglob("*.py")
              if "target" not in p.parts]
    config = [*(ROOT / "solr_conf").glob("*.xml"), ROOT / "docker-compose.yml", ROOT / "Makefile",
              *(ROOT / "deploy" / "compose").glob("*.env"), *(ROOT / "deploy").glob("*.sh"),
              *(ROOT / "bench").glob("*.sh"), ROOT / "bin" / "spark-submit"]
    return sorted(p for p in python + config if p.exists())


@pytest.mark.parametrize("path", _commented_files(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_no_measured_figures_in_docstrings_or_config_comments(path):
    text = _python_comments(path) if path.suffix == ".py" else _config_comments(path)
    found = _measurements(text, MEASUREMENT)
    assert not found, f"{path.relative_to(ROOT)}: measurements in comments go stale; move them to bench/RESULTS.md: {found}"


def test_results_are_where_the_docs_send_readers():
    results = (ROOT / "bench" / "RESULTS.md").read_text()
    assert "Machine:" in results  # the figures say what they were measured on
    for heading in ("Learned features", "HNSW beam width", "Sizing the full Tiny Images corpus",
                    "Local stack timings"):
        assert f"## {heading}" in results, f"bench/RESULTS.md lost its {heading!r} section, which docs point to"
