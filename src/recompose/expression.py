r"""One expression language for compositions, shared by Python and the command line.

``parse("mix(normalize(A), normalize(B), weights=[0.3, 0.7]) * C**0.5", env)`` builds the
same model as the Python operators on ``env``'s models: every operator below is evaluated
*with* the Python operator it spells, so the two entry points cannot drift apart.

==================================  ===========================================  =========
text                                Python it evaluates                          result
==================================  ===========================================  =========
``A``                               ``env["A"]``                                 model
``1``, ``0.5``, ``1e-2``            a float                                      number
``A * B``                           ``A * B``  (product)                         model
``A / B``                           ``A / B``  (``A * B**-1``)                   model
``A ** w``                          ``A ** w`` (power; ``w`` a number)           model
``A + B``                           ``A + B``  (equal-weight mixture)            model
``-w``                              ``-w``     (numbers only: ``A ** -0.3``)     number
``mix(A, B, weights=[0.3, 0.7])``   ``mixture([A, B], weights=[0.3, 0.7])``      model
``cfg(C, U, w)``                    ``cfg(C, U, w)``                             model
``normalize(A)``                    ``normalize(A)`` (keywords: ``num_times``,   model
                                    ``grid``, ``extent``, ``t_min``)
==================================  ===========================================  =========

Precedence and associativity are Python's (the text is parsed by :func:`ast.parse`):
``A ** 2 ** 3 = A ** 8``, ``A ** -2`` works while ``-2 ** 2 = -(2 ** 2)``, ``A / B / C =
(A / B) / C``, and ``A + B + C = (A + B) + C`` has weights ``(¼, ¼, ½)`` (``mix(A, B, C)``
gives thirds). Arithmetic between numbers is folded in double precision. A number times a
model is refused: a strength is ``A ** w``, a weight belongs in ``mix(..., weights=[...])``.

Nothing else is accepted (no attributes, subscripts, strings, other calls, comparisons or
lambdas), and nothing reaches ``eval``/``exec``/``compile``. The tree is walked, and the model
built, with explicit stacks. Nesting beyond CPython's parser limits is an
:class:`ExpressionError`, never a ``RecursionError``. A chain ``A * B * …`` nests one level per
operator: on Python 3.10–3.11 a chain of 10⁵ factors parses in about a second; from 3.12 the
tree is built under a fixed C recursion limit, and chains of more than about 2,000 operators
(3.12) or 5,000 (3.13) need parentheses, e.g. ``(A * B * …) * (C * …)``.

Mixtures of learned energies need ``normalize`` (a learned energy is defined up to a
``t``-dependent constant, which would re-weight the mixture); nothing normalises behind the
user's back (see :mod:`recompose.models.normalization`). ``mix(...)`` of score-only models is
the same builder: the mixture is tracked (its log-densities estimated along each chain, with
their normalisers; :mod:`recompose.samplers.tracking`), and only ``fkc`` and ``reverse``
sample it.
"""

from __future__ import annotations

import ast
import math
import sys
import threading
from collections.abc import Callable, Collection, Mapping

from .compose import cfg, mixture
from .models.base import DiffusionModel
from .models.normalization import check_quadrature, normalize
from .rewards import Reward

__all__ = ["ExpressionError", "parse", "check"]

ALLOWED = ("allowed: model names, numbers, * / ** +, unary - on numbers, parentheses, "
           "mix(A, B, weights=[...]), cfg(C, U, w), normalize(A)")
FUNCTIONS = ("mix", "cfg", "normalize")
MAX_LENGTH = 1_000_000  # characters; bounds the parser's memory and the deep-parse stack
_PUNCTUATION = set("*/+-().,=[] ")
_NORMALIZE_KEYWORDS = {"num_times": int, "grid": int, "extent": float, "t_min": float}


