"""Every HTML page comes from an autoescaped template (ladderlab/templating.py, ladderlab/templates/).

* hostile text in every field a learner (or a trainer, or an error) controls is inert on every page: no script
  element, no event attribute, no broken table, ``{{7*7}}`` shown as typed;
* no module builds HTML in Python any more: no ``html.escape``, no tag in a string (an AST walk), no ``Markup``;
  no template marks a value safe;
* the templates ship in the wheel, and the learner API still imports (and shows text) where Jinja2 is missing.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import time
import tomllib
from html.parser import HTMLParser
from pathlib import Path

import jinja2
import pytest
from markupsafe import escape

from ladderlab.course import Course, load_course
from ladderlab.environments.connection import Connection, HostEntry
from ladderlab.lab import Lab, _html, reset_notice
from ladderlab.lab.ladder_view import LadderView
from ladderlab.ladder.evidence import CheckResult, Entry, Evidence
from ladderlab.ladder.rules import progress
from ladderlab.reports.data import build
from ladderlab.reports.site import write_site
from ladderlab.templating import environment, render

from .test_ladder_unit import ev
from .test_learner_api_unit import SANDBOX_IMPORTS, Recorder

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "ladderlab"
TEMPLATES = PACKAGE / "templates"

#: Breaks out of an element, out of a quoted attribute (either quote), and asks a template engine to compute.
HOSTILE = "<script>alert(1)</script>\"onmouseover=alert(2) x='</td>{{7*7}}"


class Tags(HTMLParser):
    """The elements and attributes a browser would build from a page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.opened: list[str] = []
        self.closed: list[str] = []
        self.attributes: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.opened.append(tag)
        self.attributes += [name for name, _ in attrs]

    def handle_endtag(self, tag):
        self.closed.append(tag)


def assert_inert(page: str, where: str, *, shown: int = 1) -> None:
    """``page`` holds ``HOSTILE`` only as text, escaped, at least ``shown`` times (so ``{{7*7}}`` as typed: a value
    is never compiled as a template)."""
    tags = Tags()
    tags.feed(page)
    assert "script" not in tags.opened, where
    assert not [a for a in tags.attributes if a.startswith("on")], where
    for element in ("td", "tr", "table", "li", "ul", "div", "p"):
        assert tags.opened.count(element) == tags.closed.count(element), f"{where}: <{element}> unbalanced"
    assert "<script" not in page and HOSTILE not in page, where
    assert page.count(str(escape(HOSTILE))) >= shown, f"{where}: the hostile value is not shown escaped"


def hostile_course(course: Course) -> Course:
    """The course with ``HOSTILE`` in its title, every lab title, every track name and every clause text (each
    level's text rejoined from its clauses, as the course model wants)."""
    data = course.model_dump(mode="json")
    data["title"] += HOSTILE
    for lab in data["labs"]:
        lab["title"] += HOSTILE
    for track in data["ladder"]["tracks"]:
        track["name"] += HOSTILE
        for level, clauses in track["clauses"].items():
            for clause in clauses:
                clause["text"] += " " + HOSTILE
            track["levels"][level] = " ".join(c["text"] for c in clauses)
    return Course.model_validate(data)


def hostile_evidence(learner: str, lab: str, passed: bool = True) -> Evidence:
    """An attempt whose learner, check ids, hint keys and date are hostile."""
    base = ev(learner, lab, passed=passed)
    checks = (CheckResult(f"passes{HOSTILE}", 2.0, 2.0, True), CheckResult(f"fails{HOSTILE}", 0.0, 2.0, False))
    return Evidence(**{**base.__dict__, "checks": checks, "hints": {f"hint{HOSTILE}": 1},
                       "recorded_at": HOSTILE})


