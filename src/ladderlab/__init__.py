"""ladderlab: hands-on SRE skills lab, graded against disposable Docker environments.

In a notebook::

    import ladderlab
    lab = ladderlab.start("sec-1-iptables-hardening")
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from ladderlab.lab import Lab


def start(lab_id: str, **kwargs: Any) -> Lab:
    """Bring up (or reattach to) your environment for ``lab_id``; see :func:`ladderlab.lab.start`."""
    from ladderlab.lab import start as _start

    return _start(lab_id, **kwargs)


def my_ladder(learner: str | None = None) -> Any:
    """Your ladder (levels per track, demonstrated cells, the labs to your next level)."""
    from ladderlab.lab.ladder_view import my_ladder as _my_ladder

    return _my_ladder(learner)
