"""Templates: what runflow makes of a template is what Jinja2's own sandbox makes of it — the
one-variable shortcut included — except that nothing may grow past core/limits.py."""

from __future__ import annotations

import keyword
import random
import subprocess
import sys

import pytest
from jinja2 import StrictUndefined
from jinja2.sandbox import ImmutableSandboxedEnvironment

from runflow.core import sandbox
from runflow.core.limits import MAX_VALUE_SIZE
from runflow.core.templating import TemplateProblem, evaluate, render

# Jinja2 as it comes, to compare with.
JINJA2 = ImmutableSandboxedEnvironment(undefined=StrictUndefined, keep_trailing_newline=True)

VARIABLES = {"item": 7, "bridge": "br0", "ports": ["a", "b"], "flag": False, "nothing": None,
             "ratio": 1.5, "true": "a variable", "and": "a variable", "a b": "spaced",
             "count": "200", "zero": 0, "neg": -3, "big": 10**20}

TEMPLATES = [
    "{{ item }}", "{{item}}", "  {{ item }} ", "{{ ports }}", "{{ flag }}", "{{ nothing }}",
    "{{ ratio }}", "va{{ item }}", "{{ bridge }}-{{ item }}", "x{{ ports }}y", "{{ flag }}!",
    "{{ nothing }}.", "{{\titem\n}}", "{{ item }}\n", "a\r\n{{ item }}", "{{ true }}",
    "{{ self }}x", "{{ item // 2 }}", "{{ item | string }}", "{%- if flag %}x{% endif %}{{ item }}",
    "{{- item }}", "{# c #}{{ item }}", "{{ bridge }}{", "{{ and }}", "{{ item + 1 }}",
    "10.77.{{ item // 250 }}.{{ item % 250 + 1 }}/32", "{{ range(count | int) }}",
    "{{ ports | map('upper') | list }}", "{{ big * big }}", "{{ 2 ** 10 }}", "{{ 'ab' * 3 }}",
    "{{ ports + ['c'] }}", "{{ bridge ~ item }}", "{{ '%s-%d' % (bridge, item) }}",
]


def jinja2(template: str) -> object:
    """What Jinja2 itself makes of a template, with the rule that a value that is exactly one
    expression keeps its type."""
    stripped = template.strip()
    if stripped.startswith("{{") and stripped.endswith("}}") and stripped.count("{{") == 1:
        return JINJA2.compile_expression(stripped[2:-2], undefined_to_none=False)(VARIABLES)
    return JINJA2.from_string(template).render(VARIABLES)


@pytest.mark.parametrize("template", TEMPLATES)
def test_render_gives_what_jinja2_gives(template):
    try:
        expected = jinja2(template)
    except Exception:
        with pytest.raises(TemplateProblem):
            render(template, VARIABLES)
        return
    value = render(template, VARIABLES)
    assert (value, type(value)) == (expected, type(expected))


@pytest.mark.parametrize("expression", ["item", " ports ", "flag", "true", "ratio", "nothing",
                                        "range(1, 201)", "item is odd", "bridge == 'br0'"])
def test_evaluate_gives_what_jinja2_gives(expression):
    expected = JINJA2.compile_expression(expression, undefined_to_none=False)(VARIABLES)
    assert evaluate(expression, VARIABLES) == expected


# The names a bare `{{ name }}` could be read as something other than a variable by: the
# shortcut that looks variables up without Jinja2 must agree with Jinja2 on each.
NAMES = sorted({*keyword.kwlist, *keyword.softkwlist, "true", "false", "none", "self", "loop",
                "caller", "varargs", "kwargs", "range", "dict", "namespace", "super", "context",
                "environment", "missing", "undefined", "resolve", "concat", "l_0_x", "t_1"})


