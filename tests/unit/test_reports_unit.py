"""Report numbers and pages from a small record (the browser view: tests/integration/test_report_browser.py)."""

from __future__ import annotations

import csv
import json

from ladderlab.course import load_course
from ladderlab.lab.ladder_view import LadderView
from ladderlab.ladder.evidence import Entry
from ladderlab.ladder.rules import progress
from ladderlab.reports.data import build
from ladderlab.reports.site import write_site

from .test_ladder_unit import ev


def entries(*items):
    return [Entry(i + 1, e, "", f"{i + 1:064x}") for i, e in enumerate(items)]


def test_pass_rates_failed_checks_and_exports(settings, tmp_path):
    course = load_course(settings.course_file)
    record = entries(ev("ada", "sec-1-iptables-hardening"), ev("bo", "sec-1-iptables-hardening", passed=False),
                     ev("bo", "sec-1-iptables-hardening", passed=False, submission="s2"),
                     ev("chen", "sec-2-tls-server", passed=False))
    data = build(course, record, None, "now", manual=())
    sec1 = data.labs["sec-1-iptables-hardening"]
    assert (sec1.learners, sec1.passed, sec1.attempts, sec1.pass_rate) == (2, 1, 3, 0.5)
    assert data.failed_checks == [("sec-1-iptables-hardening", "default-deny", 1),
                                  ("sec-2-tls-server", "default-deny", 1)]
    pages = write_site(data, tmp_path)
    assert len(pages) == 1 + 3
    index = (tmp_path / "index.html").read_text()
    assert index.count('<tr><th><a href="engineer/') == 3 and "<script" not in index and "http" not in \
        index.replace("http://www.w3.org/2000/svg", "")
    rows = list(csv.DictReader((tmp_path / "ladder.csv").open()))
    assert {(r["learner"], r["track"], r["level"]) for r in rows if r["track"] == "security"} == \
        {("ada", "security", "1"), ("bo", "security", "0"), ("chen", "security", "0")}
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["entries"] == 4 and len(report["learners"]) == 3
    ada = (tmp_path / "engineer" / "ada.html").read_text()
    assert "Security level 1" in ada and "Security level 2" in ada.split("Next rung")[1]


def test_start_here_view_lists_next_labs_with_links(settings):
    course = load_course(settings.course_file)
    view = LadderView("ada", course, progress(course, "ada", entries(ev("ada", "sec-1-iptables-hardening")), manual=()))
    nxt = view.next_labs()
    assert ("Security", 2, "sec-2-tls-server", course.lab("sec-2-tls-server").title) in nxt
    html = view._repr_html_()
    assert 'href="labs/sec-2-tls-server/sec-2-tls-server.ipynb"' in html
    # the learner's own view claims what the ladder record claims: the iptables clause, in part
    assert ("<b>Security L1</b> (in part: 1 of 7 clauses): Understands operating systems security principles like "
            "iptables,</li>") in html and "users/groups" not in html
    assert "level 1" in repr(view).lower() or "level 1" in repr(view)


def test_every_page_says_whether_the_record_verifies(settings, tmp_path):
    course = load_course(settings.course_file)
    data = build(course, entries(ev("ada")), None, "now", manual=())
    data.extra["verification"] = {"ok": False, "entries": 1, "reason": "entry 1 was changed"}
    write_site(data, tmp_path)
    for page in (tmp_path / "index.html", tmp_path / "engineer" / "ada.html"):
        assert "The record does not verify:</b> entry 1 was changed" in page.read_text()
    assert json.loads((tmp_path / "report.json").read_text())["verification"]["ok"] is False


def test_a_learner_id_never_writes_outside_the_site():
    from ladderlab.reports.site import page_name

    assert page_name("ada") == "ada.html"
    for hostile in ("../x", "..", "a/b", "/etc/passwd", "x\0y", "<img onerror=alert(1)>"):
        name = page_name(hostile)
        assert "/" not in name and ".." not in name and name.endswith(".html") and name.startswith("learner-")


def _between(html: str, start: str, end: str) -> str:
    return html.split(start, 1)[1].split(end, 1)[0]


