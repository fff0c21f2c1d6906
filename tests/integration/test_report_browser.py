"""The report site in a real headless browser: Debian's chromium driven by Playwright
(``executable_path``; no downloaded browser). Pages load without console errors, the heatmap
has one row per learner, links between pages work; a screenshot of each page is written to
``.cache/screenshots/``."""

from __future__ import annotations

import pytest

from ladderlab import browser
from ladderlab.course import load_course
from ladderlab.ladder.evidence import Entry
from ladderlab.reports.data import build
from ladderlab.reports.site import write_site

from ..unit.test_ladder_unit import ev

LEARNERS = ["ada", "bo", "chen", "dara"]


@pytest.fixture(scope="module")
def site(settings, tmp_path_factory):
    course = load_course(settings.course_file)
    items = [ev("ada", "sec-1-iptables-hardening"), ev("ada", "sec-2-tls-server"),
             ev("bo", "sec-1-iptables-hardening", passed=False), ev("bo", "sre-2-golden-signal-alerts"),
             ev("chen", "net-2-dns-authoritative-zone"), ev("dara", "sre-5-strace-debugging", passed=False)]
    entries = [Entry(i + 1, e, "", f"{i + 1:064x}") for i, e in enumerate(items)]
    out = tmp_path_factory.mktemp("site")
    write_site(build(course, entries, LEARNERS, "test", manual=()), out)
    return out


@pytest.fixture(scope="module")
def page():
    with browser.page() as pg:
        yield pg


def test_cohort_and_engineer_pages(site, page, settings):
    shots = settings.cache_dir / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    page.goto((site / "index.html").as_uri())
    assert page.title().endswith("ladder")
    assert page.locator("#heatmap tbody tr").count() == len(LEARNERS)
    assert page.locator("#heatmap td.demo").count() >= 4
    # every lab shows only some of its cell's clauses: each demonstrated cell is marked as shown in part
    partial = page.locator("#heatmap td.demo.part")
    assert partial.count() == page.locator("#heatmap td.demo").count()
    assert sorted(partial.all_inner_texts()) == ["1/5", "1/7", "2/8", "3/8"]
    assert page.locator("svg.chart rect").count() == len(load_course(settings.course_file).labs)  # a bar per lab
    page.screenshot(path=str(shots / "cohort.png"), full_page=True)

    page.click("text=ada")
    assert page.url.endswith("/engineer/ada.html")
    assert page.locator("h1").inner_text() == "ada"
    assert page.locator(".cell h3").all_inner_texts() == ["Security level 1", "Security level 2"]
    assert "Understands" in page.locator(".cell .quote").first.inner_text()
    assert page.locator(".cell .claim.inpart").all_inner_texts() == [
        "demonstrated in part: 1 of 7 clauses", "demonstrated in part: 3 of 8 clauses"]
    assert "Can configure SSH" in page.locator(".cell .unshown").nth(1).inner_text()
    assert "Can configure SSH" not in page.locator(".cell .quote").nth(1).inner_text()
    page.screenshot(path=str(shots / "engineer-ada.png"), full_page=True)

    page.click("text=cohort")
    assert page.url.endswith("/index.html")
    for learner in LEARNERS:
        page.goto((site / "engineer" / f"{learner}.html").as_uri())
        assert page.locator("h1").inner_text() == learner
    page.screenshot(path=str(shots / "engineer-dara.png"), full_page=True)
    for name in ("ladder.csv", "evidence.csv", "labs.csv", "report.json"):
        assert (site / name).stat().st_size > 0
    assert page.errors == []  # type: ignore[attr-defined]
    for shot in ("cohort.png", "engineer-ada.png", "engineer-dara.png"):
        assert (shots / shot).stat().st_size > 10_000
