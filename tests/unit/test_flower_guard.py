"""Issue 16 item 3: Flower needs its basic auth under the Procfile too, unless it binds loopback."""
from __future__ import annotations

import pytest

from devkit.procfile import read_procfile
from workers.flower import refusal


@pytest.mark.parametrize("env", [{}, {"FLOWER_ADDRESS": "0.0.0.0"}, {"FLOWER_ADDRESS": "10.0.0.5"},
                                 {"FLOWER_BASIC_AUTH": "operator"}, {"FLOWER_BASIC_AUTH": "operator:"},
                                 {"FLOWER_BASIC_AUTH": ":pw", "FLOWER_ADDRESS": "0.0.0.0"}])
def test_flower_refuses_to_start_open_to_the_network(env):
    problem = refusal(env)
    assert problem and "FLOWER_BASIC_AUTH=user:password" in problem and "\n" not in problem


@pytest.mark.parametrize("env", [{"FLOWER_BASIC_AUTH": "operator:pw"}, {"FLOWER_ADDRESS": "127.0.0.1"},
                                 {"FLOWER_ADDRESS": "localhost"}, {"FLOWER_BASIC_AUTH": "a:b,c:d", "FLOWER_ADDRESS": "0.0.0.0"}])
def test_flower_starts_with_basic_auth_or_on_loopback(env):
    assert refusal(env) is None


def test_the_procfiles_flower_goes_through_the_guard():
    [flower] = [entry for entry in read_procfile("Procfile") if entry.name == "flower"]
    assert flower.command == "python -m workers.flower"