def test_hostile_text_is_inert_on_every_report_page(settings, tmp_path):
    course = hostile_course(load_course(settings.course_file))
    learner = f"mallory{HOSTILE}"
    items = [hostile_evidence(learner, "sec-1-iptables-hardening"), hostile_evidence(learner, "sec-2-tls-server"),
             hostile_evidence("bo", "sec-1-iptables-hardening", passed=False), ev("chen", "sec-1-iptables-hardening")]
    data = build(course, [Entry(i + 1, e, "", HOSTILE + f"{i:060x}") for i, e in enumerate(items)], None, HOSTILE,
                 manual=())
    data.extra["verification"] = {"ok": False, "entries": 4, "reason": f"entry 2 {HOSTILE}"}
    pages = write_site(data, tmp_path)
    assert len(pages) == 4
    for page in pages:
        assert_inert(page.read_text(), str(page.relative_to(tmp_path)), shown=3)
    index = (tmp_path / "index.html").read_text()
    # each field reached its page (escaped), so the checks above are not vacuous
    for field in (f"mallory{HOSTILE}", f"fails{HOSTILE}"):
        assert str(escape(field)) in index, field
    mallory = next(p for p in pages if p.name.startswith("learner-")).read_text()
    for field in (f"passes{HOSTILE}", f"hint{HOSTILE}: 1", f"entry 2 {HOSTILE}", f"Security{HOSTILE} level 1"):
        assert str(escape(field)) in mallory, field
    assert str(escape(HOSTILE[:10])) in mallory  # the date shown is the first ten characters
    assert str(escape(course.track("security").clauses[1][0].text)) in mallory


def test_hostile_text_is_inert_in_what_a_notebook_shows(settings):
    course = hostile_course(load_course(settings.course_file))
    learner = f"mallory{HOSTILE}"
    view = LadderView(learner, course, progress(course, learner, [
        Entry(1, hostile_evidence(learner, "sec-1-iptables-hardening"), "", "1" * 64)], manual=()))
    assert_inert(view._repr_html_() or "", "ladder view", shown=4)
    from ladderlab.lab.ladder_view import Ladder
    from ladderlab.templating import render

    page = render("hub/ladder.html.j2", **Ladder(view.data(), link=lambda lab: f"/user/x/{lab}").values())
    assert_inert(page, "the hub's ladder page", shown=5)

    conn = Connection(lab=f"lab{HOSTILE}", env_id=f"env{HOSTILE}", learner=learner,
                      params={f"param{HOSTILE}": HOSTILE}, expires=time.time() + 120,
                      hosts={f"host{HOSTILE}": HostEntry(f"10.0.0.2{HOSTILE}", f"role{HOSTILE}", None, True)},
                      private_key="", answers_path="/nonexistent/answers.json", grading=False)
    panel = Lab(f"lab{HOSTILE}", conn, Recorder())._repr_html_() or ""
    assert_inert(panel, "status panel", shown=8)
    assert "minutes left in this lab environment" in panel

    text, markup = reset_notice(f"lab{HOSTILE}", f"env{HOSTILE}", [f"host{HOSTILE}"], 0.0, 60.0)
    assert HOSTILE in text
    assert_inert(markup or "", "reset notice", shown=3)

    assert_inert(_html("lab/progress.html.j2", text=HOSTILE) or "", "grading progress")  # lab._Progress

    page = render("service/not_graded.html.j2", lab=f"lab{HOSTILE}", why=f"engine {HOSTILE}")
    assert_inert(page, "not graded", shown=3)


# --- no HTML built in Python ----------------------------------------------------------------------------------

#: Element names of HTML and SVG that a page or fragment would use.
ELEMENTS = ("html|head|body|title|meta|link|style|script|div|span|p|a|b|i|u|em|strong|code|pre|table|thead|tbody|"
            "tfoot|tr|th|td|ul|ol|li|dl|dt|dd|h1|h2|h3|h4|h5|h6|nav|br|hr|img|svg|rect|text|g|path|circle|line|form|"
            "input|button|label|select|option|textarea|iframe|object|embed|section|article|header|footer|main|"
            "details|summary|small|sub|sup|blockquote|caption|col|colgroup")
TAG = re.compile(r"<!doctype\b|(?<!\?P)</?(?:" + ELEMENTS + r")(?:\s[^<>]*)?/?>", re.IGNORECASE)

