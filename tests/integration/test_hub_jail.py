"""The hub's learner accounts and the jail their servers start in, on this machine's real kernel and accounts.

A throwaway tree stands in for the course checkout (labs with a solution, a ``.venv`` and ``src`` the server
needs), plus a listening unix socket standing in for Docker's, and two learner accounts. The jail is the real
``python -m ladderlab.hub.jail``; what the learner's code can do inside it is asked of the kernel.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from ladderlab.errors import UsageError
from ladderlab.hub import accounts

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("useradd"),
                                reason="needs root and useradd (the hub runs as root)")

SOLUTION_TEXT = "the expected answer is 42"
#: What runs inside: the machine's python (a learner cannot reach this checkout's venv outside the jail's view).
SYSTEM_PYTHON = "/usr/bin/python3"


@pytest.fixture(scope="module")
def tree():
    root = Path(tempfile.mkdtemp(prefix="ll-jail-"))
    root.chmod(0o755)
    checkout = root / "checkout"
    (checkout / "labs" / "lab-1" / "solutions").mkdir(parents=True)
    (checkout / "labs" / "lab-1" / "solutions" / "right.yaml").write_text(SOLUTION_TEXT)
    (checkout / ".venv" / "bin").mkdir(parents=True)
    (checkout / ".venv" / "bin" / "tool").write_text("#!/bin/sh\necho tool ran\n")
    (checkout / ".venv" / "bin" / "tool").chmod(0o755)
    (checkout / "src" / "pkg").mkdir(parents=True)
    (checkout / "src" / "pkg" / "code.py").write_text("print('code')\n")
    for d in [checkout, *checkout.rglob("*")]:
        if d.is_dir():
            d.chmod(0o755)
        else:
            d.chmod(0o644 if d.name != "tool" else 0o755)
    (root / "cache").mkdir(mode=0o755)
    (root / "cache" / "ladder.sqlite").write_text("every learner's record")
    (root / "cache" / "ladder.sqlite").chmod(0o644)
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(root / "engine.sock"))
    sock.listen(1)
    (root / "engine.sock").chmod(0o666)
    made = [accounts.ensure(learner, root / "home") for learner in ("jail-a", "jail-b")]
    (made[1].home / "notes.txt").write_text("b's notes")
    yield root, made
    sock.close()
    for learner in ("jail-a", "jail-b"):
        accounts.remove(learner)
    shutil.rmtree(root)


def jailed(root: Path, script: str, *, user: str = "ll-jail-a") -> subprocess.CompletedProcess:
    checkout = root / "checkout"
    argv = [sys.executable, "-m", "ladderlab.hub.jail", "--user", user, "--hide", str(checkout),
            "--hide", str(root / "engine.sock"), "--hide", str(root / "cache"), "--expose", str(checkout / ".venv"),
            "--expose", str(checkout / "src"), "--", SYSTEM_PYTHON, "-c", script]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


PROBE = r"""
import json, os, socket, sys
root = sys.argv[1] if len(sys.argv) > 1 else None
def attempt(fn):
    try:
        return "ok: " + str(fn())
    except OSError as exc:
        return type(exc).__name__
def connect(path):
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    return "connected"
def write(path):
    with open(path, "w") as f:
        f.write("x")
    return "written"
def setuid0():
    os.setuid(0)
    return "root again"
