"""The expression language: the same text means the same density as the Python operators.

Pinned here: every operator against its Python spelling (structure, ``describe()``, energies),
Python's precedence and associativity, each error with its column, refused injections, deep
expressions, and explicit normalisation.
"""

import sys

import pytest
import torch

import recompose as rc
from conftest import ScoreOnly, ring_gmm, skewed_gmm
from recompose.compose import Mixture, Power, Product
from recompose.expression import ExpressionError, check
from recompose.models.normalization import Normalized

A, B, C = skewed_gmm(), ring_gmm(), ring_gmm(std=0.2, radius=0.8)
ENV = {"A": A, "B": B, "C": C}
X = torch.tensor([[0.1, -0.3], [0.5, 0.5], [-1.0, 0.2], [0.0, 0.0]], dtype=torch.float64)


def structure(m):
    """The composite as nested tuples; leaves by identity."""
    if isinstance(m, Product):
        return ("product", tuple(structure(f) for f in m.factors))
    if isinstance(m, Power):
        return ("power", m.exponent, structure(m.base))
    if isinstance(m, Mixture):
        return ("mix", m.weights, tuple(structure(p) for p in m.parts))
    if isinstance(m, Normalized):
        return ("normalize", m.log_z.tolist(), structure(m.model))
    return ("leaf", id(m))


def assert_same(built, expected):
    assert structure(built) == structure(expected)
    assert built.describe() == expected.describe()
    for t in (0.05, 0.5):
        assert torch.equal(built.energy(X, t), expected.energy(X, t))
        assert torch.equal(built.score(X, t), expected.score(X, t))


# ------------------------------------------------------------------ same text, same density
@pytest.mark.parametrize("text,python", [
    ("A", lambda: A),
    ("A * B", lambda: A * B),
    ("A / B", lambda: A / B),
    ("A ** 0.5", lambda: A ** 0.5),
    ("A * B**-0.3", lambda: A * B**-0.3),
    ("A + B", lambda: A + B),
    ("A + B", lambda: rc.mixture([A, B])),
    ("mix(A, B)", lambda: rc.mixture([A, B])),
    ("mix(A, B, C, weights=[0.2, 0.3, 0.5])", lambda: rc.mixture([A, B, C], [0.2, 0.3, 0.5])),
    ("mix(A, B, weights=(1, 3)) * C", lambda: rc.mixture([A, B], weights=[1, 3]) * C),
    ("cfg(A, B, 3)", lambda: rc.cfg(A, B, 3)),
    ("cfg(A, B, scale=0.5)", lambda: rc.cfg(A, B, 0.5)),
    ("(A / B**0.5) ** 2", lambda: (A / B**0.5) ** 2),
    ("A * B / A", lambda: A * B / A),
    ("mix(A * B, C) ** 0.5", lambda: rc.mixture([A * B, C]) ** 0.5),
    ("A ** (1 / 4) * B ** (2 * 0.25 + 1)", lambda: A ** 0.25 * B ** 1.5),
    ("normalize(A, grid=16, num_times=3)", lambda: rc.normalize(A, grid=16, num_times=3)),
])
def test_same_text_same_model_as_python(text, python):
    assert_same(rc.parse(text, ENV), python())


@pytest.mark.parametrize("text,python", [
    ("A / B / C", lambda: (A / B) / C),              # left-associative
    ("A * B / C * A", lambda: ((A * B) / C) * A),
    ("A ** 2 ** 3", lambda: A ** 8),                 # right-associative, as in Python
    ("A ** -2", lambda: A ** -2),                    # unary minus on the exponent binds first
    ("A ** -2 ** 2", lambda: A ** -4),               # = A ** -(2 ** 2)
    ("A ** (-2) ** 2", lambda: A ** 4),
    ("A ** --2", lambda: A ** 2),
    ("A * B ** 2", lambda: A * (B ** 2)),            # ** before *
    ("A / B ** 2", lambda: A / (B ** 2)),
    ("(A / B) ** 2", lambda: (A / B) ** 2),
    ("A * B + C", lambda: (A * B) + C),              # + binds loosest
    ("A + B * C", lambda: A + (B * C)),
    ("A + B + C", lambda: (A + B) + C),              # weights 1/4, 1/4, 1/2, as in Python
    ("A + (B + C)", lambda: A + (B + C)),
    ("A ** 2 * 0.5 ** -1 ** 3", None),               # a number times a model: refused
])
def test_precedence_and_associativity_are_pythons(text, python):
    if python is None:
        with pytest.raises(ExpressionError):
            rc.parse(text, ENV)
        return
    assert_same(rc.parse(text, ENV), python())


def test_a_plus_b_plus_c_is_not_thirds():
    assert rc.parse("A + B + C", ENV).weights == pytest.approx((0.25, 0.25, 0.5))
    assert rc.parse("mix(A, B, C)", ENV).weights == pytest.approx((1 / 3,) * 3)


