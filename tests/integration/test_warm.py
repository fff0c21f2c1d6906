"""The engineer's grading service prepares grading environments ahead (service/warm.py): while a learner
practises a lab, a grading environment for their next hand-in is brought up; the hand-in is graded on it,
right; one that no longer matches the course is dropped and the grading starts its own; nothing is left."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from ladderlab.course import load_course
from ladderlab.course.labs import load_lab
from ladderlab.environments import runtime
from ladderlab.grading.checks import load_graders
from ladderlab.service import handin
from ladderlab.service.ledger import GRADED
from ladderlab.service.paths import ServicePaths
from ladderlab.service.queue import GradingService, wait_for
from ladderlab.testing import private_cache

from .conftest import leftovers_for_learner
from .test_cohort_faults import wait_until

pytestmark = pytest.mark.docker

LAB = "sec-1-iptables-hardening"


def _prepared(service, learner):
    """The environment prepared for ``learner``'s LAB, once it is up (None while there is none)."""
    item = service.warm._items.get((learner, LAB))
    return item.future.result() if item is not None and item.future.done() else None


def test_a_hand_in_is_graded_on_the_environment_prepared_while_the_learner_practised(images, settings, client,
                                                                                      tmp_path):
    cache = private_cache(settings, tmp_path / "cache")
    paths = ServicePaths.of(cache, tmp_path / "workspace")
    course = handin.ensure_released(cache, paths, only=[LAB])
    lab = load_lab(cache, load_course(cache.course_file), LAB, registry=load_graders(cache.root))
    learner = f"warm-{uuid.uuid4().hex[:6]}"
    said: list[str] = []
    practice = runtime.up(cache, lab.environment, client=client, learner=learner, lab=LAB, course_id=course.id)
    service = GradingService(cache, paths, say=said.append, prepare=True).start()
    try:
        first = wait_until("an environment prepared for the practice", lambda: _prepared(service, learner), 180)
        assert first.record.bound and first.id != practice.id and first.record.seed == practice.record.seed

        key = handin.hand_in(paths, course.id, LAB, lab.notebook_path, learner)
        sub = wait_for(service.ledger, key, 600)
        assert sub.status == GRADED and sub.passed and sub.score == lab.max_score, sub
        log = Path(sub.log).read_text()
        assert f"using the environment prepared for this hand-in ({first.id})" in log, log

        # another is prepared for the next hand-in; one that no longer matches the course is not used
        second = wait_until("an environment prepared again", lambda: _prepared(service, learner), 180)
        assert second.id != first.id
        second.record.params = dict(second.record.params, unwanted_port=1)  # as if env.yaml had changed
        key = handin.hand_in(paths, course.id, LAB, lab.notebook_path, learner)
        sub = wait_for(service.ledger, key, 600)
        assert sub.status == GRADED and sub.passed and sub.score == lab.max_score, sub
        assert "using the environment prepared" not in Path(sub.log).read_text()
        assert any(f"dropped {second.id} (the environment's parameters changed)" in line for line in said), said
    finally:
        service.stop()
        practice.down()
    assert leftovers_for_learner(client, learner) == []
