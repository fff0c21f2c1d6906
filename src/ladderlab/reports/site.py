"""The static site: ``index.html`` (cohort, for trainers), ``engineer/<id>.html`` (for managers),
CSV and JSON exports. Plain HTML with inline SVG charts and one stylesheet: no server, no
script, nothing fetched from the network at view time. The pages are rendered from the templates in
``ladderlab/templates/reports`` (autoescaped, ``ladderlab.templating``); this module computes what they show."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any

from ladderlab.ladder.evidence import RUBRIC
from ladderlab.ladder.rules import CellStatus, LabStatus, Progress
from ladderlab.reports.data import ReportData, outcome_label
from ladderlab.templating import render, resource


def bar_chart(rows: list[tuple[str, float, str]], maximum: float, width: int = 420, unit: str = "") -> dict[str, Any]:
    """A horizontal bar chart's geometry, for the ``bars`` macro of ``reports/charts.html.j2`` (inline SVG):
    (label, value, tooltip) rows."""
    bar_h, label_w = 20, 230
    bars = []
    for i, (label, value, tip) in enumerate(rows):
        y = 5 + i * bar_h
        w = 0 if maximum <= 0 else int(width * value / maximum)
        bars.append({"label": label, "tip": tip, "y": y + 3, "text_y": y + 14, "width": w, "value_x": label_w + w + 6,
                     "value": f"{value:g}{unit}"})
    return {"width": label_w + width + 60, "height": bar_h * len(rows) + 10, "label_width": label_w,
            "bar_height": bar_h - 6, "bars": bars}


def _cell_label(data: ReportData, cell: tuple[str, int]) -> str:
    return f"{data.course.track(cell[0]).code} L{cell[1]}"


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
    """A cell's clauses, id -> text (once per cell per report: building a Cell validates it)."""
    cache: dict[tuple[str, int], dict[str, str]] = data.extra.setdefault("clause_texts", {})
    if cell not in cache:
        cache[cell] = {c.id: c.text for c in data.course.cell(*cell).clauses}
    return cache[cell]


def basis_text(status: CellStatus, labs: dict[str, LabStatus]) -> str:
    """What stands behind a demonstrated cell, lab by lab: ``evidence: sec-1: automatic checks``,
    ``evidence: comm-4: automatic checks + manual rubric (grader t1, rubric 2026-11-1, 8/10)``."""
    return "evidence: " + "; ".join(f"{lab}: {labs[lab].basis}" for lab in status.labs if lab in labs)


def cell_state(status: CellStatus, tried: bool, labs: dict[str, LabStatus] | None = None) -> tuple[str, str, str]:
    """How the heatmap shows a learner's cell: (css classes, text in the square, what the tooltip says). A cell
    demonstrated in part is ``demo part``: striped, with ``n/m`` (evidenced of all clauses) in the square. A
    demonstrated cell with a manual grade behind it is also ``manual`` (framed), and the tooltip says which
    kinds of evidence stand behind it (``labs``: the learner's lab statuses)."""
    manual = " manual" if RUBRIC in status.kinds else ""
    basis = f"; {basis_text(status, labs)}" if labs is not None else ""
    if status.partial:
        return ("demo part" + manual, f"{len(status.evidenced)}/{len(status.clauses)}",
                f"demonstrated in part, {status.claim}; evidenced: {_ids(status.evidenced)}; "
                f"not evidenced: {_ids(status.not_evidenced)}{basis}")
    if status.demonstrated:
        return "demo" + manual, "", f"demonstrated, {status.claim}: {_ids(status.evidenced)}{basis}"
    waiting = [lab for lab in status.missing if labs is not None and lab in labs and labs[lab].awaiting_rubric]
    pending = f"; automatic checks passed, awaiting the manual rubric: {', '.join(waiting)}" if waiting else ""
    return ("tried" if tried else "none", "",
            f"not demonstrated, missing {', '.join(status.missing)}{pending}; nothing claimed")


