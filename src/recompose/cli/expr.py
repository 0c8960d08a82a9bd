r"""A safe parser for composition expressions (no ``eval``).

Grammar (``**`` binds tighter than ``*`` and ``/``, which associate left)::

    expr    := power (("*" | "/") power)*
    power   := atom ("**" number)?                number: 0.5, -0.3, 2, 1e-2, (−0.3)
    atom    := NAME | "mix" "(" item ("," item)* ")" | "(" expr ")"
    item    := expr (":" number)?                 weights: all given or none (equal)

Examples: ``A * B``, ``A / B**0.3``, ``A * B**-0.3``, ``mix(A:0.3, B:0.7) * C``.
Errors are :class:`ExprError` with the 1-based column of the offending token.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..compose import mixture, power, product
from ..models.base import DiffusionModel

__all__ = ["ExprError", "parse", "evaluate", "names_in"]


class ExprError(ValueError):
    """A syntax or name error in an expression, with its column."""

    def __init__(self, message: str, column: int, text: str) -> None:
        super().__init__(message)
        self.message, self.column, self.text = message, column, text

    def pretty(self) -> str:
        caret = " " * (self.column - 1) + "^"
        return f"{self.message} (column {self.column})\n  {self.text}\n  {caret}"


_TOKEN = re.compile(r"\s*(?:(?P<num>\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?)"
                    r"|(?P<name>[A-Za-z_][A-Za-z0-9_]*)|(?P<op>\*\*|[*/():,+-]))")


@dataclass(frozen=True)
class Name:
    name: str
    column: int


@dataclass(frozen=True)
class Pow:
    base: object
    exponent: float


@dataclass(frozen=True)
class BinOp:
    op: str
    left: object
    right: object


@dataclass(frozen=True)
class Mix:
    items: tuple
    weights: tuple | None


def _tokenize(text: str) -> list[tuple[str, str, int]]:
    tokens, pos = [], 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            col = pos + len(text[pos:]) - len(text[pos:].lstrip()) + 1
            raise ExprError(f"unexpected character {text[col - 1]!r}", col, text)
        kind = m.lastgroup
        col = m.start(kind) + 1
        tokens.append((kind, m.group(kind), col))
        pos = m.end()
    tokens.append(("end", "", len(text) + 1))
    return tokens


class _Parser:
    def __init__(self, text: str) -> None:
        self.text, self.tokens, self.i = text, _tokenize(text), 0

    def peek(self) -> tuple[str, str, int]:
        return self.tokens[self.i]

    def take(self, value: str | None = None, kind: str | None = None) -> tuple[str, str, int]:
        tok = self.peek()
        if (value is not None and tok[1] != value) or (kind is not None and tok[0] != kind):
            want = repr(value) if value else {"num": "a number", "name": "a name"}[kind]
            got = "the end" if tok[0] == "end" else repr(tok[1])
            raise ExprError(f"expected {want} but found {got}", tok[2], self.text)
        self.i += 1
        return tok

    def expr(self) -> object:
        node = self.power()
        while self.peek()[1] in ("*", "/"):
            op = self.take()[1]
            node = BinOp(op, node, self.power())
        if self.peek()[1] == "+":
            raise ExprError("'+' is not supported: write mix(A, B) for a mixture",
                            self.peek()[2], self.text)
        return node

    def number(self) -> float:
        sign = 1.0
        paren = self.peek()[1] == "("
        if paren:
            self.take("(")
        if self.peek()[1] == "-":
            self.take("-")
            sign = -1.0
        value = sign * float(self.take(kind="num")[1])
        if paren:
            self.take(")")
        return value

    def power(self) -> object:
        node = self.atom()
        if self.peek()[1] == "**":
            self.take("**")
            node = Pow(node, self.number())
            if self.peek()[1] == "**":
                raise ExprError("chained '**' is ambiguous: use parentheses", self.peek()[2],
                                self.text)
        return node

    def atom(self) -> object:
        kind, value, col = self.peek()
        if kind == "name" and value == "mix":
            return self.mix()
        if kind == "name":
            self.take()
            return Name(value, col)
        if value == "(":
            self.take("(")
            node = self.expr()
            self.take(")")
            return node
        if kind == "num" or value == "-":
            raise ExprError("a number cannot stand for a model: use `model ** w` for a "
                            "strength or mix(A:w1, B:w2) for weights", col, self.text)
        got = "the end" if kind == "end" else repr(value)
        raise ExprError(f"expected a model name, '(' or mix(...) but found {got}", col,
                        self.text)

    def mix(self) -> Mix:
        self.take("mix")
        self.take("(")
        items, weights = [], []
        while True:
            items.append(self.expr())
            if self.peek()[1] == ":":
                self.take(":")
                col = self.peek()[2]
                weights.append((self.number(), col))
            if self.peek()[1] != ",":
                break
            self.take(",")
        close = self.take(")")
        if weights and len(weights) != len(items):
            raise ExprError("give a weight to every part of mix(...) or to none", close[2],
                            self.text)
        for w, col in weights:
            if not w > 0:
                raise ExprError(f"mixture weights must be positive, got {w:g}", col, self.text)
        return Mix(tuple(items), tuple(w for w, _ in weights) if weights else None)


def parse(text: str) -> object:
    """Parse an expression into a small syntax tree (raises :class:`ExprError`)."""
    if not text.strip():
        raise ExprError("empty expression", 1, text)
    p = _Parser(text)
    node = p.expr()
    if p.peek()[0] != "end":
        raise ExprError(f"unexpected {p.peek()[1]!r}", p.peek()[2], text)
    return node


def names_in(node: object) -> list[Name]:
    """Every name used, in order of appearance."""
    if isinstance(node, Name):
        return [node]
    if isinstance(node, Pow):
        return names_in(node.base)
    if isinstance(node, BinOp):
        return names_in(node.left) + names_in(node.right)
    if isinstance(node, Mix):
        return [n for item in node.items for n in names_in(item)]
    raise TypeError(node)


def evaluate(text: str, env: dict[str, DiffusionModel]) -> DiffusionModel:
    """Parse ``text`` and build the composite from the models in ``env``."""
    tree = parse(text)
    for n in names_in(tree):
        if n.name not in env:
            known = ", ".join(sorted(env)) or "none"
            raise ExprError(f"unknown name {n.name!r} (defined: {known}); define it with "
                            f"--model {n.name}=<model>", n.column, text)
    return _build(tree, env)


def _build(node: object, env: dict[str, DiffusionModel]) -> DiffusionModel:
    if isinstance(node, Name):
        return env[node.name]
    if isinstance(node, Pow):
        return power(_build(node.base, env), node.exponent)
    if isinstance(node, BinOp):
        left, right = _build(node.left, env), _build(node.right, env)
        return product([left, right]) if node.op == "*" else product([left, power(right, -1)])
    if isinstance(node, Mix):
        return mixture([_build(i, env) for i in node.items], node.weights)
    raise TypeError(node)
