"""Griffe extension: the docstrings' Sphinx roles as links in the API reference.

The library's docstrings cross-reference with Sphinx roles (``:class:`~.result.LevelRecord```,
``:func:`recompose.sample```, ``:meth:`Levels.ddim_step```), which Markdown would show as
literal text. This extension rewrites each role into an *optional* autorefs link to the object
it names, resolved the way Sphinx resolves it: a leading ``.`` is relative to the module's
package, a bare name is looked up from the object outwards (class, module, package) and then
under ``recompose``. ``~`` shows only the last component. A name that cannot be resolved, or
whose object is not rendered on any page, stays plain code: an optional link never fails the
strict build. reST's ``text::`` before a literal block becomes ``text:`` (Markdown shows the
indented block as code either way). Loaded by mkdocs.yml (``extensions:`` of the mkdocstrings
Python handler).
"""

from __future__ import annotations

import re
from typing import Any

from griffe import Extension, GriffeLoader, Module, Object

_ROLE = re.compile(r":(?:class|func|meth|mod|attr|data|exc|obj):`(~?)([\w.]+)(?:\(\))?`")
_LITERAL = re.compile(r"(?<=\S)::$", re.M)
ROOT = "recompose"


def _find(loader: GriffeLoader, path: str) -> str | None:
    """The canonical path of the object at ``path``, if griffe has it."""
    try:
        obj = loader.modules_collection[path]
    except Exception:  # not there, or behind an import griffe cannot follow (torch …)
        return None
    if obj.is_alias:  # not isinstance: an Alias passes for its target's class
        try:
            return obj.final_target.path
        except Exception:  # an alias to something outside the collection (torch …)
            return obj.path
    return obj.path


def _scopes(obj: Object) -> list[str]:
    """Where a bare name is looked up: the object, its parents outwards, then the root."""
    out = []
    current: Object | None = obj
    while current is not None:
        out.append(current.path)
        current = current.parent
    return out + [ROOT]


def _resolve(loader: GriffeLoader, obj: Object, target: str) -> str | None:
    if target.startswith("."):
        module = obj if isinstance(obj, Module) else obj.module
        package = module.path if module.is_package else module.path.rpartition(".")[0]
        stripped = target.lstrip(".")
        ups = len(target) - len(stripped) - 1  # ".x": the package; "..x": its parent
        base = package.split(".")
        base = base[: len(base) - ups] if ups else base
        for candidate in (".".join([*base, stripped]), f"{module.path}.{stripped}"):
            if (found := _find(loader, candidate)) is not None:
                return found
        return None
    if target.startswith(f"{ROOT}.") or target == ROOT:
        return _find(loader, target)
    for scope in _scopes(obj):
        if (found := _find(loader, f"{scope}.{target}")) is not None:
            return found
    return None


def _rewrite(loader: GriffeLoader, obj: Object, text: str) -> str:
    def link(match: re.Match) -> str:
        short, target = match.group(1) == "~", match.group(2)
        shown = target.rpartition(".")[2] if short else target.lstrip(".")
        path = _resolve(loader, obj, target)
        if path is None:
            return f"`{shown}`"
        return f'<autoref identifier="{path}" optional><code>{shown}</code></autoref>'

    # reST's "text::" before a literal block: Markdown shows the indented block as code
    return _LITERAL.sub(":", _ROLE.sub(link, text))


class SphinxRoles(Extension):
    """Rewrite the roles of every docstring of a loaded package (module docstring)."""

    def on_package(self, *, pkg: Module, loader: GriffeLoader, **kwargs: Any) -> None:
        stack: list[Object] = [pkg]
        while stack:
            obj = stack.pop()
            if obj.docstring is not None:
                obj.docstring.value = _rewrite(loader, obj, obj.docstring.value)
            stack.extend(m for m in obj.members.values() if not m.is_alias)
