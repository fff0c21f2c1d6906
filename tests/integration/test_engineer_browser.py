"""The engineer's loop in a real browser (issue 11's acceptance test): Debian's chromium driven by
Playwright against the JupyterLab that ``ladderlab lab`` starts.

The learner sees their workspace (released notebooks only, no instructor tools), fetches a lab from
nbgrader's Assignments panel, fills the solution cells in the notebook editor, runs the notebook (their
live environment comes up through ``ladderlab.start``), saves, submits from the panel, waits for the
grading service, fetches feedback, reads the score in the feedback page, and sees the demonstrated cell
in ``start-here.ipynb``. Another learner hands the same lab in meanwhile: the feedback fetched is the
learner's own only. ``ladderlab lab`` is stopped with SIGTERM and must take JupyterLab and the grading
service down with it.

A screenshot of each step is written to ``.cache/artifacts/engineer-loop/NN-<step>.png`` under the
course root. Every process is the real one; the run has its own cache (queue, ledger, gradebook,
evidence) and workspace, with the machine's course key so seeds are the course's.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import nbformat
import pytest

from ladderlab import browser
from ladderlab.testing import private_cache, stop_process
from tests.integration.conftest import leftovers_for_learner

LAB = "sec-1-iptables-hardening"
pytestmark = [pytest.mark.slow]

#: Console errors the feedback page itself causes in JupyterLab's sandboxed HTML viewer: nbgrader's
#: feedback HTML carries scripts (blocked by the sandbox) and links to a CDN (no network here).
FEEDBACK_PAGE_NOISE = ("Blocked script execution in 'blob:", "net::ERR_NAME_NOT_RESOLVED")
#: Chromium aborts whatever request is in flight when the host's network interfaces change, and Docker adds
#: and removes bridges and veths whenever a lab environment starts or stops. JupyterLab retries its polls;
#: an aborted request that mattered fails the test's own waits, so the console line alone is not a finding.
HOST_NETWORK_NOISE = ("net::ERR_NETWORK_CHANGED",)
#: What JupyterLab's dialog says when such an aborted request was one of the page's own files (its theme).
ABORTED_LOAD = "failed to load"
FRAMES = "() => new Promise(done => requestAnimationFrame(() => requestAnimationFrame(done)))"
CURRENT_TAB = "#jp-main-dock-panel .lm-TabBar-tab.lm-mod-current"
INSTRUCTOR_TOOLS = ("Formgrader", "Course List", "Create Assignment", "Manage Assignments", "Generate Assignment")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cli(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ladderlab.cli", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def _status(env: dict[str, str], learner: str | None = None) -> dict:
    r = _cli(env, "service", "status", "--json", *(["--learner", learner] if learner else []), timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout)


def _api(base: str, token: str, path: str, method: str = "GET") -> int:
    req = urllib.request.Request(f"{base}{path}", method=method,  # noqa: S310 - loopback URL built here
                                 headers={"Authorization": f"token {token}"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 - loopback URL built here
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def _solutions(source: Path) -> dict[str, str]:
    """The code between BEGIN/END SOLUTION of each solution cell of the source notebook, by nbgrader grade id."""
    nb = nbformat.read(str(source), as_version=4)
    out = {}
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader", {})
        if cell.cell_type == "code" and meta.get("solution"):
            m = re.search(r"### BEGIN SOLUTION\n(.*?)### END SOLUTION", cell.source, re.S)
            assert m, f"solution cell {meta.get('grade_id')} has no BEGIN/END SOLUTION block"
            out[meta["grade_id"]] = m.group(1).rstrip("\n")
    assert out, f"{source}: no solution cells"
    return out


class Shots:
    """Numbered screenshots of the steps, in the course's artifacts folder."""

    def __init__(self, folder: Path) -> None:
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        self.folder = folder
        self.n = 0

    def __call__(self, page, step: str) -> Path:
        self.n += 1
        path = self.folder / f"{self.n:02d}-{step}.png"
        page.screenshot(path=str(path))
        assert path.stat().st_size > 5_000, path
        return path


