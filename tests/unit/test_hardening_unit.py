"""The container policy has one owner: nothing but ``environments/hardening.py`` creates a container,
and a plan that asks for more than its kind may have is refused before the engine sees it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from ladderlab.environments import hardening
from ladderlab.environments import labels as L
from ladderlab.errors import EnvError

ROOT = Path(__file__).resolve().parents[2]
STAMP = L.Stamp("e-1", "firewall", "lab", "ada", 2e9, 1e9, "host:1:1")


def test_only_the_hardening_module_creates_containers():
    callers = []
    for path in [*(ROOT / "src").rglob("*.py"), *(ROOT / "graders").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            creates = isinstance(node, ast.Attribute) and node.attr in ("create_container", "create_host_config")
            runs = isinstance(node, ast.Attribute) and node.attr == "run" and \
                isinstance(node.value, ast.Attribute) and node.value.attr == "containers"
            if creates or runs:
                callers.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert callers and all(c.startswith("src/ladderlab/environments/hardening.py") for c in callers), callers


def plan(**changes):
    base = {"kind": "observer", "name": "ll-e-1-obs-target", "image": "probe", "stamp": STAMP, "host": "obs",
            "network": "container:ll-e-1-target", "capabilities": ["NET_RAW"]}
    return hardening.Plan(**{**base, **changes})


@pytest.mark.parametrize(("changes", "words"), [
    ({"capabilities": ["SYS_ADMIN"]}, "may not have SYS_ADMIN"),
    ({"kind": "sandbox", "capabilities": ["NET_RAW"]}, "may not have NET_RAW"),
    ({"kind": "tools", "capabilities": ["NET_ADMIN"]}, "may not have NET_ADMIN"),
    ({"network": "host"}, "is not ladderlab's"),
    ({"network": "bridge"}, "is not ladderlab's"),
    ({"network": "container:someone-else"}, "is not ladderlab's"),
    ({"pid_namespace_of": "host"}, "pid namespace"),
    ({"name": "web"}, "does not start with ll-"),
    ({"work_volume": "ll-e-1-work"}, "only the sandbox"),
    ({"kind": "sandbox", "capabilities": [], "work_volume": "/var/run/docker.sock"}, "only the sandbox"),
    ({"memory": 0}, "must be positive"),
    ({"kind": "privileged"}, "unknown container kind"),
])
def test_plans_beyond_the_policy_are_refused(changes, words):
    bad = plan(**changes)
    assert any(words in p for p in bad.problems()), bad.problems()
    with pytest.raises(EnvError, match="refused by ladderlab's policy"):
        hardening.create(None, bad)  # type: ignore[arg-type]  # refused before any engine call


def test_a_plan_within_the_policy_has_no_problems_and_carries_its_kind():
    good = plan()
    assert good.problems() == []
    assert good.labels()[L.KIND] == "observer" and good.labels()[L.ENV_ID] == "e-1"
    assert plan(kind="host", network="ll-e-1-lan", capabilities=["NET_ADMIN"]).problems() == []
