"""The learner API on real environments: docker exec from a host kernel, SSH from a
connection file (as inside a container), the %%sh magic, reattaching, formative checks."""

from __future__ import annotations

import subprocess
import sys

import pytest

import ladderlab
from ladderlab.environments import runtime
from ladderlab.lab import LabError, sh_magic

from .conftest import leftovers

LAB = "sec-1-iptables-hardening"


@pytest.fixture
def live(images, monkeypatch, tmp_path, client, settings):
    monkeypatch.setenv("LADDERLAB_LEARNER", f"api-{tmp_path.name[-6:].replace('_', '')}")
    monkeypatch.delenv("LADDERLAB_CONNECT", raising=False)
    lab = ladderlab.start(LAB, show=False)
    yield lab
    lab.stop()
    assert leftovers(client, lab.env_id) == ([], [])


def test_start_sh_write_read_and_reattach(live, capsys):
    assert set(live.hosts) == {"target", "monitor", "outsider"}
    assert 9100 <= int(live.params["metrics_port"]) <= 9199
    assert live.sh("target", "id -u").stdout.strip() == "0"
    live.write("target", "/etc/ladderlab-test/hello.txt", "it's $HOME `x`\n")
    assert live.read("target", "/etc/ladderlab-test/hello.txt") == "it's $HOME `x`\n"
    with pytest.raises(LabError, match="exited 3"):
        live.sh("target", "exit 3", check=True)
    again = ladderlab.start(LAB, show=False)
    assert again.env_id == live.env_id and again.params == live.params  # same learner -> same env, same seed
    sh_magic("target", "echo from-magic; hostname")
    assert "from-magic\ntarget" in capsys.readouterr().out


def test_formative_checks_print_one_line_each(live, capsys):
    assert live.check() is False
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and all(line[0] in "\u2713\u2717" for line in lines)  # the visible checks only
    assert any(line.startswith("\u2717 default-deny: target: INPUT policy is ACCEPT") for line in lines)
    assert "Traceback" not in "\n".join(lines)
    live.sh("target", "iptables -A INPUT -i lo -j ACCEPT && iptables -A INPUT -p tcp --dport 22 -j ACCEPT "
                      "&& iptables -A INPUT -p tcp --dport 80 -j ACCEPT && iptables -P INPUT DROP", check=True)
    assert live.check("default-deny", "ssh-http-allowed") is True
    out = capsys.readouterr().out
    assert out.count("\u2713") == 2
    assert live.check("no-such-check") is False
    assert "could not run the checks: no visible check no-such-check" in capsys.readouterr().out
    assert live.check("rules-persisted") is False  # hidden: the grader's, not an oracle while working
    assert "the others are run by the grader" in capsys.readouterr().out


def test_ssh_transport_from_a_connection_file(live, settings, tmp_path, root):
    """A kernel without Docker access (a containerised JupyterLab) works through `env connect`."""
    path = tmp_path / "connect.json"
    r = subprocess.run([sys.executable, "-m", "ladderlab.cli", "env", "connect", live.env_id, "--out", str(path)],
                       capture_output=True, text=True, cwd=root)
    assert r.returncode == 0, r.stderr
    code = ("import ladderlab; lab = ladderlab.start('sec-1-iptables-hardening', show=False); "
            "print(lab.sh('target', 'hostname').stdout.strip()); print(lab.sh('outsider', 'hostname').stdout.strip())")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env={"LADDERLAB_CONNECT": str(path), "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["target", "outsider"]


def test_no_engine_gives_one_clear_line(monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent.sock")
    monkeypatch.delenv("LADDERLAB_CONNECT", raising=False)
    with pytest.raises(LabError, match="no Docker engine answers: run `make lab`"):
        ladderlab.start(LAB, show=False)


def test_stop_leaves_nothing(images, client, settings, monkeypatch):
    monkeypatch.setenv("LADDERLAB_LEARNER", "api-stop")
    lab = ladderlab.start(LAB, show=False, fresh=True)
    env_id = lab.env_id
    lab.stop()
    assert leftovers(client, env_id) == ([], [])
    assert runtime.load_record(settings, env_id) is None