@pytest.fixture
def lab_server(tmp_path, settings, client):
    """``ladderlab lab`` for a fresh learner in a fresh workspace and cache; stopped and cleaned up afterwards."""
    cache = private_cache(settings, tmp_path / "cache").cache_dir
    lab_settings = tmp_path / "lab-settings" / "@jupyterlab" / "apputils-extension"
    lab_settings.mkdir(parents=True)
    # no "news" toast over the screenshots (and no request for it: the machine is offline)
    (lab_settings / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    learner = f"browser-{uuid.uuid4().hex[:8]}"
    workspace = tmp_path / "workspace"
    env = dict(os.environ, LADDERLAB_CACHE_DIR=str(cache), LADDERLAB_WORKSPACE=str(workspace),
               LADDERLAB_ROOT=str(settings.root), LADDERLAB_LEARNER=learner,
               # JupyterLab's own state (layout, settings, trash of deleted files) stays in this run
               JUPYTERLAB_WORKSPACES_DIR=str(tmp_path / "lab-workspaces"),
               JUPYTERLAB_SETTINGS_DIR=str(tmp_path / "lab-settings"), XDG_DATA_HOME=str(tmp_path / "xdg"))
    env.pop("LADDERLAB_LADDER_URL", None)
    port, token = _free_port(), uuid.uuid4().hex
    log = (tmp_path / "lab.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "ladderlab.cli", "lab", "--port", str(port), "--token", token],
                            env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    server = {"proc": proc, "base": base, "token": token, "env": env, "learner": learner, "workspace": workspace,
              "log": tmp_path / "lab.log", "port": port}
    try:
        deadline = time.monotonic() + 180
        while not (_answers(port) and _api(base, token, "/api/status") == 200):
            assert proc.poll() is None, (tmp_path / "lab.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "JupyterLab did not answer within 180 s"
            time.sleep(0.5)
        yield server
    finally:
        stop_process(proc)
        log.close()
        # the learner's live environment outlives JupyterLab by design (its TTL): this run removes it
        r = _cli(env, "env", "ls", "--json", timeout=120)
        mine = [e["id"] for e in json.loads(r.stdout or "[]") if e.get("learner") == learner]
        if mine:
            _cli(env, "env", "down", *mine, timeout=300)


def _answers(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _open_assignments(page) -> None:
    page.click(".lm-MenuBar-item:has-text('Nbgrader')")
    page.click(".lm-Menu-item:has-text('Assignment List')")
    page.wait_for_selector("#assignments_list_info, #released_assignments_list", timeout=30_000)


def _wait_idle(page, timeout: float) -> None:
    """Until the current notebook's kernel is idle and every code cell has run (``[n]:``, none waiting ``[*]``).
    A cell that never ran fails here, with what the notebook shows, not later on a missing output."""
    panel = ".jp-NotebookPanel:not(.lm-mod-hidden)"
    deadline = time.monotonic() + timeout
    calm = 0
    while calm < 3:
        status = page.locator(f"{panel} .jp-Notebook-ExecutionIndicator").first.get_attribute("data-status")
        prompts = page.locator(f"{panel} .jp-CodeCell").evaluate_all(  # the prompts of cells with code in them
            "els => els.filter(e => (e.querySelector('.cm-content')?.textContent || '').trim())"
            "          .map(e => e.querySelector('.jp-InputPrompt')?.textContent || '')")
        ran = bool(prompts) and all(re.search(r"\[\d+\]", p) for p in prompts)
        calm = calm + 1 if status == "idle" and ran else 0
        if time.monotonic() > deadline:
            outputs = page.locator(f"{panel} .jp-OutputArea-output").all_inner_texts()
            raise AssertionError(f"the notebook has not run after {timeout:.0f} s: kernel {status}, "
                                 f"prompts {prompts}, outputs {[o[:300] for o in outputs]}")
        time.sleep(1)


def _sessions(base: str, token: str) -> list[dict]:
    """The Jupyter server's kernel sessions: what the server, not the page, says each notebook's kernel is doing."""
    req = urllib.request.Request(f"{base}/api/sessions",  # noqa: S310 - loopback URL built here
                                 headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 - loopback URL built here
        return list(json.loads(resp.read()))


def _wait_notebook(page, nb, server: dict, name: str, timeout: float = 120) -> None:
    """Until the current notebook shows every cell of ``nb`` with its editor and its kernel is ready.

    Ready means the server's session for ``name`` has a kernel that is idle, and the page agrees: the
    notebook's execution indicator says idle, or (JupyterLab 4 moves toolbar items that do not fit into an
    overflow menu, out of the panel) the status bar says so. A dialog the page opened instead (a kernel
    chooser, an error) fails at once with its text. On timeout the failure says what the server and the page
    showed, with the lab server's log: a screenshot alone does not reach CI's output."""
    panel = ".jp-NotebookPanel:not(.lm-mod-hidden)"
    code = sum(1 for c in nb.cells if c.cell_type == "code")
    page.wait_for_function(
        """([panel, cells, code]) => {
             const p = document.querySelector(panel);
             return p && p.querySelectorAll('.jp-Notebook .jp-Cell').length === cells
               && p.querySelectorAll('.jp-CodeCell .cm-content').length === code;
           }""", arg=[panel, len(nb.cells), code], timeout=60_000)
    deadline = time.monotonic() + timeout
    reloads = 0
    while True:
        dialogs = page.locator(".jp-Dialog").all_inner_texts()
        if dialogs and reloads < 2 and all(ABORTED_LOAD in d for d in dialogs):
            reloads += 1  # a request the host's network change aborted: what a learner does, reload
            page.reload()
            page.wait_for_selector(f"{panel} .jp-Notebook .jp-Cell", timeout=60_000)
            continue
        assert not dialogs, f"{name}: the page opened a dialog instead of the notebook's kernel: {dialogs}"
        kernels = [s.get("kernel") or {} for s in _sessions(server["base"], server["token"])
                   if str(s.get("path", "")).endswith(name)]
        shown = page.evaluate(
            """(panel) => {
                 const i = document.querySelector(panel + ' .jp-Notebook-ExecutionIndicator');
                 const bar = document.querySelector('#jp-main-statusbar');
                 return [i ? i.getAttribute('data-status') : null, bar ? bar.textContent : ''];
               }""", panel)
        indicator, statusbar = shown[0], " ".join(shown[1].split())
        if [k.get("execution_state") for k in kernels] == ["idle"] and (
                indicator == "idle" or (indicator is None and "| Idle" in statusbar)):
            return
        if time.monotonic() > deadline:
            log = server["log"].read_text(errors="replace")[-4000:]
            raise AssertionError(f"{name}: kernel not ready after {timeout:.0f} s: server sessions {kernels}, "
                                 f"indicator {indicator!r}, status bar {statusbar[:200]!r}\nlab log:\n{log}")
        time.sleep(1)


def _fill(page, cells, todo: list[int], solutions: dict[str, str]) -> None:
    """Type each solution into its cell's editor (the cells at ``todo``, in order), as a learner pastes it."""
    for i, code in zip(todo, solutions.values(), strict=True):
        editor = cells.nth(i).locator(".cm-content")
        editor.scroll_into_view_if_needed()
        editor.click()
        page.keyboard.press("Control+a")
        page.keyboard.insert_text(code)  # one insertion: no auto-indent or bracket closing per keystroke
        page.keyboard.press("Escape")
    # What the editors hold is checked in the saved file: CodeMirror draws only the lines in view of a long cell.


def _save(page) -> None:
    page.keyboard.press("Control+s")
    page.wait_for_function("!document.querySelector('.lm-TabBar-tab.jp-mod-dirty')", timeout=30_000)


def _run_all(page) -> None:
    """Run > Run All Cells on the current notebook. The menu item stays disabled until JupyterLab's notebook
    tracker has caught up with the newly opened tab (a click on it then does nothing): focus the notebook and
    open the menu again until the item is enabled."""
    panel = ".jp-NotebookPanel:not(.lm-mod-hidden)"
    deadline = time.monotonic() + 30
    while True:
        page.click(".lm-MenuBar-item:has-text('Run')")
        item = page.locator(".lm-Menu-item:has-text('Run All Cells')").first
        item.wait_for()
        if "lm-mod-disabled" not in (item.get_attribute("class") or ""):
            item.click()
            return
        page.keyboard.press("Escape")
        assert time.monotonic() < deadline, "Run All Cells stayed disabled for 30 s"
        page.locator(f"{panel} .jp-CodeCell .jp-InputPrompt").first.click()
        time.sleep(0.5)


def test_the_engineers_loop_in_the_browser(lab_server, settings, client, tmp_path, request):
    from ladderlab.course import load_course
    from ladderlab.course.labs import load_lab
    from ladderlab.grading.checks import load_graders

    course = load_course(settings.course_file)
    lab = load_lab(settings, course, LAB, registry=load_graders(settings.root))
    published = sorted(x.id for x in course.labs if x.status == "published")
    solutions = _solutions(lab.notebook_path)
    env, learner, workspace = lab_server["env"], lab_server["learner"], lab_server["workspace"]
    base, token = lab_server["base"], lab_server["token"]
    shots = Shots(settings.root / ".cache" / "artifacts" / "engineer-loop")
    print(f"\nscreenshots: {shots.folder}")
    started = time.monotonic()

    # another learner hands the released (unsolved) lab in: graded beside this learner's work
    other = f"other-{uuid.uuid4().hex[:8]}"
    released_copy = tmp_path / f"{LAB}.ipynb"
    shutil.copyfile(workspace / LAB / f"{LAB}.ipynb", released_copy)

    with browser.page(1280, 800) as page:
        # --- the workspace: released notebooks only, learner tools only
        page.goto(f"{base}/lab?token={token}")
        page.wait_for_selector(".jp-DirListing-item", timeout=120_000)
        names = page.locator(".jp-DirListing-itemName").all_inner_texts()
        assert sorted(names) == sorted(["start-here.ipynb", *published]), names
        assert not {"labs", "graders", "course.yaml", "environments", "README.md"} & set(names)
        shots(page, "workspace")

        page.click(".lm-MenuBar-item:has-text('Nbgrader')")
        entries = [t for t in page.locator(".lm-Menu-itemLabel").all_inner_texts() if t.strip()]
        assert entries == ["Assignment List"], entries
        shots(page, "nbgrader-menu")
        page.keyboard.press("Escape")
        menus = page.locator(".lm-MenuBar-itemLabel").all_inner_texts()
        for menu in menus:
            page.click(f".lm-MenuBar-item:has-text('{menu}')")
            labels = " | ".join(page.locator(".lm-Menu-itemLabel").all_text_contents()).lower()
            assert not any(tool.lower() in labels for tool in INSTRUCTOR_TOOLS), (menu, labels)
            page.keyboard.press("Escape")
        tabs = " | ".join(page.locator(".jp-SideBar .lm-TabBar-tab").evaluate_all(
            "els => els.map(e => (e.title || '') + ' ' + (e.dataset.id || '') + ' ' + e.textContent)"))
        assert not any(tool.lower() in tabs.lower() for tool in INSTRUCTOR_TOOLS), tabs
        assert "nbgrader" not in tabs.lower(), tabs
        page.keyboard.press("Control+Shift+c")  # the command palette knows no instructor command either
        palette = page.locator(".lm-CommandPalette-input").first
        palette.fill("assignment list")
        page.locator(".lm-CommandPalette-item", has_text="Assignment List").first.wait_for(timeout=10_000)
        for word in ("formgrader", "course list", "create assignment"):
            palette.fill(word)
            page.evaluate(FRAMES)  # the palette refilters on its next animation frame
            found = page.locator(".lm-CommandPalette-item").all_text_contents()
            assert not any("Assignment List" in f for f in found), "the palette did not refilter"
            assert not any(word in f.lower() for f in found), (word, found)
        palette.fill("")
        page.keyboard.press("Escape")

        # --- Fetch: the learner deletes their copy, the panel offers the release again
        _open_assignments(page)
        fetched = page.locator("#fetched_assignments_list > .list_item", has_text=LAB)
        fetched.wait_for()
        assert _api(base, token, f"/api/contents/{LAB}", "DELETE") == 204
        assert not (workspace / LAB).exists()
        page.click("#refresh_assignments_list")
        released = page.locator("#released_assignments_list > .list_item", has_text=LAB)
        released.wait_for(timeout=30_000)
        assert fetched.count() == 0
        shots(page, "released")
        released.locator("button:has-text('Fetch')").click()
        fetched.wait_for(timeout=60_000)
        assert (workspace / LAB / f"{LAB}.ipynb").is_file()
        handed_out = nbformat.read(str(workspace / LAB / f"{LAB}.ipynb"), as_version=4)
        assert not any("BEGIN SOLUTION" in c.source or "HIDDEN TESTS" in c.source for c in handed_out.cells)
        shots(page, "fetched")

        # --- open it from the panel, fill the solution cells in the editor, save
        fetched.locator("a.assignment-notebooks-link").click()
        fetched.locator(".nested_list_item a", has_text=LAB).click()
        panel = ".jp-NotebookPanel:not(.lm-mod-hidden)"
        _wait_notebook(page, handed_out, lab_server, f"{LAB}.ipynb")
        assert f"{LAB}.ipynb" in page.locator(CURRENT_TAB).inner_text()
        shots(page, "opened")
        # Only now: the grading makes Docker bridges, and chromium aborts what it is loading when the host's
        # interfaces change (a theme or a notebook that failed to load is a dialog, not a retry).
        other_submit = subprocess.Popen([sys.executable, "-m", "ladderlab.cli", "submit", LAB, "--notebook",
                                         str(released_copy), "--learner", other, "--json"],
                                        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        request.addfinalizer(lambda: other_submit.poll() is None and other_submit.kill())
        cells = page.locator(f"{panel} .jp-CodeCell")
        todo = [i for i, text in enumerate(cells.locator(".cm-content").evaluate_all(
            "els => els.map(e => e.textContent)")) if "YOUR CODE HERE" in text]
        assert len(todo) == len(solutions), (todo, list(solutions))
        _fill(page, cells, todo, solutions)
        shots(page, "filled")
        _save(page)

        # --- Run > Run All Cells: the live environment comes up, the visible checks pass
        _run_all(page)
        _wait_idle(page, timeout=600)
        page.locator(f"{panel} .jp-OutputArea-output", has_text="default-deny").first.scroll_into_view_if_needed()
        shots(page, "ran")
        _save(page)
        work = nbformat.read(str(workspace / LAB / f"{LAB}.ipynb"), as_version=4)
        by_id = {c.metadata.get("nbgrader", {}).get("grade_id"): c for c in work.cells}
        for grade_id, code in solutions.items():
            assert by_id[grade_id].source.strip() == code.strip(), grade_id
        errors = [o for c in work.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
        assert not errors, [(o.ename, o.evalue) for o in errors]
        ran = [c for c in work.cells if c.cell_type == "code" and c.source.strip()]
        assert ran and all(c.execution_count for c in ran), [c.source[:40] for c in ran if not c.execution_count]
        printed = "".join(o.get("text", "") for c in work.cells if c.cell_type == "code" for o in c.outputs)
        for check in lab.checks:
            if not check.hidden:
                assert f"\u2713 {check.id}:" in printed, check.id
        ran_at = time.monotonic()

        # --- Submit from the panel; the grading service grades it
        _open_assignments(page)
        page.click("#refresh_assignments_list")
        fetched.wait_for()
        fetched.locator("button:has-text('Submit')").click()
        submitted = page.locator("#submitted_assignments_list > .list_item", has_text=LAB)
        submitted.wait_for(timeout=60_000)
        shots(page, "submitted")
        deadline = time.monotonic() + 900
        while True:
            mine = _status(env, learner)["submissions"]
            if mine and all(s["status"] in ("graded", "error") for s in mine):
                break
            assert time.monotonic() < deadline, f"not graded after 900 s: {mine}"
            time.sleep(2)
        graded_at = time.monotonic()
        assert len(mine) == 1, mine
        sub = mine[0]
        assert (sub["student"], sub["lab"], sub["status"]) == (learner, LAB, "graded"), sub
        assert (sub["score"], sub["max_score"], sub["passed"]) == (10, 10, True), sub
        assert sub["timestamp"] in submitted.inner_text()

        # --- Fetch Feedback; the feedback page shows the full score, hidden checks by title only
        r = other_submit.communicate(timeout=900)
        assert other_submit.returncode == 0, r[1][-3000:]
        theirs = json.loads(r[0])
        assert theirs["student"] == other and theirs["status"] == "graded" and not theirs["passed"], theirs
        page.click("#refresh_assignments_list")
        submitted.wait_for()
        submitted.locator("button:has-text('Fetch Feedback')").click()
        view = submitted.locator(".nested_list_item a", has_text="view feedback")
        view.first.wait_for(timeout=60_000)
        shots(page, "feedback-fetched")
        got = sorted(p.name for p in (workspace / LAB / "feedback").iterdir())
        assert got == [sub["timestamp"]], f"feedback fetched for other submissions too: {got}"
        assert page.errors == [], page.errors  # type: ignore[attr-defined]
        view.first.click()
        page_item = page.locator(".jp-DirListing-item", has_text=f"{LAB}.html")
        page_item.wait_for(timeout=30_000)
        page_item.dblclick()
        frame = page.frame_locator(".jp-HTMLViewer iframe")
        frame.locator("body").wait_for(timeout=30_000)
        text = frame.locator("body").inner_text()
        assert f"{LAB} (Score: 10.0 / 10.0)" in text, text[:500]
        hidden_line = frame.get_by_text("(hidden check)").first
        hidden_line.scroll_into_view_if_needed()
        shots(page, "feedback")
        lines = [line.strip() for line in text.splitlines()]
        for check in lab.checks:
            said = [line for line in lines if line.startswith(("\u2713", "\u2717")) and f" {check.id}:" in line]
            assert said, check.id
            if check.hidden:
                assert said == [f"\u2713 {check.id}: {check.spec.title} (hidden check)"], said
        assert "BEGIN SOLUTION" not in text

        # --- start-here.ipynb shows the demonstrated cell and the level
        page.locator(".jp-BreadCrumbs-home").click()
        start_here = page.locator(".jp-DirListing-item", has_text="start-here.ipynb")
        start_here.wait_for()
        start_here.dblclick()
        _wait_notebook(page, nbformat.read(str(workspace / "start-here.ipynb"), as_version=4), lab_server,
                       "start-here.ipynb")
        assert "start-here.ipynb" in page.locator(CURRENT_TAB).inner_text()
        _run_all(page)
        _wait_idle(page, timeout=180)
        output = page.locator(f"{panel} .jp-OutputArea-output", has_text="Your ladder")
        output.wait_for(timeout=30_000)
        output.scroll_into_view_if_needed()
        shown = output.inner_text()
        shots(page, "start-here")
        security = course.track("security")
        assert f"Your ladder, {learner}" in shown
        assert re.search(rf"^{re.escape(security.name)}\s+1$", shown, re.M), shown
        # the cell claims only the clauses the lab shows, "in part" when not all of them
        clauses = course.cell("security", 1).clauses
        shown_clauses = [c.text for c in clauses if c.id in course.lab(LAB).cells[0].clauses]
        in_part = f" (in part: {len(shown_clauses)} of {len(clauses)} clauses)" if len(shown_clauses) < len(clauses) \
            else ""
        said = " ".join(f"{security.name} L1{in_part}: {' '.join(shown_clauses)}".split())  # as HTML shows it
        assert "users/groups" not in " ".join(shown.split()).split("Labs to your next level")[0]
        assert said in " ".join(shown.split()), shown
        noise = [e for e in page.errors  # type: ignore[attr-defined]
                 if not any(n in e for n in FEEDBACK_PAGE_NOISE + HOST_NETWORK_NOISE)]
        assert noise == [], noise
        assert page.dialogs == []  # type: ignore[attr-defined]

    # --- stopping ladderlab lab (SIGTERM) stops JupyterLab and the grading service
    proc = lab_server["proc"]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) is not None
    log = lab_server["log"].read_text()
    assert "stopping the grading service" in log, log[-3000:]
    assert not _answers(lab_server["port"]), "JupyterLab still serves after ladderlab lab stopped"
    assert _status(env)["running"] is False
    print(f"run {ran_at - started:.0f} s (fetch, fill, run), graded {graded_at - ran_at:.0f} s after, "
          f"total {time.monotonic() - started:.0f} s")

    # --- nothing left on the engine for either learner
    r = _cli(env, "env", "ls", "--json", timeout=120)
    live = [e["id"] for e in json.loads(r.stdout) if e.get("learner") == learner]
    assert live, "the learner's live environment is gone"  # it lives until its TTL by design: removed here
    assert _cli(env, "env", "down", *live, timeout=300).returncode == 0
    assert not leftovers_for_learner(client, learner)
    assert not leftovers_for_learner(client, other)
