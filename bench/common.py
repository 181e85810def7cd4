"""What the benchmarks share: where the development data and outputs are, and a line about the machine."""

from __future__ import annotations

import os
import platform
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"  # the development data beside the checkout (not shipped)
SAMPLE = SHARED / "cifar-10-sample-binary.tar.gz"
DEV = SHARED / "cifar-10-dev-binary.tar.gz"
PHOTOS = SHARED / "photos-32x32.tar.gz"
OUT = ROOT / "bench" / "out"


def machine() -> str:
    """Processor, cores, load average now, and the Python version: the context of a figure."""
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, load average "
            f"{os.getloadavg()[0]:.1f}, Python {platform.python_version()}")
