"""Every HTML page and fragment ladderlab serves or writes comes from a template under ``ladderlab/templates``,
rendered here with autoescaping always on: a value (a learner id, a lab title, a clause, a check id, an error
message) is escaped where it lands, whoever wrote it, and no template marks a value safe.

>>> render("lab/progress.html.j2", text="<b>graded</b>")
'<pre>&lt;b&gt;graded&lt;/b&gt;</pre>'

Templates are written for reading, one element a line; the page is the lines joined (:class:`JoinLines`), so
that it is the same compact HTML whichever way the template is wrapped. A value that is missing is an error
(``StrictUndefined``), never an empty string.

Jinja2 is not in the grading sandbox (its runner image has the standard library and paramiko): the learner
API imports this module only inside the functions that render, and shows text where it cannot
(``ladderlab.lab._html``).
"""

from __future__ import annotations

import functools
import importlib.resources
import re
from typing import Any

import jinja2
from jinja2.ext import Extension

#: A line break with the blanks around it, next to markup: an HTML tag, a ``{% statement %}`` or a ``{# comment #}``.
_AT_MARKUP = re.compile(r"(?:(?<=>)|(?<=%})|(?<=#}))[ \t]*\n\s*|[ \t]*\n\s*(?=<|{%|{#)")
#: Any other line break (between words, or next to a ``{{ value }}``), with the blanks around it.
_BREAK = re.compile(r"[ \t]*\n\s*")


class JoinLines(Extension):
    """Templates are the lines joined: a line break next to markup (an HTML tag, a ``{% statement %}``, a
    ``{# comment #}``) is dropped with the indentation after it; any other one (between words, or next to a
    ``{{ value }}``) becomes one space. This works on the template's source only, never on a value."""

    def preprocess(self, source: str, name: str | None, filename: str | None = None) -> str:
        return _BREAK.sub(" ", _AT_MARKUP.sub("", source.strip()))


@functools.cache
def environment() -> jinja2.Environment:
    """The one template environment: the package's templates, autoescaping on for every template (they are all
    HTML or SVG), an undefined value an error."""
    return jinja2.Environment(loader=jinja2.PackageLoader("ladderlab", "templates"), autoescape=True,
                              undefined=jinja2.StrictUndefined, extensions=[JoinLines])


def render(name: str, /, **values: Any) -> str:
    """The template ``name`` (a path under ``ladderlab/templates``) rendered with ``values``."""
    return environment().get_template(name).render(**values)


def resource(name: str) -> str:
    """A file shipped with the templates, as it is (the report's stylesheet)."""
    return importlib.resources.files("ladderlab").joinpath("templates", name).read_text(encoding="utf-8")
