"""The engineer's loop without a browser: the workspace JupyterLab serves holds no answers, and a hand-in
through nbgrader's exchange is graded on submit, recorded, and answered with feedback.

Every process here is the real one (``ladderlab lab``, ``ladderlab submit``, nbgrader's exchange, the
grading service, the engine); each test has its own cache (queue, ledger, gradebook, evidence) and
workspace, with the machine's course key so seeds are the course's.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import nbformat
import pytest

from ladderlab.testing import private_cache
from tests.integration.conftest import leftovers_for_learner

LAB = "sec-1-iptables-hardening"
pytestmark = [pytest.mark.slow]


@pytest.fixture
def home(tmp_path, settings):
    cache = private_cache(settings, tmp_path / "cache").cache_dir
    env = dict(os.environ, LADDERLAB_CACHE_DIR=str(cache), LADDERLAB_WORKSPACE=str(tmp_path / "workspace"),
               LADDERLAB_ROOT=str(settings.root))
    env.pop("LADDERLAB_LEARNER", None)
    return env, cache, tmp_path / "workspace"


def ladderlab(env, *args, timeout=900):
    return subprocess.run([sys.executable, "-m", "ladderlab.cli", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_solution_and_decoy_handed_in_are_graded_recorded_and_answered(home, settings, images, client, tmp_path):
    from ladderlab.course import load_course
    from ladderlab.course.labs import load_lab
    from ladderlab.grading.checks import load_graders
    from ladderlab.grading.selftest import with_decoy

    env, cache, workspace = home
    lab = load_lab(settings, load_course(settings.course_file), LAB, registry=load_graders(settings.root))
    good, bad = f"ok-{uuid.uuid4().hex[:6]}", f"decoy-{uuid.uuid4().hex[:6]}"

    r = ladderlab(env, "submit", LAB, "--notebook", str(lab.notebook_path), "--learner", good, "--json")
    assert r.returncode == 0, r.stderr[-3000:]
    sub = json.loads(r.stdout)
    assert (sub["status"], sub["score"], sub["max_score"], sub["passed"]) == ("graded", 10, 10, True)
    assert "grading here" in r.stderr and "checking the environment" in r.stderr  # progress while it ran
    hidden = {c.id for c in lab.checks if c.hidden}
    for check in sub["checks"]:
        assert check["hidden"] == (check["id"] in hidden)
        if check["hidden"]:
            assert check["feedback"] == ""  # never the logic or expected values of a hidden check

    decoy = next(d for d in lab.decoys if d.name == "metrics-open-to-all")
    nb_path = tmp_path / f"{LAB}.ipynb"
    nbformat.write(with_decoy(lab, decoy), str(nb_path))
    r = ladderlab(env, "submit", LAB, "--notebook", str(nb_path), "--learner", bad)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "not passed" in r.stdout.splitlines()[0]
    failed_lines = [line for line in r.stdout.splitlines() if line.strip().startswith("✗")]
    assert sorted(line.split(":")[0].split()[-1] for line in failed_lines) == sorted(decoy.spec.must_fail)

    # nbgrader's gradebook holds both scores (one trusted writer: the service)
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{cache / 'service' / 'course' / 'gradebook.db'}") as gb:
        assert gb.find_submission(LAB, good).score == 10
        assert gb.find_submission(LAB, bad).score < 10

    # the ladder moved for the solution only, each submission recorded once
    levels = json.loads(ladderlab(env, "ladder", "--json").stdout)
    by_learner = {row["learner"]: row for row in levels["learners"]}
    assert _level(by_learner, good, "security") == 1
    assert _level(by_learner, bad, "security") == 0
    status = json.loads(ladderlab(env, "service", "status", "--json").stdout)
    assert status["running"] is False
    assert sorted(s["student"] for s in status["submissions"]) == sorted([good, bad])

    # Fetch Feedback (nbgrader's own) brings the score home; hidden checks by title only
    fetched = _fetch_feedback(cache, workspace, good)
    text = _visible_text(fetched.read_text())
    assert f"{LAB} (Score: 10.0 / 10.0)" in text
    for check in lab.checks:
        if check.hidden:
            assert f"{check.id}: {check.spec.title} (hidden check)" in text
    assert not leftovers_for_learner(client, good) and not leftovers_for_learner(client, bad)


def _visible_text(page):
    import html
    import re

    page = re.sub(r"<(style|script)\b.*?</\1>", " ", page, flags=re.S)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page)).split())


def _level(rows, learner, track):
    return rows[learner]["levels"][track]


def _fetch_feedback(cache, workspace, learner):
    from nbgrader.auth import Authenticator
    from nbgrader.coursedir import CourseDirectory
    from nbgrader.exchange.default import ExchangeFetchFeedback
    from traitlets.config import Config

    c = Config()
    c.CourseDirectory.course_id = "ladderlab-sre"
    c.CourseDirectory.assignment_id = LAB
    c.CourseDirectory.student_id = learner
    c.Exchange.root = str(cache / "service" / "exchange")
    c.Exchange.cache = str(cache / "service" / "learner-cache" / learner)  # each learner has their own
    c.Exchange.assignment_dir = str(workspace)
    ExchangeFetchFeedback(coursedir=CourseDirectory(config=c), authenticator=Authenticator(config=c), config=c).start()
    pages = sorted((workspace / LAB / "feedback").glob("*/*.html"))
    assert pages, "nbgrader fetched no feedback"
    return pages[-1]


# --- the workspace JupyterLab serves ----------------------------------------------------------------------


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url, token):
    req = urllib.request.Request(url, headers={"Authorization": f"token {token}"})  # noqa: S310 - loopback
    with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 - loopback URL built here
        return resp.status, resp.read()


FORBIDDEN_TEXT = ("### BEGIN SOLUTION", "### BEGIN HIDDEN TESTS", "must_fail:", "violates:")


def _secrets(settings):
    """Every solution block and hidden check cell of the course's source notebooks, as text."""
    import re

    out = []
    for nb_path in (settings.root / "labs").glob("*/*.ipynb"):
        for cell in nbformat.read(str(nb_path), as_version=4).cells:
            out += [m.strip() for m in re.findall(r"### BEGIN SOLUTION\n(.*?)### END SOLUTION", cell.source, re.S)
                    if len(m.strip()) > 20]
            out += [m.strip() for m in re.findall(r"### BEGIN HIDDEN TESTS\n(.*?)### END HIDDEN TESTS", cell.source,
                                                  re.S)]
    assert out
    return out
