"""One graded attempt, as the record keeps it, and how entries are hashed into a chain.

An entry's hash is ``sha256(prev_hash + "\\n" + payload)`` where ``payload`` is the canonical
JSON of the evidence (sorted keys, no spaces, UTF-8). Changing one byte of a payload breaks its
hash; rewriting a payload and its hash breaks the next entry's ``prev_hash``; rewriting the
whole tail breaks the signed anchor (see :mod:`ladderlab.ladder.store`).

``hints`` (how many of each check's hints the learner had seen, ``lab.hint``) came later: an entry
written before it has no ``hints`` key, reads back as ``hints=None`` (not known) and serialises without
the key, so its payload, and the chain, are unchanged.

*Evidence kinds* came later too. ``lab`` (the default): an automatic grading, the checks' verdicts
against a fresh environment. ``rubric``: a trainer's manual grade of a lab's manually graded cell in
nbgrader's formgrader, against the lab's rubric (lab.yaml ``rubric:``), for the same submission as its
automatic entry (``submission_hash``): its ``rubric`` says who graded, against which rubric version, and
the criteria points when the grader gave them; ``score``/``max_score`` are the cell's points, ``passed``
whether they reach the rubric's pass mark, and ``checks`` is empty. The ``kind`` key is written only for
kinds other than ``lab``: every entry written before kinds existed has none, reads back as ``lab`` and
serialises exactly as it was written.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

GENESIS = "0" * 64
SCHEMA = 1
LAB, RUBRIC = "lab", "rubric"
KINDS = (LAB, RUBRIC)
#: How each kind reads in the reports, views and badges.
KIND_TITLES = {LAB: "automatic checks", RUBRIC: "manual rubric"}


@dataclass(frozen=True)
class CheckResult:
    id: str
    points: float
    max_points: float
    passed: bool


@dataclass(frozen=True)
class RubricGrade:
    """Who graded a lab's manual cell, against which rubric, and how (a ``rubric`` entry's ``rubric``)."""

    version: str
    grader: str
    cell: str
    pass_points: float
    #: criterion id -> points, when the grader gave them (``None``: the cell's total only).
    criteria: dict[str, float] | None = None

    @classmethod
    def from_json(cls, data: Any) -> RubricGrade:
        if not isinstance(data, dict):
            raise ValueError("evidence rubric: expected a mapping")
        out = cls(**data)
        for name in ("version", "grader", "cell"):
            if not isinstance(getattr(out, name), str) or not getattr(out, name):
                raise ValueError(f"evidence rubric: {name} must be a non-empty string")
        if isinstance(out.pass_points, bool) or not isinstance(out.pass_points, int | float):
            raise ValueError("evidence rubric: pass_points must be a number")
        if out.criteria is not None and not (isinstance(out.criteria, dict) and all(
                isinstance(k, str) and isinstance(v, int | float) and not isinstance(v, bool)
                for k, v in out.criteria.items())):
            raise ValueError("evidence rubric criteria: expected {criterion id: points}")
        return out


@dataclass(frozen=True)
class Evidence:
    """What one graded attempt demonstrates, and what it was graded against."""

    course: str
    learner: str
    lab: str
    checks: tuple[CheckResult, ...]
    score: float
    max_score: float
    passed: bool
    threshold: float
    seed: str
    submission_hash: str
    image_digests: dict[str, str] = field(default_factory=dict)
    check_suite_hash: str = ""
    grader_version: str = ""
    recorded_at: str = ""
    source: str = "grading"  # grading | gradebook
    schema: int = SCHEMA
    #: check id -> hints seen (``{}``: none); None in entries written before hints were recorded.
    hints: dict[str, int] | None = None
    #: ``lab`` (automatic checks) or ``rubric`` (a manual grade); see the module's docstring.
    kind: str = LAB
    #: The manual grade's grader, rubric version and criteria: set exactly when ``kind`` is ``rubric``.
    rubric: RubricGrade | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"evidence kind {self.kind!r}: expected one of {', '.join(KINDS)}")
        if (self.kind == RUBRIC) != (self.rubric is not None):
            raise ValueError("evidence: a rubric entry (and only a rubric entry) carries its rubric grade")

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["checks"] = [asdict(c) for c in self.checks]
        if self.hints is None:
            del data["hints"]  # an entry from before hints were recorded keeps its payload
        if self.kind == LAB:
            del data["kind"], data["rubric"]  # lab entries are written as they were before kinds existed
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Evidence:
        checks = tuple(CheckResult(**c) for c in data.get("checks", []))
        hints = data.get("hints")
        if hints is not None and not (isinstance(hints, dict) and all(
                isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v >= 0
                for k, v in hints.items())):
            raise ValueError("evidence hints: expected {check id: count}")
        if "kind" in data and data["kind"] == LAB:
            raise ValueError("evidence kind: a lab entry is written without a kind")
        rubric = RubricGrade.from_json(data["rubric"]) if data.get("rubric") is not None else None
        return cls(**{**data, "checks": checks, "rubric": rubric})

    @property
    def is_manual(self) -> bool:
        return self.kind == RUBRIC

    @property
    def hints_total(self) -> int | None:
        """Hints seen over all checks; None when the entry predates hint recording."""
        return None if self.hints is None else sum(self.hints.values())

    def payload(self) -> str:
        return canonical(self.to_json())


def canonical(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def chain_hash(prev_hash: str, payload: str) -> str:
    return hashlib.sha256(f"{prev_hash}\n{payload}".encode()).hexdigest()


@dataclass(frozen=True)
class Entry:
    """A stored evidence entry: its place in the chain and its hashes."""

    seq: int
    evidence: Evidence
    prev_hash: str
    hash: str
