from __future__ import annotations

import pytest

from ladderlab.course.seeds import apply_overrides, check_learner, derive_seed, render_params
from ladderlab.environments.spec import ChoiceParam, HexParam, IntParam
from ladderlab.errors import UsageError

PARAMS = {
    "port": IntParam(type="int", min=6000, max=6999),
    "fault": ChoiceParam(type="choice", values=["a", "b", "c", "d"]),
    "zone": HexParam(type="hex", length=6, prefix="corp-", suffix=".lab.example"),
}
KEY = bytes(range(32))  # a course secret (ladderlab.course.seeds.course_secret makes a random one)


def test_same_inputs_same_seed_and_params():
    s1 = derive_seed("course", "ada", "lab-1", secret=KEY)
    assert s1 == derive_seed("course", "ada", "lab-1", secret=KEY)
    assert render_params(PARAMS, s1, secret=KEY) == render_params(PARAMS, s1, secret=KEY)


def test_seed_depends_on_course_learner_and_lab():
    seeds = {derive_seed(c, learner, lab, secret=KEY)
             for c in ("c1", "c2") for learner in ("ada", "bob") for lab in ("x", "y")}
    assert len(seeds) == 8


def test_params_vary_across_learners_and_stay_in_range():
    drawn = [render_params(PARAMS, derive_seed("c", f"learner{i}", "lab", secret=KEY), secret=KEY) for i in range(200)]
    ports = {d["port"] for d in drawn}
    assert len(ports) > 100 and all(6000 <= p <= 6999 for p in ports)
    assert {d["fault"] for d in drawn} == {"a", "b", "c", "d"}
    assert all(str(d["zone"]).startswith("corp-") and len(str(d["zone"])) == len("corp-.lab.example") + 6
               for d in drawn)


def test_adding_a_parameter_keeps_the_others():
    seed = derive_seed("c", "ada", "lab", secret=KEY)
    more = {**PARAMS, "extra": IntParam(type="int", min=1, max=9)}
    base = render_params(PARAMS, seed, secret=KEY)
    assert {k: v for k, v in render_params(more, seed, secret=KEY).items() if k in base} == base


@pytest.mark.parametrize("bad", ["", "a b", "x" * 65, "../etc", "ada;rm", "-flag"])
def test_bad_learner_ids_are_refused(bad):
    with pytest.raises(UsageError):
        check_learner(bad)


def test_overrides_are_validated():
    values = render_params(PARAMS, "s", secret=KEY)
    assert apply_overrides(PARAMS, values, {"port": "6001"})["port"] == 6001
    for bad in ({"port": "80"}, {"fault": "z"}, {"zone": "evil.com"}, {"nope": "1"}):
        with pytest.raises(UsageError):
            apply_overrides(PARAMS, values, bad)
