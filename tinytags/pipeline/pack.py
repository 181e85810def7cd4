"""What ``jobs/pack.py`` runs on Spark: photo files decoded in Spark tasks, in waves, results in order."""

from __future__ import annotations

from typing import Iterator

from tinytags.io.photo_files import Decoder, FileResult, decode_file
from tinytags.io.storage import Found, Storage


def spark_decoder(sc, files_per_task: int, wave_files: int) -> Decoder:
    """Decode files in Spark tasks of ``files_per_task`` files, one job per wave, results in order."""

    def run(files: Storage, todo: list[Found]) -> Iterator[FileResult]:
        for start in range(0, len(todo), wave_files):
            wave = todo[start:start + wave_files]
            tasks = -(-len(wave) // files_per_task)
            yield from sc.parallelize(wave, tasks).map(lambda found: decode_file(files, found)).collect()

    return run
