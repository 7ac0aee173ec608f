"""How the operator's CLI shows its answers: tables for a person, JSON for a script.

rich draws both the tables and the progress bars (one library for the two, and it degrades to
plain text when the output is not a terminal: a pipe gets no colour codes). --json prints the
same data as before tables existed, so the scripts that parse it keep working.
"""
from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from typing import Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table


def as_json(value) -> str:
    return json.dumps(value, ensure_ascii=False, indent=2)


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return str(value)


def table(value) -> Table | str:
    """A list of records: one row each, their plain fields only (a store's nested counters would
    make a table too wide to read: `store M` or --json shows them). A record: field and value.
    Records by key (stats per store): one row per key. Anything else: as it is."""
    if isinstance(value, list) and value and all(isinstance(item, dict) for item in value):
        columns = [key for key in dict.fromkeys(key for item in value for key in item)
                   if not any(isinstance(item.get(key), (dict, list)) for item in value)]
        grid = Table(*columns)
        for item in value:
            grid.add_row(*(_cell(item.get(column)) for column in columns))
        return grid
    if isinstance(value, dict) and value and all(isinstance(item, dict) for item in value.values()):
        columns = list(dict.fromkeys(key for item in value.values() for key in item))
        grid = Table("", *columns)
        for key, item in value.items():
            grid.add_row(str(key), *(_cell(item.get(column)) for column in columns))
        return grid
    if isinstance(value, dict) and value:
        grid = Table("field", "value")
        for key, item in value.items():
            grid.add_row(str(key), _cell(item))
        return grid
    if value in ({}, [], None):
        return "(none)"
    return _cell(value)


def show(value, json_output: bool, console: Console | None = None) -> None:
    if json_output:
        print(as_json(value))
        return
    # No highlighting or markup: values (store names, errors) are shown as they are. Into a pipe
    # or a file rich would assume 80 columns and cut the headers: give it room instead.
    console = console or Console(highlight=False, width=None if sys.stdout.isatty() else 200)
    console.print(table(value), markup=False)


@contextmanager
def progress_bar(description: str, total: int | None, shown: bool) -> Iterator:
    """A bar on stderr (stdout stays the answer): `advance(n)` moves it, `update(done, total)` sets it.
    Not shown under --json or when stderr is not a terminal."""
    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                   console=Console(stderr=True), disable=not shown, transient=False)
    with bar:
        task = bar.add_task(description, total=total)

        class Handle:
            @staticmethod
            def advance(amount: int = 1) -> None:
                bar.advance(task, amount)

            @staticmethod
            def update(completed: int, total: int | None = None) -> None:
                bar.update(task, completed=completed, total=total)

        yield Handle
