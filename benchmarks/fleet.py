"""12 environments brought up across a three-engine swarm against the same 12 on one engine, in one run.

The swarm is the project's test rig (``ladderlab.environments.swarmrig``: three engines in network
namespaces of this machine, two workers placing). All its engines share this machine's kernel and two
CPUs, so this measures cluster mode's overhead (placement, overlay networks, a remote engine), not
capacity: a real fleet adds machines. Root only.

    python benchmarks/fleet.py [--envs 12] [--jobs 4] [--env firewall]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ladderlab.config import Settings
from ladderlab.environments import fleet, runtime, swarmrig
from ladderlab.environments.engine import connect


def bring_up(settings: Settings, client: object, env: str, n: int, jobs: int, tag: str,
             ) -> tuple[float, dict[str, int]]:
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        envs = list(pool.map(lambda i: runtime.up(settings, env, client=client, learner=f"bench-{tag}-{i}"),
                             range(n)))
    took = time.monotonic() - started
    spread: dict[str, int] = {}
    for e in envs:
        spread[e.record.node or "local"] = spread.get(e.record.node or "local", 0) + 1
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        list(pool.map(lambda e: e.down(), envs))
    return took, spread


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--envs", type=int, default=12)
    ap.add_argument("--jobs", type=int, default=4)
    ap.add_argument("--env", default="firewall")
    args = ap.parse_args()
    why = swarmrig.available()
    if why:
        print(f"skipped: {why}")
        return 0
    settings = Settings.from_env(Path(__file__).resolve().parents[1])
    client = connect()
    local, _ = bring_up(settings, client, args.env, args.envs, args.jobs, "local")
    # Each rig node reports the machine's 2 CPUs: reserve a tenth of the hosts' CPU limits so that 12 fit.
    with swarmrig.SwarmRig(Path(tempfile.mkdtemp(prefix="ll-fleet-bench-")), cpu_reservation=0.1) as rig:
        tags = runtime.image_set(settings, client, runtime.load_spec(settings, args.env))
        t0 = time.monotonic()
        rig.load_images(tags, rig.names[1:])
        loading = time.monotonic() - t0
        os.environ[fleet.CLUSTER_VARIABLE] = str(rig.cluster_file)
        try:
            fl = fleet.get()
            assert fl is not None
            fl.push(client, args.env, tags, nodes=rig.names[1:], say=lambda _m: None)
            swarm, spread = bring_up(settings, client, args.env, args.envs, args.jobs, "swarm")
        finally:
            os.environ.pop(fleet.CLUSTER_VARIABLE, None)
    print(f"{args.envs} x {args.env}, {args.jobs} at a time")
    print(f"  one engine (baseline):      {local:6.1f} s")
    print(f"  swarm, 2 workers:           {swarm:6.1f} s   ratio {swarm / local:.2f}x the baseline")
    print(f"  (images loaded into the workers once: {loading:.1f} s; environments per node: {spread})")
    print("  one machine: this is cluster mode's overhead, not a fleet's capacity")
    return 0


if __name__ == "__main__":
    sys.exit(main())
