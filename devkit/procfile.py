"""The Procfile, and the environment its processes run in under `make run`.

`make run` calls `.venv/bin/python -m devkit.run` without activating the virtualenv, so the
PATH a Procfile command sees may have no `gunicorn` or `celery` on it, or a global one of
another version. `process_env` puts the directory of the running interpreter (the project's
`.venv/bin`) first on PATH, so the Procfile's commands always find the project's own.
"""
from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

# Same rule as foreman and honcho: a name of letters, digits, `_` or `-`, a colon, a command.
_LINE = re.compile(r"^([A-Za-z0-9_-]+):\s*(.+)$")


class ProcfileError(ValueError):
    pass


@dataclass(frozen=True)
class ProcfileEntry:
    name: str
    command: str


def parse_procfile(text: str) -> list[ProcfileEntry]:
    """`name: command` lines, in order; blank lines and `#` comments are skipped."""
    entries: list[ProcfileEntry] = []
    seen: set[str] = set()
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _LINE.match(line)
        if not match:
            raise ProcfileError(f"Procfile line {number} is not `name: command`: {raw!r}")
        name, command = match.group(1), match.group(2).strip()
        if name in seen:
            raise ProcfileError(f"Procfile line {number}: process {name!r} is defined twice")
        seen.add(name)
        entries.append(ProcfileEntry(name, command))
    if not entries:
        raise ProcfileError("the Procfile defines no process")
    return entries


def read_procfile(path: str | Path) -> list[ProcfileEntry]:
    return parse_procfile(Path(path).read_text(encoding="utf-8"))


def process_env(base: Mapping[str, str], bin_dir: str | None = None) -> dict[str, str]:
    """`base` with `bin_dir` (default: the directory of this interpreter, i.e. `.venv/bin`)
    first on PATH, and unbuffered Python output so log lines show up as they are written."""
    bin_dir = bin_dir or os.path.dirname(sys.executable)
    rest = [entry for entry in base.get("PATH", os.defpath).split(os.pathsep) if entry and entry != bin_dir]
    env = dict(base)
    env["PATH"] = os.pathsep.join([bin_dir, *rest])
    # A child's stdout is a pipe to the supervisor: without this, print() output would arrive
    # in 8 KB blocks, long after the fact.
    env["PYTHONUNBUFFERED"] = "1"
    return env
