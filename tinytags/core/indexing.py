"""What the indexer decides, with no Spark and no HTTP: the tag output's manifest and blocks, the
ledger of indexed blocks, dead-letter records, line decoding and batching.

jobs/index.py does the I/O (tinytags.io.storage, tinytags.io.solr: retries and bisection of
rejected batches live with the client) and calls these; every rule about when a block counts as
done, skipped or failed lives here and is unit-tested without services.
"""

from __future__ import annotations

import bz2
import gzip
import json
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Sequence

from tinytags.core.contract import MANIFEST_NAME, InputError, block_folder

LEDGER_FORMAT = 1
# A dead letter keeps the start of its line: enough to recognise it, never a whole image.
DEAD_LETTER_TEXT_CHARS = 300


# --------------------------------------------------------------------------- manifest and blocks


@dataclass(frozen=True)
class BlockCounts:
    """One block's line in the manifest: images read, kept (= JSON lines) and dropped."""

    read: int
    kept: int
    dropped: int


@dataclass(frozen=True)
class Manifest:
    """OUT/_manifest.json: the model version, the agreement threshold, and counts per block."""

    model: str
    min_agreement: float
    blocks: dict[int, BlockCounts]


def parse_manifest(text: str, source: str) -> Manifest:
    """Decode and check a manifest; errors name ``source`` and the offending field."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise InputError(f"{source}: not valid JSON ({error})") from error
    if not isinstance(data, dict):
        raise InputError(f"{source}: expected a JSON object, got {type(data).__name__}")
    for name, kind in (("model", str), ("min_agreement", (int, float)), ("blocks", dict)):
        if name not in data:
            raise InputError(f"{source}: missing field {name!r}")
        if isinstance(data[name], bool) or not isinstance(data[name], kind):
            raise InputError(f"{source}: field {name!r} has the wrong type ({data[name]!r:.40})")
    blocks = {}
    for key, counts in data["blocks"].items():
        if not key.isdigit():
            raise InputError(f"{source}: blocks key {key!r} should be a block number")
        if not isinstance(counts, dict):
            raise InputError(f"{source}: blocks[{key!r}] should be an object with read/kept/dropped")
        values = {}
        for name in ("read", "kept", "dropped"):
            value = counts.get(name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InputError(f"{source}: blocks[{key!r}].{name} should be a non-negative integer, got {value!r}")
            values[name] = value
        if values["kept"] + values["dropped"] != values["read"]:
            raise InputError(f"{source}: blocks[{key!r}]: kept {values['kept']} + dropped "
                             f"{values['dropped']} != read {values['read']}")
        blocks[int(key)] = BlockCounts(**values)
    return Manifest(data["model"], float(data["min_agreement"]), blocks)


def blocks_to_index(manifest: Manifest, folders: Iterable[int], source: str) -> list[int]:
    """Every block of the manifest, in order, after checking that folders and manifest agree.

    A block with kept > 0 needs its folder; a folder the manifest does not list is an error (a
    stray or half-written run). Blocks with nothing kept are still planned: indexing them deletes
    what an older tag run left in Solr.
    """
    found = set(folders)
    stray = sorted(found - set(manifest.blocks))
    if stray:
        more = f" (and {len(stray) - 1} more)" if len(stray) > 1 else ""
        raise InputError(f"{source}: folder {block_folder(stray[0])}{more} is not in {MANIFEST_NAME}; "
                         "is it from another tag run?")
    missing = sorted(b for b, counts in manifest.blocks.items() if counts.kept and b not in found)
    if missing:
        raise InputError(f"{source}: {MANIFEST_NAME} lists block {missing[0]} with kept="
                         f"{manifest.blocks[missing[0]].kept} but there is no folder {block_folder(missing[0])}")
    return sorted(manifest.blocks)


def waves(blocks: Sequence[int], per_wave: int) -> list[list[int]]:
    """Split the blocks into groups that are indexed, committed and verified together: as few as
    ``per_wave`` allows, of near-equal sizes, so no wave ends with one block indexed alone."""
    if per_wave < 1:
        raise ValueError(f"blocks per commit should be >= 1, got {per_wave}")
    count = -(-len(blocks) // per_wave)
    result, start = [], 0
    for number in range(count):
        size = len(blocks) // count + (number < len(blocks) % count)
        result.append(list(blocks[start:start + size]))
        start += size
    return result


# --------------------------------------------------------------------------- ledger


def ledger_key(solr_url: str) -> str:
    """Ledger entries are per Solr collection: the same tag output may be indexed into several."""
    return solr_url.rstrip("/")


def empty_ledger() -> dict[str, Any]:
    """A ledger with no target yet."""
    return {"format": LEDGER_FORMAT, "targets": {}}


def parse_ledger(text: str | None, source: str) -> dict[str, Any]:
    """Decode a ledger file (None: no file yet). A damaged ledger is an error, never ignored,
    because --resume would otherwise silently redo or skip the wrong blocks."""
    if text is None:
        return empty_ledger()
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise InputError(f"{source}: damaged ledger ({error}); delete it to index every block again") from error
    if not isinstance(data, dict) or data.get("format") != LEDGER_FORMAT or not isinstance(data.get("targets"), dict):
        raise InputError(f"{source}: expected a ledger of format {LEDGER_FORMAT} with 'targets'; "
                         "delete it to index every block again")
    return data


def ledger_blocks(ledger: dict[str, Any], solr_url: str) -> dict[int, dict[str, Any]]:
    """The ledger's entries for one Solr collection, by block number."""
    target = ledger["targets"].get(ledger_key(solr_url), {})
    return {int(block): entry for block, entry in target.get("blocks", {}).items()}


