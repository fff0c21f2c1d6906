"""Seeds, labels, failure clean-up, the reaper and the CLI, against the real engine."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from ladderlab.config import Settings
from ladderlab.environments import labels as L
from ladderlab.environments.reaper import reap
from ladderlab.environments.runtime import list_envs, up
from ladderlab.errors import EnvError, ReadinessTimeout

from .conftest import leftovers

ROOT = Path(__file__).resolve().parents[2]


def test_same_seed_same_environment_other_learner_other_variant(settings, client, images):
    a = up(settings, "debug", client=client, learner="ada", lab="sre-5-strace-debugging")
    b = up(settings, "debug", client=client, learner="ada", lab="sre-5-strace-debugging")
    try:
        assert a.record.seed == b.record.seed and a.params == b.params
        port = a.params["dep_port"]
        for env in (a, b):  # the parameter really reached the host
            assert env.host("cache").run("python3 -c 'import os; print(os.environ[\"CACHE_PORT\"])'").stdout \
                == f"{port}\n"
    finally:
        a.down()
        b.down()


def test_labels_name_env_lab_learner_and_expiry(settings, client, images):
    env = up(settings, "firewall", client=client, learner="grace", lab="sec-1-iptables-hardening", ttl_minutes=5)
    try:
        containers, networks = leftovers(client, env.id)
        assert len(containers) == 3 and len(networks) == 1
        for obj in [*containers, *networks]:
            labels = obj["Labels"]
            assert labels[L.MANAGED] == "1"
            assert labels[L.ENV] == "firewall" and labels[L.LEARNER] == "grace"
            assert labels[L.LAB] == "sec-1-iptables-hardening"
            assert 0 < float(labels[L.EXPIRES]) - time.time() <= 5 * 60
    finally:
        env.down()


@pytest.fixture()
def scratch_root(tmp_path):
    """A course root with the real shared images and one extra, deliberately broken environment."""
    (tmp_path / "course.yaml").write_text((ROOT / "course.yaml").read_text())
    envs = tmp_path / "environments"
    envs.mkdir()
    (envs / "_common").symlink_to(ROOT / "environments" / "_common")
    (envs / "broken").mkdir()
    host = {"image": "probe", "role": "probe", "capabilities": ["SETUID", "SETGID", "SYS_CHROOT"]}
    (envs / "broken" / "env.yaml").write_text(yaml.safe_dump({"name": "broken", "hosts": {
        "good": {**host, "ready": [{"port": 22}]},
        "late": {**host, "depends_on": ["good"], "ready": [{"port": 5999}], "ready_timeout": 2},
    }}))
    return Settings(root=tmp_path, cache_dir=tmp_path / ".cache", ca_bundle=Settings.from_env(ROOT).ca_bundle)


def test_failed_up_tears_down_what_it_made_and_attaches_logs(scratch_root, client, images):
    before = {c["Id"] for c in client.api.containers(all=True)}
    with pytest.raises(ReadinessTimeout) as info:
        up(scratch_root, "broken", client=client, learner="ada")
    assert "tcp port 5999" in str(info.value)
    assert any("ll-start: host ready" in n for n in info.value.__notes__)
    assert {c["Id"] for c in client.api.containers(all=True)} == before
    assert not client.api.networks(filters={"label": [f"{L.ENV}=broken"]})
    assert not list((scratch_root.state_dir / "envs").glob("*"))  # no key, no record


def test_failing_setup_command_is_reported_and_cleaned_up(scratch_root, client, images):
    spec = yaml.safe_load((scratch_root.environments_dir / "broken" / "env.yaml").read_text())
    spec["hosts"] = {"good": {**spec["hosts"]["good"], "setup": ["echo no such thing >&2; exit 3"]}}
    (scratch_root.environments_dir / "broken" / "env.yaml").write_text(yaml.safe_dump(spec))
    with pytest.raises(EnvError, match=r"setup of host 'good' failed.*exited 3: no such thing"):
        up(scratch_root, "broken", client=client, learner="ada")
    assert not client.api.containers(all=True, filters={"label": [f"{L.ENV}=broken"]})


def _ladderlab(*args, **kw):
    return subprocess.run([sys.executable, "-m", "ladderlab.cli", *args], capture_output=True, text=True,
                          cwd=ROOT, check=False, **kw)


def test_sigkill_mid_up_then_reap_leaves_nothing(settings, client, images):
    proc = subprocess.Popen([sys.executable, "-m", "ladderlab.cli", "env", "up", "slo", "--learner", "victim"],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # kill as soon as the first host exists: mid-up
        if client.api.containers(all=True, filters={"label": [f"{L.LEARNER}=victim"]}):
            break
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(1)  # let API calls already in flight at the daemon finish
    made = [e for e in list_envs(settings, client) if e.learner == "victim"]
    assert made and all(e.status == "orphaned" for e in made), made
    report = reap(settings, client)
    assert {e.id for e in made} <= set(report.removed)
    assert not client.api.containers(all=True, filters={"label": [f"{L.LEARNER}=victim"]})
    assert not client.api.networks(filters={"label": [f"{L.LEARNER}=victim"]})


def test_reaper_removes_expired_and_keeps_live(settings, client, images):
    expired = up(settings, "firewall", client=client, learner="old", ttl_minutes=1 / 60)
    live = up(settings, "firewall", client=client, learner="young")
    try:
        time.sleep(1.5)
        report = reap(settings, client)
        assert report.removed.get(expired.id) == "expired"
        assert live.id in report.kept
        assert leftovers(client, expired.id) == ([], [])
        assert len(leftovers(client, live.id)[0]) == 3
        assert reap(settings, client, dry_run=True).removed.get(live.id) is None
    finally:
        live.down()
        expired.down()


def test_cli_up_ls_sh_down(client, images):
    up_proc = _ladderlab("env", "up", "dns-tls", "--learner", "cli-user", "--json")
    assert up_proc.returncode == 0, up_proc.stderr
    data = json.loads(up_proc.stdout)
    assert set(data["hosts"]) == {"dns", "web", "client", "probe"}
    assert data["params"]["zone"].startswith("corp-") and data["params"]["zone"].endswith(".lab.example")
    try:
        listed = json.loads(_ladderlab("env", "ls", "--json").stdout)
        assert any(e["id"] == data["id"] and e["status"] == "ready" for e in listed)
        sh = _ladderlab("env", "sh", "--transport", "ssh", data["id"], "dns", "named-checkconf && echo ok")
        assert sh.returncode == 0 and sh.stdout == "ok\n", sh.stderr
        again = json.loads(_ladderlab("env", "up", "dns-tls", "--learner", "cli-user", "--json").stdout)
        assert again["id"] == data["id"], "a repeated env up must reuse the learner's running environment"
        bad = _ladderlab("env", "up", "dns-tls", "--param", "web_host=evil;rm", "--json")
        assert bad.returncode == 2 and "expected one of" in bad.stderr and "Traceback" not in bad.stderr
    finally:
        down = _ladderlab("env", "down", data["id"])
    assert down.returncode == 0
    assert leftovers(client, data["id"]) == ([], [])


def test_state_keys_are_private(settings, client, images):
    env = up(settings, "debug", client=client, learner="ada")
    try:
        key = settings.state_dir / "envs" / env.id / "id_ed25519"
        assert key.stat().st_mode & 0o077 == 0
        assert (key.parent.stat().st_mode & 0o077) == 0
    finally:
        env.down()
    assert not (settings.state_dir / "envs" / env.id).exists()
