"""Property-based fuzzing of the loaders: whatever the bytes, the result is a
model or one ConfigError, never a traceback."""

from __future__ import annotations

import copy
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ladderlab.course import Course
from ladderlab.course.loading import parse_yaml_text, validate
from ladderlab.environments.spec import EnvSpec
from ladderlab.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
COURSE = yaml.safe_load((ROOT / "course.yaml").read_text())
ENV = yaml.safe_load((ROOT / "environments" / "firewall" / "env.yaml").read_text())

scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True),
                    st.text(max_size=20))
trees = st.recursive(scalars, lambda kids: st.one_of(st.lists(kids, max_size=4),
                                                      st.dictionaries(st.text(max_size=10), kids, max_size=4)),
                     max_leaves=20)


#: One profile for every fuzz test: a fixed number of examples drawn from a fixed seed, no deadline and no
#: example database, so a run takes the same work and gives the same verdict on a loaded 2-core machine
#: as on a fast one (hypothesis' default 200 ms deadline made these tests flaky there).
FUZZ = settings(max_examples=300, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])


def _load(raw, model):
    try:
        validate(parse_yaml_text(raw, "f.yaml"), model, "f.yaml")
    except ConfigError as exc:
        assert str(exc).startswith("f.yaml")
        assert exc.problems


@FUZZ
@given(st.binary(max_size=300))
def test_random_bytes(raw):
    _load(raw, Course)
    _load(raw, EnvSpec)


@FUZZ
@given(st.text(alphabet=st.sampled_from(list("ab:-[]{}&*!|>'\"#\n %@`,?0")), max_size=200))
def test_yaml_punctuation_soup(text):
    _load(text, Course)
    _load(text, EnvSpec)


#: The C emitter when PyYAML has it: the document is re-serialised for every example, and the pure-Python
#: emitter made that half of the test's time. The text is parsed back by ladderlab's own loader either way.
_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def _dump(doc):
    return yaml.dump(doc, Dumper=_DUMPER)


def _mutate(doc, path, value):
    node = doc
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value


@FUZZ
@given(value=trees, which=st.sampled_from([
    ("id",), ("labs",), ("labs", 0), ("labs", 0, "cells"), ("labs", 0, "cells", 0, "level"), ("ladder",),
    ("ladder", "tracks", 0, "levels"), ("policies",), ("labs", 2, "points")]))
def test_course_with_one_field_replaced(value, which):
    doc = copy.deepcopy(COURSE)
    _mutate(doc, which, value)
    _load(_dump(doc), Course)


@FUZZ
@given(value=trees, which=st.sampled_from([
    ("hosts",), ("hosts", "target"), ("hosts", "target", "ready"), ("hosts", "target", "capabilities"),
    ("hosts", "target", "environment"), ("params",), ("params", "unwanted_port"), ("networks",),
    ("hosts", "monitor", "resources")]))
def test_env_with_one_field_replaced(value, which):
    doc = copy.deepcopy(ENV)
    _mutate(doc, which, value)
    _load(_dump(doc), EnvSpec)


def test_recursive_yaml_alias_is_an_error_not_a_crash():
    _load("a: &x [*x]\nname: x\nhosts: *x\n", EnvSpec)
    _load("[" * 5000, Course)
