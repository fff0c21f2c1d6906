"""The trainer's loop under faults, through the CLI a trainer types (issue: "grading that survives daemon
faults"):

* the Docker daemon restarted in the middle of ``cohort grade``: the run retries, no submission is lost, none
  is counted twice, nothing labelled is left on the engine;
* a lab host that never becomes ready: that submission is an error (never a failure) whose log file holds the
  host's logs; the others grade;
* ``cohort grade`` killed with SIGKILL and run again: it picks up where it stopped, and nothing of the killed
  run's grading environment outlives it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

import nbformat
import pytest

from tests.integration.conftest import leftovers_for_learner, run

LAB = "sec-1-iptables-hardening"
pytestmark = [pytest.mark.slow]


def start(env, *args, log: Path) -> subprocess.Popen:
    """``ladderlab ARGS`` in its own session (so it can be killed whole), output to ``log``."""
    with log.open("w") as fh:
        return subprocess.Popen([sys.executable, "-m", "ladderlab.cli", *args], env=env, stdout=fh,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)


def ledger_rows(cache: Path) -> dict[str, dict]:
    """The grading ledger as the trainer's status reads it: learner -> row."""
    db = cache / "service" / "ledger.db"
    if not db.exists():
        return {}
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        return {r["student"]: dict(r) for r in conn.execute("SELECT * FROM submissions")}


def running_gradings(client, cache: Path) -> list[str]:
    """Learners the ledger says are being graded whose environment has a running container."""
    grading = [r["student"] for r in ledger_rows(cache).values() if r["status"] == "grading"]
    return [s for s in grading
            if client.api.containers(filters={"label": [f"io.ladderlab.learner={s}"], "status": "running"})]


