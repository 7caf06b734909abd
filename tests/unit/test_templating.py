"""Templates: what the shortcut for `{{ name }}` fills in must be what Jinja2 would."""

from __future__ import annotations

import pytest

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
