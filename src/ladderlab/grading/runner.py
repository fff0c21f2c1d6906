"""Runs inside the sandbox container: execute a notebook with nbclient, write it back.

The runner starts its kernel at once, then waits for ``/work/go`` (the grader
writes the connection file and then ``go`` once the environment is ready), so
kernel start-up overlaps with the environment's. Whatever happens (a cell
timing out, the kernel dying) the notebook executed so far is written,
because only that file crosses back to the grader.

Imports only what the runner image has (nbformat, nbclient from Debian).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time

GO = "/work/go"


async def _wait_for_go(path: str, timeout: float) -> None:
    end = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > end:
            raise TimeoutError(f"the grader never said go ({path})")
        await asyncio.sleep(0.02)


def _write(nb: object, out: str) -> None:
    """Write atomically: the grader takes the file as soon as it appears."""
    import nbformat

    nbformat.write(nb, out + ".tmp")
    os.replace(out + ".tmp", out)


async def _execute(client: object, nb: object, go: str, go_timeout: float, out: str) -> None:
    from nbclient.util import ensure_async

    async with client.async_setup_kernel():  # type: ignore[attr-defined]
        await _wait_for_go(go, go_timeout)
        kc = client.kc  # type: ignore[attr-defined]
        await client.async_wait_for_reply(await ensure_async(kc.kernel_info()))  # type: ignore[attr-defined]
        for index, cell in enumerate(nb.cells):  # type: ignore[attr-defined]
            await client.async_execute_cell(  # type: ignore[attr-defined]
                cell, index, execution_count=client.code_cells_executed + 1)  # type: ignore[attr-defined]
        _write(nb, out)  # before the kernel shuts down: the grader need not wait for that


def main(argv: list[str] | None = None) -> int:
    import nbformat
    from nbclient import NotebookClient

    p = argparse.ArgumentParser(prog="ladderlab-runner")
    p.add_argument("notebook")
    p.add_argument("out")
    p.add_argument("--cell-timeout", type=float, default=120)
    p.add_argument("--go", default=GO, help="wait for this file before running cells ('' to start at once)")
    p.add_argument("--go-timeout", type=float, default=600)
    args = p.parse_args(argv)
    nb = nbformat.read(args.notebook, as_version=4)
    client = NotebookClient(nb, timeout=int(args.cell_timeout), kernel_name="python3", allow_errors=True,
                            interrupt_on_timeout=True, resources={"metadata": {"path": "/work"}})
    status = 0
    try:
        asyncio.run(_execute(client, nb, args.go, args.go_timeout, args.out) if args.go else client.async_execute())
    except Exception as exc:
        print(f"ladderlab-runner: execution stopped: {type(exc).__name__}: {exc}", file=sys.stderr)
        status = 3
    if status or not os.path.exists(args.out):
        _write(nb, args.out)
    return status


if __name__ == "__main__":
    sys.exit(main())
