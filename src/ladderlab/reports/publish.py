"""``ladderlab report``: the static site for a selection of the record, stamped with whether the record
verifies (a report on a record that does not verify says so on every page).

>>> published = publish(select(settings, cohort="2024-spring"), store, Path("site"))   # doctest: +SKIP
>>> published.verification.ok                                                          # doctest: +SKIP
True
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ladderlab.ladder.recording import now
from ladderlab.ladder.store import Store, Verification
from ladderlab.ladder.views import Selection
from ladderlab.reports.data import build
from ladderlab.reports.site import write_site


@dataclass(frozen=True)
class Published:
    out: Path
    pages: list[Path]
    verification: Verification

    @property
    def index(self) -> Path:
        return self.out / "index.html"


def publish(view: Selection, store: Store, out: Path) -> Published:
    """Write the site for ``view`` under ``out``; ``store`` is verified and the result shown on every page."""
    data = build(view.course, view.entries, view.members, now(), manual=view.manual)
    check = store.verify()
    data.extra["verification"] = {"ok": check.ok, "entries": check.entries, "reason": check.reason}
    return Published(out, write_site(data, out), check)
