"""Every published lab's checks discriminate: `ladderlab selftest --json`, as CI runs it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from ladderlab.course import load_course

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def test_every_published_lab_passes_its_selftest(images, settings, root):
    published = [lab.id for lab in load_course(settings.course_file).labs if lab.status == "published"]
    assert published, "no published lab"
    r = subprocess.run([sys.executable, "-m", "ladderlab.cli", "selftest", "--json"], capture_output=True,
                       text=True, cwd=root, timeout=3000)
    report = json.loads(r.stdout)
    assert [lab["id"] for lab in report["labs"]] == published
    for lab in report["labs"]:
        assert lab["solution"]["ok"] and lab["solution"]["score"] == lab["solution"]["max_score"], lab
        assert lab["untouched"]["ok"] and lab["untouched"]["score"] == 0, lab
        assert len(lab["decoys"]) >= 3, lab["id"]
        for decoy in lab["decoys"]:
            assert decoy["rejected"], (lab["id"], decoy)
            assert decoy["failed_checks"] == decoy["must_fail"], (lab["id"], decoy)
        assert lab["passed"]
    assert r.returncode == 0, r.stderr[-3000:]
