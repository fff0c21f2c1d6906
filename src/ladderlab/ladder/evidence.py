"""One graded attempt, as the record keeps it, and how entries are hashed into a chain.

An entry's hash is ``sha256(prev_hash + "\\n" + payload)`` where ``payload`` is the canonical
JSON of the evidence (sorted keys, no spaces, UTF-8). Changing one byte of a payload breaks its
hash; rewriting a payload and its hash breaks the next entry's ``prev_hash``; rewriting the
whole tail breaks the signed anchor (see :mod:`ladderlab.ladder.store`).

``hints`` (how many of each check's hints the learner had seen, ``lab.hint``) came later: an entry
written before it has no ``hints`` key, reads back as ``hints=None`` (not known) and serialises without
the key, so its payload, and the chain, are unchanged.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

GENESIS = "0" * 64
SCHEMA = 1


@dataclass(frozen=True)
class CheckResult:
    id: str
    points: float
    max_points: float
    passed: bool


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

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["checks"] = [asdict(c) for c in self.checks]
        if self.hints is None:
            del data["hints"]  # an entry from before hints were recorded keeps its payload
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Evidence:
        checks = tuple(CheckResult(**c) for c in data.get("checks", []))
        hints = data.get("hints")
        if hints is not None and not (isinstance(hints, dict) and all(
                isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v >= 0
                for k, v in hints.items())):
            raise ValueError("evidence hints: expected {check id: count}")
        return cls(**{**data, "checks": checks})

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