def cohort_page(data: ReportData, title: str) -> str:
    course = data.course
    tracks = course.ladder.tracks
    columns = [{"title": f"{course.track(t).name} level {lvl}", "label": _cell_label(data, (t, lvl))}
               for t, lvl in data.cells]
    rows = []
    for learner, p in data.ladder.items():
        squares = []
        for cell in data.cells:
            status = p.cells[cell]
            cls, mark, said = cell_state(status, any(lab in p.labs for lab in status.labs), p.labs)
            squares.append({"classes": cls, "mark": mark, "tip": f"{learner}: {_cell_label(data, cell)} {said}"})
        rows.append({"learner": learner, "page": page_name(learner), "squares": squares,
                     "levels": [p.levels[t.id] for t in tracks]})
    labs = sorted(data.labs.values(), key=lambda s: s.lab)
    rates = bar_chart([(s.lab, round(100 * s.pass_rate, 1), f"{s.passed}/{s.learners} learners passed, "
                        f"{s.attempts} attempts") for s in labs], 100, unit="%")
    return render("reports/cohort.html.j2", page_title=title, css_href="style.css", title=title,
                  learners=len(data.ladder), entries=data.entries, generated=data.generated,
                  verification=data.extra.get("verification"), columns=columns,
                  track_codes=[t.code for t in tracks], rows=rows, rates=rates, failed=data.failed_checks) + "\n"


def _evidence(data: ReportData, p: Progress, status: CellStatus) -> list[dict[str, Any]]:
    """The lab results behind a demonstrated cell, as the engineer page lists them."""
    titles = {lab.id: lab.title for lab in data.course.labs}
    items = []
    for lab_id in status.labs:
        lab = p.labs[lab_id]
        best = lab.best
        if best is None:
            continue
        ev = best.evidence
        items.append({"title": titles.get(lab_id, lab_id), "lab": lab_id, "outcome": outcome_label(ev),
                      "hints": ", ".join(f"{k}: {v}" for k, v in sorted((ev.hints or {}).items())),
                      "score": f"{ev.score:g}/{ev.max_score:g}", "date": ev.recorded_at[:10],
                      "shows": ", ".join(status.shown_by.get(lab_id, [])),
                      "checks": ", ".join(c.id for c in ev.checks if c.passed), "seq": best.seq,
                      "hash": best.hash[:12], "kinds": lab.kinds, "basis": lab.basis,
                      "rubric": _rubric_item(lab)})
    return items


def _rubric_item(lab: LabStatus) -> dict[str, Any] | None:
    """The manual grade behind a lab, as the engineer page shows it (None: automatic checks only)."""
    if lab.rubric is None or lab.rubric.evidence.rubric is None:
        return None
    ev, grade = lab.rubric.evidence, lab.rubric.evidence.rubric
    return {"points": f"{ev.score:g}/{ev.max_score:g}", "pass_points": f"{grade.pass_points:g}",
            "grader": grade.grader, "version": grade.version, "date": ev.recorded_at[:10],
            "criteria": ", ".join(f"{k}: {v:g}" for k, v in (grade.criteria or {}).items()),
            "seq": lab.rubric.seq, "hash": lab.rubric.hash[:12]}


def engineer_page(data: ReportData, p: Progress, title: str) -> str:
    course = data.course
    tracks = course.ladder.tracks
    levels = bar_chart([(t.name, p.levels[t.id], f"{t.name}: level {p.levels[t.id]}") for t in tracks], 6)
    titles = {lab.id: lab.title for lab in course.labs}
    shown = []
    for (track_id, level), status in sorted(p.cells.items()):
        if not status.demonstrated or level > p.levels[track_id]:
            continue
        texts = _clause_texts(data, (track_id, level))
        shown.append({"track": course.track(track_id).name, "level": level, "partial": status.partial,
                      "claim": status.claim, "clauses": len(status.clauses), "manual": RUBRIC in status.kinds,
                      "evidenced": [(c, texts[c]) for c in status.evidenced],
                      "not_evidenced": [(c, texts[c]) for c in status.not_evidenced],
                      "evidence": _evidence(data, p, status)})
    next_rungs = []
    for t in tracks:
        rung = p.next_rung(t.id)
        if rung is not None:
            next_rungs.append({"track": t.name, "level": rung.level,
                               "missing": ", ".join(f"{titles.get(lab, lab)} ({lab})" for lab in rung.missing)})
    return render("reports/engineer.html.j2", page_title=f"{p.learner} - {title}", css_href="../style.css",
                  learner=p.learner, title=title, verification=data.extra.get("verification"), levels=levels,
                  shown=shown, next_rungs=next_rungs) + "\n"


