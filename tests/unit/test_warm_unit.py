"""The pool of grading environments prepared ahead (service/warm.py), without Docker: how many, what a
failed preparation or a stale environment means for the hand-in, and that closing tears them down."""

from __future__ import annotations

import threading
from types import SimpleNamespace

from ladderlab.service import warm


class FakeEnv:
    def __init__(self, name):
        self.id = name
        self.downed = threading.Event()

    def down(self):
        self.downed.set()


def pool(monkeypatch, up, stale=""):
    said = []
    p = warm.WarmPool(settings=None, client=lambda: None, say=said.append)
    monkeypatch.setattr(p, "_up", up)
    monkeypatch.setattr(p, "stale", lambda item, env: stale)
    return p, said


def lab(lab_id):
    return SimpleNamespace(id=lab_id)


def test_at_most_MOST_are_prepared_one_per_learner_and_lab(monkeypatch):
    p, _ = pool(monkeypatch, lambda learner, lab: FakeEnv(f"{learner}-{lab.id}"))
    assert p.want("ada", lab("sec-1")) and not p.want("ada", lab("sec-1"))  # one per (learner, lab)
    assert p.want("ada", lab("sre-5"))
    assert not p.want("bob", lab("sec-1"))  # full
    assert p.take("ada", "sec-1").id == "ada-sec-1" and p.take("ada", "sec-1") is None  # used once
    assert p.want("bob", lab("sec-1"))  # room again
    p.close()


def test_a_failed_or_stale_preparation_is_not_used_and_the_hand_in_grades_as_usual(monkeypatch):
    def broken(learner, lab):
        raise RuntimeError("images of environment 'firewall' are not built")

    p, said = pool(monkeypatch, broken)
    p.want("ada", lab("sec-1"))
    assert p.take("ada", "sec-1") is None and "not usable: images of environment" in said[-1]
    made = []
    p, said = pool(monkeypatch, lambda learner, lab: made.append(FakeEnv("e1")) or made[-1],
                   stale="the environment's parameters changed")
    p.want("ada", lab("sec-1"))
    assert p.take("ada", "sec-1") is None and made[0].downed.is_set()
    assert said[-1] == "grading service: dropped e1 (the environment's parameters changed); starting a new environment"


def test_closing_tears_down_what_was_prepared_and_refuses_more(monkeypatch):
    made = []
    p, _ = pool(monkeypatch, lambda learner, lab: made.append(FakeEnv(f"{learner}")) or made[-1])
    p.want("ada", lab("sec-1"))
    p.want("bob", lab("sec-1"))
    p.close()
    # one preparation at a time: the second may be cancelled before it starts; whatever was made is torn down
    assert 1 <= len(made) <= 2 and all(e.downed.is_set() for e in made)
    assert not p.want("cyd", lab("sec-1")) and p.keys() == set()
