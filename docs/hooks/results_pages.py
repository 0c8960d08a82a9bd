"""MkDocs hook: the Results section of the site, one page per section of ``docs/results.md``.

``docs/results.md`` stays the one source (README and ``experiments/`` link to it). At build
time this hook

* splits it at its ``## `` headings (outside fenced code) into ``results/<slug>.md`` pages, each
  with the section's heading as its title and its sub-headings one level up, plus
  ``results/index.md``: the file's introduction and a list of the sections;
* rewrites the relative links of each section (``figures/x.png``) so they resolve from
  ``results/``, links to another section's heading to that section's page, and links that
  leave the docs folder (``../experiments/…``) to the plain path in code;
* fills the nav entry ``Results: results/index.md`` with the index and the sections;
* leaves ``results.md`` out of the build, and sends every other page's link to
  ``results.md`` (or ``results.md#heading``) to the index (or to the section with that heading).

Nothing here needs the network; run ``mkdocs build --strict``.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from markdown.extensions.toc import slugify
from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files
from mkdocs.structure.pages import Page

SOURCE = "results.md"
FOLDER = "results"

_FENCE = re.compile(r"^(```|~~~)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
# [text](target "title") and ![alt](target); the target has no spaces or parentheses
_LINK = re.compile(r"(!?\[(?:[^\[\]]|\[[^\]]*\])*\])\(\s*<?([^)\s>]+)>?((?:\s+\"[^\"]*\")?)\s*\)")
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


@dataclass
class Section:
    """One ``## `` section of results.md: its title, page path and markdown body."""

    title: str
    path: str
    body: list[str]
    anchors: set[str]


def _slug(text: str) -> str:
    return slugify(text, "-")


_STOP = {"a", "an", "and", "at", "by", "for", "from", "in", "of", "on", "or", "the", "to"}


def _page_slug(title: str) -> str:
    """A short file name for a section: its number and first words, without parentheses."""
    words = _slug(re.sub(r"\([^)]*\)", "", title)).split("-")[:7]
    while len(words) > 1 and words[-1] in _STOP:
        words.pop()
    return "-".join(w for w in words if w) or "section"


def _outside_fences(lines: list[str]) -> list[bool]:
    """For each line: True where it is not inside a fenced code block."""
    out, fence = [], None
    for line in lines:
        match = _FENCE.match(line.lstrip())
        if fence is None and match:
            fence = match.group(1)
            out.append(False)
        elif fence is not None:
            out.append(False)
            if line.lstrip().startswith(fence):
                fence = None
        else:
            out.append(True)
    return out


def split(text: str) -> tuple[list[str], list[Section]]:
    """The introduction (before the first ``## ``, without the ``# `` title) and the
    sections."""
    lines = text.splitlines()
    prose = _outside_fences(lines)
    intro: list[str] = []
    sections: list[Section] = []
    used: set[str] = set()
    for line, is_prose in zip(lines, prose):
        heading = _HEADING.match(line) if is_prose else None
        if heading and len(heading.group(1)) == 1 and not sections:
            continue  # the file's own title: the index page has its own
        if heading and len(heading.group(1)) == 2:
            title = heading.group(2)
            slug = _page_slug(title)
            while slug in used:
                slug += "-2"
            used.add(slug)
            sections.append(Section(title, f"{FOLDER}/{slug}.md", [f"# {title}", ""],
                                    {_slug(title)}))
            continue
        if sections:
            if heading:  # one level up: the section's ## is the page's #
                line = "#" * (len(heading.group(1)) - 1) + " " + heading.group(2)
                sections[-1].anchors.add(_slug(heading.group(2)))
            sections[-1].body.append(line)
        else:
            intro.append(line)
    return intro, sections


