"""Learner-authored content is inert, and learner nbgrader metadata never reaches nbgrader (no Docker).

The HTML a submission can produce is checked the way nbgrader's formgrader and feedback make it
(nbconvert's ``markdown2html`` over the cell) and parsed with a real HTML parser; the browser test
tests/tamper/test_formgrader_xss.py opens the real formgrader. ``prepare``'s output is validated with
nbgrader's own metadata validator and nbformat's schema."""

from __future__ import annotations

import base64
import copy
import json
from html.parser import HTMLParser

import nbformat
import pytest
import sqlalchemy.exc
from hypothesis import given, settings
from hypothesis import strategies as st
from nbconvert.filters.markdown_mistune import markdown2html_mistune
from nbconvert.preprocessors import Preprocessor
from nbformat.v4 import new_code_cell, new_markdown_cell, new_output, new_raw_cell
from nbgrader.nbgraderformat import MetadataValidator, SchemaTooOldError

from ladderlab.course import load_course
from ladderlab.course.labs import is_check_cell, load_lab, nbg
from ladderlab.grading import sanitize
from ladderlab.grading.checks import load_graders
from ladderlab.grading.nbgrader_ext import SANITIZE_PREPROCESSORS, Contained, SubmissionFailed
from ladderlab.grading.pipeline import prepare, sanitize_outputs

LAB = "sec-1-iptables-hardening"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 24
PNG64 = base64.b64encode(PNG).decode()
SVG64 = base64.b64encode(b"<svg xmlns='http://www.w3.org/2000/svg' onload='alert(1)'/>").decode()

# Each of these ran script (or navigated, or restyled the page) in a browser when it reached
# nbconvert's HTML unchanged.
PAYLOADS = [
    "<img src=x onerror=alert(1)>",
    "<IMG SRC=x OnErRoR=alert(1)>",
    "<script>alert(1)</script>",
    "<svg><script>alert(1)</script></svg>",
    "<svg onload=alert(1)>",
    "<iframe srcdoc=\"<script>parent.alert(1)</script>\"></iframe>",
    "<details open ontoggle=alert(1)>x</details>",
    "<a href=\"javascript:alert(1)\">x</a>",
    "<a href=\"JaVaScRiPt:alert(1)\">x</a>",
    "<a href=\"&#106;avascript:alert(1)\">x</a>",
    "[x](javascript:alert(1))",
    "[x](java&#9;script:alert(1))",
    "[x]( javascript:alert(1))",
    "[x][r]\n\n[r]: javascript:alert(1)",
    "<javascript:alert(1)>",
    "![x](javascript:alert(1))",
    "<base href=\"http://evil.example/\">",
    "<meta http-equiv=refresh content=\"0;url=javascript:alert(1)\">",
    "<form action=\"/api/contents\" method=post><button>go</button></form>",
    "<object data=\"data:text/html,<script>alert(1)</script>\"></object>",
    "<embed src=\"data:text/html,<script>alert(1)</script>\">",
    "<style>body{background:url(javascript:alert(1))}</style>",
    "<div style=\"background:url(javascript:alert(1))\">x</div>",
    "<math><mtext><table><mglyph><style><img src=x onerror=alert(1)></style></mglyph></table></mtext></math>",
    "<noscript><p title=\"</noscript><img src=x onerror=alert(1)>\">",
    "<!--><img src=x onerror=alert(1)>-->",
    "`<img src=x onerror=alert(1)>`",
    "```\n</code></pre><img src=x onerror=alert(1)>\n```",
    "<input autofocus onfocus=alert(1)>",
    "<img src=\"data:image/svg+xml;base64," + SVG64 + "\">",
    "<img src=\"data:image/png;base64,AAAA\" onerror=alert(1)>",
    "<a id=\"xsrf\" name=\"_xsrf\">clobber</a>",
    "<textarea><img src=x onerror=alert(1)></textarea>",
    "<p>a</p>\n\n    <img src=x onerror=alert(1)>",
    "> <img src=x onerror=alert(1)>\n> \n> <svg onload=alert(1)>",
]


