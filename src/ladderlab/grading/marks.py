"""The marks a check's line of feedback starts with, wherever it is shown: the learner's ``lab.check``
output and the check cell of a graded notebook.

>>> line(True, "default-deny", "INPUT drops by default")
'✓ default-deny: INPUT drops by default'

Standard library only: the learner API imports it.
"""

from __future__ import annotations

PASS, FAIL, SKIPPED = "\u2713", "\u2717", "\u00b7"


def mark(passed: bool | None) -> str:
    return SKIPPED if passed is None else PASS if passed else FAIL


def line(passed: bool | None, check_id: str, feedback: str) -> str:
    """One line of feedback on one check (``passed`` None: a check that was not run)."""
    return f"{mark(passed)} {check_id}: {feedback}"
