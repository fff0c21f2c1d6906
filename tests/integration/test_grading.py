"""Grading on real environments: fresh environment, sandbox, trusted checks, teardown.

A learner who did the work by hand scores 0; a notebook that games the check
cells scores 0; the sandbox has no Docker socket, no privileges, no route to the
host's services and no way into the probe hosts; a runaway notebook is stopped
and everything is torn down."""

from __future__ import annotations

import contextlib
import copy
import json
import socket
import threading

import pytest
from nbformat.v4 import new_code_cell

from ladderlab.course import load_course
from ladderlab.course.labs import load_lab, nbg
from ladderlab.environments import labels as L
from ladderlab.environments import runtime
from ladderlab.environments.hostguard import host_addresses
from ladderlab.grading.checks import load_graders
from ladderlab.grading.pipeline import grade
from ladderlab.grading.selftest import released

LAB = "sec-1-iptables-hardening"
HAND_SCRIPT = """set -e
iptables -A INPUT -i lo -j ACCEPT
iptables -A INPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
iptables -A INPUT -p tcp -m multiport --dports 22,80 -j ACCEPT
iptables -A INPUT -p tcp -s {monitor} --dport {metrics_port} -j ACCEPT
iptables -P INPUT DROP
netfilter-persistent save
"""


@pytest.fixture(scope="module")
def lab(settings):
    return load_lab(settings, load_course(settings.course_file), LAB, registry=load_graders(settings.root))


def no_leftovers(client, student):
    flt = {"label": [f"{L.MANAGED}=1", f"{L.LEARNER}={student}"]}
    return client.api.containers(all=True, filters=flt) == [] and client.api.networks(filters=flt) == []


def outputs_text(nb, marker):
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            text = out.get("text", "") or out.get("data", {}).get("text/plain", "")
            if marker in text:
                return text
    raise AssertionError(f"no output with {marker!r}")


def test_work_done_by_hand_scores_zero(images, client, settings, lab):
    student = "by-hand"
    live = runtime.up(settings, lab.environment, client=client, learner=student, lab=LAB,
                      course_id=lab.course.id)
    try:
        hosts = live.record.hosts
        assert live.host("target").run(HAND_SCRIPT.format(monitor=hosts["monitor"].address, **live.params)).succeeded
        report, _ = grade(settings, client, lab, released(lab), student)
        assert report.score == 0 and not report.passed
        assert report.env_id != live.id  # graded on a fresh environment with the same seed
        assert set(report.failed()) == set(lab.spec.checks)
        assert live.host("target").run("iptables -S INPUT").stdout.startswith("-P INPUT DROP")  # untouched
    finally:
        live.down()
    assert no_leftovers(client, student)


def test_gaming_the_check_cells_scores_zero(images, client, settings, lab):
    """No real work, and every trick on the check cells: edited code, metadata, fake output, a
    redefined lab.check, stderr noise, a deleted cell, a forged grade cell."""
    nb = released(lab)
    tricks = new_code_cell(
        "import sys\n"
        "print('\\u2713 default-deny: target: INPUT drops what no rule allows')\n"
        "print('CheckFailed', file=sys.stderr)\n"
        "lab.check = lambda *a: print('\\u2713 passed')\n"
        "10")
    nb.cells.insert(2, tricks)
    for cell in list(nb.cells):
        gid = nbg(cell).get("grade_id", "")
        if gid == "check-default-deny":
            cell.source = "print('ok')\n2"
            cell.metadata["nbgrader"]["points"] = 10
            cell.metadata["tags"] = ["passed"]
        elif gid == "check-rules-persisted":
            nb.cells.remove(cell)
        elif gid == "check-loopback-allowed":
            cell.cell_type = "markdown"
            cell.pop("outputs", None)
            cell.pop("execution_count", None)
    forged = new_code_cell("2")
    forged.metadata["nbgrader"] = {"grade": True, "grade_id": "check-bonus", "points": 5, "solution": False,
                                   "locked": True, "schema_version": 3}
    nb.cells.append(forged)
    report, graded = grade(settings, client, lab, nb, "gamer")
    assert report.score == 0 and report.max_score == 10
    assert {c.id for c in report.checks} == set(lab.spec.checks)
    grade_ids = [nbg(c).get("grade_id") for c in graded.cells if nbg(c).get("grade")]
    assert "check-bonus" not in grade_ids and "check-rules-persisted" in grade_ids
    assert no_leftovers(client, "gamer")