class Scan(HTMLParser):
    """Every tag and attribute a browser would build from a piece of HTML."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str, str]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs += [(tag, name, value or "") for name, value in attrs]

    handle_startendtag = handle_starttag


def assert_inert(html: str) -> None:
    scan = Scan()
    scan.feed(html)
    scan.close()
    assert set(scan.tags) <= sanitize.TAGS, html
    for tag, name, value in scan.attrs:
        assert not name.startswith("on") and name not in ("style", "id", "name", "srcdoc", "action"), html
        url = "".join(value.split()).lower()
        if name == "href":
            assert url.startswith(("http://", "https://", "mailto:")), html
        if name == "src":
            assert tag == "img" and url.startswith(("data:image/png;base64,", "data:image/jpeg;base64,",
                                                    "data:image/gif;base64,")), html


def shown(markdown: str) -> str:
    """What the formgrader and feedback put in the page for a markdown cell."""
    return markdown2html_mistune(markdown)


@pytest.fixture(scope="module")
def lab(settings):
    return load_lab(settings, load_course(settings.course_file), LAB, registry=load_graders(settings.root))


@pytest.mark.parametrize("payload", PAYLOADS)
def test_no_payload_survives_markdown_sanitising(payload):
    clean = sanitize.markdown_html(payload)
    assert_inert(clean)
    assert_inert(shown(clean))
    assert sanitize.markdown_html(clean) == clean


def test_without_sanitising_the_payloads_reach_the_page():
    """The premise of the tests above: nbconvert copies learner HTML into the page as it is."""
    assert "onerror=alert(1)" in shown(PAYLOADS[0])
    assert "<script>" in shown(PAYLOADS[2])


def test_plain_markdown_stays_readable():
    source = ("# Findings\n\nThe *target* drops **everything** but `ssh` and `a < b && c`; see "
              "[the docs](https://example.org/x_y?a=1&b=2).\n\n- one\n- two\n\n1. first\n\n"
              "```sh\niptables -P INPUT DROP\n\nif [ $a -lt 3 ]; then echo '<ok>'; fi\n```\n\n"
              "> quoted | not a table\n\n| a | b |\n|---|---|\n| 1 | 2 |\n")
    html = shown(sanitize.markdown_html(source))
    text = Text()
    text.feed(html)
    assert "Findings" in text.by_tag["h1"]
    assert text.by_tag["em"] == ["target"] and text.by_tag["strong"] == ["everything"]
    assert "a < b && c" in text.by_tag["code"]
    assert "iptables -P INPUT DROP\n\nif [ $a -lt 3 ]; then echo '<ok>'; fi\n" in text.by_tag["code"]
    assert text.by_tag["li"] == ["one", "two", "first"]
    assert text.by_tag["td"] == ["1", "2"] and "quoted | not a table" in text.by_tag["p"]
    assert ("a", "https://example.org/x_y?a=1&b=2") in text.links


class Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.by_tag: dict[str, list[str]] = {}
        self.links: list[tuple[str, str]] = []
        self.open: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.open.append(tag)
        self.by_tag.setdefault(tag, []).append("")
        self.links += [(tag, v or "") for k, v in attrs if k == "href"]

    def handle_endtag(self, tag):
        while self.open and self.open.pop() != tag:
            pass

    def handle_data(self, data):
        for tag in set(self.open):
            self.by_tag[tag][-1] += data


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("<>/=\"'`&#;:![]()*_\\ \n\tabcdejsviptrgonlm0123456789")), max_size=120))
def test_any_text_comes_out_inert_and_stable(text):
    clean = sanitize.markdown_html(text)
    assert_inert(clean)
    assert_inert(shown(clean))
    assert sanitize.markdown_html(clean) == clean


def test_images_are_checked_raster_data_and_attachments_are_inlined():
    attachments = {"ok.png": {"image/png": PNG64},
                   "evil.svg": {"image/svg+xml": SVG64},
                   "page.html": {"text/html": base64.b64encode(b"<script>x</script>").decode()},
                   "fake.png": {"image/png": SVG64},                       # not a PNG inside
                   "quote.png": {"image/png": PNG64 + '" onerror="alert(1)'},
                   "../x.png": {"image/png": PNG64}}
    assert set(sanitize.clean_attachments(attachments)) == {"ok.png"}
    html = sanitize.markdown_html("![a](attachment:ok.png) ![b](attachment:evil.svg) ![c](attachment:gone.png) "
                                  f"![d](data:image/png;base64,{PNG64})", attachments)
    assert html.count(f'src="data:image/png;base64,{PNG64}"') == 2 and html.count("<img") == 2
    assert_inert(shown(html))
    assert sanitize.image_data("image/png", 'AAAA" onerror="alert(1)') is None
    assert sanitize.image_data("image/svg+xml", SVG64) is None
    assert sanitize.image_data("image/png", [PNG64[:10], PNG64[10:]]) == PNG64


def test_image_budget_bounds_what_one_cell_inlines():
    big = base64.b64encode(PNG + b"\x00" * (1024 * 1024)).decode()
    html = sanitize.markdown_html("![a](attachment:a.png)" * 20, {"a.png": {"image/png": big}})
    assert html.count("<img") == sanitize.IMAGES_PER_CELL // len(big)


def test_outputs_keep_only_real_images():
    outs = sanitize_outputs([new_output("display_data", data={"image/png": 'x" onerror="alert(1)',
                                                              "text/plain": "t"}),
                             new_output("display_data", data={"image/png": PNG64, "image/jpeg": PNG64}),
                             {"output_type": "execute_result", "data": {"text/plain": ["a", 3, "b"]}}])
    assert [dict(o["data"]) for o in outs] == [{"text/plain": "t"}, {"image/png": PNG64}, {"text/plain": "ab"}]


def test_raw_cells_become_text():
    html = sanitize.text_html("<img src=x onerror=alert(1)>\n\n    indented")
    assert_inert(shown(html))
    text = Text()
    text.feed(shown(html))
    assert text.by_tag["pre"] == ["<img src=x onerror=alert(1)>\n\n    indented"]


def hostile_notebook(lab) -> nbformat.NotebookNode:
    nb = copy.deepcopy(lab.source)
    by_gid = {nbg(c).get("grade_id"): c for c in nb.cells}
    old = new_code_cell("print('hi')")
    old.metadata["nbgrader"] = {"grade": False, "solution": False, "locked": False, "schema_version": 1,
                                "grade_id": "mine"}
    typed = new_code_cell("x = 1")
    typed.metadata["nbgrader"] = {"grade": "yes", "points": "lots", "grade_id": 7, "schema_version": "3"}
    claim = new_code_cell("print(10)")
    claim.metadata["nbgrader"] = {"grade": True, "points": 100, "grade_id": "check-default-deny",
                                  "locked": True, "solution": False, "schema_version": 3}
    junk = new_markdown_cell("<img src=x onerror=alert(1)>")
    junk.metadata = ["not", "a", "dict"]
    listy = new_code_cell("y = 2")
    listy.metadata["nbgrader"] = ["grade", True]
    future = new_markdown_cell("fine")
    future.metadata["nbgrader"] = {"schema_version": 99, "grade": True, "solution": True, "grade_id": "persist",
                                   "task": True, "points": 5}
    raw = new_raw_cell("<script>alert(1)</script>")
    raw.metadata["raw_mimetype"] = "text/html"
    by_gid["intro"].source = "<img src=x onerror=alert(1)> I rewrote the instructions"
    by_gid["intro"].attachments = {"evil.svg": {"image/svg+xml": SVG64}}
    by_gid["start"].source = "import os; os.system('id')"
    nb.cells[2:2] = [old, typed, claim, junk, listy, raw]
    nb.cells.append(future)
    nb.cells.append({"cell_type": "widget", "source": "?"})
    nb.cells.append("not a cell")
    nb.cells.append({"cell_type": "code", "source": 42, "metadata": {}, "outputs": "x", "id": "bad id!"})
    nb.metadata = {"widgets": {"application/vnd.jupyter.widget-state+json": {"x": "</script><script>alert(1)"}},
                   "title": "<script>alert(1)</script>", "kernelspec": {"name": "evil", "display_name": "<b>"}}
    return nb


def test_prepare_leaves_nbgrader_only_the_instructors_metadata(lab):
    ready = prepare(lab, hostile_notebook(lab))
    MetadataValidator().validate_nb(ready)            # the check that aborted a whole autograde run
    nbformat.validate(ready)
    instructor = {nbg(c)["grade_id"]: nbg(c) for c in lab.source.cells if nbg(c).get("grade_id")}
    for cell in ready.cells:
        meta = nbg(cell)
        assert set(cell.metadata) <= {"nbgrader", "deletable", "editable", "tags", "jupyter", "trusted"}
        if meta:
            assert {k: v for k, v in meta.items() if k != "checksum"} == instructor[meta["grade_id"]]
    assert sorted(nbg(c)["grade_id"] for c in ready.cells if is_check_cell(c)) == sorted(
        c.grade_id for c in lab.checks)
    assert ready.metadata == lab.source.metadata
    assert len({c.id for c in ready.cells}) == len(ready.cells)
    assert "</script>" not in json.dumps(ready.metadata)


def test_instructor_cells_are_exactly_the_instructors(lab):
    ready = prepare(lab, hostile_notebook(lab))
    for gid in ("intro", "start", "explore-md", "task-allow"):
        cell = next(c for c in ready.cells if nbg(c).get("grade_id") == gid)
        assert cell == lab.source_cell(gid) | ({"outputs": [], "execution_count": None}
                                                if cell.cell_type == "code" else {})
    assert "evil.svg" not in json.dumps(ready)


def test_learner_markup_is_inert_after_prepare(lab):
    ready = prepare(lab, hostile_notebook(lab))
    learner = [c for c in ready.cells if not nbg(c)]
    markdown = [c for c in learner if c.cell_type == "markdown"]
    assert markdown and not any(c.cell_type == "raw" for c in ready.cells)
    for cell in markdown:
        assert_inert(shown(cell.source))
        assert "attachments" not in cell
    code = [c for c in learner if c.cell_type == "code"]
    assert {"print('hi')", "x = 1", "y = 2", ""} <= {c.source for c in code}
    # the answer cell the learner made markdown (and claimed as a task) is code again, the learner's text kept
    persist = next(c for c in ready.cells if nbg(c).get("grade_id") == "persist")
    assert persist.cell_type == "code" and nbg(persist) == nbg(lab.source_cell("persist"))


def test_prepare_is_idempotent(lab):
    once = prepare(lab, hostile_notebook(lab))
    assert prepare(lab, once) == once
    plain = prepare(lab, lab.source)
    assert prepare(lab, plain) == plain


def test_prepare_survives_any_notebook_shape(lab):
    for nb in ({}, {"cells": "x"}, {"cells": [None, 1, [], {}]}, nbformat.v4.new_notebook()):
        ready = prepare(lab, nbformat.from_dict(nb))
        assert sorted(nbg(c)["grade_id"] for c in ready.cells if is_check_cell(c)) == sorted(
            c.grade_id for c in lab.checks)


def test_sanitize_runs_first_in_autograde():
    assert SANITIZE_PREPROCESSORS[0] == "ladderlab.grading.nbgrader_ext.LadderlabSanitize"


class Raises(Contained, Preprocessor):
    error: BaseException = RuntimeError()

    def __init__(self) -> None:
        super().__init__(enabled=True)

    def preprocess(self, nb, resources):
        raise self.error


@pytest.mark.parametrize("error", [SchemaTooOldError("old", 1, 3),
                                   sqlalchemy.exc.OperationalError("stmt", {}, Exception("database is locked"))])
def test_errors_nbgrader_takes_as_fatal_end_one_submission_only(error):
    step = Raises()
    step.error = error
    with pytest.raises(SubmissionFailed, match="sec-1/ada") as info:
        step(nbformat.v4.new_notebook(), {"nbgrader": {"assignment": "sec-1", "student": "ada"}})
    assert info.value.__cause__ is error
    step.error = KeyboardInterrupt()
    with pytest.raises(KeyboardInterrupt):
        step(nbformat.v4.new_notebook(), {})