def _rewrite(text: str, page_dir: str, source_dir: str, anchor_pages: dict[str, str],
             index: str) -> str:
    """Links of markdown written at ``source_dir`` (relative to the docs folder), placed in
    ``page_dir``: relative links re-rooted, links to results.md sent to the section pages."""
    prose = _outside_fences(text.splitlines(keepends=True))
    lines = text.splitlines(keepends=True)

    def fix(match: re.Match) -> str:
        label, target, title = match.group(1), match.group(2), match.group(3)
        if _SCHEME.match(target) or target.startswith("/"):
            return match.group(0)
        path, _, anchor = target.partition("#")
        if not path:  # an anchor on the same source page
            page = anchor_pages.get(anchor)
            if page is None:
                return match.group(0)
            resolved = page
        else:
            resolved = posixpath.normpath(posixpath.join(source_dir, path))
        if resolved.startswith("../") or resolved == "..":
            # outside the docs folder (e.g. ../experiments/README.md): no page to link to
            shown = label[1:-1] if not label.startswith("!") else label[2:-1]
            return f"{shown} (`{posixpath.normpath(posixpath.join('docs', resolved))}`)"
        if resolved == SOURCE:
            resolved = anchor_pages.get(anchor, index)
        new = posixpath.relpath(resolved, page_dir or ".")
        if anchor:
            new += "#" + anchor
        return f"{label}({new}{title})"

    return "".join(_LINK.sub(fix, line) if ok else line for line, ok in zip(lines, prose))


class _State:
    intro: list[str] = []
    sections: list[Section] = []
    anchor_pages: dict[str, str] = {}


def _load(config: MkDocsConfig) -> None:
    source = Path(config.docs_dir) / SOURCE
    text = source.read_text(encoding="utf-8") if source.exists() else ""
    _State.intro, _State.sections = split(text)
    _State.anchor_pages = {a: s.path for s in _State.sections for a in s.anchors}


def on_config(config: MkDocsConfig) -> MkDocsConfig:
    """Read results.md and expand the nav entry ``Results: results/index.md``."""
    _load(config)
    index = f"{FOLDER}/index.md"
    entries: list[Any] = [index] + [{s.title: s.path} for s in _State.sections]
    nav = config.nav or []
    for i, item in enumerate(nav):
        if isinstance(item, dict) and item.get("Results") == index:
            nav[i] = {"Results": entries}
    return config


def on_files(files: Files, config: MkDocsConfig) -> Files:
    """Leave results.md out and add the generated index and section pages."""
    _load(config)
    source = files.get_file_from_path(SOURCE)
    if source is not None:
        files.remove(source)
    index = f"{FOLDER}/index.md"
    lines = ["# Results", ""]
    lines += _rewrite("\n".join(_State.intro), FOLDER, "", _State.anchor_pages,
                      index).splitlines()
    lines += ["", "## Sections", ""]
    lines += [f"* [{s.title}]({posixpath.relpath(s.path, FOLDER)})" for s in _State.sections]
    files.append(File.generated(config, index, content="\n".join(lines) + "\n"))
    for s in _State.sections:
        body = _rewrite("\n".join(s.body) + "\n", FOLDER, "", _State.anchor_pages,
                        index)
        files.append(File.generated(config, s.path, content=body))
    return files


def on_page_markdown(markdown: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    """Send other pages' links to results.md to the index or the section with the anchor."""
    src = page.file.src_uri
    if src.startswith(f"{FOLDER}/") or SOURCE not in markdown:
        return markdown
    page_dir = posixpath.dirname(src)
    prose = _outside_fences(markdown.splitlines(keepends=True))
    lines = markdown.splitlines(keepends=True)

    def fix(match: re.Match) -> str:
        target = match.group(2)
        path, _, anchor = target.partition("#")
        if not path or _SCHEME.match(target):
            return match.group(0)
        if posixpath.normpath(posixpath.join(page_dir, path)) != SOURCE:
            return match.group(0)
        resolved = _State.anchor_pages.get(anchor, f"{FOLDER}/index.md")
        new = posixpath.relpath(resolved, page_dir or ".")
        if anchor and anchor in _State.anchor_pages:
            new += "#" + anchor
        return f"{match.group(1)}({new}{match.group(3)})"

    return "".join(_LINK.sub(fix, line) if ok else line for line, ok in zip(lines, prose))
