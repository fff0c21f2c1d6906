"""The learner API's own logic, with a fake backend (real transports: tests/integration/test_learner_api.py)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import pytest

import ladderlab
from ladderlab.environments.connection import Connection, HostEntry, from_environment
from ladderlab.environments.transports.base import CommandResult
from ladderlab.lab import Lab, LabError, _Backend, learner_id, sh_magic


class Recorder(_Backend):
    def __init__(self):
        self.ran = []

    def run(self, host, command, timeout):
        self.ran.append((host, command))
        return CommandResult(command, 0, "out\n", "", host=host)


def conn(tmp_path, grading=False):
    return Connection(lab="sec-1-iptables-hardening", env_id="firewall-1", learner="ada",
                      params={"metrics_port": 9137}, expires=9e9,
                      hosts={"target": HostEntry("10.0.0.2", "target", "ssh-ed25519 AAAA", True),
                             "monitor": HostEntry("10.0.0.3", "probe", None, not grading)},
                      private_key="KEY", answers_path=str(tmp_path / "answers.json"), grading=grading)


def test_connection_file_round_trips_and_is_private(tmp_path, monkeypatch):
    c = conn(tmp_path)
    path = tmp_path / "c.json"
    c.write(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    monkeypatch.setenv("LADDERLAB_CONNECT", str(path))
    again = from_environment()
    assert again == c
    path.write_text(json.dumps({"version": 99}))
    with pytest.raises(ValueError, match="version 1"):
        from_environment()


def test_start_with_a_connection_file_checks_the_lab(tmp_path, monkeypatch):
    path = tmp_path / "c.json"
    conn(tmp_path).write(path)
    monkeypatch.setenv("LADDERLAB_CONNECT", str(path))
    lab = ladderlab.start("sec-1-iptables-hardening", show=False)
    assert lab.params == {"metrics_port": 9137} and lab.address("monitor") == "10.0.0.3"
    with pytest.raises(LabError, match="connected to lab 'sec-1-iptables-hardening', not 'x-1-y'"):
        ladderlab.start("x-1-y", show=False)


def test_sh_write_and_errors(tmp_path):
    rec = Recorder()
    lab = Lab("l", conn(tmp_path), rec)
    assert str(lab.sh("target", "id")) == "out\n"
    lab.write("target", "/etc/x.conf", "a'b\"c $(rm -rf /)")
    host, command = rec.ran[-1]
    assert host == "target" and "rm -rf" not in command  # the text travels base64-encoded
    with pytest.raises(LabError, match="absolute path"):
        lab.write("target", "x.conf", "a")
    with pytest.raises(LabError, match="more than"):
        lab.write("target", "/x", "a" * (300 * 1024))
    with pytest.raises(LabError, match="no host 'db'"):
        lab.sh("db", "true")


def test_probe_hosts_are_refused_during_grading(tmp_path):
    from ladderlab.lab import _SSHBackend

    lab = Lab("l", conn(tmp_path, grading=True), _SSHBackend(conn(tmp_path, grading=True)))
    with pytest.raises(LabError, match="monitor is a probe host"):
        lab.sh("monitor", "true")


def test_checks_do_nothing_in_the_notebook_at_grading_time(tmp_path, capsys):
    lab = Lab("l", conn(tmp_path, grading=True), Recorder())
    assert lab.check("default-deny") is False
    assert capsys.readouterr().out.strip() == "checks run by the grader, outside this notebook"


def test_answers_are_recorded_as_json(tmp_path):
    lab = Lab("l", conn(tmp_path), Recorder())
    lab.answer("errno", "ENOENT")
    lab.answer("port", 7)
    assert json.loads((tmp_path / "answers.json").read_text()) == {"errno": "ENOENT", "port": 7}
    with pytest.raises(LabError, match="string or an integer"):
        lab.answer("x", [1])


def test_learner_identity_precedence(monkeypatch):
    monkeypatch.delenv("LADDERLAB_LEARNER", raising=False)
    monkeypatch.setenv("JUPYTERHUB_USER", "hubuser")
    assert learner_id() == "hubuser"
    monkeypatch.setenv("LADDERLAB_LEARNER", "ada")
    assert learner_id() == "ada"
    assert learner_id("explicit") == "explicit"


def test_errors_show_as_one_line_and_status_panel_renders(tmp_path):
    assert LabError("fix this")._render_traceback_() == ["LabError: fix this"]
    lab = Lab("sec-1-iptables-hardening", conn(tmp_path), Recorder())
    assert "metrics_port=9137" in repr(lab) and "10.0.0.2" in repr(lab)
    html = lab._repr_html_()
    assert "<table>" in html and "9137" in html


def test_sh_returns_the_transports_result_shown_like_a_terminal(tmp_path):
    lab = Lab("l", conn(tmp_path), Recorder())
    result = lab.sh("target", "id")
    assert type(result) is CommandResult and result.host == "target" and result.ok and result.succeeded
    assert str(result) == "out\n" and repr(result) == "out"
    assert repr(CommandResult("c", 3, "", "boom\n", host="t")) == "boom\n[exit 3]"
    assert repr(CommandResult("c", 0, "", "", host="t")) == "[t: exit 0, no output]"
    assert repr(CommandResult("c", 2, "a\n", "b\n")) == "a\nb\n[exit 2]"
    assert not CommandResult("c", 2, "", "").ok


def test_live_check_prints_one_marked_line_per_check(tmp_path, capsys, monkeypatch):
    """``lab.check`` in a live session: the grading side's feedback, with the grading side's marks."""
    import ladderlab.grading.feedback as feedback

    seen = {}

    def fake_feedback(settings, env, lab_id, only, answers):
        seen.update(lab=lab_id, only=only, answers=answers)
        return [(True, "default-deny", "INPUT drops by default"), (False, "persisted", "no rules file")]

    monkeypatch.setattr(feedback, "live_feedback", fake_feedback)
    lab = Lab("sec-1-iptables-hardening", conn(tmp_path), Recorder(), live=("settings", "env"))
    lab.answer("errno", "EACCES")
    capsys.readouterr()
    assert lab.check("default-deny", "persisted") is False
    assert capsys.readouterr().out == "\u2713 default-deny: INPUT drops by default\n\u2717 persisted: no rules file\n"
    assert seen == {"lab": "sec-1-iptables-hardening", "only": ["default-deny", "persisted"],
                    "answers": {"errno": "EACCES"}}

    def broken(*args):
        raise ValueError("no visible check nope in this lab\nsecond line")

    monkeypatch.setattr(feedback, "live_feedback", broken)
    assert lab.check("nope") is False
    assert capsys.readouterr().out == "\u2717 could not run the checks: no visible check nope in this lab\n"


#: What the runner image gives the learner API: the standard library (paramiko is there too, but the API's
#: module level must not need it). Any other top-level import fails, as it would in the sandbox.
SANDBOX_IMPORTS = """
import sys

