"""The documentation site builds in strict mode, and every public name has a docstring.

* ``mkdocs build --strict`` (``mkdocs.yml``; the API reference is rendered from the docstrings
  by mkdocstrings, so a docstring it cannot parse, a broken link or a reference to a name that
  moved fails here). Skipped when mkdocs is not installed (the ``docs`` / ``test`` extras).
  The Results section has one page per section of ``docs/results.md`` and its figures
  resolve; the hook that makes it (``docs/hooks/results_pages.py``) splits at ``## `` outside
  code and sends links (figures, anchors, ``results.md#…`` from other pages) to the right page.
* Every name of a module's ``__all__`` is rendered on a page of the API reference where it is
  defined, and every top-level name is in the table of ``docs/api/index.md``.
* Docstrings: every function or class defined in recompose and listed in a module's
  ``__all__`` has one (a class its own, not the signature a dataclass or NamedTuple is given
  automatically); so does every public method or property those classes define themselves.
  A method that overrides a documented one of a base class (``forward`` of an ``nn.Module``,
  ``start`` of a :class:`~recompose.samplers.base.Sampler`) inherits that documentation, as
  ``help()`` and ``inspect.getdoc`` show it; members inherited unchanged (from torch, from
  ``tuple``) are not the subclass's to document.
"""

import ast
import importlib
import importlib.util
import inspect
import os
import pkgutil
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

import recompose as rc

ROOT = Path(__file__).resolve().parents[1]
API = ROOT / "docs" / "api"
BUILD_TIMEOUT = 300  # seconds; the build takes about 10 s on two CPU cores


def _modules() -> list[str]:
    """Every module of the package but ``__main__`` (importing it runs the command line)."""
    names = ["recompose"]
    for info in pkgutil.walk_packages(rc.__path__, "recompose."):
        if not info.name.endswith(".__main__"):
            names.append(info.name)
    return sorted(names)


def _public_modules() -> dict[str, list[str]]:
    """Modules with a non-empty ``__all__`` (the private ``_types`` too: its aliases are the
    library's conventions), and their public names. The optional backends count where their
    extra is installed (the ``test`` extra installs them)."""
    out = {}
    for name in _modules():
        if name.startswith("recompose.integrations.") and importlib.util.find_spec(
                name.rpartition(".")[2]) is None:
            continue
        module = importlib.import_module(name)
        names = list(getattr(module, "__all__", []))
        if names:
            out[name] = names
    return out


def test_mkdocs_builds_in_strict_mode(tmp_path):
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings_handlers.python")
    mkdocs = [sys.executable, "-m", "mkdocs"]
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    start = time.perf_counter()
    try:
        out = subprocess.run([*mkdocs, "build", "--strict", "--site-dir", str(tmp_path / "site")],
                             cwd=ROOT, capture_output=True, text=True, timeout=BUILD_TIMEOUT,
                             env=env)
    except subprocess.TimeoutExpired as err:
        pytest.fail(f"mkdocs build took over {BUILD_TIMEOUT} s:\n{err.stderr or ''}")
    log = out.stdout + out.stderr
    assert out.returncode == 0, "mkdocs build --strict failed:\n" + "\n".join(
        log.splitlines()[-60:])
    print(f"mkdocs build --strict: {time.perf_counter() - start:.1f} s")
    site = tmp_path / "site"
    # the Results section: one page per section of docs/results.md, figures resolved
    _, sections = _hook().split((ROOT / "docs" / "results.md").read_text(encoding="utf-8"))
    pages = [p for p in (site / "results").iterdir() if (p / "index.html").exists()]
    assert len(pages) == len(sections) and (site / "results" / "index.html").exists()
    for page in pages:
        html = (page / "index.html").read_text(encoding="utf-8")
        for src in re.findall(r'<img[^>]*src="([^"]+)"', html):
            if "://" not in src:
                assert (page / src).resolve().exists(), f"{page.name}: {src}"
    assert not (site / "results.md").exists() and not (site / "hooks").exists()


def _directives() -> dict[str, bool | list[str]]:
    """``::: module`` directives of docs/api/: True (its public members rendered), False
    (``members: false``: only its docstring) or the explicit ``members: [...]`` list."""
    out: dict[str, bool | list[str]] = {}
    for page in API.glob("*.md"):
        text = page.read_text(encoding="utf-8")
        for match in re.finditer(r"^::: ([\w.]+)\n((?:    .*\n)*)", text + "\n", flags=re.M):
            members = re.search(r"^\s+members:\s*(.*)$", match.group(2), flags=re.M)
            if members is None:
                out[match.group(1)] = True
            elif members.group(1).strip() == "false":
                out[match.group(1)] = False
            else:
                out[match.group(1)] = re.findall(r"\w+", members.group(1))
    return out


def _assigned(module: object) -> set[str]:
    """Names a module assigns at top level (constants, aliases), from its source."""
    tree = ast.parse(Path(module.__file__).read_text(encoding="utf-8"))
    names = set()
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else (
            [node.target] if isinstance(node, ast.AnnAssign) else [])
        names |= {t.id for t in targets if isinstance(t, ast.Name)}
    return names


