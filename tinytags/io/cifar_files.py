"""CIFAR-10 releases from files: the parser (tinytags.core.cifar) over the one storage layer."""

from __future__ import annotations

from pathlib import Path

from tinytags.core.cifar import CifarData, read
from tinytags.io.storage import Storage


def read_local(path: str | Path) -> CifarData:
    """CIFAR-10 from a local archive or folder, in either format."""
    return read(Storage(), str(path))