@pytest.mark.parametrize("name", NAMES)
def test_a_bare_name_is_what_jinja2_makes_of_it(name):
    variables = {name: "the variable"}
    try:
        expected = JINJA2.compile_expression(name, undefined_to_none=False)(variables)
    except Exception:
        with pytest.raises(TemplateProblem):
            evaluate(name, variables)
        return
    assert same(evaluate(name, variables), expected)


def same(value: object, expected: object) -> bool:
    """Equal and of one type; `self` (Jinja2's reference to the template) by its repr."""
    return type(value) is type(expected) and (value == expected or repr(value) == repr(expected))


ATOMS = ["0", "1", "7", "250", "007", "1_0", "0x1F", "1.5", "'a'", "item", "count", "zero",
         "neg", "big", "flag", "ratio", "bridge", "ports", "nothing", "true", "missing", "self",
         "range", "not item"]
OPERATORS = ["+", "-", "*", "//", "%", "/", "**", "~", "==", "and"]


def random_expression(rng: random.Random, depth: int = 0) -> str:
    space = lambda: rng.choice(["", " ", "\n"])  # noqa: E731
    if depth > 3 or rng.random() < 0.3:
        return rng.choice(ATOMS)
    inner = lambda: random_expression(rng, depth + 1)  # noqa: E731
    shape = rng.randrange(6)
    if shape == 0:
        return rng.choice(["-", "+"]) + space() + inner()
    if shape == 1:
        return inner() + space() + rng.choice(OPERATORS) + space() + inner()
    if shape == 2:
        return "(" + space() + inner() + space() + ")"
    if shape == 3:
        return inner() + space() + rng.choice(["| int", "| string", "| int(0)", "is odd"])
    if shape == 4:
        return "range(" + ", ".join(inner() for _ in range(rng.choice([0, 1, 2, 3]))) + ")"
    return inner() + "(1)"


def test_the_bounded_sandbox_evaluates_as_jinja2_within_the_limits():
    rng = random.Random(20261128)
    agreed = 0
    for _ in range(400):
        expression = random_expression(rng)
        try:
            expected = JINJA2.compile_expression(expression, undefined_to_none=False)(VARIABLES)
            str(expected)  # an undefined value raises here
        except Exception:
            with pytest.raises(TemplateProblem):
                evaluate(expression, VARIABLES)
            continue
        assert same(evaluate(expression, VARIABLES), expected), expression
        agreed += 1
    assert agreed > 100  # the expressions that have a value, not a fluke


def test_each_template_is_compiled_once():
    for item in range(300):
        render("va{{ item }}-{{ item % 7 }}", {"item": item})
    assert sandbox._template.cache_info().misses >= 1
    before = sandbox._template.cache_info()
    render("va{{ item }}-{{ item % 7 }}", {"item": 1})
    assert sandbox._template.cache_info().misses == before.misses


