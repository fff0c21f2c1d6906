"""What the "Start here" notebook shows a learner: their own ladder, and the labs to their next level."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


def notebook_link(lab_id: str) -> str:
    """Where a lab's notebook is, relative to start-here.ipynb: the workspace's released copy when JupyterLab
    serves a workspace (``ladderlab lab``), else the course's source (``ladderlab lab --author``). On a hub, the
    server's own path to it."""
    prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX")
    if prefix:  # a hub learner's server: absolute, so that it holds in a lab's notebook as in start-here.ipynb
        return f"{prefix.rstrip('/')}/lab/tree/{lab_id}/{lab_id}.ipynb"
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

    def data(self) -> dict[str, Any]:
        """What the learner is shown, as plain data: what the hub's service sends a learner's kernel (api/ladder)
        and what :class:`Ladder` shows, in a notebook or on the service's page."""
        return {"learner": self.learner,
                "levels": [[t.name, self.progress.levels[t.id]] for t in self.course.ladder.tracks],
                "shown": [[self.course.track(t).name, lvl, self._claim(t, lvl, c)]
                          for (t, lvl), c in sorted(self.progress.cells.items())
                          if c.demonstrated and lvl <= self.progress.levels[t]],
                "next_labs": [{"track": name, "level": level, "id": lab, "title": title}
                              for name, level, lab, title in self.next_labs()]}

    def __repr__(self) -> str:
        return repr(Ladder(self.data()))

    def _repr_html_(self) -> str | None:
        return Ladder(self.data())._repr_html_()

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


class Ladder:
    """A learner's ladder as shown (:meth:`LadderView.data`): text, or HTML in a notebook. ``link`` makes a lab's
    notebook link from its id (the workspace's copy by default)."""

    def __init__(self, data: dict[str, Any], link: Callable[[str], str] = notebook_link) -> None:
        self.data = data
        self.link = link

    @property
    def learner(self) -> str:
        return str(self.data["learner"])

    def __repr__(self) -> str:
        lines = [f"ladder of {self.learner}:"]
        for name, level in self.data["levels"]:
            lines.append(f"  {name:<28} level {level}")
        for lab in self.data["next_labs"]:
            lines.append(f"  next: {lab['track']} L{lab['level']} <- {lab['id']} ({lab['title']}): "
                         f"{self.link(lab['id'])}")
        return "\n".join(lines)

    def values(self) -> dict[str, Any]:
        """The values of ``lab/ladder.html.j2`` (also included by the service's page, ``hub/ladder.html.j2``)."""
        return {"learner": self.learner, "levels": self.data["levels"], "shown": self.data["shown"],
                "next_labs": [{**lab, "link": self.link(lab["id"])} for lab in self.data["next_labs"]]}

    def _repr_html_(self) -> str | None:
        from ladderlab.lab import _html

        return _html("lab/ladder.html.j2", **self.values())


def my_ladder(learner: str | None = None) -> Any:
    """The learner's own ladder from the evidence record (levels, demonstrated cells, next labs). On a hub the
    record is out of the learner's reach: the ladderlab service answers, for the hub user this server runs as
    and nobody else."""
    from ladderlab.lab import SERVICE_URL_ENV, LabError, _service_call

    if os.environ.get(SERVICE_URL_ENV) and os.environ.get("JUPYTERHUB_API_TOKEN"):
        ladder = Ladder(_service_call("GET", "api/ladder"))
        if learner is not None and learner != ladder.learner:
            raise LabError(f"on a hub you see your own ladder only ({ladder.learner}), not {learner}'s")
        return ladder
    return learner_ladder(learner)


def learner_ladder(learner: str | None = None) -> LadderView:
    """The ladder of ``learner`` (default: this session's) read from the evidence record, on the trusted side."""
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
