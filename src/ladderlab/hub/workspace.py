"""A learner's workspace on a hub: the released labs in their home, put there each time their server starts.

The hub (root) reads what nbgrader released (the course's exchange, ``outbound/<lab>/<lab>.ipynb``: solutions and
hidden checks already removed) and ``start-here.ipynb``; it never writes in a learner's home itself, where a
symlink the learner planted could turn a write by root into a write anywhere. The notebooks go, on stdin, to
``python -m ladderlab.hub.workspace`` started in the learner's own jail as the learner, which places each one with
the workspace's rule (:func:`ladderlab.service.workspace._place`): a notebook the learner has not touched is
replaced by a newer release, one they changed is kept and the new release goes beside it. What was handed out
is kept in ``~/.ladderlab/handed.json``, the learner's own (changing it can only cost them an update).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

#: The most a hand-out may carry (every released notebook of the course together).
MAX_BYTES = 64 * 1024 * 1024


def released(outbound: Path, lab_ids: Sequence[str], start_here: Path | None) -> dict[str, str]:
    """``{relative path: notebook text}``: each lab's released notebook found under ``outbound`` (a lab not
    released yet is left out) and the start page."""
    out: dict[str, str] = {}
    if start_here is not None and start_here.is_file():
        out["start-here.ipynb"] = start_here.read_text()
    for lab in lab_ids:
        nb = outbound / lab / f"{lab}.ipynb"
        if nb.is_file():
            out[f"{lab}/{lab}.ipynb"] = nb.read_text()
    return out


def hand_out(command: Sequence[str], notebooks: dict[str, str], env: dict[str, str], timeout: float = 60) \
        -> dict[str, str]:
    """Run ``command`` (the jail, as the learner, ending in ``python -m ladderlab.hub.workspace``) with the
    notebooks on stdin; what happened to each (fetched, updated, kept, beside). A failure raises with the
    child's message: a server is not started on a workspace half handed out."""
    r = subprocess.run(list(command), input=json.dumps(notebooks), capture_output=True, text=True, timeout=timeout,
                       check=False, env=env)
    if r.returncode != 0:
        raise RuntimeError(f"the workspace could not be handed out: {(r.stderr.strip() or 'no message')[-500:]}")
    result: dict[str, str] = json.loads(r.stdout.strip().splitlines()[-1])
    return result


def _safe(relative: str) -> Path:
    path = Path(relative)
    if path.is_absolute() or ".." in path.parts or path.suffix != ".ipynb" or len(path.parts) > 2:
        raise ValueError(f"not a workspace notebook: {relative!r}")
    return path


def place_all(home: Path, notebooks: dict[str, str]) -> dict[str, str]:
    """In the learner's process: each notebook placed under ``home``; what happened to each."""
    from ladderlab.service.workspace import _load, _place, _save

    record = home / ".ladderlab" / "handed.json"
    record.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    handed = _load(record)
    outcome: dict[str, str] = {}
    with tempfile.TemporaryDirectory(dir=record.parent) as tmp:
        for relative, text in sorted(notebooks.items()):
            path = _safe(relative)
            new = Path(tmp) / path.name
            new.write_text(text)
            try:
                outcome[relative] = _place(new, home / path, handed, relative)
            except OSError as exc:  # e.g. the learner made the lab's folder something they cannot write: theirs
                outcome[relative] = f"not placed: {exc.strerror or exc}"
    _save(record, handed)
    return outcome


def main() -> int:
    raw = sys.stdin.read(MAX_BYTES + 1)
    if len(raw) > MAX_BYTES:
        print("the hand-out is too large", file=sys.stderr)
        return 2
    notebooks = json.loads(raw)
    if not isinstance(notebooks, dict) or not all(isinstance(v, str) for v in notebooks.values()):
        print("the hand-out is not {path: notebook}", file=sys.stderr)
        return 2
    print(json.dumps(place_all(Path.home(), notebooks)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