class OnlyTheStandardLibrary:
    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        if top in sys.stdlib_module_names or top == "ladderlab":
            return None
        raise ImportError(f"{name} is not in the sandbox")

sys.meta_path.insert(0, OnlyTheStandardLibrary())
import ladderlab
from ladderlab.lab import Lab, LabError, learner_id, sh_magic, start
from ladderlab.environments.connection import Connection
loaded = sorted(m for m in sys.modules if m.startswith("ladderlab"))
assert not [m for m in loaded if m.startswith("ladderlab.grading")], loaded
print(" ".join(loaded))
"""


def test_the_learner_api_imports_with_the_standard_library_only(root):
    r = subprocess.run([sys.executable, "-I", "-c", SANDBOX_IMPORTS], capture_output=True, text=True, cwd=root)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["ladderlab", "ladderlab.environments", "ladderlab.environments.connection",
                                "ladderlab.lab"]
    # the guard is real: the transports package (which needs the docker library) does not import there
    r = subprocess.run([sys.executable, "-I", "-c", SANDBOX_IMPORTS.replace(
        "import ladderlab\n", "import ladderlab\nimport ladderlab.environments.transports\n")],
        capture_output=True, text=True, cwd=root)
    assert r.returncode == 1 and "docker is not in the sandbox" in r.stderr


def test_sh_magic_needs_a_started_lab_and_a_host(monkeypatch):
    import ladderlab.lab as api

    monkeypatch.setattr(api, "_CURRENT", None)
    with pytest.raises(LabError, match="start the lab first"):
        sh_magic("target", "id")