FORBIDDEN_NAMES = {"lab.yaml", "decoys", "graders", "course.yaml", "README.md", "solutions", "environments",
                   "nbgrader_config.py", "gradebook.db"}


def test_the_workspace_holds_released_notebooks_only(home, settings, tmp_path):
    env, _cache, _workspace = home
    port, token = _free_port(), uuid.uuid4().hex
    env = dict(env, LADDERLAB_LEARNER="walker")
    log = (tmp_path / "lab.log").open("w")  # a file, not a pipe: JupyterLab logs every request
    # Ctrl-C must reach it as in a terminal, even when this test itself runs in the background (a shell's
    # background job inherits SIGINT ignored, and so would every child).
    proc = subprocess.Popen([sys.executable, "-m", "ladderlab.cli", "lab", "--port", str(port), "--token", token],
                            env=env, stdout=log, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                _get(f"{base}/api/status", token)
                break
            except (urllib.error.URLError, ConnectionError):
                assert proc.poll() is None, (tmp_path / "lab.log").read_text()[-3000:]
                assert time.monotonic() < deadline, "JupyterLab did not answer"
                time.sleep(0.5)
        seen, notebooks = [], []
        secrets = _secrets(settings)

        def walk(path):
            _, body = _get(f"{base}/api/contents/{path}", token)
            model = json.loads(body)
            for item in model["content"]:
                seen.append(item["name"])
                if item["type"] == "directory":
                    walk(item["path"])
                else:
                    _, raw = _get(f"{base}/api/contents/{item['path']}?content=1", token)
                    content = json.loads(raw)["content"]
                    text = "\n".join(c["source"] for c in content["cells"]) if item["type"] == "notebook" \
                        else str(content)
                    assert not any(bad in text for bad in FORBIDDEN_TEXT), item["path"]
                    assert not any(secret in text for secret in secrets), item["path"]
                    notebooks.append(item["path"])

        walk("")
        published = [lab.id for lab in _course(settings).labs if lab.status == "published"]
        assert sorted(notebooks) == sorted(["start-here.ipynb", *(f"{x}/{x}.ipynb" for x in published)])
        assert not FORBIDDEN_NAMES & set(seen)
        # nothing above the workspace is reachable
        for path in ("..", "../course.yaml", "%2E%2E/course.yaml", "../labs"):
            for prefix in ("/api/contents/", "/files/"):
                try:
                    status, _ = _get(f"{base}{prefix}{path}", token)
                except urllib.error.HTTPError as exc:
                    status = exc.code
                assert status in (400, 403, 404), (prefix, path, status)
        # the instructor tools are off: no formgrader or course list server extension answers
        for url in ("/formgrader", "/formgrader/api/assignments", "/formgrader/api/courses"):
            try:
                status, _ = _get(f"{base}{url}", token)
            except urllib.error.HTTPError as exc:
                status = exc.code
            assert status == 404, url
        status, body = _get(f"{base}/assignments?course_id=ladderlab-sre", token)  # the learner's list answers
        assert status == 200 and json.loads(body)["success"], body[:300]
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # JupyterLab too: it is in the same session
            proc.wait()
        log.close()
    output = (tmp_path / "lab.log").read_text()
    assert "grading service running" in output and "stopping the grading service" in output, output[-2000:]


def _course(settings):
    from ladderlab.course import load_course

    return load_course(settings.course_file)


def test_a_lab_changed_after_the_learner_started_arrives_beside_their_work(home, settings, tmp_path):
    from ladderlab.config import Settings
    from ladderlab.service.handin import ensure_released
    from ladderlab.service.paths import ServicePaths
    from ladderlab.service.workspace import fill

    _env, cache, workspace = home
    course_copy = tmp_path / "course"
    shutil.copytree(settings.root, course_copy, ignore=shutil.ignore_patterns(".venv", ".cache", "workspace", ".git"))
    mine = dataclasses.replace(Settings.from_env(course_copy), cache_dir=cache)
    paths = ServicePaths.of(mine, workspace)
    course = ensure_released(mine, paths)
    ids = [lab.id for lab in course.labs if lab.status == "published"]
    fill(paths, course.id, "changer", ids, lambda _m: None)
    work = workspace / LAB / f"{LAB}.ipynb"
    work.write_text(work.read_text().replace("# YOUR CODE HERE", "# my work", 1))
    mine_before = work.read_text()
    source = course_copy / "labs" / LAB / f"{LAB}.ipynb"
    nb = nbformat.read(str(source), as_version=4)
    nb.cells[0].source += "\n\n(Updated: clearer wording.)"
    nbformat.write(nb, str(source))
    ensure_released(mine, paths)
    outcome = fill(paths, course.id, "changer", ids, lambda _m: None)
    assert outcome[LAB].startswith("changed since you started")
    assert work.read_text() == mine_before
    beside = list(work.parent.glob(f"{LAB}.updated-*.ipynb"))
    assert len(beside) == 1 and "clearer wording" in beside[0].read_text()
    untouched = workspace / "net-2-dns-authoritative-zone"
    assert outcome["net-2-dns-authoritative-zone"] == "kept" and untouched.is_dir()
    assert Path(workspace / "start-here.ipynb").exists() is False  # fill() was not asked for it here


def test_lab_submit_from_the_notebook_api(home, settings, images, client, monkeypatch):
    """``lab.submit()`` as a learner's kernel calls it: hand-in through the exchange, graded, the result back."""
    import ladderlab
    from ladderlab.course import load_course
    from ladderlab.course.labs import load_lab
    from ladderlab.grading.checks import load_graders

    env, _cache, _workspace = home
    for name in ("LADDERLAB_CACHE_DIR", "LADDERLAB_WORKSPACE", "LADDERLAB_ROOT"):
        monkeypatch.setenv(name, env[name])
    source = load_lab(settings, load_course(settings.course_file), LAB, registry=load_graders(settings.root))
    learner = f"kernel-{uuid.uuid4().hex[:6]}"
    lab = ladderlab.start(LAB, learner=learner)
    try:
        sub = lab.submit(str(source.notebook_path))
    finally:
        lab.stop()
    assert (sub.status, sub.score, sub.passed, sub.student) == ("graded", 10, True, learner)
    assert not leftovers_for_learner(client, learner)