def with_blocks(ledger: dict[str, Any], solr_url: str, entries: dict[int, dict[str, Any] | None]) -> dict[str, Any]:
    """A copy of the ledger with these blocks' entries set (None removes an entry)."""
    result = json.loads(json.dumps(ledger))
    blocks = result["targets"].setdefault(ledger_key(solr_url), {}).setdefault("blocks", {})
    for block, entry in entries.items():
        if entry is None:
            blocks.pop(str(block), None)
        else:
            blocks[str(block)] = entry
    return result


def ledger_text(ledger: dict[str, Any]) -> str:
    """Stable, human-readable JSON (blocks in numeric order)."""
    result = json.loads(json.dumps(ledger))
    for target in result["targets"].values():
        target["blocks"] = dict(sorted(target.get("blocks", {}).items(), key=lambda item: int(item[0])))
    return json.dumps(result, indent=1, sort_keys=False) + "\n"


def ledger_entry(result: "IndexedBlock", model: str, indexed_at: str) -> dict[str, Any]:
    """What the ledger records for a verified block."""
    return {"lines": result.lines, "docs": result.docs, "dead_letters": len(result.dead_letters),
            "model": model, "indexed_at": indexed_at}


def completed_blocks(entries: dict[int, dict[str, Any]], manifest: Manifest,
                     solr_counts: dict[int, int]) -> set[int]:
    """Blocks --resume may skip: ledgered for the manifest's model and line count, and Solr still
    holds exactly the ledgered number of documents (an emptied or rebuilt core is redone)."""
    done = set()
    for block, entry in entries.items():
        counts = manifest.blocks.get(block)
        if (counts is not None and entry.get("model") == manifest.model and entry.get("lines") == counts.kept
                and solr_counts.get(block, 0) == entry.get("docs")):
            done.add(block)
    return done


# --------------------------------------------------------------------------- per-block results


@dataclass
class IndexedBlock:
    """What one Spark task reports about one block (sent back to the driver, so small)."""

    block: int
    lines: int = 0
    docs: int = 0  # documents Solr accepted
    dead_letters: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    # "input": the block's files disagree with the manifest; "strict": --strict met a bad line;
    # "unavailable": Solr did not answer; "rejected": Solr refused too many documents (or one,
    # with --strict); "solr": another Solr error; "skipped": not tried because Solr was
    # unavailable earlier in the same wave.
    error_kind: str | None = None
    seconds: float = 0.0

    @property
    def expected_docs(self) -> int:
        return self.lines - len(self.dead_letters)


def dead_letter(block: int, file: str, line: int, reason: str, text: str) -> dict[str, Any]:
    """One dead-letter record: where the line is and why it was not indexed."""
    return {"block": block, "file": file, "line": line, "reason": reason, "text": text[:DEAD_LETTER_TEXT_CHARS]}