def _csv(rows: list[list[Any]]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue()


def exports(data: ReportData) -> dict[str, str]:
    tracks = [t.id for t in data.course.ladder.tracks]
    ladder_rows: list[list[Any]] = [["learner", "track", "level"]]
    evidence_rows: list[list[Any]] = [
        ["learner", "lab", "passed", "score", "max_score", "entry", "hash", "recorded_at", "hints", "kinds",
         "rubric_points", "rubric_max", "rubric_grader", "rubric_version", "rubric_entry"]]
    learners = []
    for learner, p in data.ladder.items():
        ladder_rows += [[learner, t, p.levels[t]] for t in tracks]
        for lab_id, status in sorted(p.labs.items()):
            best = status.best
            if best is not None:
                ev = best.evidence
                grade = status.rubric.evidence if status.rubric is not None else None
                manual = ([grade.score, grade.max_score, grade.rubric.grader, grade.rubric.version,
                           status.rubric.seq if status.rubric else ""]
                          if grade is not None and grade.rubric is not None else ["", "", "", "", ""])
                evidence_rows.append([learner, lab_id, status.passed, ev.score, ev.max_score, best.seq, best.hash,
                                      ev.recorded_at, "" if ev.hints_total is None else ev.hints_total,
                                      "+".join(status.kinds), *manual])
        learners.append({"learner": learner, "levels": p.levels,
                         "demonstrated": [f"{t}:{lvl}" for (t, lvl), c in sorted(p.cells.items()) if c.demonstrated],
                         # what each demonstrated cell claims: its evidenced clauses, and the ones it does not
                         "clauses": {f"{t}:{lvl}": {"evidenced": c.evidenced, "not_evidenced": c.not_evidenced}
                                     for (t, lvl), c in sorted(p.cells.items()) if c.demonstrated},
                         # the kinds of evidence behind each demonstrated cell: ["lab"] or ["lab", "rubric"]
                         "kinds": {f"{t}:{lvl}": c.kinds for (t, lvl), c in sorted(p.cells.items()) if c.demonstrated},
                         # what stands behind each lab, in words (automatic checks [+ manual rubric (...)])
                         "basis": {lab: s.basis for lab, s in sorted(p.labs.items())},
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
            # no indent: json's C encoder serves only compact output (indented is pure Python, 10x slower)
            "report.json": json.dumps(report, sort_keys=True)}


#: Engineer pages rendered in worker processes from this many learners on (rendering is pure Python, one core).
PARALLEL_FROM = 200


#: What forked page writers render (set before the pool forks; they inherit it, nothing is pickled).
_FORKED: tuple[ReportData, Path, str] | None = None


def _write_engineer_pages(data: ReportData, learners: list[str], out: Path, title: str) -> list[str]:
    names = []
    for learner in learners:
        name = os.path.join("engineer", page_name(learner))
        (out / name).write_text(engineer_page(data, data.ladder[learner], title), encoding="utf-8")
        names.append(name)
    return names


def _write_forked(learners: list[str]) -> list[str]:
    assert _FORKED is not None
    return _write_engineer_pages(_FORKED[0], learners, _FORKED[1], _FORKED[2])


def _forked_pool(workers: int) -> Any:
    """A process pool whose workers are forks of this process (they inherit the report's data: nothing is
    pickled but the learner ids), or None where forking is not safe: one core, no ``fork``, or other threads
    running (a fork copies locks that a thread holds)."""
    import multiprocessing
    import threading
    from concurrent.futures import ProcessPoolExecutor

    if workers < 2 or threading.active_count() > 1 or "fork" not in multiprocessing.get_all_start_methods():
        return None
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"))


def write_site(data: ReportData, out: Path) -> list[Path]:
    """Write the whole site under ``out`` (created); return the pages written. With many learners the
    engineer pages are rendered by forked workers, one per core."""
    title = f"{data.course.title} - ladder"
    (out / "engineer").mkdir(parents=True, exist_ok=True)
    files = {"style.css": resource("reports/style.css"), "index.html": cohort_page(data, title), **exports(data)}
    learners = list(data.ladder)
    workers = min(os.cpu_count() or 1, 8)
    pool = _forked_pool(workers) if len(learners) >= PARALLEL_FROM else None
    if pool is None:
        engineer = _write_engineer_pages(data, learners, out, title)
    else:
        global _FORKED
        _FORKED = (data, out, title)
        try:
            with pool:
                size = -(-len(learners) // (4 * workers))  # a few chunks per worker
                chunks = [learners[i:i + size] for i in range(0, len(learners), size)]
                engineer = [name for names in pool.map(_write_forked, chunks) for name in names]
        finally:
            _FORKED = None
    pages = []
    for name, text in files.items():
        path = out / name
        path.write_text(text, encoding="utf-8")
        if name.endswith(".html"):
            pages.append(path)
    return pages + [out / name for name in engineer]
