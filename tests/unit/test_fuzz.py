"""Property-based fuzzing of the loaders: whatever the bytes, the result is a
model or one ConfigError, never a traceback."""

from __future__ import annotations

from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ladderlab.course import Course
from ladderlab.environments.spec import EnvSpec
from ladderlab.errors import ConfigError
from ladderlab.loading import parse_yaml_text, validate

ROOT = Path(__file__).resolve().parents[2]
COURSE = yaml.safe_load((ROOT / "course.yaml").read_text())
ENV = yaml.safe_load((ROOT / "environments" / "firewall" / "env.yaml").read_text())

scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True),
                    st.text(max_size=20))
trees = st.recursive(scalars, lambda kids: st.one_of(st.lists(kids, max_size=4),
                                                      st.dictionaries(st.text(max_size=10), kids, max_size=4)),
                     max_leaves=20)


def _load(raw, model):
    try:
        validate(parse_yaml_text(raw, "f.yaml"), model, "f.yaml")
    except ConfigError as exc:
        assert str(exc).startswith("f.yaml")
        assert exc.problems


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_random_bytes(raw):
    _load(raw, Course)
    _load(raw, EnvSpec)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(alphabet=st.sampled_from(list("ab:-[]{}&*!|>'\"#\n %@`,?0")), max_size=200))
def test_yaml_punctuation_soup(text):
    _load(text, Course)
    _load(text, EnvSpec)


def _mutate(doc, path, value):
    node = doc
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(value=trees, which=st.sampled_from([
    ("id",), ("labs",), ("labs", 0), ("labs", 0, "cells"), ("labs", 0, "cells", 0, "level"), ("ladder",),
    ("ladder", "tracks", 0, "levels"), ("policies",), ("labs", 2, "points")]))
def test_course_with_one_field_replaced(value, which):
    doc = yaml.safe_load(yaml.safe_dump(COURSE))
    _mutate(doc, which, value)
    _load(yaml.safe_dump(doc), Course)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(value=trees, which=st.sampled_from([
    ("hosts",), ("hosts", "target"), ("hosts", "target", "ready"), ("hosts", "target", "capabilities"),
    ("hosts", "target", "environment"), ("params",), ("params", "unwanted_port"), ("networks",),
    ("hosts", "monitor", "resources")]))
def test_env_with_one_field_replaced(value, which):
    doc = yaml.safe_load(yaml.safe_dump(ENV))
    _mutate(doc, which, value)
    _load(yaml.safe_dump(doc), EnvSpec)


def test_recursive_yaml_alias_is_an_error_not_a_crash():
    _load("a: &x [*x]\nname: x\nhosts: *x\n", EnvSpec)
    _load("[" * 5000, Course)