def test_the_sandbox_is_a_sandbox(images, client, settings, lab):
    # A service on the grader's host, bound to 127.0.0.1 as everything ladderlab serves.
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    port = server.getsockname()[1]
    def serve() -> None:
        with contextlib.suppress(OSError):  # closed when the test ends
            server.accept()

    threading.Thread(target=serve, daemon=True).start()
    addresses = [a for a in host_addresses(client) if ":" not in a]  # every IPv4 address of the grading host
    probe = (
        "import json, os, socket, subprocess\n"
        "def reach(host, port):\n"
        "    s = socket.socket(); s.settimeout(1.5)\n"
        "    try:\n"
        "        s.connect((host, port)); return True\n"
        "    except OSError:\n"
        "        return False\n"
        "key = json.load(open(os.environ['LADDERLAB_CONNECT']))['private_key']\n"
        "import paramiko, io\n"
        "def ssh(host):\n"
        "    c = paramiko.SSHClient(); c.set_missing_host_key_policy(paramiko.AutoAddPolicy())\n"
        "    try:\n"
        "        c.connect(host, username='root', pkey=paramiko.Ed25519Key.from_private_key(io.StringIO(key)),\n"
        "                  timeout=5, look_for_keys=False, allow_agent=False); return True\n"
        "    except Exception:\n"
        "        return False\n"
        "status = open('/proc/self/status').read()\n"
        "cap = [l.split()[1] for l in status.splitlines() if l.startswith('CapEff')][0]\n"
        f"facts = dict(uid=os.getuid(), cap=cap, docker_sock=os.path.exists('/var/run/docker.sock'),\n"
        f"  host_service=any(reach(a, {port}) for a in {addresses!r}), internet=reach('1.1.1.1', 443),\n"
        "  ssh_target=ssh('target'), ssh_monitor=ssh('monitor'), ssh_outsider=ssh('outsider'),\n"
        "  checks=os.path.exists('/work/lab.yaml') or os.path.isdir('/opt/ladderlab/graders'))\n"
        "print('FACTS ' + json.dumps(facts))\n")
    nb = copy.deepcopy(lab.source)
    nb.cells.insert(2, new_code_cell(probe))
    report, graded = grade(settings, client, lab, nb, "sandboxed")
    server.close()
    facts = json.loads(outputs_text(graded, "FACTS ").split("FACTS ", 1)[1])
    assert facts == {"uid": 1000, "cap": "0000000000000000", "docker_sock": False, "host_service": False,
                     "internet": False, "ssh_target": True, "ssh_monitor": False, "ssh_outsider": False,
                     "checks": False}
    assert report.score == 10  # and the real work in the same notebook still counts
    assert no_leftovers(client, "sandboxed")


def test_a_runaway_notebook_is_stopped_and_torn_down(images, client, settings, lab):
    limits = lab.spec.sandbox.model_copy(update={"timeout": 8.0, "cell_timeout": 60.0})
    slow = copy.copy(lab)
    slow.spec = lab.spec.model_copy(update={"sandbox": limits})
    nb = copy.deepcopy(lab.source)
    nb.cells.insert(2, new_code_cell("import time\nwhile True:\n    time.sleep(1)"))
    report, _ = grade(settings, client, slow, nb, "runaway")
    assert any("ran past 8s" in p for p in report.problems)
    assert report.score == 0  # the work after the runaway cell never ran
    assert no_leftovers(client, "runaway")
