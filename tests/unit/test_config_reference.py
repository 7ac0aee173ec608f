"""Issue 16 item 3, one source for configuration: the reference page, .env.example and compose
are checked against the settings module, both ways (a missing variable, a stale one)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from service.config import reference as config_reference
from service.config.reference import ALL_APP, reference, render, settings_definitions

ROOT = Path(__file__).resolve().parents[2]
APP_SERVICES = ("web", "intake", "reads", "deliveries", "sweeper", "beat", "flower")


@pytest.fixture(scope="module")
def variables():
    return {v.name: v for v in reference()}


@pytest.fixture(scope="module")
def compose():
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_every_setting_of_the_settings_module_is_in_the_reference_and_explained(variables):
    """Issue 16 item 3: the reference is generated from the settings module; a setting added
    there without an explanation fails here."""
    names = set(settings_definitions())
    assert len(names) >= 60 and {"REDIS_URL", "TOKEN_ENCRYPTION_KEY", "LOG_FORMAT"} <= names
    assert names <= set(variables)
    assert [name for name, v in variables.items() if not v.text] == []
    stale = set(config_reference.EXPLAINED) - names
    assert stale == set(), f"explained but no longer read by the settings module: {stale}"
    assert variables["TOKEN_ENCRYPTION_KEY"].required == "yes"
    assert variables["SALLA_WEBHOOK_SECRET"].required.startswith("unless")
    assert variables["WEBHOOK_DEDUPE_TTL_SECONDS"].default == "86400"


def test_the_committed_page_is_what_make_config_reference_writes():
    """Issue 16 item 3: docs/configuration.md is generated; edit the source and run `make config-reference`."""
    page = (ROOT / "docs" / "configuration.md").read_text()
    assert page == render(reference()), "docs/configuration.md is stale: run `make config-reference`"


def _example_names() -> set[str]:
    text = (ROOT / ".env.example").read_text()
    return set(re.findall(r"^#? ?([A-Z][A-Z0-9_]+)=", text, flags=re.M))


def test_env_example_lists_every_variable_and_no_other(variables):
    """Issue 16 item 3: a test fails when .env.example misses a setting or lists a stale one."""
    names = _example_names()
    assert sorted(set(variables) - names) == [], "missing from .env.example"
    assert sorted(names - set(variables)) == [], "in .env.example but no longer read"


def test_env_example_says_which_are_required_and_how_to_make_the_key():
    text = (ROOT / ".env.example").read_text()
    assert "Fernet.generate_key()" in text
    for name in ("TOKEN_ENCRYPTION_KEY", "SALLA_WEBHOOK_SECRET"):
        before = text[:text.index(f"\n{name}=")]
        assert "Required" in before.rsplit("\n\n", 1)[-1] or "required" in before.rsplit("\n\n", 1)[-1], name


def test_compose_passes_every_setting_to_the_containers_and_no_stale_one(compose, variables):
    """Issue 16 item 3: compose passes every setting (SALLA_APP_ID, PUBLIC_WEBHOOK_URL, ... were
    dropped); each variable's `compose` says where, or why not."""
    text = (ROOT / "docker-compose.yml").read_text()
    services = compose["services"]
    for name, v in variables.items():
        if v.compose == ALL_APP:
            for service in APP_SERVICES:
                assert name in services[service]["environment"], f"{name} does not reach {service}"
        elif v.compose == "command":
            assert "${" + name in text, name
        elif v.compose:
            assert name in services[v.compose]["environment"], f"{name} does not reach {v.compose}"
    passed = {name for service in services.values() for name in (service.get("environment") or {})}
    assert sorted(passed - set(variables)) == [], "compose passes variables the reference does not know"


def test_each_compose_service_names_its_own_process_in_the_logs(compose):
    """Issue 16 item 3: all four worker types logged `process: "worker"`."""
    names = {service: compose["services"][service]["environment"]["LOG_PROCESS_NAME"] for service in APP_SERVICES}
    assert names == {service: service for service in APP_SERVICES}


