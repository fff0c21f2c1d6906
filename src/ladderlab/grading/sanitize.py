"""Learner-authored notebook content made inert before anything renders it.

A submitted notebook is data from an untrusted author, and it is rendered later in
other people's browsers: nbgrader's formgrader shows it to the trainer inside their
Jupyter session, ``generate_feedback`` turns it into HTML, reports link to it. nbconvert
passes HTML in markdown and raw cells through as it is, so one ``<img onerror=...>``
in a markdown cell runs as the trainer. Everything here turns learner content into
content that cannot run, whichever renderer shows it:

* markdown is rendered to HTML (CommonMark, markdown-it), sanitised by ammonia (nh3)
  with a small allowlist of tags and attributes, and written back as one HTML block
  whose text holds no markdown syntax at all (every ASCII punctuation character an
  entity, no blank line), so a second markdown pass (nbconvert's mistune, JupyterLab's
  marked) finds nothing to interpret and passes the already-clean HTML through;
* links keep ``http``, ``https`` and ``mailto`` targets only; images are inline raster
  data only (``data:image/png|jpeg|gif;base64``, checked byte by byte), a cell's own
  attachments inlined the same way (the cell then carries no attachments), within a budget;
* raw cells (which nbconvert's HTML export copies verbatim) become preformatted text;
* cell metadata is rebuilt by the pipeline, never copied (``pipeline.prepare``).

>>> markdown_html("**bold** <img src=x onerror=alert(1)>")
'<div><p><strong>bold</strong> </p></div>'
"""

from __future__ import annotations

import base64
import binascii
import re
import string
from collections.abc import Mapping
from html import escape
from html.parser import HTMLParser
from typing import Any

import nh3
from markdown_it import MarkdownIt
from nbformat import NotebookNode
from nbformat.v4 import new_code_cell, new_markdown_cell

SOURCE_LIMIT = 256 * 1024          # characters of one learner cell's source that are kept
ATTACHMENT_LIMIT = 2 * 1024 * 1024  # decoded bytes of one attachment / one inline image
ATTACHMENTS_PER_CELL = 20
IMAGES_PER_CELL = 8 * 1024 * 1024  # base64 characters of images one markdown cell may show

# What an image is allowed to be: raster formats, recognised by their first bytes.
IMAGE_MAGIC = {"image/png": (b"\x89PNG\r\n\x1a\n",), "image/jpeg": (b"\xff\xd8\xff",),
               "image/gif": (b"GIF87a", b"GIF89a")}

TAGS = {"a", "b", "blockquote", "br", "code", "dd", "del", "div", "dl", "dt", "em", "h1", "h2", "h3", "h4",
        "h5", "h6", "hr", "i", "img", "kbd", "li", "ol", "p", "pre", "s", "samp", "span", "strong", "sub",
        "sup", "table", "tbody", "td", "th", "thead", "tr", "u", "ul"}
ATTRIBUTES = {"a": {"href", "title"}, "img": {"src", "alt", "title"}, "code": {"class"}, "ol": {"start"}}
URL_SCHEMES = {"http", "https", "mailto", "data", "attachment"}
_LINK = re.compile(r"(?:https?://|mailto:)[^\s\x00-\x1f\x7f]+", re.IGNORECASE)
_CODE_CLASS = re.compile(r"language-[A-Za-z0-9_+.-]{1,40}")
_ATTACHMENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_DATA_URL = re.compile(r"data:(image/(?:png|jpeg|gif));base64,([A-Za-z0-9+/=]+)")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_PUNCTUATION = set(string.punctuation)
_VOID = {"br", "hr", "img"}

_markdown = MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"])


# --- bounded text ----------------------------------------------------------------------------------


def source_text(value: Any, limit: int = SOURCE_LIMIT) -> str:
    """A cell source as one string: nbformat allows a string or a list of strings; anything else is empty."""
    if isinstance(value, list):
        text = "".join(v for v in value if isinstance(v, str))
    elif isinstance(value, str):
        text = value
    else:
        text = ""
    return text if len(text) <= limit else text[:limit] + "\n[truncated]\n"


