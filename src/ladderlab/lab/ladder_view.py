"""What the "Start here" notebook shows a learner: their own ladder, and the labs to their next level."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


def notebook_link(lab_id: str) -> str:
    """Where a lab's notebook is, relative to start-here.ipynb: the workspace's released copy when JupyterLab
    serves a workspace (``ladderlab lab``), else the course's source (``ladderlab lab --author``)."""
    import os

    if os.environ.get("LADDERLAB_WORKSPACE"):
        return f"{lab_id}/{lab_id}.ipynb"
    return f"labs/{lab_id}/{lab_id}.ipynb"


@dataclass
class LadderView:
    learner: str
    course: Any
    progress: Any

    def next_labs(self) -> list[tuple[str, int, str, str]]:
        """(track name, level, lab id, lab title) for every lab missing from each track's next rung."""
        titles = {lab.id: lab.title for lab in self.course.labs}
        out = []
        for track in self.course.ladder.tracks:
            rung = self.progress.next_rung(track.id)
            if rung is not None:
                out += [(track.name, rung.level, lab, titles.get(lab, lab) + self._waiting(lab))
                        for lab in rung.missing]
        return out

    def __repr__(self) -> str:
        lines = [f"ladder of {self.learner}:"]
        for t in self.course.ladder.tracks:
            lines.append(f"  {t.name:<28} level {self.progress.levels[t.id]}")
        for name, level, lab, title in self.next_labs():
            lines.append(f"  next: {name} L{level} <- {lab} ({title}): {notebook_link(lab)}")
        return "\n".join(lines)

    def _waiting(self, lab: str) -> str:
        """`` (automatic part passed; awaiting the trainer's manual grade)`` for a lab with a rubric, else ""."""
        status = self.progress.labs.get(lab)
        return " (automatic part passed; awaiting the trainer's manual grade)" \
            if status is not None and status.awaiting_rubric else ""

    def _claim(self, track: str, level: int, cell: Any) -> str:
        """What a demonstrated cell claims: only its evidenced clauses (ladder/rules.py), "in part" when it
        does not claim them all."""
        texts = {c.id: c.text for c in self.course.cell(track, level).clauses}
        said = " ".join(texts[c] for c in cell.evidenced)
        if "rubric" in cell.kinds:
            said += " (automatic checks + a trainer's manual rubric grade)"
        return f" (in part: {cell.claim}): {said}" if cell.partial else f": {said}"

    def _repr_html_(self) -> str | None:
        from ladderlab.lab import _html

        return _html("lab/ladder.html.j2", learner=self.learner,
                     levels=[(t.name, self.progress.levels[t.id]) for t in self.course.ladder.tracks],
                     shown=[(self.course.track(t).name, lvl, self._claim(t, lvl, c))
                            for (t, lvl), c in sorted(self.progress.cells.items())
                            if c.demonstrated and lvl <= self.progress.levels[t]],
                     next_labs=[{"track": name, "level": level, "link": notebook_link(lab), "title": title, "id": lab}
                                for name, level, lab, title in self.next_labs()])


def my_ladder(learner: str | None = None) -> LadderView:
    """The learner's own ladder from the evidence record (levels, demonstrated cells, next labs)."""
    from ladderlab.config import Settings
    from ladderlab.course import load_course
    from ladderlab.course.labs import lab_rubrics
    from ladderlab.lab import learner_id
    from ladderlab.ladder.rules import progress
    from ladderlab.ladder.store import Store

    settings = Settings.from_env()
    course = load_course(settings.course_file, "course.yaml")
    who = learner_id(learner)
    entries = Store.open(settings).entries(learner=who)
    return LadderView(who, course, progress(course, who, entries, manual=lab_rubrics(settings, course)))
