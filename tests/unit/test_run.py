"""`make run`'s launcher: the parts that need no process."""
from __future__ import annotations

import pytest

from devkit.run import embedded_redis_port
from service.config.settings import SettingsError


@pytest.mark.parametrize("env, port", [({}, 6389), ({"EMBEDDED_REDIS_PORT": ""}, 6389),
                                       ({"EMBEDDED_REDIS_PORT": "16390"}, 16390)])
def test_embedded_redis_port_is_overridable(env, port):
    assert embedded_redis_port(env) == port


@pytest.mark.parametrize("value", ["abc", "0", "70000", "-1"])
def test_a_bad_embedded_redis_port_is_named(value):
    with pytest.raises(SettingsError, match="EMBEDDED_REDIS_PORT"):
        embedded_redis_port({"EMBEDDED_REDIS_PORT": value})


def test_make_run_writes_its_embedded_redis_url_to_env_for_a_second_shell(tmp_path):
    """Issue 16 item 5: make run writes the embedded Redis's URL to .env (the CLI of a second shell
    reads it), replacing an earlier run's line and keeping everything else."""
    from devkit.run import embedded_redis_url, remember_redis_url
    env_file = tmp_path / ".env"
    env_file.write_text("SALLA_WEBHOOK_SECRET=s\n# REDIS_URL=redis://127.0.0.1:6379/0\n")
    remember_redis_url(env_file, embedded_redis_url(6389))
    remember_redis_url(env_file, embedded_redis_url(6390))
    lines = env_file.read_text().splitlines()
    assert [line for line in lines if line.startswith("REDIS_URL=")] == ["REDIS_URL=redis://127.0.0.1:6390/0"]
    assert lines[:2] == ["SALLA_WEBHOOK_SECRET=s", "# REDIS_URL=redis://127.0.0.1:6379/0"]
