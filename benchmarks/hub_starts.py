"""Issue 15's benchmark: N learners starting a lab at once through the hub's ladderlab service, against the same N
``env up`` in one process (the same number of threads as the service's pool), in one run.

Starts a real hub (``ladderlab hub start``, a cohort of N in a private cache), mints each learner's token, and
then, at once from N threads, ``POST /services/ladderlab/api/labs/<lab>/env`` with each learner's own token; the
time until every environment is ready (every answer in) is the hub's figure. The baseline brings the same N
environments up with ``runtime.up`` in this process, 4 at a time (the service's pool). Everything is torn down.
Needs root, Docker with the images, the hub extra and its proxy (``ladderlab setup --hub``).

    python benchmarks/hub_starts.py [--learners 20] [--lab sys-3-tested-cli-tool]
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from ladderlab.config import Settings
from ladderlab.course import load_course
from ladderlab.environments import engine, runtime
from ladderlab.hub import accounts, proxy
from ladderlab.testing import private_cache


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--learners", type=int, default=20)
    ap.add_argument("--lab", default="sys-3-tested-cli-tool")
    args = ap.parse_args()
    settings = Settings.from_env()
    learners = [f"bench-{i:02d}" for i in range(args.learners)]
    work = Path(tempfile.mkdtemp(prefix="ll-hubbench-"))
    work.chmod(0o755)
    atexit.register(shutil.rmtree, work, True)  # also when the hub does not start
    cache = private_cache(settings, work / "cache").cache_dir
    root = work / "hub"
    port, token = _free_port(), secrets.token_hex(16)
    env = dict(os.environ, LADDERLAB_CACHE_DIR=str(cache), LADDERLAB_WORKSPACE=str(work / "workspace"),
               LADDERLAB_ROOT=str(settings.root), LADDERLAB_HUB_PROXY=str(proxy.path(settings)),
               LADDERLAB_HUB_TEST_TOKEN=token, LADDERLAB_MAX_ENVS_PER_LEARNER="2")
    cli = [sys.executable, "-m", "ladderlab.cli"]
    roster = work / "roster.csv"
    roster.write_text("id,name,email,team\n" + "".join(f"{n},{n},{n}@example.org,t\n" for n in learners))
    for step in (["cohort", "create", "bench"], ["cohort", "add", "bench", "--roster", str(roster)],
                 ["hub", "passwords", "bench", "--root", str(root)]):
        subprocess.run([*cli, *step], env=env, check=True, capture_output=True, text=True)
    hub = subprocess.Popen([*cli, "hub", "start", "bench", "--root", str(root), "--port", str(port)], env=env,
                           stdout=(work / "hub.log").open("w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    client = engine.connect(timeout=10)
    course = load_course(settings.course_file, "course.yaml")
    envname = course.lab(args.lab).environment
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if requests.get(f"{url}/services/ladderlab/api/whoami", timeout=5).status_code == 401:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline or hub.poll() is not None:
                raise SystemExit("the hub did not start: " + (work / "hub.log").read_text()[-2000:])
            time.sleep(0.5)
        admin = {"Authorization": f"token {token}"}
        tokens = {}
        for learner in learners:
            requests.post(f"{url}/hub/api/users", json={"usernames": [learner]}, headers=admin, timeout=30)
            r = requests.post(f"{url}/hub/api/users/{learner}/tokens", json={"expires_in": 3600}, headers=admin,
                              timeout=30)
            tokens[learner] = r.json()["token"]

        def start(learner: str) -> tuple[str, float, int]:
            t0 = time.perf_counter()
            r = requests.post(f"{url}/services/ladderlab/api/labs/{args.lab}/env", timeout=1800,
                              headers={"Authorization": f"token {tokens[learner]}"})
            return learner, time.perf_counter() - t0, r.status_code

        t0 = time.perf_counter()
        with ThreadPoolExecutor(max_workers=len(learners)) as pool:
            results = list(pool.map(start, learners))
        hub_s = time.perf_counter() - t0
        failed = [(lr, code) for lr, _, code in results if code != 200]
        for learner in learners:
            requests.delete(f"{url}/services/ladderlab/api/labs/{args.lab}/env", timeout=600,
                            headers={"Authorization": f"token {tokens[learner]}"})
    finally:
        hub.send_signal(signal.SIGTERM)
        hub.wait(timeout=120)
        for learner in learners:
            accounts.remove(learner)
    # Baseline: the same environments, brought up in this process, 4 at a time (the service's pool).
    os.environ["LADDERLAB_CACHE_DIR"] = str(cache)
    base_settings = Settings.from_env()
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=4) as pool:
        envs = list(pool.map(lambda lr: runtime.up(base_settings, envname, client=client, learner=lr, lab=args.lab,
                                                   course_id=course.id), learners))
    base_s = time.perf_counter() - t0
    for e in envs:
        e.down()
    print(json.dumps({"learners": len(learners), "lab": args.lab, "through_the_hub_s": round(hub_s, 1),
                      "env_up_in_one_process_s": round(base_s, 1), "ratio": round(hub_s / base_s, 2),
                      "refused": failed, "slowest_learner_s": round(max(s for _, s, _ in results), 1)}, indent=1))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
