"""One log format for web and workers. Nothing here ever receives a token or a request body."""
from __future__ import annotations

import logging
import sys


def configure_logging(level: str = "INFO") -> None:
    root = logging.getLogger()
    if not any(getattr(h, "_lpr", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
        handler._lpr = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(level)
