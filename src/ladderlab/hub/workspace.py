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
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

#: The most a hand-out may carry (every released notebook of the course together).
MAX_BYTES = 64 * 1024 * 1024
#: The most the learner's process may answer (one line of JSON, a few hundred bytes in practice).
MAX_REPLY = 1024 * 1024


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


def hand_out(command: Sequence[str], notebooks: dict[str, str], env: dict[str, str], timeout: float = 30) \
        -> dict[str, str]:
    """Run ``command`` (the jail, as the learner, ending in ``python -I -m ladderlab.hub.workspace``) with the
    notebooks on stdin; what happened to each notebook sent (fetched, updated, kept, beside, not placed). Raises
    :class:`HandOutError` with the child's last words when it fails, says too much (more than ``MAX_REPLY``
    bytes: it is killed) or answers something else; the caller decides what a failure means for the server."""
    proc = subprocess.Popen(list(command), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env=env)
    assert proc.stdin is not None and proc.stdout is not None
    threading.Thread(target=_feed, args=(proc.stdin, json.dumps(notebooks).encode()), daemon=True).start()
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    try:
        reply = proc.stdout.read(MAX_REPLY + 1)
        if len(reply) > MAX_REPLY:
            proc.kill()
        code = proc.wait()
    finally:
        timer.cancel()
        proc.stdout.close()
    text = reply[:MAX_REPLY].decode(errors="replace")
    if len(reply) > MAX_REPLY:
        raise HandOutError(f"the hand-out said more than {MAX_REPLY} bytes and was stopped")
    if code != 0:
        raise HandOutError(f"the hand-out failed (exit {code}): {(text.strip() or 'no message')[-500:]}")
    try:
        result = json.loads(text.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise HandOutError(f"the hand-out answered something else: {text.strip()[-200:]!r}") from None
    if not isinstance(result, dict) or set(result) != set(notebooks) or \
            not all(isinstance(v, str) for v in result.values()):
        raise HandOutError(f"the hand-out answered something else: {text.strip()[-200:]!r}")
    return {k: v[:300] for k, v in result.items()}


class HandOutError(RuntimeError):
    """The learner's process did not hand the workspace out."""


def _feed(pipe: Any, data: bytes) -> None:
    try:
        pipe.write(data)
        pipe.close()
    except OSError:  # the child stopped reading (it failed, or was killed): its exit says why
        pass


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
    try:
        with tempfile.TemporaryDirectory(dir=record.parent) as tmp:
            for relative, text in sorted(notebooks.items()):
                path = _safe(relative)  # a path out of the home is the sender's bug: refused, nothing more placed
                new = Path(tmp) / path.name
                try:
                    new.write_text(text)
                    outcome[relative] = _place(new, home / path, handed, relative)
                except OSError as exc:  # e.g. the learner made the lab's folder something they cannot write
                    outcome[relative] = f"not placed: {exc.strerror or exc}"
    finally:
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
