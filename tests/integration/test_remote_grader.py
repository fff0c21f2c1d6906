"""Graders on another machine (issue 15, docs/hub-design.md 2.9): the hub's grading service records, a grader
elsewhere judges, the hub's PostgreSQL between them.

The grading machine is a network namespace of this one (as the Swarm rig makes its nodes), joined to the hub by a
veth pair: it reaches the hub's PostgreSQL only over that link, with the grader role's password, and has its own
cache holding the course's seed secret and nothing else of the hub's (no gradebook, no evidence key). It shares
this machine's Docker engine through its socket (a real grading machine has its own). The hub's service runs with
no judge of its own (``LADDERLAB_LOCAL_JUDGES=0``): whatever is graded was judged over the link.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat
import pytest

from ladderlab.testing import private_cache, stop_process
from tests.integration.conftest import run

pytestmark = [pytest.mark.slow]

LAB = "sec-1-iptables-hardening"
NS = "llgrader"
HUB_IF, GRADER_IF = "llgh0", "llgg0"
HUB_ADDR, GRADER_ADDR = "10.251.77.1", "10.251.77.2"


def sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True, text=True)


@pytest.fixture(scope="module")
def link():
    """The grading machine: a network namespace with a veth to this one, and nothing else (no route out)."""
    subprocess.run(["ip", "netns", "del", NS], capture_output=True)
    subprocess.run(["ip", "link", "del", HUB_IF], capture_output=True)
    sh("ip", "netns", "add", NS)
    try:
        sh("ip", "link", "add", HUB_IF, "type", "veth", "peer", "name", GRADER_IF)
        sh("ip", "link", "set", GRADER_IF, "netns", NS)
        sh("ip", "addr", "add", f"{HUB_ADDR}/30", "dev", HUB_IF)
        sh("ip", "link", "set", HUB_IF, "up")
        sh("ip", "netns", "exec", NS, "ip", "addr", "add", f"{GRADER_ADDR}/30", "dev", GRADER_IF)
        sh("ip", "netns", "exec", NS, "ip", "link", "set", GRADER_IF, "up")
        sh("ip", "netns", "exec", NS, "ip", "link", "set", "lo", "up")
        yield
    finally:
        subprocess.run(["ip", "link", "del", HUB_IF], capture_output=True)
        subprocess.run(["ip", "netns", "del", NS], capture_output=True)


@pytest.fixture(scope="module")
def hub_db(link):
    """The hub's PostgreSQL, listening on the hub's end of the link for the grading machine only."""
    from ladderlab.hub import database

    if not database.installed():
        pytest.fail("PostgreSQL is not installed: `ladderlab setup --hub` installs it (make test runs it)")
    root = Path(tempfile.mkdtemp(prefix="ll-grader-hub-"))
    root.chmod(0o755)  # the postgres account walks to <root>/postgres
    db = database.HubDatabase(root / "postgres")
    try:
        # The graders' network holds the hub's own address, as a trainer's /24 would: the hub machine's own
        # processes (learners' among them) come from that address, and must still be refused.
        urls = db.start(print, database.GraderAccess(HUB_ADDR, f"{HUB_ADDR}/30"))
        yield db, urls, root
    finally:
        db.stop()
        shutil.rmtree(root, ignore_errors=True)


def in_grader_ns(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Python on the grading machine."""
    return subprocess.run(["ip", "netns", "exec", NS, sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=60)


PROBE = """
import json, os, sys
import pg8000.native as pg
url = json.loads(os.environ["PROBE"])
try:
    conn = pg.Connection(url["user"], password=url["password"], host=url["host"], port=5432,
                         database=url["database"], timeout=10)
except Exception as exc:
    print(json.dumps({"connected": False, "error": str(exc)})); sys.exit(0)
out = {"connected": True}
for name, sql in json.loads(os.environ["SQL"]).items():
    try:
        conn.run(sql); out[name] = "ok"
    except Exception as exc:
        out[name] = str(exc)
print(json.dumps(out))
"""


def probe(user: str, password: str, database: str, host: str = HUB_ADDR, sql: dict | None = None,
          where: str = "grader") -> dict:
    env = dict(os.environ, PROBE=json.dumps({"user": user, "password": password, "host": host,
                                             "database": database}), SQL=json.dumps(sql or {}))
    if where == "grader":
        r = in_grader_ns(PROBE, env)
    else:
        r = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout)


def test_the_grader_role_reaches_the_judging_table_and_nothing_else(hub_db):
    db, _, _ = hub_db
    password = db.grader_password_file.read_text().strip()
    inside = probe("grader", password, "judging", sql={
        "read": "SELECT count(*) FROM judging",
        "update": "UPDATE judging SET grader = grader, status = status, report = report WHERE false",
        "rewrite": "UPDATE judging SET notebook = '', student = 'bob' WHERE false",
        "temp": "CREATE TEMP TABLE planted (x int)",
        "insert": "INSERT INTO judging (key, lab, student, notebook, status, posted) "
                  "VALUES ('x', 'x', 'x', '', 'queued', 0)",
        "delete": "DELETE FROM judging",
        "create": "CREATE TABLE planted (x int)",
    })
    assert inside["connected"], inside
    assert (inside["read"], inside["update"]) == ("ok", "ok"), inside
    for refused in ("insert", "delete", "create", "rewrite", "temp"):
        assert "permission denied" in inside[refused], (refused, inside)
    for other in ("gradebook", "ladder", "queue", "postgres"):  # not the record, not the queue
        found = probe("grader", password, other)
        assert not found["connected"] and "pg_hba.conf" in found["error"], (other, found)
    wrong = probe("grader", "not-" + password, "judging")
    assert not wrong["connected"] and "password" in wrong["error"], wrong
    superuser = probe("ladder", "", "judging")  # the cluster's superuser trusts the socket only
    assert not superuser["connected"], superuser
    # From the hub machine itself, even with the password: its processes are learners', not graders.
    here = probe("grader", password, "judging", where="hub")
    assert not here["connected"] and "pg_hba.conf rejects connection" in here["error"], here