def test_numbers_are_refused_where_python_refuses_them():
    for python in (lambda: 2 * A, lambda: A * 2, lambda: A / 2, lambda: A + 1):
        with pytest.raises(TypeError):
            python()
    for text in ("2 * A", "A * 2", "A / 2", "A + 1", "-A", "2"):
        with pytest.raises(ExpressionError):
            rc.parse(text, ENV)


# ------------------------------------------------------------------ errors and their columns
@pytest.mark.parametrize("text,column,words", [
    ("A * (B", 5, "never closed"),
    ("A ** B", 6, "exponent must be a number"),
    ("2 * A", 1, "A ** w"),
    ("A * 2", 5, "mix(A, B, weights=[...])"),
    ("A / 2", 5, "ambiguous"),
    ("A + 1", 5, "meaningless"),
    ("-A", 1, "numbers only"),
    ("A - B", 3, "negation is A / B**w"),
    ("(A) - B", 5, "'-'"),
    ("A $ B", 3, "'$'"),
    ("", 1, "empty"),
    ("   ", 1, "empty"),
    ("A B", 3, "invalid syntax"),
    ("A +", 4, "ends too early"),
    ("D * A", 1, "unknown name 'D' (defined: A, B, C)"),
    ("A * é", 5, "unknown name 'é'"),
    ("é * é $", 7, "'$'"),                             # columns count characters, not bytes
    ("mix * A", 1, "is a function"),
    ("mix()", 1, "at least one model"),
    ("mix(A, 2)", 8, "mixes models"),
    ("mix(A, B, weights=[1])", 19, "1 weights for 2 models"),
    ("mix(A, B, weights=[-1, 2])", 20, "must be positive"),
    ("mix(A, B, weights=[0.5, 0])", 25, "must be positive"),
    ("mix(A, B, weights=0.5)", 19, "list of numbers"),
    ("mix(A, B, weights=[A, 1])", 20, "numbers only"),
    ("mix(A, B, w=[1, 1])", 11, "no keyword 'w'"),
    ("cfg(A, B)", 1, "cfg(C, U, 3.0)"),
    ("cfg(A, 2, 3)", 8, "models"),
    ("cfg(A, B, C)", 11, "must be a number"),
    ("normalize(A, B)", 1, "one model"),
    ("normalize(A, grid=6.5)", 19, "whole number"),
    ("normalize(A, sharpness=2)", 14, "no keyword 'sharpness'"),
    ("foo(A)", 1, "calling 'foo'"),
    ("A * [1]", 5, "only allowed as mix"),
    ("A ** (1/0)", 7, "division by zero"),
    ("A ** 1e400", 6, "too large"),
    ("A ** 10.0 ** 400", 6, "too large"),
    ("A ** (-2) ** 0.5", 6, "not a real number"),
    ("2 ** 3", 1, "a number, not a model"),
    ("True * A", 1, "True"),
    ("A == B", 1, "comparison"),
    ("A if B else C", 1, "'if ... else'"),
    ("A ** +2", 6, "unary '+'"),
    ("A // B", 3, "'//'"),
    ("A.b", 1, "attribute"),
    ("A[0]", 1, "subscript"),
    ("mix(*A)", 5, "unpacking"),
])
def test_errors_point_at_the_column(text, column, words):
    with pytest.raises(ExpressionError) as err:
        rc.parse(text, ENV)
    assert err.value.column == column, err.value.pretty()
    assert words in err.value.message
    lines = err.value.pretty().splitlines()
    assert len(lines) == 3 and lines[2] == "  " + " " * (column - 1) + "^"


def test_messages_say_what_is_allowed():
    with pytest.raises(ExpressionError) as err:
        rc.parse("A.b", ENV)
    assert "mix(A, B, weights=[...])" in str(err.value) and "normalize(A)" in str(err.value)


def test_check_finds_names_and_syntax_without_models():
    assert check("mix(normalize(B), A) * B ** 2") == ("B", "A")
    with pytest.raises(ExpressionError) as err:
        check("A * C", names={"A", "B"})
    assert err.value.name == "C" and err.value.column == 5


def test_errors_of_the_algebra_keep_their_type_and_gain_the_column():
    env = {"S": ScoreOnly(A), "A": A}
    with pytest.raises(rc.CapabilityError, match="one diffusion model") as err:
        rc.parse("A * mix(S * A, A)", env)  # a score-only mixture of a product: refused
    assert "(column 5)" in "".join(err.value.__notes__)
    with pytest.raises(rc.CapabilityError, match="normalize needs an energy"):
        rc.parse("normalize(S)", env)


def test_env_must_hold_models():
    with pytest.raises(TypeError, match="not a DiffusionModel"):
        rc.parse("A", {"A": 1.0})


def test_multiline_text_is_one_line():
    assert_same(rc.parse("mix(A,\n    B)", ENV), rc.mixture([A, B]))