def test_every_public_name_is_in_the_api_reference():
    """Each name of an ``__all__`` is rendered where it is defined: its module has a
    ``::: module`` directive on a page of docs/api/ that renders it."""
    directives = _directives()
    missing = []
    for modname, names in _public_modules().items():
        module = importlib.import_module(modname)
        if modname not in directives:
            missing.append(f"{modname} (no '::: {modname}')")
        assigned = _assigned(module)
        for name in names:
            obj = getattr(module, name)
            if inspect.isclass(obj) or inspect.isfunction(obj):
                home = obj.__module__
                if not home.startswith("recompose"):
                    continue
            elif name in assigned:
                home = modname
            else:
                continue  # re-exported: checked where it is defined
            shown = directives.get(home, False)
            if shown is False or (isinstance(shown, list) and name not in shown):
                missing.append(f"{home}.{name}")
    assert not missing, "public names not rendered in docs/api/:\n" + "\n".join(
        sorted(set(missing)))
    index = (API / "index.md").read_text(encoding="utf-8")
    listed = set(re.findall(r"^\| \[`(\w+)`\]", index, flags=re.M))
    assert not set(rc.__all__) - listed, (
        f"top-level names missing from docs/api/index.md: {sorted(set(rc.__all__) - listed)}")


def _own_doc(obj: object) -> str:
    """The object's own docstring ('' for the signature dataclasses and NamedTuples get)."""
    doc = obj.__dict__.get("__doc__") if inspect.isclass(obj) else obj.__doc__
    doc = (doc or "").strip()
    if inspect.isclass(obj) and doc.startswith(f"{obj.__name__}("):
        return ""
    return doc


def _methods(cls: type) -> dict[str, object]:
    """Public functions, class/static methods and properties that ``cls`` defines itself."""
    out = {}
    for name, value in vars(cls).items():
        if name.startswith("_"):
            continue
        if isinstance(value, (staticmethod, classmethod)):
            value = value.__func__
        if isinstance(value, property):
            value = value.fget
        if inspect.isfunction(value):
            out[name] = value
    return out


def _inherited_doc(cls: type, name: str, fn: object) -> str:
    doc = (fn.__doc__ or "").strip()
    for base in cls.__mro__[1:]:
        if doc:
            break
        value = base.__dict__.get(name)
        if isinstance(value, (staticmethod, classmethod)):
            value = value.__func__
        if isinstance(value, property):
            value = value.fget
        doc = (getattr(value, "__doc__", None) or "").strip()
    return doc


def test_every_public_name_has_a_docstring():
    missing = []
    seen = set()
    for modname, names in _public_modules().items():
        module = importlib.import_module(modname)
        if not (module.__doc__ or "").strip():
            missing.append(f"{modname} (module)")
        for name in names:
            obj = getattr(module, name)
            if not (inspect.isclass(obj) or inspect.isfunction(obj)):
                continue
            if not getattr(obj, "__module__", "").startswith("recompose") or id(obj) in seen:
                continue
            seen.add(id(obj))
            where = f"{obj.__module__}.{obj.__qualname__}"
            if not _own_doc(obj):
                missing.append(where)
            if inspect.isclass(obj):
                for method, fn in _methods(obj).items():
                    if not _inherited_doc(obj, method, fn):
                        missing.append(f"{where}.{method}")
    assert not missing, "public names without a docstring:\n" + "\n".join(sorted(missing))


@pytest.mark.skipif(shutil.which("ruff") is None, reason="ruff not installed")
def test_the_site_hook_is_ruff_clean():
    out = subprocess.run(["ruff", "check", "docs/hooks"], cwd=ROOT, capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def _hook():
    pytest.importorskip("mkdocs")
    name = "docs_hooks_results_pages"
    if name not in sys.modules:  # registered first: its dataclass looks itself up there
        spec = importlib.util.spec_from_file_location(
            name, ROOT / "docs" / "hooks" / "results_pages.py")
        sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[name])
    return sys.modules[name]


def test_the_results_hook_splits_sections_and_rewrites_links():
    hook = _hook()
    text = ("# Results\n\nIntro, see [the table](../experiments/README.md).\n\n"
            "## 1. First (issue #2)\n\n![fig](figures/a.png) and [later](#21-detail).\n\n"
            "```bash\n## not a heading\n```\n\n"
            "## 2. Second\n\n### 2.1 Detail\n\nText [one](#1-first-issue-2).\n")
    intro, sections = hook.split(text)
    assert [s.title for s in sections] == ["1. First (issue #2)", "2. Second"]
    assert [s.path for s in sections] == ["results/1-first.md", "results/2-second.md"]
    assert "## not a heading" in "\n".join(sections[0].body)  # fenced code is not split
    assert "## 2.1 Detail" in sections[1].body  # sub-headings one level up
    pages = {a: s.path for s in sections for a in s.anchors}
    first = hook._rewrite("\n".join(sections[0].body), "results", "", pages, "results/index.md")
    assert "![fig](../figures/a.png)" in first and "[later](2-second.md#21-detail)" in first
    second = hook._rewrite("\n".join(sections[1].body), "results", "", pages, "results/index.md")
    assert "[one](1-first.md#1-first-issue-2)" in second
    outside = hook._rewrite("\n".join(intro), "results", "", pages, "results/index.md")
    assert "the table (`experiments/README.md`)" in outside
    # other pages' links to results.md go to the index or the section with the anchor
    hook._State.anchor_pages = pages
    page = SimpleNamespace(file=SimpleNamespace(src_uri="how-to/cli.md"))
    out = hook.on_page_markdown("[a](../results.md) [b](../results.md#21-detail) "
                                "[c](../results.md#gone)", page, None, None)
    assert out == ("[a](../results/index.md) [b](../results/2-second.md#21-detail) "
                   "[c](../results/index.md)")