def test_a_hand_in_judged_on_the_grading_machine_is_recorded_on_the_hub(hub_db, settings, tmp_path, images):
    from nbgrader.api import Gradebook

    from ladderlab.course import load_course
    from ladderlab.course.labs import load_lab
    from ladderlab.grading.checks import load_graders
    from ladderlab.grading.selftest import with_decoy
    from ladderlab.service.judging import URL_ENV

    db, urls, root = hub_db
    hub_cache = private_cache(settings, root / "hub-cache").cache_dir
    grader_cache = root / "grader-cache"
    (grader_cache / "keys").mkdir(parents=True, mode=0o700)
    shutil.copy2(hub_cache / "keys" / "course-seed.key", grader_cache / "keys" / "course-seed.key")

    base = {k: v for k, v in os.environ.items() if not k.startswith("LADDERLAB_")}
    base["LADDERLAB_ROOT"] = str(settings.root)
    hub_env = dict(base, **urls, LADDERLAB_CACHE_DIR=str(hub_cache), LADDERLAB_WORKSPACE=str(root / "workspace"),
                   LADDERLAB_LOCAL_JUDGES="0", **{URL_ENV: db.sqlalchemy_url("judging")})
    grader_env = dict(base, LADDERLAB_CACHE_DIR=str(grader_cache))
    grader_env[URL_ENV] = run(hub_env, "hub", "database", "--grader-url", "--root", str(root)).stdout.strip()
    assert grader_env[URL_ENV].startswith("postgresql+pg8000://grader:") and HUB_ADDR in grader_env[URL_ENV]

    lab = load_lab(settings, load_course(settings.course_file), LAB, registry=load_graders(settings.root))
    decoy = next(d for d in lab.decoys if d.name == "not-persisted")
    points = {c.id: c.spec.points for c in lab.checks}
    notebooks = {"ada-remote": (lab.source, lab.max_score),
                 "bob-remote": (with_decoy(lab, decoy), lab.max_score - sum(points[c] for c in decoy.spec.must_fail))}

    hub_log, grader_log = tmp_path / "hub.log", tmp_path / "grader.log"
    with hub_log.open("w") as fh:
        hub = subprocess.Popen([sys.executable, "-m", "ladderlab.cli", "service", "run", "--workers", "2"],
                               env=hub_env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    with grader_log.open("w") as fh:
        grader = subprocess.Popen(["ip", "netns", "exec", NS, sys.executable, "-m", "ladderlab.cli", "service",
                                   "grader", "--workers", "2"],
                                  env=grader_env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        for learner, (nb, _) in notebooks.items():
            path = tmp_path / learner / f"{LAB}.ipynb"
            path.parent.mkdir()
            nbformat.write(nb, str(path))
            run(hub_env, "submit", LAB, "--notebook", str(path), "--learner", learner, "--no-wait")
        deadline = time.monotonic() + 600
        rows: dict = {}
        while time.monotonic() < deadline:
            status = json.loads(run(hub_env, "service", "status", "--json").stdout)
            rows = {s["student"]: s for s in status["submissions"]}
            if len(rows) == 2 and all(r["status"] in ("graded", "error") for r in rows.values()):
                break
            for proc, log in ((hub, hub_log), (grader, grader_log)):
                assert proc.poll() is None, log.read_text()[-3000:]
            time.sleep(2)
        logs = f"hub:\n{hub_log.read_text()[-3000:]}\ngrader:\n{grader_log.read_text()[-3000:]}"
        for learner, (_, expected) in notebooks.items():
            assert (rows[learner]["status"], rows[learner]["score"]) == ("graded", expected), (rows, logs)
            key = rows[learner]["key"]
            # Judged by the grading machine's process, not the hub's (which has no judge of its own).
            assert f"judged by {os.uname().nodename}:{grader.pid}" in (hub_cache / "service" / "logs" /
                                                                       f"{key}.log").read_text(), logs
        assert grader_log.read_text().count("grader: ") >= 4, logs
        # Recorded on the hub: nbgrader's gradebook in the hub's PostgreSQL, and the evidence.
        with Gradebook(urls["LADDERLAB_GRADEBOOK_URL"]) as gb:
            for learner, (_, expected) in notebooks.items():
                assert gb.find_submission(LAB, learner).score == expected
        entries = json.loads(run(hub_env, "ladder", "verify", "--json").stdout)
        assert entries.get("ok") is True and entries.get("entries", 0) >= 2, entries
        # The grading machine kept nothing of the hub's records.
        assert not (grader_cache / "service").exists()
        assert sorted(p.name for p in (grader_cache / "keys").iterdir()) == ["course-seed.key"]
        # A service manager's stop (SIGTERM) stops the grader in order.
        assert stop_process(grader) == 130, grader_log.read_text()[-2000:]
        assert "stopped after 2 judgement(s)" in grader_log.read_text(), grader_log.read_text()[-2000:]
    finally:
        stop_process(grader)
        stop_process(hub)