def merge_dead_letters(old: list[dict[str, Any]], redone: Iterable[int], new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Keep old records of blocks not redone in this run, replace the rest with the new ones."""
    redone = set(redone)
    kept = [record for record in old if record.get("block") not in redone]
    return sorted(kept + new, key=lambda r: (r["block"], r["file"], r["line"]))


def parse_dead_letters(text: str | None) -> list[dict[str, Any]]:
    """Read a dead-letter file written by ``dead_letters_text``."""
    if not text:
        return []
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def dead_letters_text(records: list[dict[str, Any]]) -> str:
    """One JSON object a line."""
    return "".join(json.dumps(record, sort_keys=True) + "\n" for record in records)


def verify(results: list[IndexedBlock], solr_counts: dict[int, int]) -> tuple[list[IndexedBlock], dict[int, str]]:
    """After the wave's commit: blocks whose Solr count equals their lines minus dead letters are
    done; any other block fails with a message naming both numbers."""
    done, failed = [], {}
    for result in results:
        if result.error:
            failed[result.block] = result.error
            continue
        found = solr_counts.get(result.block, 0)
        if found == result.expected_docs:
            done.append(result)
        else:
            failed[result.block] = (
                f"Solr holds {found} documents for block {result.block} after the commit, expected "
                f"{result.expected_docs} ({result.lines} lines - {len(result.dead_letters)} dead letters)")
    return done, failed


# --------------------------------------------------------------------------- lines of one block


def part_text(path: str, data: bytes) -> str:
    """A part file's text: gunzipped or bunzipped by its extension (as Hadoop's codecs would be);
    undecodable bytes become U+FFFD, so the line that holds them is dead-lettered, not the file."""
    if path.endswith(".gz"):
        data = gzip.decompress(data)
    elif path.endswith(".bz2"):
        data = bz2.decompress(data)
    return data.decode("utf-8", errors="replace")


def split_lines(content: str) -> Iterator[tuple[int, str]]:
    """(1-based line number, text) of every non-blank line of a part file."""
    for number, text in enumerate(content.split("\n"), start=1):
        if text.strip():
            yield number, text


def count_lines(content: str) -> int:
    """Non-blank lines of a part file (what the manifest's kept counts)."""
    return sum(1 for text in content.split("\n") if text.strip())


class BlockDecoder:
    """Decodes a block's JSON lines, dead-lettering what cannot be a document of this block.

    Field-level checks are tinytags/core/solr_docs.py's; here only what needs the block's context: the
    JSON itself, the block number, the model version, and ids repeated within the block.
    """

    def __init__(self, block: int, model: str):
        self.block = block
        self.model = model
        self.seen: dict[int, str] = {}

    def decode(self, file: str, lines: Iterable[tuple[int, str]]) -> tuple[list[tuple[int, dict]], list[dict]]:
        """-> ([(line number, decoded line)], [dead letters])"""
        good, dead = [], []
        for number, text in lines:
            try:
                line = json.loads(text)
            except ValueError as error:  # JSONDecodeError, and UnicodeDecodeError on stray bytes
                dead.append(dead_letter(self.block, file, number, f"malformed JSON: {error}", text))
                continue
            reason = self._context_error(line, file, number)
            if reason:
                dead.append(dead_letter(self.block, file, number, reason, text))
                continue
            good.append((number, line))
        return good, dead

    def _context_error(self, line: Any, file: str, number: int) -> str | None:
        if not isinstance(line, dict):
            return f"expected a JSON object, got {type(line).__name__}"
        block = line.get("block")
        if isinstance(block, int) and not isinstance(block, bool) and block != self.block:
            return f"field 'block' is {block} but the line is in folder {block_folder(self.block)}"
        model = line.get("model")
        if isinstance(model, str) and model != self.model:
            return f"field 'model' is {model!r:.40} but {MANIFEST_NAME} says {self.model!r:.40}"
        image_id = line.get("id")
        if isinstance(image_id, int) and not isinstance(image_id, bool):
            first = self.seen.get(image_id)
            if first is not None:
                return f"duplicate id {image_id} (first at {first})"
            self.seen[image_id] = f"{file}:{number}"
        return None


def chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    """Consecutive slices of at most ``size`` items (the POST batches)."""
    if size < 1:
        raise ValueError(f"batch size should be >= 1, got {size}")
    for start in range(0, len(items), size):
        yield items[start:start + size]


# --------------------------------------------------------------------------- summary


@dataclass
class Summary:
    """What a run did, printed at its end; ``exit_code`` is the job's."""

    done: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)
    not_attempted: list[int] = field(default_factory=list)
    docs: int = 0
    dead_letters: int = 0
    seconds: float = 0.0

    @property
    def docs_per_s(self) -> float:
        return self.docs / self.seconds if self.seconds > 0 else 0.0

    @property
    def exit_code(self) -> int:
        return 1 if self.failed or self.not_attempted else 0

    def as_dict(self) -> dict[str, Any]:
        return {"blocks_done": len(self.done), "blocks_skipped": len(self.skipped),
                "blocks_failed": len(self.failed), "blocks_not_attempted": len(self.not_attempted),
                "docs": self.docs, "dead_letters": self.dead_letters,
                "seconds": round(self.seconds, 3), "docs_per_s": round(self.docs_per_s, 1),
                "failed": {str(block): reason for block, reason in sorted(self.failed.items())}}

    def text(self) -> str:
        line = (f"{len(self.done)} blocks done, {len(self.skipped)} skipped, {len(self.failed)} failed"
                + (f", {len(self.not_attempted)} not attempted" if self.not_attempted else "")
                + f"; {self.docs:,} documents in {self.seconds:.1f} s ({self.docs_per_s:,.0f} docs/s)"
                + f"; {self.dead_letters} dead letters")
        for block, reason in sorted(self.failed.items()):
            line += f"\n  block {block} FAILED: {reason}"
        return line