# --- images ---------------------------------------------------------------------------------------


def image_data(mime: str, value: Any) -> str | None:
    """``value`` as canonical base64 when it really is an image of type ``mime`` (png, jpeg, gif), else None.

    >>> image_data("image/png", 'AAAA" onerror="alert(1)') is None
    True
    """
    magic = IMAGE_MAGIC.get(mime)
    text = source_text(value, limit=ATTACHMENT_LIMIT * 2)
    if magic is None or not text:
        return None
    try:
        raw = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        return None
    if not raw.startswith(magic) or len(raw) > ATTACHMENT_LIMIT:
        return None
    return base64.b64encode(raw).decode("ascii")


def clean_attachments(value: Any) -> dict[str, dict[str, str]]:
    """A markdown cell's attachments, keeping images only (one checked raster bundle per safe name)."""
    out: dict[str, dict[str, str]] = {}
    if not isinstance(value, Mapping):
        return out
    for name, bundle in list(value.items())[:ATTACHMENTS_PER_CELL]:
        if not isinstance(name, str) or not _ATTACHMENT_NAME.fullmatch(name) or not isinstance(bundle, Mapping):
            continue
        for mime in IMAGE_MAGIC:
            data = image_data(mime, bundle.get(mime))
            if data is not None:
                out[name] = {mime: data}
                break
    return out


# --- markdown -------------------------------------------------------------------------------------


class _Images:
    """Which images a cell may show: checked inline data, its own attachments inlined, within a byte budget."""

    def __init__(self, attachments: Mapping[str, Mapping[str, str]], budget: int = IMAGES_PER_CELL) -> None:
        self.attachments = clean_attachments(attachments)
        self.budget = budget

    def src(self, value: str) -> str | None:
        if value.startswith("attachment:"):
            bundle = self.attachments.get(value.removeprefix("attachment:"), {})
            mime, data = next(iter(bundle.items()), ("", ""))
        else:
            m = _DATA_URL.fullmatch(value)
            mime, data = (m.group(1), image_data(m.group(1), m.group(2)) or "") if m else ("", "")
        if not data or len(data) > self.budget:
            return None
        self.budget -= len(data)
        return f"data:{mime};base64,{data}"


def _attribute_filter(images: _Images) -> Any:
    def keep(tag: str, attr: str, value: str) -> str | None:
        if tag == "a" and attr == "href":
            return value if _LINK.fullmatch(value) else None
        if tag == "img" and attr == "src":
            return images.src(value)
        if tag == "code" and attr == "class":
            return value if _CODE_CLASS.fullmatch(value) else None
        if tag == "ol" and attr == "start":
            return value if value.isdigit() and len(value) < 7 else None
        return value  # alt, title: plain text, escaped when written
    return keep


class _Inert(HTMLParser):
    """Re-writes sanitised HTML so that no markdown renderer can find syntax in it.

    Tags are written back as they are (nh3 chose them); every ASCII punctuation character of
    text becomes a numeric entity, newlines inside ``<pre>`` too, and runs of whitespace holding a
    newline become one newline: no blank line, no indented line, nothing to parse.
    """

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.text: list[str] = []  # text since the last tag (the parser may hand it over in pieces)
        self.pre = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in TAGS or (tag == "img" and not dict(attrs).get("src")):
            return
        self.flush()
        self.pre += tag == "pre"
        written = "".join(f' {name}="{_attribute(value or "")}"' for name, value in attrs
                          if name in ATTRIBUTES.get(tag, ()) or (tag == "a" and name == "rel"))
        self.out.append(f"<{tag}{written}>")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in _VOID:
            self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag not in TAGS or tag in _VOID:
            return
        self.flush()
        self.pre -= tag == "pre" and self.pre > 0
        self.out.append(f"</{tag}>")

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def flush(self) -> None:
        data, self.text = _CONTROL.sub("", "".join(self.text)), []
        if self.pre:
            self.out.append("".join(f"&#{ord(c)};" if c in _PUNCTUATION or c == "\n" else c for c in data))
            return
        data = re.sub(r"\s*\n\s*", "\n", data)
        self.out.append("".join(f"&#{ord(c)};" if c in _PUNCTUATION else c for c in data))

    def close(self) -> None:
        super().close()
        self.flush()


