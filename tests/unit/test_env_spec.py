"""env.yaml: every shipped environment loads; bad ones fail with file and field."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ladderlab.environments.spec import CAPABILITY_ALLOWLIST, discover, load_env_spec
from ladderlab.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
ENVS = discover(ROOT / "environments")


def test_the_four_domain_environments_exist():
    assert {"firewall", "dns-tls", "slo", "debug"} <= set(ENVS)


@pytest.mark.parametrize("name", sorted(ENVS))
def test_shipped_env_loads_with_allowlisted_caps_and_a_probe(name):
    spec = load_env_spec(ENVS[name])
    assert spec.name == name
    for host in spec.hosts.values():
        assert set(host.capabilities) <= CAPABILITY_ALLOWLIST
        assert "SYS_ADMIN" not in host.capabilities
    assert any(h.role == "probe" for h in spec.hosts.values()), "checks need a host to observe from"


def _env(tmp_path: Path, data: dict) -> Path:
    d = tmp_path / data.get("name", "x")
    d.mkdir()
    (d / "env.yaml").write_text(yaml.safe_dump(data))
    return d


def _host(**kw):
    return {"image": "probe", "role": "probe", "capabilities": ["SETUID", "SETGID", "SYS_CHROOT"], **kw}


@pytest.mark.parametrize(("data", "where", "expected"), [
    ({"name": "x", "hosts": {"a": _host(capabilities=["SYS_ADMIN", "SETUID", "SETGID", "SYS_CHROOT"])}},
     "hosts.a.capabilities", "not allowed"),
    ({"name": "x", "hosts": {"a": _host(capabilities=[])}}, "hosts.a", "needs the capabilities"),
    ({"name": "x", "hosts": {"a": _host(labels={"io.ladderlab.expires": "0"})}}, "hosts.a.labels", "reserved"),
    ({"name": "x", "hosts": {"a": _host(environment={"P": "{nope}"})}}, "hosts.a.environment.P",
     "unknown parameter nope"),
    ({"name": "x", "hosts": {"a": _host(ready=[{"command": "test {nope} -gt 0"}])}}, "hosts.a.ready[0].command",
     "unknown parameter nope"),
    ({"name": "x", "hosts": {"a": _host(depends_on=["b"]), "b": _host(depends_on=["a"])}}, "hosts",
     "cycle"),
    ({"name": "x", "hosts": {"a": _host(networks=["wan"])}}, "hosts.a.networks", "unknown network"),
    ({"name": "x", "hosts": {"a": _host(resources={"memory": "4096m"})}}, "hosts.a.resources.memory",
     "between 16m and 2048m"),
    ({"name": "x", "hosts": {"a": _host(resources={"memory": "64g"})}}, "hosts.a.resources.memory",
     "a size like 256m"),
    ({"name": "x", "hosts": {"a": _host(role="wizard")}}, "hosts.a.role", "input should be"),
    ({"name": "x", "hosts": {}}, "hosts", "at least 1"),
    ({"name": "x", "hosts": {"a": _host()}, "params": {"p": {"type": "int", "min": 9, "max": 1}}},
     "params.p.int", "greater than max"),
    ({"name": "y", "hosts": {"a": _host()}}, "name", "directory name"),
])
def test_bad_env_yaml(tmp_path, data, where, expected):
    d = _env(tmp_path, {**data, "name": data["name"]})
    if data["name"] == "y":
        d = d.rename(tmp_path / "z")
    with pytest.raises(ConfigError) as info:
        load_env_spec(d)
    assert any(w == where and expected in what for w, what in info.value.problems), info.value.problems
    assert str(info.value).startswith(f"environments/{d.name}/env.yaml: ")


def test_start_waves_respect_depends_on():
    spec = load_env_spec(ENVS["slo"])
    waves = spec.start_waves()
    assert waves[0] == ["app", "probe", "prometheus"]
    assert waves[1] == ["loadgen"]


def test_cli_env_up_with_bad_env_yaml_exits_2_without_traceback(tmp_path):
    (tmp_path / "course.yaml").write_text((ROOT / "course.yaml").read_text())
    envs = tmp_path / "environments"
    envs.mkdir()
    _env(envs, {"name": "bad", "hosts": {"a": _host(capabilities=["SYS_MODULE"])}})
    proc = subprocess.run([sys.executable, "-m", "ladderlab.cli", "env", "up", "bad"], capture_output=True,
                          text=True, env={"LADDERLAB_ROOT": str(tmp_path), "PATH": "/usr/bin:/bin",
                                          "DOCKER_HOST": "unix:///nonexistent.sock"}, check=False)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "environments/bad/env.yaml: hosts.a.capabilities: capabilities SYS_MODULE are not allowed" in proc.stderr


def test_a_ready_command_gets_the_params_shell_quoted():
    from ladderlab.environments.readiness import CommandSucceeds
    from ladderlab.environments.runtime import _strategies
    from ladderlab.environments.spec import CommandReady

    host = load_env_spec(ENVS["firewall"]).hosts["target"]
    host = host.model_copy(update={"ready": [CommandReady(command="test {port} -ne 6001")]})
    assert _strategies(host, {"port": "1; reboot"}) == [CommandSucceeds("test '1; reboot' -ne 6001")]