#: Modules that may hold HTML in Python, and why.
ALLOWED = {
    "grading/sanitize.py": "the sanitiser of learner HTML (nh3): it names the tags it lets through",
}


def _docstrings(tree: ast.AST) -> set[int]:
    """The ids of the docstring nodes in ``tree``: documentation, never output."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def html_in_python(package: Path) -> list[str]:
    """Where a module under ``package`` builds HTML itself: an HTML tag in a string (f-strings included; docstrings
    left out), ``html.escape``, or markupsafe's ``Markup``/``escape``."""
    problems = []
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(package).as_posix()
        if rel in ALLOWED:
            continue
        tree = ast.parse(path.read_text(), str(path))
        docs = _docstrings(tree)
        for node in ast.walk(tree):
            where = f"{rel}:{getattr(node, 'lineno', '?')}"
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
                tag = TAG.search(node.value)
                if tag:
                    problems.append(f"{where}: HTML tag {tag.group(0)!r} in a string")
            elif isinstance(node, ast.ImportFrom) and node.module in ("html", "markupsafe") and \
                    {a.name for a in node.names} & {"escape", "Markup"}:
                problems.append(f"{where}: imports {node.module}'s {', '.join(a.name for a in node.names)}")
            elif isinstance(node, ast.Import) and {a.name for a in node.names} & {"html", "markupsafe"}:
                problems.append(f"{where}: imports html or markupsafe")
            elif isinstance(node, ast.Attribute) and node.attr in ("escape", "Markup") and \
                    isinstance(node.value, ast.Name) and node.value.id in ("html", "markupsafe", "jinja2"):
                problems.append(f"{where}: {node.value.id}.{node.attr}")
    return problems


def test_no_module_builds_html_in_python():
    assert html_in_python(PACKAGE) == []


def test_the_guard_finds_html_built_in_python(tmp_path):
    (tmp_path / "page.py").write_text(
        '"""A module docstring may say <b>bold</b>."""\n'
        "import html\n"
        "from html import escape as e\n"
        "def cell(x):\n"
        '    """So may a function\'s: <td>."""\n'
        "    return f'<td class=\"c\">{e(x)}</td>' + html.escape(x)\n"
        "SVG = '<svg xmlns=\"http://www.w3.org/2000/svg\">'\n"
        "USAGE = 'lab.hint(\"<check-id>\") and <state>/hints are not HTML'\n")
    found = html_in_python(tmp_path)
    assert {f.split(": ", 1)[0] for f in found} == {"page.py:2", "page.py:3", "page.py:6", "page.py:7"}, found
    said = "\n".join(found)
    assert "'<td class=\"c\">'" in said and "'</td>'" in said and "html.escape" in said and "'<svg xmlns" in said


def test_no_template_marks_a_value_safe_or_turns_escaping_off():
    names = environment().list_templates(extensions=["j2"])
    assert {"reports/cohort.html.j2", "reports/engineer.html.j2", "lab/status.html.j2", "lab/ladder.html.j2",
            "lab/reset.html.j2", "lab/progress.html.j2", "service/not_graded.html.j2"} <= set(names)
    for name in names:
        source = (TEMPLATES / name).read_text()
        assert not re.search(r"\|\s*safe\b|Markup|autoescape\s+false|\{%-?\s*raw", source), name
        for line in source.splitlines():  # the joined-lines rule (templating.JoinLines) needs whole tags per line
            assert line.count("{{") == line.count("}}") and line.count("{%") == line.count("%}"), (name, line)


def test_the_environment_escapes_joins_lines_and_refuses_a_missing_value():
    env = environment()
    assert env is environment() and env.autoescape is True and env.undefined is jinja2.StrictUndefined
    page = env.from_string('<ul>\n  {% for x in xs %}\n  <li title="{{ x }}">\n    {{ x }} and\n    more '
                           "{{ x }}</li>\n  {% endfor %}\n</ul>\n").render(xs=["a\n b", "<i>"])
    assert page == '<ul><li title="a\n b">a\n b and more a\n b</li><li title="&lt;i&gt;">&lt;i&gt; and more ' \
                   "&lt;i&gt;</li></ul>"
    with pytest.raises(jinja2.UndefinedError):
        render("lab/progress.html.j2")


