"""The tests' directory goes on sys.path (spawned workers inherit it): test files import the shared
helpers from ``support`` and the served LitAPI classes from ``apis*``."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
