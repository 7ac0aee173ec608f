"""Issue 16, "What to build" 1 and "Must show": no module under service/ imports workers, and the
packages import downwards only (web | cli > ops > clients > state > config > domain), checked by
the import-linter contracts in pyproject.toml ([tool.importlinter]) on every `make test`."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = str(Path(sys.executable).parent / "lint-imports")  # the tests' own virtualenv


def lint_imports(cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    # It reads pyproject.toml in cwd and finds the packages from there first.
    return subprocess.run([LINT_IMPORTS, "--no-cache"], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120)


def test_the_layers_contracts_hold():
    """Issue 16 item 1 (must show: import-linter contracts in `make test`): `lint-imports` passes,
    so no module under service/ imports workers/ and no part imports a part above it."""
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 kept, 0 broken" in result.stdout, result.stdout


def test_a_service_module_that_imports_workers_breaks_the_contracts(tmp_path):
    """Issue 16 item 1 (must show: no module under service/ imports workers): the contracts bite —
    in a copy of the tree where a domain module imports workers, `lint-imports` fails, naming both
    the layers and the "service never imports workers" contracts."""
    for package in ("service", "workers"):
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    with (tmp_path / "service" / "domain" / "events.py").open("a") as events:
        events.write("\nfrom workers import tasks  # noqa: E402,F401  (the violation under test)\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}  # the copy ahead of the editable install
    result = lint_imports(tmp_path, env)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "service never imports workers BROKEN" in result.stdout, result.stdout
    assert "config > domain BROKEN" in result.stdout, result.stdout


# The task names as they were before the move (main at 97d365e): messages already in a broker and
# a web of the old release must keep finding their task after a deploy of the new layout.
WIRE_NAMES = {"workers.tasks." + name for name in (
    "handle_event", "drain_intake", "forget_store", "heartbeat", "pump_store", "pump_backlog", "recover_intake",
    "sync_customer", "deliver_reminder", "sweep", "store_authorized", "backfill_list", "resync",
    "erase_uninstalled")}


def test_the_task_names_on_the_wire_did_not_follow_the_move(monkeypatch):
    """Issue 16 item 1 ("Task names on the wire (`workers.tasks.*`) do not change"): the workers
    register exactly the old names, and every route and beat entry names one of them."""
    from tests.conftest import TOKEN_KEY, make_settings
    monkeypatch.setenv("SALLA_WEBHOOK_SECRET", "x")
    monkeypatch.setenv("TOKEN_ENCRYPTION_KEY", TOKEN_KEY)
    from service.config.celery_config import celery_config
    from workers.celery import app
    app.loader.import_default_modules()
    # (bench/bare_tasks.py registers its own `bare.*` tasks on the same app when a test loads it)
    ours = {name for name, task in app.tasks.items() if type(task).__module__.startswith("workers")
            or getattr(task, "__module__", "").startswith("workers")}
    assert ours == WIRE_NAMES
    conf = celery_config(make_settings())
    assert set(conf["task_routes"]) <= WIRE_NAMES
    assert {entry["task"] for entry in conf["beat_schedule"].values()} <= WIRE_NAMES
    assert conf["beat_scheduler"] == "workers.beat:LivenessScheduler"


PARTS = ("config", "domain", "state", "clients", "ops", "web")


def test_each_package_says_in_two_lines_what_lives_there():
    """Issue 16 item 1 ("Each package's `__init__.py` says in two lines what lives there"):
    service, workers and each part of service open with a two-line docstring."""
    import ast
    for init in [ROOT / "service" / "__init__.py", ROOT / "workers" / "__init__.py",
                 *(ROOT / "service" / part / "__init__.py" for part in PARTS)]:
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc and len(doc.splitlines()) == 2, init