def test_the_wheel_ships_every_template():
    """pyproject's package-data globs name every file under templates/ (a wheel holds only those)."""
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["ladderlab"]
    files = [p.relative_to(PACKAGE) for p in TEMPLATES.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    assert files and all(any(f.match(g) and len(f.parts) == len(Path(g).parts) for g in globs) for f in files), \
        [str(f) for f in files if not any(f.match(g) for g in globs)]
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert any(d.lower().startswith("jinja2") for d in deps)


#: The sandbox as the learner API meets it: no Jinja2 (nor MarkupSafe), an import of it fails as a missing module does.
SANDBOX_PANEL = SANDBOX_IMPORTS.replace('raise ImportError(f"{name} is not in the sandbox")',
                                        'raise ModuleNotFoundError(f"No module named {name!r}", name=top)') + """
from ladderlab.environments.connection import HostEntry
from ladderlab.lab import reset_notice
lab = Lab("l", Connection(lab="l", env_id="e", learner="ada", params={}, expires=9e9,
          hosts={"target": HostEntry("10.0.0.2", "target", None, True)}, private_key="", answers_path="/x",
          grading=True), None)
assert lab._repr_html_() is None and "10.0.0.2" in repr(lab)
text, markup = reset_notice("l", "e", ["target"], 0.0, 60.0)
assert markup is None and "lab.reset(confirm=True)" in text
print("text only")
"""


def test_without_jinja2_the_learner_api_shows_text(root):
    """The grading sandbox has no Jinja2: rich outputs fall back to text (their HTML is dropped there anyway)."""
    assert "ModuleNotFoundError" in SANDBOX_PANEL
    r = subprocess.run([sys.executable, "-I", "-c", SANDBOX_PANEL], capture_output=True, text=True, cwd=root)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[-2:] == ["text", "only"]


def test_hostile_text_is_inert_on_the_trainers_cohort_view():
    """The live cohort view (ladderlab.hub.service): learner ids, lab titles, notes and check titles are text; the
    page's only script is the shipped one, which renders every snapshot with textContent, never markup."""
    from ladderlab.templating import render, resource

    state = {"state": f"error{HOSTILE}", "score": None, "max_score": None, "passed": None, "note": HOSTILE,
             "practice": {"passed": 1, "of": 3, "run": 2}}
    graded = {"state": "graded", "score": 7.5, "max_score": 10.0, "passed": False, "note": "",
              "practice": {"passed": 0, "of": 3, "run": 0}}
    snap = {"cohort": f"c{HOSTILE}", "labs": [{"id": "lab-1", "title": f"Lab {HOSTILE}"},
                                              {"id": "lab-2", "title": "Two"}],
            "learners": [{"id": f"ada{HOSTILE}", "envs": [f"lab-1{HOSTILE}"], "labs": {"lab-1": state,
                                                                                       "lab-2": graded}}],
            "pass_rates": {"lab-1": {"passed": 0, "learners": 1}, "lab-2": {"passed": 0, "learners": 1}},
            "most_failed": [{"lab": "lab-2", "check": f"chk{HOSTILE}", "title": HOSTILE, "learners": 1}]}
    page = render("hub/cohort.html.j2", snap=snap, events="api/cohort/events", script="static/cohort.js")
    scripts = re.findall(r"<script\b[^>]*>", page)
    assert scripts == ['<script src="static/cohort.js" defer>'], scripts
    without_script = page.replace(scripts[0] + "</script>", "")
    assert_inert(without_script, "cohort view", shown=6)
    assert "graded 7.5/10 not passed" in page and "· checks 1/3" in page
    js = resource("hub/cohort.js")
    assert "innerHTML" not in js and "insertAdjacentHTML" not in js and "textContent" in js