status = dict(l.split(":", 1) for l in open("/proc/self/status").read().splitlines() if ":" in l)
R = %r
print(json.dumps({
    "ids": [os.getuid(), os.geteuid(), os.getgid()], "home": os.environ["HOME"], "cwd": os.getcwd(),
    "no_new_privs": status["NoNewPrivs"].strip(),
    "solution": attempt(lambda: open(R + "/checkout/labs/lab-1/solutions/right.yaml").read()),
    "list_checkout": attempt(lambda: os.listdir(R + "/checkout")),
    "tool": attempt(lambda: open(R + "/checkout/.venv/bin/tool").read().strip().splitlines()[-1]),
    "code": attempt(lambda: open(R + "/checkout/src/pkg/code.py").read().strip()),
    "write_src": attempt(lambda: write(R + "/checkout/src/pkg/evil.py")),
    "mkdir_checkout": attempt(lambda: os.mkdir(R + "/checkout/labs2")),
    "engine": attempt(lambda: connect(R + "/engine.sock")),
    "cache": attempt(lambda: open(R + "/cache/ladder.sqlite").read()),
    "other_home": attempt(lambda: os.listdir(R + "/home/jail-b")),
    "own_home": attempt(lambda: write(os.environ["HOME"] + "/mine.txt")),
    "setuid0": attempt(setuid0),
}))
"""


def test_a_learner_account_is_prefixed_in_its_group_with_a_private_home(tree):
    root, (a, b) = tree
    assert (a.name, b.name) == ("ll-jail-a", "ll-jail-b")
    entry = pwd.getpwnam("ll-jail-a")
    assert entry.pw_shell == accounts.NOLOGIN and entry.pw_uid != 0
    assert (a.home.stat().st_mode & 0o777, a.home.stat().st_uid) == (0o700, a.uid)
    assert accounts.ensure("jail-a", root / "home") == a, "ensuring again changes nothing"


@pytest.mark.parametrize("learner", ["root", "Ada", "1ab", "a/b", "a b", "", "x" * 31, "ll-../x"])
def test_an_id_that_cannot_be_an_account_is_refused(learner):
    with pytest.raises(UsageError, match="not usable as an account"):
        accounts.account_name(learner if learner != "root" else "Root")
    assert accounts.account_name("root") == "ll-root", "a roster id 'root' runs as ll-root, never as root"


def test_inside_the_jail_the_learner_reaches_only_what_is_theirs(tree):
    import json

    root, (a, _) = tree
    r = jailed(root, PROBE % str(root))
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert got["ids"] == [a.uid, a.uid, a.gid] and got["home"] == str(a.home) and got["cwd"] == str(a.home)
    assert got["no_new_privs"] == "1"
    assert got["solution"] in {"PermissionError", "FileNotFoundError"}, "the course's solutions must be out of reach"
    assert got["list_checkout"] == "PermissionError"
    assert got["tool"] == "ok: echo tool ran" and got["code"] == "ok: print('code')", "the server needs these"
    assert got["write_src"] in {"OSError", "PermissionError"}, "read-only"
    assert got["mkdir_checkout"] in {"OSError", "PermissionError"}
    assert got["engine"] == "ConnectionRefusedError", "the engine's socket is /dev/null inside"
    assert got["cache"] == "PermissionError", "a hidden directory with nothing shown again is mode 000"
    assert got["other_home"] == "PermissionError"
    assert got["own_home"] == "ok: written"
    assert got["setuid0"] == "PermissionError"


def test_the_jail_leaves_the_machine_as_it_was(tree):
    root, _ = tree
    before = Path("/proc/self/mountinfo").read_text()
    assert jailed(root, "print('hi')").returncode == 0
    assert Path("/proc/self/mountinfo").read_text() == before
    assert str(root) not in before
    assert (root / "checkout" / "labs" / "lab-1" / "solutions" / "right.yaml").read_text() == SOLUTION_TEXT
    s = socket.socket(socket.AF_UNIX)
    s.connect(str(root / "engine.sock"))
    s.close()


def test_a_setuid_binary_gives_no_root_back(tree):
    """no_new_privs: even a setuid-root program (here a copy of python marked setuid) runs as the learner."""
    root, (a, _) = tree
    suid = root / "suid-python"
    shutil.copy(sys.executable, suid)
    os.chmod(suid, 0o4755)  # noqa: S103 - the point: a setuid-root program inside the jail
    try:
        r = subprocess.run([sys.executable, "-m", "ladderlab.hub.jail", "--user", "ll-jail-a", "--hide",
                            str(root / "checkout"), "--", str(suid), "-c", "import os; print(os.geteuid())"],
                           capture_output=True, text=True, timeout=60, check=False)
    finally:
        suid.unlink()
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(a.uid)


@pytest.mark.parametrize(("args", "says"), [
    (["--user", "root"], "is not a learner account"),
    (["--user", "nobody"], "is not a learner account"),
    (["--user", "ll-nosuch"], "no such account"),
    (["--user", "ll-jail-a", "--hide", "/nonexistent/x"], "not an existing absolute path"),
    (["--user", "ll-jail-a", "--expose", "/usr"], "not inside a hidden directory"),
])
def test_what_must_never_run_is_refused_and_nothing_starts(tree, args, says):
    root, _ = tree
    marker = root / "started"
    r = subprocess.run([sys.executable, "-m", "ladderlab.hub.jail", *args, "--", "touch", str(marker)],
                       capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 2 and says in r.stderr and "nothing was started" in r.stderr, r.stderr
    assert not marker.exists()


def test_a_nested_hide_is_refused(tree):
    root, _ = tree
    r = subprocess.run([sys.executable, "-m", "ladderlab.hub.jail", "--user", "ll-jail-a", "--hide",
                        str(root / "checkout"), "--hide", str(root / "checkout" / "labs"), "--", "true"],
                       capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 2 and "hide the outer one only" in r.stderr


def test_an_account_ladderlab_did_not_make_is_never_used_or_removed(tree):
    """An ll-<id> account outside the learners' group (made by someone else) is an error, not a learner."""
    subprocess.run(["useradd", "--system", "--no-create-home", "ll-jail-alien"], check=True, capture_output=True)
    try:
        with pytest.raises(accounts.AccountError, match="not a learner account"):
            accounts.remove("jail-alien")
        r = subprocess.run([sys.executable, "-m", "ladderlab.hub.jail", "--user", "ll-jail-alien", "--", "true"],
                           capture_output=True, text=True, timeout=60, check=False)
        assert r.returncode == 2 and "is not a learner account" in r.stderr
    finally:
        subprocess.run(["userdel", "ll-jail-alien"], check=True, capture_output=True)
