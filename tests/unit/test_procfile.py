"""The Procfile parser and the environment its processes get (pure)."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from devkit.procfile import ProcfileEntry, ProcfileError, parse_procfile, process_env, read_procfile

ROOT = Path(__file__).resolve().parents[2]


def test_name_command_lines_in_order_comments_and_blank_lines_skipped():
    text = "# the web\nweb: gunicorn --bind 0.0.0.0:${PORT:-8000} app\n\n   \nworker:celery -A workers worker  \n"
    assert parse_procfile(text) == [
        ProcfileEntry("web", "gunicorn --bind 0.0.0.0:${PORT:-8000} app"),
        ProcfileEntry("worker", "celery -A workers worker"),
    ]


def test_a_colon_inside_the_command_stays_in_the_command():
    [entry] = parse_procfile("flower: celery -A workers flower --address=127.0.0.1:5555\n")
    assert entry.command == "celery -A workers flower --address=127.0.0.1:5555"


@pytest.mark.parametrize("text, reason", [
    ("web gunicorn app\n", "line 1"),
    ("web:\n", "line 1"),
    ("we b: gunicorn\n", "line 1"),
    ("web: a\nweb: b\n", "defined twice"),
    ("# nothing\n\n", "no process"),
])
def test_a_malformed_procfile_says_where(text, reason):
    with pytest.raises(ProcfileError, match=reason):
        parse_procfile(text)


def test_the_projects_procfile_has_a_worker_per_queue():
    entries = {entry.name: entry.command for entry in read_procfile(ROOT / "Procfile")}
    assert list(entries) == ["web", "intake", "reads", "deliveries", "sweeper", "beat", "flower"]
    from service.config.celery_config import TASK_ROUTES
    consumed = {queue for name in ("intake", "reads", "deliveries", "sweeper")
                for queue in entries[name].split(" -Q ")[1].split()[0].split(",")}
    assert {route["queue"] for route in TASK_ROUTES.values()} <= consumed  # every queue has a worker


def test_the_interpreters_bin_directory_comes_first_on_path():
    env = process_env({"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/home/x"})
    assert env["PATH"].split(os.pathsep) == [os.path.dirname(sys.executable), "/usr/local/bin", "/usr/bin", "/bin"]
    assert env["HOME"] == "/home/x"
    assert env["PYTHONUNBUFFERED"] == "1"


def test_bin_directory_already_on_path_is_moved_to_the_front_not_repeated():
    env = process_env({"PATH": "/usr/bin:/venv/bin:/bin"}, bin_dir="/venv/bin")
    assert env["PATH"] == "/venv/bin:/usr/bin:/bin"


def test_no_path_at_all_still_finds_the_system_tools():
    env = process_env({}, bin_dir="/venv/bin")
    assert env["PATH"].startswith("/venv/bin:") and "/bin" in env["PATH"].split(":")


def test_the_input_mapping_is_not_changed():
    base = {"PATH": "/bin"}
    process_env(base, bin_dir="/venv/bin")
    assert base == {"PATH": "/bin"}


def test_gunicorn_and_celery_resolve_to_this_virtualenvs():
    """What broke `make run`: with the venv not activated, the Procfile found no gunicorn."""
    import shutil
    env = process_env({"PATH": "/usr/local/bin:/usr/bin:/bin"})
    for tool in ("gunicorn", "celery"):
        assert shutil.which(tool, path=env["PATH"]) == os.path.join(os.path.dirname(sys.executable), tool)
