"""The static site: ``index.html`` (cohort, for trainers), ``engineer/<id>.html`` (for managers),
CSV and JSON exports. Plain HTML with inline SVG charts and one stylesheet: no server, no
script, nothing fetched from the network at view time."""

from __future__ import annotations

import csv
import io
import json
import os
from html import escape as e
from pathlib import Path
from typing import Any

from ladderlab.ladder.rules import CellStatus, Progress
from ladderlab.reports.data import ReportData, outcome_label

CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px;color:#1d2430;max-width:1200px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px}.muted{color:#667}
table{border-collapse:collapse}th,td{padding:3px 6px;border-bottom:1px solid #e3e6ea;text-align:left;vertical-align:top}
#heatmap td.c{width:34px;height:20px;padding:0;border:1px solid #fff}
.demo{background:#2e9d5b}.tried{background:#f0b429}.none{background:#e8ebef}
.part{background:repeating-linear-gradient(135deg,#2e9d5b 0 4px,#a9dcbc 4px 8px)}
#heatmap td.part{font-size:11px;text-align:center;vertical-align:middle;color:#0b2916;font-weight:700;
text-shadow:0 0 2px #fff,0 0 2px #fff,0 0 3px #fff}
.claim{font-size:13px;padding:1px 6px;border-radius:4px}
.claim.full{background:#dff2e6;color:#1f6b3d}.claim.inpart{background:#fdf1d6;color:#7a4b00}
.cell h4{margin:8px 0 2px;font-size:13px}.cell ul{margin:2px 0}.unshown{color:#778}
#heatmap th.c{writing-mode:vertical-rl;transform:rotate(180deg);font-weight:normal;font-size:12px}
.legend span{display:inline-block;width:12px;height:12px;margin:0 4px 0 12px;vertical-align:middle}
.cell{border:1px solid #e3e6ea;border-radius:6px;padding:10px 12px;margin:8px 0}
.cell h3{margin:0 0 4px;font-size:15px}.quote{color:#445;font-style:italic}
a{color:#1f5fbf}nav a{margin-right:14px}.verified{color:#2e7d4f}.broken{color:#b3261e}
"""


def _page(title: str, body: str, css_href: str) -> str:
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{e(title)}</title>'
            f'<link rel="stylesheet" href="{css_href}"></head><body>{body}</body></html>\n')


def _bars(rows: list[tuple[str, float, str]], maximum: float, width: int = 420, unit: str = "") -> str:
    """A horizontal bar chart (inline SVG): (label, value, tooltip) rows."""
    bar_h, label_w = 20, 230
    height = bar_h * len(rows) + 10
    parts = [f'<svg class="chart" role="img" width="{label_w + width + 60}" height="{height}" '
             f'xmlns="http://www.w3.org/2000/svg">']
    for i, (label, value, tip) in enumerate(rows):
        y = 5 + i * bar_h
        w = 0 if maximum <= 0 else int(width * value / maximum)
        parts.append(f'<text x="0" y="{y + 14}" font-size="12">{e(label)}</text>'
                     f'<rect x="{label_w}" y="{y + 3}" width="{w}" height="{bar_h - 6}" fill="#3b7dd8">'
                     f'<title>{e(tip)}</title></rect>'
                     f'<text x="{label_w + w + 6}" y="{y + 14}" font-size="12">{value:g}{unit}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _cell_label(data: ReportData, cell: tuple[str, int]) -> str:
    return f"{data.course.track(cell[0]).code} L{cell[1]}"


def _verification(data: ReportData) -> str:
    v = data.extra.get("verification")
    if v is None:
        return ""
    if v["ok"]:
        return (f'<p class="verified">Record verified: {v["entries"]} entries, hash chain and signed head '
                f"intact.</p>")
    return f'<p class="broken"><b>The record does not verify:</b> {e(v["reason"])}. Do not rely on this report.</p>'


def page_name(learner: str) -> str:
    """The engineer page's file name: the id when it is a plain name, else a digest (a learner id from a
    gradebook can be anything, ``../x`` included: a page is never written outside ``engineer/``)."""
    import hashlib
    import re

    if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}", learner) and ".." not in learner:
        return f"{learner}.html"
    return f"learner-{hashlib.sha256(learner.encode()).hexdigest()[:16]}.html"


def _ids(ids: list[str]) -> str:
    return ", ".join(ids) or "none"


def _clause_texts(data: ReportData, cell: tuple[str, int]) -> dict[str, str]:
    return {c.id: c.text for c in data.course.cell(*cell).clauses}


def cell_state(status: CellStatus, tried: bool) -> tuple[str, str, str]:
    """How the heatmap shows a learner's cell: (css classes, text in the square, what the tooltip says). A cell
    demonstrated in part is ``demo part``: striped, with ``n/m`` (evidenced of all clauses) in the square."""
    if status.partial:
        return ("demo part", f"{len(status.evidenced)}/{len(status.clauses)}",
                f"demonstrated in part, {status.claim}; evidenced: {_ids(status.evidenced)}; "
                f"not evidenced: {_ids(status.not_evidenced)}")
    if status.demonstrated:
        return "demo", "", f"demonstrated, {status.claim}: {_ids(status.evidenced)}"
    return ("tried" if tried else "none", "",
            f"not demonstrated, missing {', '.join(status.missing)}; nothing claimed")


def cohort_page(data: ReportData, title: str) -> str:
    course = data.course
    head = "".join(f'<th class="c" title="{e(course.track(t).name)} level {lvl}">{e(_cell_label(data, (t, lvl)))}</th>'
                   for t, lvl in data.cells)
    tracks = [t.id for t in course.ladder.tracks]
    track_heads = "".join(f"<th>{e(course.track(t).code)}</th>" for t in tracks)
    rows = []
    for learner, p in data.ladder.items():
        tds = []
        for cell in data.cells:
            status = p.cells[cell]
            cls, mark, said = cell_state(status, any(lab in p.labs for lab in status.labs))
            tip = f"{learner}: {_cell_label(data, cell)} {said}"
            tds.append(f'<td class="c {cls}" title="{e(tip)}">{e(mark)}</td>')
        levels = "".join(f"<td>{p.levels[t]}</td>" for t in tracks)
        link = f'<a href="engineer/{e(page_name(learner))}">{e(learner)}</a>'
        rows.append(f'<tr><th>{link}</th>{"".join(tds)}{levels}</tr>')
    labs = sorted(data.labs.values(), key=lambda s: s.lab)
    rates = _bars([(s.lab, round(100 * s.pass_rate, 1), f"{s.passed}/{s.learners} learners passed, "
                    f"{s.attempts} attempts") for s in labs], 100, unit="%")
    failed = "".join(f"<tr><td>{e(lab)}</td><td><code>{e(check)}</code></td><td>{n}</td></tr>"
                     for lab, check, n in data.failed_checks) or '<tr><td colspan="3">none yet</td></tr>'
    body = (f"<h1>{e(title)}</h1><p class=\"muted\">{len(data.ladder)} learners &middot; {data.entries} graded "
            f"attempts &middot; generated {e(data.generated)}</p>"
            f"{_verification(data)}"
            f'<nav><a href="ladder.csv">ladder.csv</a><a href="evidence.csv">evidence.csv</a>'
            f'<a href="labs.csv">labs.csv</a><a href="report.json">report.json</a></nav>'
            f"<h2>Learners &times; ladder cells</h2>"
            f'<p class="legend"><span class="demo"></span>demonstrated, every clause of the cell evidenced'
            f'<span class="part"></span>demonstrated in part (<i>n/m</i>: <i>n</i> of the cell\'s <i>m</i> '
            f'clauses evidenced)<span class="tried"></span>attempted, not yet<span class="none"></span>'
            f"not attempted</p>"
            f'<table id="heatmap"><thead><tr><th>learner</th>{head}{track_heads}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table>"
            f"<h2>Pass rate per lab</h2>{rates}"
            f'<h2>Checks most often failed (what to teach next)</h2><table id="failed"><thead><tr><th>lab</th>'
            f"<th>check</th><th>learners failing it</th></tr></thead><tbody>{failed}</tbody></table>")
    return _page(title, body, "style.css")


def engineer_page(data: ReportData, p: Progress, title: str) -> str:
    course = data.course
    tracks = course.ladder.tracks
    chart = _bars([(t.name, p.levels[t.id], f"{t.name}: level {p.levels[t.id]}") for t in tracks], 6)
    titles = {lab.id: lab.title for lab in course.labs}
    shown = []
    for (track_id, level), status in sorted(p.cells.items()):
        if not status.demonstrated or level > p.levels[track_id]:
            continue
        texts = _clause_texts(data, (track_id, level))
        evidence = []
        for lab_id in status.labs:
            best = p.labs[lab_id].best
            if best is None:
                continue
            ev = best.evidence
            checks = ", ".join(c.id for c in ev.checks if c.passed)
            used = ", ".join(f"{k}: {v}" for k, v in sorted((ev.hints or {}).items()))
            outcome = (f'<span class="outcome" title="hints used per check: {e(used)}">{e(outcome_label(ev))}</span>'
                       if used else f'<span class="outcome">{e(outcome_label(ev))}</span>')
            evidence.append(f"<li><b>{e(titles.get(lab_id, lab_id))}</b> ({e(lab_id)}): {outcome}, "
                            f"{ev.score:g}/{ev.max_score:g}"
                            f" on {e(ev.recorded_at[:10])}; shows {e(', '.join(status.shown_by.get(lab_id, [])))}; "
                            f"checks passed: {e(checks)} "
                            f'<span class="muted">entry #{best.seq}, {e(best.hash[:12])}</span></li>')
        track = course.track(track_id)
        claim = (f'<p><span class="claim inpart">demonstrated in part: {e(status.claim)}</span></p>'
                 if status.partial else f'<p><span class="claim full">demonstrated: {e(status.claim)}</span></p>')
        evidenced = "".join(f'<li data-clause="{e(c)}">{e(texts[c])}</li>' for c in status.evidenced)
        unshown = "".join(f'<li data-clause="{e(c)}">{e(texts[c])}</li>' for c in status.not_evidenced)
        rest = (f'<h4>Not evidenced ({len(status.not_evidenced)}): not claimed</h4>'
                f'<ul class="unshown">{unshown}</ul>' if unshown else "")
        shown.append(f'<div class="cell"><h3>{e(track.name)} level {level}</h3>{claim}'
                     f'<h4>Evidenced ({len(status.evidenced)} of {len(status.clauses)})</h4>'
                     f'<ul class="quote evidenced">{evidenced}</ul>{rest}'
                     f'<h4>Evidence</h4><ul>{"".join(evidence)}</ul></div>')
    nxt = []
    for t in tracks:
        rung = p.next_rung(t.id)
        if rung is None:
            continue
        missing = ", ".join(f"{e(titles.get(lab, lab))} ({e(lab)})" for lab in rung.missing)
        nxt.append(f"<li><b>{e(t.name)} level {rung.level}</b>: {missing}</li>")
    body = (f'<nav><a href="../index.html">&larr; cohort</a></nav><h1>{e(p.learner)}</h1>'
            f"<p class=\"muted\">{e(title)}</p>{_verification(data)}<h2>Levels per track</h2>{chart}"
            f"<h2>Demonstrated</h2>{''.join(shown) or '<p>Nothing demonstrated yet.</p>'}"
            f"<h2>Next rung</h2><ul>{''.join(nxt) or '<li>every rung with labs is demonstrated</li>'}</ul>")
    return _page(f"{p.learner} - {title}", body, "../style.css")


def _csv(rows: list[list[Any]]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue()


def exports(data: ReportData) -> dict[str, str]:
    tracks = [t.id for t in data.course.ladder.tracks]
    ladder_rows: list[list[Any]] = [["learner", "track", "level"]]
    evidence_rows: list[list[Any]] = [
        ["learner", "lab", "passed", "score", "max_score", "entry", "hash", "recorded_at", "hints"]]
    learners = []
    for learner, p in data.ladder.items():
        ladder_rows += [[learner, t, p.levels[t]] for t in tracks]
        for lab_id, status in sorted(p.labs.items()):
            best = status.best
            if best is not None:
                ev = best.evidence
                evidence_rows.append([learner, lab_id, status.passed, ev.score, ev.max_score, best.seq, best.hash,
                                      ev.recorded_at, "" if ev.hints_total is None else ev.hints_total])
        learners.append({"learner": learner, "levels": p.levels,
                         "demonstrated": [f"{t}:{lvl}" for (t, lvl), c in sorted(p.cells.items()) if c.demonstrated],
                         # what each demonstrated cell claims: its evidenced clauses, and the ones it does not
                         "clauses": {f"{t}:{lvl}": {"evidenced": c.evidenced, "not_evidenced": c.not_evidenced}
                                     for (t, lvl), c in sorted(p.cells.items()) if c.demonstrated},
                         "labs": {lab: s.passed for lab, s in sorted(p.labs.items())},
                         # hints used in the evidence behind each lab (null: recorded before hints were)
                         "hints": {lab: s.best.evidence.hints_total if s.best else None
                                   for lab, s in sorted(p.labs.items())}})
    labs_rows: list[list[Any]] = [["lab", "learners", "passed", "pass_rate", "attempts"]]
    labs_rows += [[s.lab, s.learners, s.passed, round(s.pass_rate, 4), s.attempts] for s in data.labs.values()]
    report = {"course": data.course.id, "generated": data.generated, "entries": data.entries, "learners": learners,
              "verification": data.extra.get("verification"),
              "labs": [{"lab": s.lab, "learners": s.learners, "passed": s.passed, "pass_rate": round(s.pass_rate, 4),
                        "attempts": s.attempts} for s in data.labs.values()],
              "failed_checks": [{"lab": lab, "check": c, "learners": n} for lab, c, n in data.failed_checks]}
    return {"ladder.csv": _csv(ladder_rows), "evidence.csv": _csv(evidence_rows), "labs.csv": _csv(labs_rows),
            "report.json": json.dumps(report, indent=1, sort_keys=True)}


def write_site(data: ReportData, out: Path) -> list[Path]:
    """Write the whole site under ``out`` (created); return the pages written."""
    title = f"{data.course.title} - ladder"
    (out / "engineer").mkdir(parents=True, exist_ok=True)
    files = {"style.css": CSS, "index.html": cohort_page(data, title), **exports(data)}
    for learner, p in data.ladder.items():
        files[os.path.join("engineer", page_name(learner))] = engineer_page(data, p, title)
    pages = []
    for name, text in files.items():
        path = out / name
        path.write_text(text, encoding="utf-8")
        if name.endswith(".html"):
            pages.append(path)
    return pages