# ------------------------------------------------------------------ no code is ever run
@pytest.mark.parametrize("text", [
    "__import__('os').system('touch PWNED')",
    "__import__",
    "A.__class__",
    "A.__class__.__bases__[0].__subclasses__()",
    "(lambda: A)()",
    "f'{A}'",
    "A[0]",
    "exec('x')",
    "eval('A')",
    "getattr(A, 'energy')",
    "[x for x in (A,)][0]",
    "mix(A, weights=[__import__('os')])",
    "A if __import__('os').system('touch PWNED') else B",
    "A @ B",
    "A; B",
    "(x := A)",
    "A # comment",
    "A\\\n* B",
])
def test_injection_attempts_are_refused(text, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ExpressionError):
        rc.parse(text, ENV)
    assert not (tmp_path / "PWNED").exists()


# ------------------------------------------------------------------ deep expressions
# Python ≥ 3.12 builds the syntax tree under a fixed C recursion limit (about 2,000 levels
# on 3.12, 5,000 on 3.13); before, the deep parse raises the Python limit instead.
FIXED_C_LIMIT = sys.version_info >= (3, 12)


def test_a_flat_chain_of_ten_thousand_factors():
    text = " * ".join(["A", "B"] * 5000)
    limit = sys.getrecursionlimit()
    if FIXED_C_LIMIT:
        with pytest.raises(ExpressionError, match="parenthesised groups"):
            rc.parse(text, ENV)
        grouped = " * ".join(f"({' * '.join(['A', 'B'] * 500)})" for _ in range(10))
        assert_same(rc.parse(grouped, ENV), A ** 5000 * B ** 5000)
    else:
        assert_same(rc.parse(text, ENV), A ** 5000 * B ** 5000)
    assert sys.getrecursionlimit() == limit  # the deep parse restores the process-wide limit


def test_a_flat_chain_of_a_thousand_factors_parses_on_every_python():
    assert_same(rc.parse(" * ".join(["A", "B"] * 500), ENV), A ** 500 * B ** 500)
    assert check(" / ".join(["A", "B"] * 400)) == ("A", "B")


@pytest.mark.skipif(FIXED_C_LIMIT, reason="Python ≥ 3.12 caps the parser's depth")
def test_long_flat_chains_of_every_operator():
    assert check(" / ".join(["A", "B"] * 50_000)) == ("A", "B")
    assert check(" + ".join(["A"] * 20_000)) == ("A",)
    assert_same(rc.parse("A" + " * B ** 1" * 3000, ENV), A * B ** 3000)


@pytest.mark.parametrize("text", [
    "(" * 1000 + "A" + ")" * 1000,
    "A ** " * 10_000 + "2",
    "-" * 10_000 + "2",
    "mix(" * 500 + "A" + ")" * 500,
], ids=["parentheses", "powers", "minus", "calls"])
def test_too_deep_for_pythons_parser_is_a_clean_error(text):
    with pytest.raises(ExpressionError) as err:
        rc.parse(text, ENV)
    assert len(err.value.message.splitlines()) == 1
    _, shown, caret = err.value.pretty().splitlines()  # a window of the text, not all of it
    assert len(shown) < 90 and len(caret) < 90


def test_deep_but_legal_nesting():
    assert_same(rc.parse("(" * 150 + "A * B" + ")" * 150, ENV), A * B)
    assert_same(rc.parse("A ** " + "(" * 100 + "-0.5" + ")" * 100, ENV), A ** -0.5)


def test_too_long_text():
    with pytest.raises(ExpressionError, match="longer than"):
        check("A" * 1_000_001)


# ------------------------------------------------------------------ explicit normalisation
def test_nothing_is_normalised_behind_the_back():
    m = rc.parse("mix(A, B, weights=[0.3, 0.7])", ENV)
    assert list(m.parts) == [A, B]


def test_normalize_is_the_same_call_in_both_apis():
    text = "mix(normalize(A, num_times=5, grid=32), normalize(B, num_times=5, grid=32))"
    expected = rc.mixture([rc.normalize(A, num_times=5, grid=32),
                           rc.normalize(B, num_times=5, grid=32)])
    assert_same(rc.parse(text, ENV), expected)
    assert rc.parse(text, ENV).describe() == "mix(normalize(skewed):0.5, normalize(ring):0.5)"


def test_normalize_refuses_what_quadrature_cannot_do():
    with pytest.raises(rc.CapabilityError, match="score-only"):
        rc.normalize(ScoreOnly(A))
    images = rc.GaussianMixture(torch.zeros(1, 3), 1.0)
    with pytest.raises(rc.CapabilityError, match="2D quadrature"):
        rc.normalize(images)


def test_pretty_shows_a_window_of_long_text():
    text = "A * " * 100 + "2"
    with pytest.raises(ExpressionError) as err:
        rc.parse(text, ENV)
    _, shown, caret = err.value.pretty().splitlines()
    assert len(shown) < 90 and shown[len(caret) - 1] == "2"


def test_columns_count_characters_after_non_ascii_names():
    with pytest.raises(ExpressionError) as err:
        rc.parse("é ** 2 * 3", {"é": A})  # 'é' is two bytes in UTF-8; ast counts bytes
    assert err.value.column == 10
