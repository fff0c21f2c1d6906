"""The learners' firewall in a network namespace of its own (nothing on this machine's netfilter changes): a
learner's process reaches the subnet the chain allows it and nothing else off the namespace; another learner
reaches nothing; root is not filtered; loopback stays open; rewriting the chain takes the access away."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from ladderlab.hub import accounts

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("nsenter"),
                                reason="needs root, unshare and nsenter")

DRIVER = textwrap.dedent(r"""
    import json, os, socket, subprocess, sys, time
    from ladderlab.environments import learnerguard
    cfg = json.loads(sys.argv[1])
    sh = lambda *a: subprocess.run(a, check=True, capture_output=True)
    sh("ip", "link", "set", "lo", "up")
    quiet = dict(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peer = subprocess.Popen(["unshare", "--net", "sleep", "120"], **quiet)
    time.sleep(0.3)
    pid = str(peer.pid)
    sh("ip", "link", "add", "llvA", "type", "veth", "peer", "name", "llvB")
    sh("ip", "link", "set", "llvB", "netns", pid)
    sh("ip", "addr", "add", "10.231.0.1/24", "dev", "llvA")
    sh("ip", "link", "set", "llvA", "up")
    for cmd in (["ip", "addr", "add", "10.231.0.2/24", "dev", "llvB"], ["ip", "link", "set", "llvB", "up"],
                ["ip", "link", "set", "lo", "up"]):
        sh("nsenter", "-t", pid, "-n", *cmd)
    server = subprocess.Popen(["nsenter", "-t", pid, "-n", sys.executable, "-c",
        "import socket\ns=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
        "s.bind(('0.0.0.0', 8099)); s.listen(50)\nwhile True: s.accept()[0].close()"], **quiet)
    local = socket.socket(); local.bind(("127.0.0.1", 0)); local.listen(50)
    time.sleep(0.5)

    def reach(uid, gid, addr, port):
        def drop():
            if uid:
                os.setgroups([gid]); os.setgid(gid); os.setuid(uid)
        code = ("import socket,sys\ns=socket.socket(); s.settimeout(3)\n"
                "try:\n s.connect((sys.argv[1], int(sys.argv[2]))); print('ok')\n"
                "except ConnectionRefusedError: print('refused')\nexcept OSError as e: print(type(e).__name__)")
        r = subprocess.run(["/usr/bin/python3", "-c", code, addr, str(port)], preexec_fn=drop, capture_output=True,
                           text=True, timeout=20)
        return r.stdout.strip() or r.stderr.strip()[-200:]

    a, b, gid = cfg["a"], cfg["b"], cfg["gid"]
    out = {"before": {"a": reach(a, gid, "10.231.0.2", 8099)}}
    learnerguard.apply(gid, {a: ["10.231.0.2/32"]})
    lport = local.getsockname()[1]
    out["allowed"] = {"a": reach(a, gid, "10.231.0.2", 8099), "b": reach(b, gid, "10.231.0.2", 8099),
                      "root": reach(0, 0, "10.231.0.2", 8099), "a_loopback": reach(a, gid, "127.0.0.1", lport),
                      "a_other_address": reach(a, gid, "10.231.0.9", 8099)}
    learnerguard.apply(gid, {a: ["10.231.0.2/32"]})
    out["rules_once"] = subprocess.run(["iptables", "-S", "OUTPUT"], capture_output=True, text=True).stdout.count(
        learnerguard.CHAIN)
    learnerguard.apply(gid, {})
    out["revoked"] = {"a": reach(a, gid, "10.231.0.2", 8099), "root": reach(0, 0, "10.231.0.2", 8099)}
    learnerguard.remove(gid)
    out["removed"] = {"a": reach(a, gid, "10.231.0.2", 8099)}
    server.kill(); peer.kill()
    print(json.dumps(out))
""")


@pytest.fixture(scope="module")
def learners():
    home = Path(tempfile.mkdtemp(prefix="ll-guard-"))
    made = [accounts.ensure(learner, home) for learner in ("guard-a", "guard-b")]
    yield made
    for learner in ("guard-a", "guard-b"):
        accounts.remove(learner)
    shutil.rmtree(home)


def test_a_learner_reaches_only_the_subnets_the_chain_allows_them(learners, tmp_path):
    a, b = learners
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    host_rules = subprocess.run(["iptables", "-S", "OUTPUT"], capture_output=True, text=True).stdout
    r = subprocess.run(["unshare", "--net", sys.executable, str(driver),
                        json.dumps({"a": a.uid, "b": b.uid, "gid": a.gid})],
                       capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout)
    assert got["before"] == {"a": "ok"}, "the namespace's path works before any rule"
    assert got["allowed"] == {"a": "ok", "b": "refused", "root": "ok", "a_loopback": "ok",
                              "a_other_address": "refused"}, got
    assert got["rules_once"] == 1, "applying again adds no second jump"
    assert got["revoked"] == {"a": "refused", "root": "ok"}
    assert got["removed"] == {"a": "ok"}
    assert subprocess.run(["iptables", "-S", "OUTPUT"], capture_output=True, text=True).stdout == host_rules, \
        "this machine's own rules are untouched"