def test_every_worker_service_has_a_healthcheck_pinging_its_own_node(compose):
    """Issue 16 item 3: every worker service has a healthcheck (celery inspect ping -d <its node>)."""
    for name in ("intake", "reads", "deliveries", "sweeper"):
        service = compose["services"][name]
        test = service["healthcheck"]["test"]
        assert test[0] == "CMD-SHELL"
        assert f"inspect ping -d {name}@$$HOSTNAME" in test[1] and f"-n {name}@%h" in service["command"], name


def test_base_images_are_pinned_to_a_version(compose):
    """Issue 16 item 3: base images pinned to a version (not redis:7-alpine, not a bare major)."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    images = re.findall(r"^FROM (\S+)", dockerfile, flags=re.M)
    images += [service["image"] for name, service in compose["services"].items() if "build" not in service]
    for image in images:
        assert re.search(r":\d+\.\d+\.\d+", image), image


@pytest.mark.parametrize("code", ["import workers.celery",
                                  "from service.web import gunicorn_conf; gunicorn_conf.on_starting(None)"])
def test_an_empty_token_key_is_one_clear_line_not_a_traceback(code, tmp_path):
    """Issue 16 item 3: `cp .env.example .env` leaves TOKEN_ENCRYPTION_KEY empty; web and workers
    stop with one line naming it and the command that makes one (exit 2), not a traceback."""
    import os
    import subprocess
    import sys
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT), "SALLA_WEBHOOK_SECRET": "x", "TOKEN_ENCRYPTION_KEY": ""}
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("configuration error: TOKEN_ENCRYPTION_KEY is required") and "Fernet.generate_key()" in line


def test_the_image_installs_from_a_hashed_lock_that_covers_the_runtime_dependencies():
    """Issue 16 item 3: the image installs from a lock file with hashes, without devkit/."""
    import tomllib
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
    lock = (ROOT / "requirements.lock").read_text()
    pinned = {canonicalize_name(name): version for name, version in re.findall(r"^([A-Za-z0-9_.-]+)==(\S+) \\", lock, re.M)}
    unhashed = re.findall(r"^[A-Za-z0-9_.-]+==\S+$", lock, re.M) + re.findall(r"==\S+ \\\n(?! +--hash=sha256:)", lock)
    assert len(pinned) >= 20 and unhashed == [], "every pin has its hashes"
    for text in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        assert name in pinned, f"{requirement.name} is not in requirements.lock: regenerate it (Dockerfile says how)"
        assert requirement.specifier.contains(pinned[name], prereleases=True), f"{name}=={pinned[name]} vs {requirement}"
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "--require-hashes" in dockerfile and "requirements.lock" in dockerfile
    ignored = (ROOT / ".dockerignore").read_text()
    assert "!devkit" not in ignored and "!requirements.lock" in ignored


@pytest.mark.skipif(not __import__("shutil").which("docker-compose"), reason="docker-compose is not installed")
def test_docker_compose_config_is_valid_with_the_healthchecks(tmp_path):
    """Issue 16 must-show: `docker-compose config` valid with the new services' healthchecks."""
    import subprocess
    (tmp_path / "docker-compose.yml").write_text((ROOT / "docker-compose.yml").read_text())
    result = subprocess.run(["docker-compose", "config"], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                            env={"PATH": "/usr/bin:/bin:/usr/local/bin"})
    assert result.returncode == 0, result.stderr
    resolved = yaml.safe_load(result.stdout)["services"]
    for name in ("intake", "reads", "deliveries", "sweeper"):
        assert f"inspect ping -d {name}@" in resolved[name]["healthcheck"]["test"][1], name
        assert resolved[name]["environment"]["LOG_PROCESS_NAME"] == name
    assert resolved["flower"]["command"] in ("python -m workers.flower", ["python", "-m", "workers.flower"])
