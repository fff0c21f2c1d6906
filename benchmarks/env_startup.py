"""Environment start-up and tear-down, against bare ``docker run -d`` in the same run.

For the 3-host ``firewall`` environment, each round measures:

- ``env up``: networks, hardened hosts, sshd keys, readiness of every probe (ports answering);
- ``env down``: every container and network removed;
- bare: ``docker network create --internal`` + ``docker run -d`` of the same three
  images, then ``docker rm -f`` + ``docker network rm`` (no readiness, no hardening).

Prints medians and the ratios. Targets (issue 2): up <= 1.0 s, up <= 1.2x bare, down <= 0.5 s.

    python benchmarks/env_startup.py [--rounds 7] [--env firewall]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import time

from ladderlab.config import Settings
from ladderlab.environments.engine import connect
from ladderlab.environments.images import image_tags
from ladderlab.environments.runtime import load_spec, up


def bare_round(tags: list[str], n: int) -> tuple[float, float]:
    net = f"llbench-{n}"
    started = time.perf_counter()
    subprocess.run(["docker", "network", "create", "--internal", net], check=True, capture_output=True)
    names = []
    for i, tag in enumerate(tags):
        name = f"llbench-{n}-{i}"
        subprocess.run(["docker", "run", "-d", "--name", name, "--network", net, tag], check=True,
                       capture_output=True)
        names.append(name)
    up_s = time.perf_counter() - started
    started = time.perf_counter()
    subprocess.run(["docker", "rm", "-f", *names], check=True, capture_output=True)
    subprocess.run(["docker", "network", "rm", net], check=True, capture_output=True)
    return up_s, time.perf_counter() - started


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--env", default="firewall")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    settings = Settings.from_env()
    client = connect()
    spec = load_spec(settings, args.env)
    tags = image_tags(settings, client, args.env, {h.image for h in spec.hosts.values()})
    host_tags = [tags[h.image] for h in spec.hosts.values()]
    # warm-up (page cache, image layers) for both sides
    up(settings, args.env, client=client, learner="bench").down()
    bare_round(host_tags, 0)
    ups, downs, bare_ups, bare_downs = [], [], [], []
    for n in range(1, args.rounds + 1):
        started = time.perf_counter()
        env = up(settings, args.env, client=client, learner="bench")
        ups.append(time.perf_counter() - started)
        started = time.perf_counter()
        env.down()
        downs.append(time.perf_counter() - started)
        b_up, b_down = bare_round(host_tags, n)
        bare_ups.append(b_up)
        bare_downs.append(b_down)
    med = {k: statistics.median(v) for k, v in
           {"up": ups, "down": downs, "bare_up": bare_ups, "bare_down": bare_downs}.items()}
    result = {"env": args.env, "hosts": len(host_tags), "rounds": args.rounds,
              "median_up_s": round(med["up"], 3), "median_down_s": round(med["down"], 3),
              "median_bare_run_s": round(med["bare_up"], 3), "median_bare_rm_s": round(med["bare_down"], 3),
              "up_vs_bare": round(med["up"] / med["bare_up"], 2),
              "down_vs_bare": round(med["down"] / med["bare_down"], 2)}
    if args.json:
        print(json.dumps(result))
        return
    print(f"{args.env}: {len(host_tags)} hosts, {args.rounds} rounds (medians)")
    print(f"  env up + ready   {med['up']:.3f} s   (target <= 1.0 s)")
    print(f"  bare docker run  {med['bare_up']:.3f} s   ratio {result['up_vs_bare']}x (target <= 1.2x)")
    print(f"  env down         {med['down']:.3f} s   (target <= 0.5 s)")
    print(f"  bare docker rm   {med['bare_down']:.3f} s   ratio {result['down_vs_bare']}x")


if __name__ == "__main__":
    main()