def test_jinja2_is_imported_only_for_more_than_one_variable():
    code = (
        "import sys\n"
        "from runflow.core.templating import render\n"
        "for item in range(200):\n"
        "    render({'name': '{{ name }}', 'ports': ['{{ item }}', 'x']}, "
        "{'name': 'br0', 'item': item})\n"
        "print('jinja2' in sys.modules)\n"
        "render('va{{ item }}', {'item': 1})\n"
        "print('jinja2' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert done.stdout.split() == ["False", "True"]


# -- what a template cannot do ----------------------------------------------------------------

def test_an_undefined_variable_is_named():
    with pytest.raises(TemplateProblem, match="undefined variable 'missing', 'other'") as caught:
        render("x{{ missing }}{{ other }}{{ item }}", VARIABLES)
    assert caught.value.undefined == ("missing", "other")
    with pytest.raises(TemplateProblem, match="undefined variable 'missing'"):
        evaluate("missing", VARIABLES)
    with pytest.raises(TemplateProblem, match="has no attribute 'nope'") as caught:
        render("{{ ports.nope }}", VARIABLES)
    assert caught.value.undefined == ()


def test_a_variable_with_a_name_jinja2_cannot_spell_is_not_looked_up():
    with pytest.raises(TemplateProblem):
        evaluate("a b", VARIABLES)


def test_a_template_cannot_reach_python():
    with pytest.raises(TemplateProblem, match="unsafe"):
        render("{{ bridge.__class__.__mro__ }}", VARIABLES)
    with pytest.raises(TemplateProblem, match="cannot modify|unsafe"):
        render("{{ ports.append(1) }}", VARIABLES)


def test_a_lazy_result_is_a_list():
    assert evaluate("ports | map('upper')", VARIABLES) == ["A", "B"]


LARGE = "x" * (MAX_VALUE_SIZE - 100)
BOMBS = [
    ("{{ 'a' * 10**10 }}", "the repetition would hold at least 10,000,000,000 characters"),
    ("x{{ [1, 2] * 10**9 }}", "the repetition would hold"),
    ("{{ large + large }}", "joining them would hold"),
    ("{{ large ~ large }}", "the value would hold"),
    ("{{ 2 ** 100000 }}", "a number of about 30,104 digits; at most 4,300"),
    ("{{ (10 ** 4000) * (10 ** 4000) }}", "a number of about"),
    ("{{ 'a'.ljust(10**10) }}", "ljust() would hold"),
    ("{{ 'a' | center(10**10) }}", "more than 256 MiB of memory"),
    ("{{ 'a' | center(10**7) }}", "the value would hold at least 10,000,000 characters"),
    ("{% for i in range(100000) %}{{ large }}{% endfor %}", "the rendered text would hold"),
    ("{% set x %}{% for i in range(99999) %}{{ large ~ i }}{% endfor %}{% endset %}{{ x }}",
     "more than 256 MiB of memory"),
    ("{% set ns = namespace(x='ab') %}{% for i in range(40) %}{% set ns.x = ns.x ~ ns.x %}"
     "{% endfor %}{{ ns.x | length }}", "more than 256 MiB of memory"),
    ("{{ range(10**6) }}", "Range too big"),
    ("{{ lipsum(10**6) }}", "undefined variable 'lipsum'"),
    ("{{ " + "(" * 5000 + "1" + ")" * 5000 + " }}", "nested too deeply"),
    ("x" + "{% if 1 %}" * 3000 + "{% endif %}" * 3000, "nested too deeply"),
]


def test_no_template_takes_the_machines_memory():
    """Each is refused quickly, naming the limit, and the process that tried stays small: the
    checks refuse before allocating, the memory cap stops what they do not see. (The bombs that
    reach the cap run in processes of their own: memory a process has freed may still count.)"""
    capped = [bomb for bomb in BOMBS if "MiB of memory" in bomb[1]]
    batches = [[bomb for bomb in BOMBS if bomb not in capped], *([bomb] for bomb in capped)]
    for bombs in batches:
        code = (
            "import resource, sys, time\n"
            "from runflow.core.templating import TemplateProblem, render\n"
            f"variables = {{'large': 'x' * {len(LARGE)}}}\n"
            f"for template, fragment in {bombs!r}:\n"
            "    start = time.monotonic()\n"
            "    try:\n"
            "        render(template, variables)\n"
            "    except TemplateProblem as problem:\n"
            "        assert fragment in str(problem), (template[:40], str(problem)[-200:])\n"
            "    else:\n"
            "        raise AssertionError(template[:40])\n"
            "    assert time.monotonic() - start < 10, template[:40]\n"
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)\n"
        )
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        assert int(done.stdout) < 350, bombs  # MiB at the peak


def test_the_memory_cap_is_lifted_after_each_template():
    import resource

    before = resource.getrlimit(resource.RLIMIT_AS)
    with pytest.raises(TemplateProblem):
        render("{{ 'a' | center(10**10) }}", {})
    assert resource.getrlimit(resource.RLIMIT_AS) == before
    assert len("a" * 300_000_000) == 300_000_000  # more than the cap allowed a template
