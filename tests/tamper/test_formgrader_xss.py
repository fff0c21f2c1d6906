"""Finding 1: learner markup must not run in the trainer's formgrader (nor in feedback).

A submission whose markdown, raw and code cells carry script in every form nbconvert used to
pass through (an ``<img onerror>``, ``<script>``, SVG ``onload``, ``<details ontoggle>``, an
``iframe srcdoc``, a raw cell, a forged image output) is autograded for real (``nbgrader
autograde``, a Docker environment). Then a real Jupyter server with nbgrader's formgrader is
started on the course root, and Debian's chromium (Playwright) opens the submission's
"manually grade" page as the trainer. Every payload, had it run, would set a marker in the page,
give the learner full manual scores through the formgrader API and write a file through the
contents API. After the page has loaded and settled: no marker, no dialog, the gradebook as
autograde left it, no file. The feedback nbgrader generates from the same notebook is opened too.

A control at the end runs the same script deliberately in the page and sees the gradebook and
the file change: the checks above would have seen an attack that ran.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_raw_cell

from ladderlab import browser
from ladderlab.labserver import jupyter_command
from ladderlab.testing import stop_process

from ..integration.test_nbgrader_e2e import LAB, course, nbgrader, submit  # noqa: F401 (course: a fixture)

pytestmark = pytest.mark.docker

STUDENT = "mallory"
FILE = "pwned-by-learner.txt"

# What the learner's markup would run as the trainer: a marker, full manual marks, a file.
ATTACK = f"""(async () => {{
  window.ladderlabPwned = (window.ladderlabPwned || 0) + 1;
  if (window.ladderlabPwned > 1) return;
  const m = document.cookie.match(/(?:^|; )_xsrf=([^;]*)/);
  const headers = {{"Content-Type": "application/json", "X-XSRFToken": m ? decodeURIComponent(m[1]) : ""}};
  const sid = location.pathname.split("/").filter(Boolean).pop();
  const grades = await (await fetch("/formgrader/api/grades?submission_id=" + sid)).json();
  for (const g of grades) {{
    await fetch("/formgrader/api/grade/" + g.id,
                {{method: "PUT", headers, body: JSON.stringify({{manual_score: g.max_score, extra_credit: 5}})}});
  }}
  await fetch("/api/contents/{FILE}", {{method: "PUT", headers,
              body: JSON.stringify({{type: "file", format: "text", content: "pwned"}})}});
  window.ladderlabDone = true;
}})()"""
RUN = f"eval(atob('{base64.b64encode(ATTACK.encode()).decode()}'))"

MARKDOWN = f"""## Notes from {STUDENT}

I hardened the host. <img src=x onerror="{RUN}">

<script>{RUN}</script>
<svg width="1" height="1" onload="{RUN}"></svg>
<details open ontoggle="{RUN}"><summary>details</summary></details>
<iframe srcdoc="<script>parent.{RUN.replace('"', '&quot;')}</script>"></iframe>
<a href="javascript:{RUN}">a link</a> [another](javascript:{RUN})
"""
RAW = f'<img src=x onerror="{RUN}">'
FORGED_IMAGE = ("from IPython.display import display\n"
                f"display({{'image/png': 'AAAA\" onerror=\"{RUN}', 'text/plain': 'an image'}}, raw=True)\n")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def grades(root: Path) -> dict[str, tuple[float | None, float | None, float | None]]:
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{root / 'gradebook.db'}") as gb:
        nb = gb.find_submission_notebook(LAB, LAB, STUDENT)
        return {g.name: (g.auto_score, g.manual_score, g.extra_credit) for g in nb.grades}


@pytest.fixture
def graded(images, course):  # noqa: F811 (the imported fixture)
    """The course root after autograding the hostile submission for real."""
    assert nbgrader(course, "generate_assignment", LAB, "--force").returncode == 0
    nb = copy.deepcopy(nbformat.read(course / "release" / LAB / f"{LAB}.ipynb", as_version=4))
    nb.cells[1:1] = [new_markdown_cell(MARKDOWN), new_raw_cell(RAW), new_code_cell(FORGED_IMAGE)]
    submit(course, STUDENT, nb)
    assert nbgrader(course, "db", "student", "add", STUDENT).returncode == 0
    r = nbgrader(course, "autograde", LAB, "--force")
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"ladderlab: {LAB}/{STUDENT} scored 0/10" in r.stderr
    return course


@pytest.fixture
def formgrader(graded, settings):
    """A real Jupyter server (JupyterLab, as the project starts it) with nbgrader's formgrader on the course."""
    port, token = free_port(), "trainer-token"
    argv = jupyter_command(dataclasses.replace(settings, root=graded), port, token)  # the course is the root
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
    log = (graded / "server.log").open("w")
    server = subprocess.Popen(argv, cwd=graded, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                status = f"{base}/api/status?token={token}"  # http on loopback, built here
                with urllib.request.urlopen(status, timeout=2) as response:  # noqa: S310
                    if response.status == 200:
                        break
            except OSError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, (graded / "server.log").read_text()[-3000:]
            time.sleep(0.5)
        yield base, token
    finally:
        stop_process(server, timeout=20)
        log.close()


@pytest.fixture
def page():
    with browser.page() as pg:
        yield pg


def login(page, base: str, token: str) -> None:
    """As a trainer does: the server's login page, the token as the password (the session cookie is then
    valid for every path, the formgrader's API and the contents API included)."""
    page.goto(f"{base}/login?next=/api/status")
    page.fill("#password_input", token)
    page.click("#login_submit")
    page.wait_for_load_state("networkidle")
    assert any(c["name"].startswith("username-") and c["path"] == "/" for c in page.context.cookies())


def test_learner_markup_does_not_run_in_the_formgrader(graded, formgrader, page):
    base, token = formgrader
    before = grades(graded)
    assert before and all(manual is None and extra is None for _, manual, extra in before.values())
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{graded / 'gradebook.db'}") as gb:
        submission_id = gb.find_submission_notebook(LAB, LAB, STUDENT).id

    login(page, base, token)
    page.goto(f"{base}/formgrader/submissions/{submission_id}/")
    page.wait_for_load_state("networkidle")
    page.wait_for_timeout(3000)
    # the page is the real grading view, and the learner's cells are in it
    assert page.locator("input.score").count() >= len(before)
    assert page.get_by_text(f"Notes from {STUDENT}").count() == 1
    assert page.evaluate("window.ladderlabPwned") is None
    assert page.dialogs == []  # type: ignore[attr-defined]
    assert grades(graded) == before
    assert not (graded / FILE).exists()

    # the feedback nbgrader generates from the same autograded notebook
    r = nbgrader(graded, "generate_feedback", LAB, "--force")
    assert r.returncode == 0, r.stderr[-2000:]
    feedback = graded / "feedback" / STUDENT / LAB / f"{LAB}.html"
    page.goto(feedback.as_uri())
    page.wait_for_timeout(2000)
    assert page.get_by_text(f"Notes from {STUDENT}").count() == 1
    assert page.evaluate("window.ladderlabPwned") is None

    # control: the same script, run on purpose in the trainer's page, is seen by every check above
    page.goto(f"{base}/formgrader/submissions/{submission_id}/")
    page.wait_for_load_state("networkidle")
    page.evaluate(ATTACK)
    page.wait_for_function("window.ladderlabDone === true", timeout=20_000)
    after = grades(graded)
    assert all(manual is not None and extra == 5 for _, manual, extra in after.values())
    assert (graded / FILE).read_text() == "pwned"