def test_pages_say_which_clauses_stand_evidenced_and_mark_cells_shown_in_part(settings, tmp_path):
    from .test_ladder_unit import course_with

    base = load_course(settings.course_file)
    # sec-1 claims every clause of security L1 here: a cell shown in full below a cell shown in part
    course = course_with(base, clauses={"sec-1-iptables-hardening": base.track("security").clause_ids(1)})
    record = entries(ev("ada", "sec-1-iptables-hardening"), ev("ada", "sec-2-tls-server"),
                     ev("bo", "sec-2-tls-server", passed=False))
    write_site(build(course, record, None, "now", manual=()), tmp_path)
    index = (tmp_path / "index.html").read_text()
    ada_row = _between(index, '<a href="engineer/ada.html">ada</a>', "</tr>")
    assert ada_row.count('class="c demo part"') == 1 and ada_row.count('class="c demo"') == 1
    assert ">3/8</td>" in ada_row
    assert ("sec L2 demonstrated in part, 3 of 8 clauses; evidenced: basic-cryptography, tls-configuration, "
            "key-sizes-algorithms-versions; not evidenced: ssh-configuration,") in ada_row
    assert "sec L1 demonstrated, all 7 clauses" in ada_row
    bo_row = _between(index, '<a href="engineer/bo.html">bo</a>', "</tr>")
    assert "part" not in bo_row and 'class="c tried"' in bo_row and "nothing claimed" in bo_row
    assert "demonstrated in part" in _between(index, 'class="legend"', "</p>")

    ada = (tmp_path / "engineer" / "ada.html").read_text()
    sec2 = _between(ada, "<h3>Security level 2", '<div class="cell">')
    assert "demonstrated in part: 3 of 8 clauses" in sec2
    evidenced = _between(sec2, '<ul class="quote evidenced">', "</ul>")
    not_evidenced = _between(sec2, '<ul class="unshown">', "</ul>")
    assert "and TLS for a server" in evidenced and "Can configure SSH" not in evidenced
    assert "IPsec or WireGuard" not in evidenced and "IPsec or WireGuard" in not_evidenced
    assert "Can configure SSH" in not_evidenced and "Not evidenced (5): not claimed" in sec2
    assert "shows basic-cryptography, tls-configuration, key-sizes-algorithms-versions" in sec2
    sec1 = _between(ada, "<h3>Security level 1", "</div>")
    assert "demonstrated: all 7 clauses" in sec1 and "Not evidenced" not in sec1 and "users/groups" in sec1
    report = json.loads((tmp_path / "report.json").read_text())
    ada_json = next(x for x in report["learners"] if x["learner"] == "ada")
    assert ada_json["clauses"]["security:2"]["evidenced"] == [
        "basic-cryptography", "tls-configuration", "key-sizes-algorithms-versions"]
    assert "ssh-configuration" in ada_json["clauses"]["security:2"]["not_evidenced"]


def test_engineer_pages_rendered_by_forked_workers_are_the_same_pages(settings, tmp_path, monkeypatch):
    """Many learners: the engineer pages are written by forked workers; every file is byte for byte what one
    process writes, and every page is listed."""
    from ladderlab.reports import site

    course = load_course(settings.course_file)
    labs = ["sec-1-iptables-hardening", "sec-2-tls-server", "net-2-dns-authoritative-zone"]
    record = entries(*[ev(f"l{i:02d}", lab, passed=(i + k) % 3 != 0, submission=f"s{i}-{k}")
                       for i in range(24) for k, lab in enumerate(labs)], ev("../odd name", labs[0]))
    data = build(course, record, None, "now", manual=())
    monkeypatch.setattr(site, "PARALLEL_FROM", 10**9)
    serial = write_site(data, tmp_path / "serial")
    pools: list[object] = []
    real = site._forked_pool
    monkeypatch.setattr(site, "_forked_pool", lambda n: pools.append(real(max(n, 2))) or pools[-1])
    monkeypatch.setattr(site, "PARALLEL_FROM", 2)
    forked = write_site(data, tmp_path / "forked")
    assert pools and pools[0] is not None, "the forked writers were not used"
    assert sorted(p.relative_to(tmp_path / "forked") for p in forked) == \
        sorted(p.relative_to(tmp_path / "serial") for p in serial)
    assert len(serial) == 1 + 25
    files = sorted(p.relative_to(tmp_path / "serial") for p in (tmp_path / "serial").rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path / "forked") for p in (tmp_path / "forked").rglob("*") if p.is_file())
    for name in files:
        assert (tmp_path / "forked" / name).read_bytes() == (tmp_path / "serial" / name).read_bytes(), name
