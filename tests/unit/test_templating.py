"""Templates: what the shortcuts fill in (a variable, integer arithmetic) must be what Jinja2
would."""

from __future__ import annotations

import random
import subprocess
import sys

import pytest

from runflow.core import arithmetic
from runflow.core.templating import TemplateProblem, _expression, _template, evaluate, render

VARIABLES = {"item": 7, "bridge": "br0", "ports": ["a", "b"], "flag": False, "nothing": None,
             "ratio": 1.5, "true": "a variable", "and": "a variable",
             "a b": "spaced"}

TEMPLATES = [
    "{{ item }}", "{{item}}", "  {{ item }} ", "{{ ports }}", "{{ flag }}", "{{ nothing }}",
    "{{ ratio }}", "va{{ item }}", "{{ bridge }}-{{ item }}", "x{{ ports }}y", "{{ flag }}!",
    "{{ nothing }}.", "{{\titem\n}}", "{{ item }}\n", "a\r\n{{ item }}", "{{ true }}",
    "{{ self }}x", "{{ item // 2 }}", "{{ item | string }}", "{%- if flag %}x{% endif %}{{ item }}",
    "{{- item }}", "{# c #}{{ item }}", "{{ bridge }}{", "{{ and }}",
]


def jinja(template: str) -> object:
    """What Jinja2 itself makes of a template, with the rule that a value that is exactly one
    expression keeps its type."""
    stripped = template.strip()
    if stripped.startswith("{{") and stripped.endswith("}}") and stripped.count("{{") == 1:
        return _expression(stripped[2:-2])(**VARIABLES)
    return _template(template).render(**VARIABLES)


@pytest.mark.parametrize("template", TEMPLATES)
def test_render_fills_in_what_jinja2_would(template):
    try:
        expected = jinja(template)
    except Exception:
        with pytest.raises(TemplateProblem):
            render(template, VARIABLES)
        return
    assert render(template, VARIABLES) == expected
    assert type(render(template, VARIABLES)) is type(expected)


@pytest.mark.parametrize("expression", ["item", " ports ", "flag", "true", "ratio", "nothing"])
def test_evaluate_gives_what_jinja2_would(expression):
    assert evaluate(expression, VARIABLES) == _expression(expression)(**VARIABLES)


@pytest.mark.parametrize("template", ["{{ missing }}", "x{{ missing }}", "{{ missing }}{{ item }}"])
def test_what_is_not_a_variable_is_an_error(template):
    with pytest.raises(TemplateProblem):
        render(template, VARIABLES)


def test_a_variable_with_a_name_jinja2_cannot_spell_is_not_looked_up():
    with pytest.raises(TemplateProblem):
        evaluate("a b", VARIABLES)


# -- integer arithmetic without Jinja2 (core/arithmetic.py) ----------------------------------

ARITHMETIC_VARIABLES = {"item": 7, "count": "200", "zero": 0, "neg": -3, "big": 10**20,
                        "flag": True, "ratio": 1.5, "name": "br0", "digits": "+12",
                        "spaced": " 5", "ports": ["a"], "none": 1}
ATOMS = ["0", "1", "7", "250", "007", "1_0", "0x1F", "1.5", "'a'", "item", "count", "zero",
         "neg", "big", "flag", "ratio", "name", "digits", "spaced", "ports", "none", "true",
         "missing", "self", "range", "int", "not item"]
OPERATORS = ["+", "-", "*", "//", "%", "/", "**", "~", "==", "and"]


def random_expression(rng: random.Random, depth: int = 0) -> str:
    space = lambda: rng.choice(["", " ", "  ", "\n"])  # noqa: E731
    if depth > 3 or rng.random() < 0.3:
        return rng.choice(ATOMS)
    shape = rng.randrange(7)
    inner = lambda: random_expression(rng, depth + 1)  # noqa: E731
    if shape == 0:
        return rng.choice(["-", "+"]) + space() + inner()
    if shape == 1:
        op = rng.choice(OPERATORS[:5] * 3 + OPERATORS[5:])
        return inner() + space() + op + space() + inner()
    if shape == 2:
        return "(" + space() + inner() + space() + ")"
    if shape == 3:
        return inner() + space() + rng.choice(["| int", "|int", "|int|int", "| string",
                                                "| int(0)", "is odd"])
    if shape == 4:
        args = ", ".join(inner() for _ in range(rng.choice([0, 1, 1, 2, 3, 4])))
        return "range(" + args + rng.choice(["", ",", ""]) + ")"
    if shape == 5:
        return inner() + "(1)"
    return space() + inner() + space()


