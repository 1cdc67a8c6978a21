"""User-authored templates reach no Python object and end quickly, whatever they ask for."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tidings.config import Settings
from tidings.content.engine import RenderingError, TemplateEngine

# The limits a server runs with unless told otherwise.
DEFAULTS = Settings()
# A loop bomb must end in an error well inside a request's or a delivery batch's budget.
BOUND_SECONDS = 1.0


def engine() -> TemplateEngine:
    return TemplateEngine(fuel=DEFAULTS.template_fuel, max_source_bytes=DEFAULTS.template_max_bytes)


def data() -> dict[str, Any]:
    return {
        "profile": {"firstName": "Ada", "tags": ["a", "b"]},
        "context": {"order": {"id": "A-1", "lines": [{"sku": "x"}]}, "n": 100_000},
    }


def render(source: str) -> str:
    return engine().render({"body.html": source}, data())["body.html"]


# Python's object graph as Jinja templates reach for it in server-side template injection.
INTROSPECTION = [
    "{{ ''.__class__ }}",
    "{{ ''.__class__.__mro__ }}",
    "{{ cycler.__init__ }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ range.__globals__ }}",
    "{{ namespace.__init__ }}",
    "{{ lipsum }}",
    "{{ config }}",
    "{{ request }}",
    "{{ self }}",
    "{{ context.__class__ }}",
    "{{ context.__dict__ }}",
    "{{ context.__init__.__globals__ }}",
    "{{ context['__class__'] }}",
    "{{ context | attr('__class__') }}",
    "{{ context.order.__class__.__base__ }}",
    "{{ profile.tags.__class__ }}",
    "{{ context.keys }}",
    "{{ context.order.items }}",
]


@pytest.mark.parametrize("source", INTROSPECTION)
def test_templates_reach_no_python_object(source: str):
    try:
        output = render(source)
    except RenderingError as error:
        output = str(error)
    # Nothing of Python's: no class, module, function or method shows through.
    for leak in ("class", "<", "object at", "function", "method", "module", "builtin", "dict"):
        assert leak not in output, (source, output)


@pytest.mark.parametrize(
    "source",
    [
        "{{ context.order.__len__() }}",
        "{{ context.order.__class__.__subclasses__() }}",
        "{{ context.items() }}",
        "{{ context.order.pop('id') }}",
        "{{ profile.tags.append('c') }}",
    ],
)
def test_calls_on_python_objects_are_rendering_errors_and_change_nothing(source: str):
    variables = data()
    with pytest.raises(RenderingError):
        engine().render({"body.html": source}, variables)
    assert variables == data()


LOOP_BOMBS = {
    "huge range": "{% for i in range(10**9) %}{{ i }}{% endfor %}",
    "nested loops": (
        "{% for i in range(1000) %}{% for j in range(1000) %}{% for k in range(1000) %}"
        "x{% endfor %}{% endfor %}{% endfor %}"
    ),
    "loops over the data": (
        "{% for i in range(context.n) %}{% for j in range(context.n) %}x{% endfor %}{% endfor %}"
    ),
    "recursive macro": "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
    "mutual recursion": (
        "{% macro a(n) %}{{ b(n) }}{% endmacro %}{% macro b(n) %}{{ a(n) }}{% endmacro %}{{ a(0) }}"
    ),
    "string multiplication": "{{ 'x' * 10**9 }}",
    "repeated multiplication": "{{ ('x' * 100000) * 100000 }}",
    "list multiplication": "{{ [1] * 10**9 }}",
    "range to list": "{{ range(10**9) | list | length }}",
    "huge power": "{{ 9 ** 9 ** 9 }}",
    "output flood": "{% for i in range(50000) %}{{ 'x' * 1000 }}{% endfor %}",
}


@pytest.mark.parametrize("source", LOOP_BOMBS.values(), ids=LOOP_BOMBS.keys())
def test_a_loop_bomb_ends_in_a_rendering_error_quickly(source: str):
    started = time.perf_counter()
    with pytest.raises(RenderingError) as raised:
        render(source)
    elapsed = time.perf_counter() - started
    assert elapsed < BOUND_SECONDS, f"{elapsed:.2f}s"
    assert raised.value.problem.message


def test_fuel_is_what_stops_loops_that_do_work_in_small_steps():
    with pytest.raises(RenderingError) as raised:
        render(LOOP_BOMBS["nested loops"])
    assert raised.value.problem.is_out_of_fuel


def test_a_template_over_the_size_limit_does_not_compile():
    source = "x" * (DEFAULTS.template_max_bytes + 1)
    problem = engine().syntax_problem(source)
    assert problem is not None
    assert problem.kind == "TooLarge"
    with pytest.raises(RenderingError):
        render(source)
