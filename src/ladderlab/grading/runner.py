"""Runs inside the sandbox container: execute a notebook with nbclient, write it back.

Imports only what the runner image has (nbformat, nbclient from Debian). Whatever
happens (a cell timing out, the kernel dying) the notebook executed so far is
written, because only that file crosses back to the grader.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    import nbformat
    from nbclient import NotebookClient

    p = argparse.ArgumentParser(prog="ladderlab-runner")
    p.add_argument("notebook")
    p.add_argument("out")
    p.add_argument("--cell-timeout", type=float, default=120)
    args = p.parse_args(argv)
    nb = nbformat.read(args.notebook, as_version=4)
    client = NotebookClient(nb, timeout=int(args.cell_timeout), kernel_name="python3", allow_errors=True,
                            interrupt_on_timeout=True, resources={"metadata": {"path": "/work"}})
    status = 0
    try:
        client.execute()
    except Exception as exc:  # noqa: BLE001 - record and still write what ran
        print(f"ladderlab-runner: execution stopped: {type(exc).__name__}: {exc}", file=sys.stderr)
        status = 3
    nbformat.write(nb, args.out)
    return status


if __name__ == "__main__":
    sys.exit(main())