def jinja_value(expression: str, variables: dict) -> object:
    try:
        return _expression(expression)(**variables)
    except Exception as exc:  # what Jinja2 refuses, the shortcut must leave to it
        return exc


def test_arithmetic_gives_what_jinja2_gives_or_declines():
    rng = random.Random(20261128)
    answered = 0
    for _ in range(1500):
        expression = random_expression(rng)
        try:
            value = arithmetic.evaluate(expression, ARITHMETIC_VARIABLES)
        except arithmetic.Unsupported:
            continue
        answered += 1
        expected = jinja_value(expression, ARITHMETIC_VARIABLES)
        assert not isinstance(expected, Exception), (expression, expected)
        assert (value, type(value)) == (expected, type(expected)), expression
    assert answered > 300  # the grammar's share of these expressions, not a fluke


@pytest.mark.parametrize("expression, value", [
    ("range(count | int)", range(200)), ("item // 250", 0), ("item % 250 + 1", 8),
    ("-item|int", -7), ("- -item", 7), ("2 + 3 * 4 - 5 // 2", 12), ("(2 + 3) * 4", 20),
    ("digits | int", 12), ("range(1, 10, 3)", range(1, 10, 3)), ("big * big", 10**40),
    ("neg % 5", 2), ("neg // 2", -2),
])
def test_arithmetic_answers_without_jinja2(expression, value):
    assert arithmetic.evaluate(expression, ARITHMETIC_VARIABLES) == value
    assert jinja_value(expression, ARITHMETIC_VARIABLES) == value


@pytest.mark.parametrize("expression", [
    "item / 2", "item ** 2", "flag + 1", "ratio * 2", "name | int", "spaced | int",
    "item // zero", "item % zero", "range(1, 5, 0)", "range(10 ** 6)", "range(1000000)",
    "missing + 1", "none + 1", "true", "item(1)", "range(1,)", "range()", "range(1, 2, 3, 4)",
    "007", "1_0", "0x1F", "item if item else 0", "item | int(3)", "(item, 1)",
])
def test_arithmetic_leaves_the_rest_to_jinja2(expression):
    with pytest.raises(arithmetic.Unsupported):
        arithmetic.evaluate(expression, ARITHMETIC_VARIABLES)


def test_a_variable_named_range_is_left_to_jinja2():
    with pytest.raises(arithmetic.Unsupported):
        arithmetic.evaluate("range(3)", {"range": 3})


def test_the_range_limit_is_the_sandboxes():
    from jinja2.sandbox import MAX_RANGE

    assert arithmetic.MAX_RANGE == MAX_RANGE


@pytest.mark.parametrize("template", [
    "va{{ item }}", "10.77.{{ item // 250 }}.{{ item % 250 + 1 }}/32", "{{ item }}-{{ neg }}",
    "x{{ ports }}y", "{{ item+1 }}{{ item-1 }}", "a\n{{ item * 2 }}\n", "{{ flag }}!",
    "{{- item }}x", "x{{ item -}}", "{{ item }}{", "{{ item ~ 1 }}x", "a\r\n{{ item }}",
])
def test_text_with_arithmetic_is_filled_in_as_jinja2_renders_it(template):
    assert render(template, ARITHMETIC_VARIABLES) == \
        _template(template).render(**ARITHMETIC_VARIABLES)


def test_a_plan_of_arithmetic_templates_does_not_import_jinja2():
    code = (
        "import sys\n"
        "from runflow.core.templating import evaluate, render\n"
        "items = evaluate('range(count | int)', {'count': '200'})\n"
        "for item in items:\n"
        "    render('10.77.{{ item // 250 }}.{{ item % 250 + 1 }}/32', {'item': item})\n"
        "    render('va{{ item }}', {'item': item})\n"
        "print('jinja2' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == "False"