class ExpressionError(ValueError):
    """A syntax, name or type error in an expression, with its 1-based ``column``; ``name`` is
    the unbound name of an unknown-name error (else ``None``)."""

    def __init__(self, message: str, column: int, text: str, name: str | None = None) -> None:
        super().__init__(f"{message} (column {column})")
        self.message, self.column, self.text, self.name = message, column, text, name

    def pretty(self, width: int = 72) -> str:
        """The message, the text (a window of ``width`` characters), a caret under the column."""
        text, col = self.text, self.column
        start = 0
        if len(text) > width:
            start = max(0, min(col - 1 - width // 2, len(text) - width))
        shown = text[start:start + width]
        left = "…" if start > 0 else ""
        right = "…" if start + width < len(text) else ""
        caret = " " * (len(left) + col - 1 - start) + "^"
        return f"{self.message} (column {col})\n  {left}{shown}{right}\n  {caret}"


# ------------------------------------------------------------------------ values of nodes
class _Model:
    """Placeholder for a model-valued node: its model is built later, by the program."""

    __slots__ = ()


_MODEL = _Model()
_Value = float | tuple | _Model  # number, list of numbers (weights), model


_WHAT = {
    ast.Attribute: "attribute access ('.')", ast.Subscript: "a subscript ('[...]')",
    ast.Lambda: "a lambda", ast.JoinedStr: "an f-string", ast.FormattedValue: "an f-string",
    ast.Compare: "a comparison", ast.BoolOp: "'and'/'or'", ast.IfExp: "'if ... else'",
    ast.Dict: "a dict", ast.Set: "a set", ast.ListComp: "a comprehension",
    ast.GeneratorExp: "a comprehension", ast.SetComp: "a comprehension",
    ast.DictComp: "a comprehension", ast.NamedExpr: "':='", ast.Starred: "'*' unpacking",
    ast.Await: "'await'", ast.Yield: "'yield'", ast.YieldFrom: "'yield'", ast.Slice: "a slice",
}
_OPS = {ast.Sub: "'-' between two terms", ast.FloorDiv: "'//'", ast.Mod: "'%'",
        ast.MatMult: "'@'", ast.LShift: "'<<'", ast.RShift: "'>>'", ast.BitOr: "'|'",
        ast.BitAnd: "'&'", ast.BitXor: "'^'", ast.UAdd: "unary '+'", ast.Invert: "'~'",
        ast.Not: "'not'"}


class _Compiler:
    """Checks a syntax tree against the whitelist and lowers it to a postfix program (numbers
    folded; one instruction per model-valued node, in post-order), raising every error that does
    not depend on the models before any model is built."""

    def __init__(self, text: str, names: Collection[str] | None) -> None:
        self.text, self.names = text, names
        self.program: list[tuple] = []
        self.used: dict[str, None] = {}  # ordered set

    # columns: ast offsets are UTF-8 byte offsets; errors report characters
    def column(self, node: ast.AST) -> int:
        return _char_column(self.text, node.col_offset)

    def op_column(self, node: ast.BinOp) -> int:
        """Column of a binary operator: the first non-space, non-')' after the left operand."""
        i = _char_column(self.text, node.left.end_col_offset) - 1
        while i < len(self.text) and self.text[i] in " )":
            i += 1
        return i + 1

    def error(self, message: str, column: int, name: str | None = None) -> ExpressionError:
        return ExpressionError(message, column, self.text, name)

    def refuse(self, what: str, column: int) -> ExpressionError:
        return self.error(f"{what} is not allowed; {ALLOWED}", column)

    def run(self, tree: ast.Expression) -> None:
        stack: list[tuple[ast.AST, bool]] = [(tree.body, False)]
        values: list[tuple[_Value, ast.AST]] = []
        while stack:
            node, expanded = stack.pop()
            if not expanded:
                children = self.children(node)
                stack.append((node, True))
                stack.extend((c, False) for c in reversed(children))
                continue
            n = len(self.children(node))
            args = values[len(values) - n:]
            del values[len(values) - n:]
            values.append((self.finish(node, args), node))
        value, node = values.pop()
        if not isinstance(value, _Model):
            raise self.error("the expression is a number, not a model; " + ALLOWED,
                             self.column(node))

    def children(self, node: ast.AST) -> list[ast.AST]:
        """The whitelist: the children to evaluate first, or an error for any other node."""
        if isinstance(node, ast.Name | ast.Constant):
            return []
        if isinstance(node, ast.BinOp):
            if type(node.op) in _OPS:
                raise self.error(f"{_OPS[type(node.op)]} is not allowed"
                                 + ("; negation is A / B**w" if isinstance(node.op, ast.Sub)
                                    else "") + f"; {ALLOWED}", self.op_column(node))
            return [node.left, node.right]
        if isinstance(node, ast.UnaryOp):
            if not isinstance(node.op, ast.USub):
                raise self.refuse(_OPS[type(node.op)], self.column(node))
            return [node.operand]
        if isinstance(node, ast.Call):
            self.check_call(node)
            return list(node.args) + [k.value for k in node.keywords]
        if isinstance(node, ast.List | ast.Tuple):
            return list(node.elts)
        what = _WHAT.get(type(node), type(node).__name__)
        raise self.refuse(what, self.column(node))

    def check_call(self, node: ast.Call) -> None:
        func = node.func
        if not isinstance(func, ast.Name) or func.id not in FUNCTIONS:
            shown = f"'{func.id}'" if isinstance(func, ast.Name) else "this"
            raise self.error(f"calling {shown} is not allowed (the functions are mix, cfg "
                             f"and normalize); {ALLOWED}", self.column(node))
        for arg in node.args:
            if isinstance(arg, ast.Starred):
                raise self.refuse("'*' unpacking", self.column(arg))
        for kw in node.keywords:
            if kw.arg is None:
                raise self.refuse("'**' unpacking", self.column(kw.value))

    # ------------------------------------------------------------------ evaluation of a node
    def finish(self, node: ast.AST, args: list[tuple[_Value, ast.AST]]) -> _Value:
        if isinstance(node, ast.Name):
            return self.name(node)
        if isinstance(node, ast.Constant):
            value = node.value
            if isinstance(value, bool) or not isinstance(value, int | float):
                what = "a string" if isinstance(value, str | bytes) else repr(value)
                raise self.refuse(what, self.column(node))
            return self.number(lambda: float(value), node)
        if isinstance(node, ast.UnaryOp):
            (value, operand), = args
            if not isinstance(value, float):
                raise self.error("unary '-' applies to numbers only (A ** -0.3); a model has "
                                 "no negative: negation is A / B**w", self.column(node))
            return -value
        if isinstance(node, ast.BinOp):
            return self.binop(node, args)
        if isinstance(node, ast.List | ast.Tuple):
            for value, elt in args:
                if not isinstance(value, float):
                    raise self.error("a list holds numbers only (mix weights)",
                                     self.column(elt))
            return tuple((value, elt) for value, elt in args)
        return self.call(node, args)

    def name(self, node: ast.Name) -> _Value:
        if self.names is not None and node.id not in self.names:
            known = ", ".join(sorted(self.names)) or "none"
            if node.id in FUNCTIONS:
                raise self.error(f"'{node.id}' is a function: call it, e.g. {node.id}(A, ...)",
                                 self.column(node))
            raise self.error(f"unknown name {node.id!r} (defined: {known})",
                             self.column(node), name=node.id)
        self.used[node.id] = None
        self.program.append(("name", node.id, node))
        return _MODEL

    def number(self, fn: Callable[[], float], node: ast.AST) -> float:
        try:
            value = fn()
        except ZeroDivisionError:
            raise self.error("division by zero", self.column(node)) from None
        except OverflowError:
            value = math.inf
        if isinstance(value, complex):
            raise self.error("this power of a negative number is not a real number",
                             self.column(node))
        if not math.isfinite(value):
            raise self.error("this number is too large (not a finite double)",
                             self.column(node))
        return float(value)

    def binop(self, node: ast.BinOp, args: list[tuple[_Value, ast.AST]]) -> _Value:
        (left, lnode), (right, rnode) = args
        op = node.op
        if isinstance(left, tuple) or isinstance(right, tuple):
            bad = lnode if isinstance(left, tuple) else rnode
            raise self.error("a list is only allowed as mix(..., weights=[...])",
                             self.column(bad))
        if isinstance(left, float) and isinstance(right, float):
            fold = {ast.Mult: lambda: left * right, ast.Div: lambda: left / right,
                    ast.Pow: lambda: left ** right, ast.Add: lambda: left + right}
            return self.number(fold[type(op)], node)
        if isinstance(op, ast.Pow):
            if isinstance(right, _Model):
                raise self.error("an exponent must be a number (A ** 0.5)", self.column(rnode))
            self.program.append(("pow", right, node))
            return _MODEL
        if isinstance(left, float) or isinstance(right, float):
            num = lnode if isinstance(left, float) else rnode
            if isinstance(op, ast.Add):
                raise self.error("adding a number to a model is meaningless; A + B is the "
                                 "equal-weight mixture of two models", self.column(num))
            verb = "multiplying" if isinstance(op, ast.Mult) else "dividing"
            raise self.error(f"{verb} a model by a number is ambiguous: use A ** w for a "
                             "strength or mix(A, B, weights=[...]) for weights",
                             self.column(num))
        symbol = {ast.Mult: "*", ast.Div: "/", ast.Add: "+"}[type(op)]
        self.program.append(("op", symbol, node))
        return _MODEL

    def call(self, node: ast.Call, args: list[tuple[_Value, ast.AST]]) -> _Value:
        name = node.func.id
        positional = args[:len(node.args)]
        keywords = {kw.arg: (value, kw) for kw, (value, _) in
                    zip(node.keywords, args[len(node.args):])}
        column = self.column(node)
        if name == "mix":
            self.models(positional, "mix(...) mixes models: mix(A, B, weights=[0.3, 0.7])")
            if not positional:
                raise self.error("mix(...) needs at least one model", column)
            self.only(keywords, {"weights"}, name)
            weights = None
            if "weights" in keywords:
                value, kw = keywords["weights"]
                if not isinstance(value, tuple):
                    raise self.error("weights must be a list of numbers: weights=[0.3, 0.7]",
                                     self.column(kw.value))
                if len(value) != len(positional):
                    raise self.error(f"got {len(value)} weights for {len(positional)} models",
                                     self.column(kw.value))
                for w, elt in value:
                    if not (math.isfinite(w) and w > 0):
                        raise self.error(f"mixture weights must be positive, got {w:g}",
                                         self.column(elt))
                weights = [w for w, _ in value]
            self.program.append(("mix", (len(positional), weights), node))
        elif name == "cfg":
            self.only(keywords, {"scale"}, name)
            if "scale" in keywords:
                value, kw = keywords["scale"]
                positional = [*positional, (value, kw.value)]
            if len(positional) != 3:
                raise self.error("cfg takes a conditional model, an unconditional model and a "
                                 "number: cfg(C, U, 3.0)", column)
            self.models(positional[:2], "cfg(C, U, w): C and U are models")
            scale, snode = positional[2]
            if not isinstance(scale, float):
                raise self.error("the guidance scale w of cfg(C, U, w) must be a number",
                                 self.column(snode))
            self.program.append(("cfg", scale, node))
        else:  # normalize
            if len(positional) != 1:
                raise self.error("normalize takes one model: normalize(A)", column)
            self.models(positional, "normalize(A) takes a model")
            self.only(keywords, set(_NORMALIZE_KEYWORDS), name)
            options: dict[str, float | int] = {}
            for key, (value, kw) in keywords.items():
                kind = _NORMALIZE_KEYWORDS[key]
                if not isinstance(value, float) or (kind is int and not value.is_integer()):
                    raise self.error(f"{key} must be {'a whole' if kind is int else 'a'} "
                                     "number", self.column(kw.value))
                try:  # the library's bounds, checked here too: before any model is loaded
                    check_quadrature(**{key: kind(value)})
                except ValueError as err:
                    raise self.error(str(err), self.column(kw.value)) from None
                options[key] = kind(value)
            self.program.append(("normalize", options, node))
        return _MODEL

    def models(self, args: list[tuple[_Value, ast.AST]], usage: str) -> None:
        for value, node in args:
            if not isinstance(value, _Model):
                raise self.error(usage, self.column(node))

    def only(self, keywords: dict, allowed: set[str], name: str) -> None:
        for key, (_, kw) in keywords.items():
            if key not in allowed:
                shown = ", ".join(sorted(allowed)) or "none"
                raise self.error(f"{name}(...) has no keyword {key!r} (keywords: {shown})",
                                 self.column(kw))


def _char_column(text: str, byte_offset: int) -> int:
    """1-based character column of a UTF-8 byte offset into ``text``."""
    if text.isascii():
        return byte_offset + 1
    return len(text.encode()[:byte_offset].decode(errors="ignore")) + 1


def _python_ast(text: str) -> ast.Expression:
    """``ast.parse`` in eval mode, failures turned into :class:`ExpressionError`.

    A flat chain of a few thousand operators exceeds the default recursion limit of CPython's
    recursive tree builder; such texts are parsed again in a thread with a large stack and a
    recursion limit sized to the text (process-wide, so restored right after).
    """
    try:
        return ast.parse(text, mode="eval")
    except SyntaxError as err:
        raise _syntax_error(err, text) from None
    except (RecursionError, MemoryError):
        pass
    result: dict[str, object] = {}

    def deep() -> None:
        old = sys.getrecursionlimit()
        sys.setrecursionlimit(max(old, len(text) + 1000))
        try:
            result["tree"] = ast.parse(text, mode="eval")
        except (SyntaxError, RecursionError, MemoryError) as err:
            result["error"] = err
        finally:
            sys.setrecursionlimit(old)

    old_size = threading.stack_size(512 * 2**20)  # virtual; only the pages used are touched
    try:
        worker = threading.Thread(target=deep, name="recompose-deep-parse")
        worker.start()
    finally:
        threading.stack_size(old_size)
    worker.join()
    err = result.get("error")
    if isinstance(err, SyntaxError):
        raise _syntax_error(err, text)
    if err is not None or "tree" not in result:
        raise ExpressionError("the expression is nested too deeply for Python's parser (a "
                              "chain of operators nests one level per operator); use fewer "
                              "nested parentheses or powers, split long products into "
                              "parenthesised groups, and write many mixture parts as "
                              "mix(A, B, ...)", 1, text)
    return result["tree"]


def _syntax_error(err: SyntaxError, text: str) -> ExpressionError:
    column = err.offset if err.offset and 1 <= err.offset <= len(text) + 1 else len(text) + 1
    message = (err.msg or "invalid syntax").split(". Perhaps")[0]
    if message == "invalid syntax" and column > len(text):
        message = "the expression ends too early"
    return ExpressionError(f"{message}; {ALLOWED}", column, text)


def _compile(text: str, names: Collection[str] | None) -> _Compiler:
    if not isinstance(text, str):
        raise TypeError(f"an expression is a str, got {type(text).__name__}")
    # One line: newlines and tabs are spaces (the same length, so columns stay right).
    text = text.translate({ord(c): " " for c in "\t\n\r\f\v"})
    if not text.strip():
        raise ExpressionError(f"empty expression; {ALLOWED}", 1, text)
    if len(text) > MAX_LENGTH:
        raise ExpressionError(f"the expression is longer than {MAX_LENGTH:,} characters", 1,
                              text[:200])
    for i, c in enumerate(text):  # clearer than "invalid syntax" for stray characters
        if not (c.isalnum() or c == "_" or c in _PUNCTUATION):
            what = "strings are" if c in "'\"" else f"the character {c!r} is"
            raise ExpressionError(f"{what} not allowed; {ALLOWED}", i + 1, text)
    compiler = _Compiler(text, names)
    compiler.run(_python_ast(text))
    return compiler


def check(text: str, names: Collection[str] | None = None) -> tuple[str, ...]:
    """Validate ``text`` without building anything; return the model names it uses, in order of
    first appearance. ``names``, if given, are the names that may be used; any other raises an
    :class:`ExpressionError` (as does any error of syntax or type, with its column)."""
    return tuple(_compile(text, names).used)


def parse(text: str, env: Mapping[str, DiffusionModel | Reward]) -> DiffusionModel:
    """Build the model an expression describes from the models bound in ``env`` (name ->
    model): ``parse("A * B**-0.3", env)`` is ``env["A"] * env["B"]**-0.3`` (grammar in the module
    docstring). A name may also be bound to a reward factor (``rc.reward``):
    ``parse("A * B * R", {..., "R": rc.reward(r, temperature=0.1)})`` tilts the product.

    Raises :class:`ExpressionError` (with the column) for syntax, unknown names, or a number
    where a model belongs. Errors of the algebra itself (e.g.
    :class:`~recompose.errors.CapabilityError`) propagate unchanged, with a note giving the column.
    """
    for key, value in env.items():
        if not isinstance(value, DiffusionModel | Reward):
            raise TypeError(f"env[{key!r}] is a {type(value).__name__}, not a DiffusionModel "
                            "or a reward factor")
    compiler = _compile(text, env)
    stack: list[DiffusionModel] = []
    for kind, arg, node in compiler.program:
        try:
            if kind == "name":
                stack.append(env[arg])
            elif kind == "op":
                right = stack.pop()
                left = stack.pop()
                stack.append(left * right if arg == "*" else
                             left / right if arg == "/" else left + right)
            elif kind == "pow":
                stack.append(stack.pop() ** arg)
            elif kind == "mix":
                count, weights = arg
                parts = stack[len(stack) - count:]
                del stack[len(stack) - count:]
                stack.append(mixture(parts, weights=weights))
            elif kind == "cfg":
                uncond = stack.pop()
                cond = stack.pop()
                stack.append(cfg(cond, uncond, arg))
            else:
                stack.append(normalize(stack.pop(), **arg))
        except Exception as err:
            column = compiler.column(node)
            err.add_note(ExpressionError("in the expression", column, compiler.text).pretty())
            raise
    (model,) = stack
    if isinstance(model, Reward):
        raise ExpressionError("the expression is a reward factor alone; a reward tilts a model: "
                              "A * R", 1, compiler.text)
    return model