def _attribute(value: str) -> str:
    return escape(_CONTROL.sub("", value), quote=True).replace("\n", "&#10;").replace("\r", "&#13;")


def markdown_html(source: Any, attachments: Any = None) -> str:
    """Learner markdown as one inert HTML block that every markdown renderer shows the same way.

    Images the cell's ``attachments`` hold (raster only, checked) are inlined as data, so the
    cell needs no attachments any more. Running it on its own output changes nothing.
    """
    rendered = _markdown.render(_CONTROL.sub("", source_text(source)))
    clean = nh3.clean(rendered, tags=TAGS, clean_content_tags={"script", "style"}, attributes=ATTRIBUTES,
                      attribute_filter=_attribute_filter(_Images(attachments or {})), url_schemes=URL_SCHEMES,
                      strip_comments=True, link_rel="noopener noreferrer nofollow")
    inert = _Inert()
    inert.feed(clean)
    inert.close()
    body = "".join(inert.out).strip()
    if body.startswith("<div>") and body.endswith("</div>") and _balanced_div(body):
        return body
    return f"<div>{body}</div>"


def _balanced_div(body: str) -> bool:
    """Whether ``body`` is a single ``<div>...</div>`` (so wrapping it again would only nest)."""
    depth = 0
    for m in re.finditer(r"<(/?)div>", body):
        depth += -1 if m.group(1) else 1
        if depth == 0 and m.end() != len(body):
            return False
    return depth == 0


def text_html(text: str) -> str:
    """Plain text (a raw cell) as one inert preformatted block."""
    inert = _Inert()
    inert.pre = 1
    inert.handle_data(source_text(text))
    inert.flush()
    return f"<div><pre>{''.join(inert.out)}</pre></div>"


# --- cells ----------------------------------------------------------------------------------------

CELLS_LIMIT = 2000
_CELL_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def cells_of(nb: Any) -> list[Mapping[str, Any]]:
    """The cells of a submitted notebook that are cells at all (a mapping each), at most ``CELLS_LIMIT``."""
    cells = nb.get("cells") if isinstance(nb, Mapping) else None
    return [c for c in cells[:CELLS_LIMIT] if isinstance(c, Mapping)] if isinstance(cells, list) else []


def learner_cell(raw: Mapping[str, Any], cell_type: str | None = None) -> NotebookNode | None:
    """A learner's cell rebuilt from its source alone: no metadata, no outputs, inert markup.

    ``cell_type`` is the type the instructor gave the cell (an answer cell keeps it whatever the
    learner did); otherwise the learner's. A raw cell becomes preformatted markdown (nbconvert's
    HTML export copies raw cells verbatim); anything that is not a cell is dropped (None).
    """
    kind = cell_type or raw.get("cell_type")
    source = source_text(raw.get("source"))
    cell: NotebookNode
    if kind == "code":
        cell = new_code_cell(source=source)
    elif kind == "markdown":
        cell = new_markdown_cell(source=markdown_html(source, raw.get("attachments")))
    elif kind == "raw":
        cell = new_markdown_cell(source=text_html(source))
    else:
        return None
    cid = raw.get("id")
    cell["id"] = cid if isinstance(cid, str) and _CELL_ID.fullmatch(cid) else ""
    return cell


def unique_ids(cells: list[NotebookNode]) -> None:
    """Give every cell a valid id that no other cell has (earlier cells keep theirs)."""
    seen: set[str] = set()
    for i, cell in enumerate(cells):
        cid = cell.get("id")
        if not isinstance(cid, str) or not _CELL_ID.fullmatch(cid) or cid in seen:
            n, cid = 0, f"cell-{i}"
            while cid in seen:
                n, cid = n + 1, f"cell-{i}-{n}"
            cell["id"] = cid
        seen.add(cid)