def wait_until(what: str, predicate, timeout: float, proc: subprocess.Popen | None = None, log: Path | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            tail = log.read_text()[-3000:] if log else ""
            pytest.fail(f"{what}: the run ended first (exit {proc.returncode}):\n{tail}")
        time.sleep(0.5)
    pytest.fail(f"{what}: not within {timeout:.0f} s:\n{log.read_text()[-3000:] if log else ''}")


@pytest.fixture(scope="module")
def lab(settings):
    from ladderlab.course import load_course
    from ladderlab.course.labs import load_lab
    from ladderlab.grading.checks import load_graders

    return load_lab(settings, load_course(settings.course_file), LAB, registry=load_graders(settings.root))


def handins(lab, tmp_path: Path, names: list[str]) -> dict[str, tuple[Path, float]]:
    """``name -> (notebook, expected score)``: ``sol*`` the source solution, ``decoy*`` the not-persisted
    decoy, ``untouched*`` the released notebook."""
    from ladderlab.grading.selftest import released, with_decoy

    points = {c.id: c.spec.points for c in lab.checks}
    decoy = next(d for d in lab.decoys if d.name == "not-persisted")
    out = {}
    for name in names:
        if name.startswith("sol"):
            nb, expected = lab.source, lab.max_score
        elif name.startswith("decoy"):
            nb, expected = with_decoy(lab, decoy), lab.max_score - sum(points[c] for c in decoy.spec.must_fail)
        else:
            nb, expected = released(lab), 0
        path = tmp_path / "handins" / name / f"{LAB}.ipynb"
        path.parent.mkdir(parents=True)
        nbformat.write(nb, str(path))
        out[name] = (path, expected)
    return out


def cohort_of(env, tmp_path: Path, notebooks: dict[str, tuple[Path, float]], tag: str) -> dict[str, float]:
    """A cohort ``faults`` with one learner per notebook, the lab released and every notebook handed in;
    learner id -> expected score."""
    roster = tmp_path / "roster.csv"
    roster.write_text("id,name,email,team\n" + "".join(
        f"{name}-{tag},Learner {i},,\n" for i, name in enumerate(notebooks)))
    run(env, "cohort", "create", "faults")
    run(env, "cohort", "add", "faults", "--roster", str(roster))
    run(env, "cohort", "release", "faults", LAB)
    for name, (path, _) in notebooks.items():
        run(env, "submit", LAB, "--notebook", str(path), "--learner", f"{name}-{tag}", "--no-wait")
    return {f"{name}-{tag}": expected for name, (_, expected) in notebooks.items()}


def assert_counted_once(env, cache: Path, expected: dict[str, float | None]) -> dict[str, dict]:
    """Every learner: one ledger row graded with the expected score (None: an error, nothing recorded), one
    gradebook submission with that score, and in the evidence record exactly as many entries as gradings."""
    from nbgrader.api import Gradebook, MissingEntry

    rows = ledger_rows(cache)
    status = json.loads(run(env, "cohort", "status", "faults", "--lab", LAB, "--json").stdout)
    state = {s["learner"]: s for s in status["states"]}
    with Gradebook(f"sqlite:///{cache / 'service' / 'course' / 'gradebook.db'}") as gb:
        for learner, score in expected.items():
            row = rows[learner]
            if score is None:
                assert row["status"] == "error", row
                assert state[learner]["state"] == "error", state[learner]
                with pytest.raises(MissingEntry):
                    gb.find_submission(LAB, learner)
            else:
                assert (row["status"], row["score"]) == ("graded", score), (row, _log_tail(row))
                assert (state[learner]["state"], state[learner]["score"]) == ("graded", score), state[learner]
                assert gb.find_submission(LAB, learner).score == score
    ladder = json.loads(run(env, "ladder", "--cohort", "faults", "--json").stdout)
    entries = _evidence(cache)
    for learner, score in expected.items():
        mine = [e for e in entries if e["learner"] == learner]
        if score is None:
            assert mine == [], mine
        else:
            assert len(mine) == 1, mine  # one grading recorded, whatever the attempts
            assert mine[0]["score"] == score
    assert {r["learner"] for r in ladder["learners"]} >= {k for k, v in expected.items() if v is not None}
    return rows


def _log_tail(row: dict, chars: int = 6000) -> str:
    """The end of a submission's grading log: what each attempt met (a wrong score is diagnosed from it)."""
    try:
        return Path(row["log"]).read_text()[-chars:]
    except (KeyError, TypeError, OSError) as exc:
        return f"(no log: {exc})"


def _evidence(cache: Path) -> list[dict]:
    import dataclasses

    from ladderlab.config import Settings
    from ladderlab.ladder.store import Store

    settings = dataclasses.replace(Settings.from_env(), cache_dir=cache)
    return [{"learner": e.evidence.learner, "score": e.evidence.score} for e in Store.open(settings).entries()
            if e.evidence.lab == LAB]


def assert_nothing_left(client, learners):
    for learner in learners:
        assert not leftovers_for_learner(client, learner), learner


def restart_dockerd(settings) -> float:
    """Stop the running dockerd (SIGTERM: it stops every container, as a host reboot or an upgrade would) and
    start it again the way ``ladderlab setup`` does; the seconds the engine was gone."""
    from ladderlab.environments.engine import start_dockerd

    if shutil.which("systemctl") and subprocess.run(["systemctl", "is-active", "--quiet", "docker"]).returncode == 0:
        pytest.skip("dockerd is systemd's (it would restart it itself): this test restarts a dockerd ladderlab started")
    pids = subprocess.run(["pidof", "dockerd"], capture_output=True, text=True).stdout.split()
    assert len(pids) == 1, f"expected one dockerd, found {pids}"
    pid = int(pids[0])
    gone = time.monotonic()
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 60
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not Path(f"/proc/{pid}").exists(), "dockerd did not stop within 60 s"
    start_dockerd(settings, say=lambda _m: None)
    return time.monotonic() - gone


def test_the_daemon_restarted_mid_grade_loses_and_doubles_nothing(trainer, settings, client, images, lab,
                                                                  tmp_path):
    env, cache = trainer
    tag = uuid.uuid4().hex[:5]
    expected = cohort_of(env, tmp_path, handins(lab, tmp_path, ["sol-a", "sol-b", "decoy", "untouched"]), tag)
    log = tmp_path / "grade.log"
    proc = start(env, "cohort", "grade", "faults", LAB, "--jobs", "2", log=log)
    try:
        # restart once a grading is under way: its environment's hosts are running
        wait_until("a grading under way", lambda: running_gradings(client, cache), 300, proc, log)
        outage = restart_dockerd(settings)
        assert proc.wait(timeout=1200) == 0, log.read_text()[-4000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    rows = assert_counted_once(env, cache, expected)
    assert any(r["attempts"] > 1 for r in rows.values()), ("the restart interrupted no grading", outage, rows)
    assert_nothing_left(client, expected)


def test_a_host_that_never_becomes_ready_is_an_error_with_its_logs(trainer, settings, client, images, lab, tmp_path):
    """A copy of the course whose firewall target, for one learner's seed, waits for a readiness command that
    never succeeds (the same images: an image's tag does not depend on env.yaml)."""
    from ladderlab.course import load_course
    from ladderlab.course.seeds import course_secret, derive_seed, render_params
    from ladderlab.environments.spec import load_env_spec

    env, cache = trainer
    tag = uuid.uuid4().hex[:5]
    root = tmp_path / "course"
    shutil.copytree(settings.root, root, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", ".venv", ".cache", "workspace", "__pycache__", "*.egg-info"))
    course = load_course(settings.course_file)
    spec = load_env_spec(settings.root / "environments" / "firewall")
    port = {}
    for name in ("sol-a", "sol-stuck", "untouched"):
        seed = derive_seed(course.id, f"{name}-{tag}", LAB, secret=course_secret(settings))
        port[name] = render_params(spec.params, seed, secret=course_secret(settings))["unwanted_port"]
    if port["sol-stuck"] in (port["sol-a"], port["untouched"]):
        pytest.skip("two learners drew the same port (one in a thousand): the stuck host cannot be singled out")
    env_yaml = root / "environments" / "firewall" / "env.yaml"
    text = env_yaml.read_text()
    needle = '      - port: "{unwanted_port}"\n'
    assert needle in text
    never = f'      - command: "test {{unwanted_port}} -ne {port["sol-stuck"]}"\n'
    env_yaml.write_text(text.replace(needle, needle + never, 1))
    env.update(LADDERLAB_ROOT=str(root), LADDERLAB_READY_TIMEOUT="8",
               LADDERLAB_RETRY_DELAY="0.5")  # its retries fail the same way: no need to wait them out

    expected = cohort_of(env, tmp_path, handins(lab, tmp_path, ["sol-a", "sol-stuck", "untouched"]), tag)
    r = run(env, "cohort", "grade", "faults", LAB, "--jobs", "2", ok=False)
    assert r.returncode == 4, r.stderr[-3000:]  # some submission could not be graded
    stuck = f"sol-stuck-{tag}"
    expected[stuck] = None
    rows = assert_counted_once(env, cache, expected)
    assert rows[stuck]["attempts"] == 3  # retried, then given up as an error
    assert "could not be graded" in r.stderr and stuck in r.stdout
    text = Path(rows[stuck]["log"]).read_text()
    assert "did not become ready" in text or "ready" in rows[stuck]["error"], rows[stuck]
    assert "last log lines of target" in text, text[-3000:]
    assert_nothing_left(client, expected)


def test_a_killed_cohort_grade_picks_up_where_it_stopped(trainer, settings, client, images, lab, tmp_path):
    env, cache = trainer
    tag = uuid.uuid4().hex[:5]
    expected = cohort_of(env, tmp_path, handins(lab, tmp_path, ["sol-a", "decoy", "sol-b", "untouched"]), tag)
    log = tmp_path / "grade.log"
    proc = start(env, "cohort", "grade", "faults", LAB, "--jobs", "1", log=log)
    try:
        def one_done_one_under_way():
            return (any(r["status"] == "graded" for r in ledger_rows(cache).values())
                    and running_gradings(client, cache))

        wait_until("one graded and the next under way", one_done_one_under_way, 600, proc, log)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    before = ledger_rows(cache)
    killed = [s for s, r in before.items() if r["status"] == "grading"]
    assert len(killed) == 1, before
    assert client.api.containers(filters={"label": [f"io.ladderlab.learner={killed[0]}"]}), \
        "the kill came after the grading's environment was gone: it tested nothing"

    r = run(env, "cohort", "grade", "faults", LAB, "--jobs", "2")
    picked = next(line for line in r.stderr.splitlines() if "picked up again" in line)
    assert killed[0] in picked, picked  # with the two it had not started
    rows = assert_counted_once(env, cache, expected)
    for learner, row in rows.items():
        was = before[learner]
        if was["status"] == "graded":  # graded before the kill: not graded again
            assert (row["attempts"], row["updated_at"]) == (was["attempts"], was["updated_at"]), learner
    assert rows[killed[0]]["attempts"] == before[killed[0]]["attempts"] + 1
    assert_nothing_left(client, expected)
