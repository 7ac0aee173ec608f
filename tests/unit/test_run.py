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
