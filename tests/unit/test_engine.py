"""The template engine: positions of errors, escaping, fuel, and no reach into Python."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from tidings.content.engine import RenderingError, TemplateEngine, template_views, trusted


@pytest.fixture
def engine() -> TemplateEngine:
    return TemplateEngine(fuel=50_000, max_source_bytes=10_000)


@pytest.mark.parametrize(
    ("source", "line", "column"),
    [
        ("{{ a b }}", 1, 6),
        ("line one\n  {% if %}", 2, 9),
        ("ok\nok\n{{ profile.x", 3, None),
        ("é\n{{ 1 + }}", 2, 8),
    ],
)
def test_syntax_errors_carry_line_and_column(engine, source, line, column):
    problem = engine.syntax_problem(source)
    assert problem is not None
    assert problem.kind == "SyntaxError"
    assert problem.line == line
    if column is not None:
        assert problem.column == column


def test_valid_template_has_no_problem(engine):
    assert engine.syntax_problem("Hi {{ profile.firstName | default('you') }}") is None


def test_template_size_is_bounded(engine):
    problem = engine.syntax_problem("x" * 10_001)
    assert problem is not None and problem.kind == "TooLarge"


def test_variables_are_listed_as_dotted_paths(engine):
    source = "{{ profile.a.b }}{% for i in context.items %}{{ i.x }}{% endfor %}{{ campaign.name }}"
    assert engine.variables(source) == {"profile.a.b", "context.items", "campaign.name"}


def test_html_templates_escape_and_text_templates_do_not(engine):
    sources = {"body.html": "<b>{{ v }}</b>", "subject.txt": "<b>{{ v }}</b>"}
    rendered = engine.render(sources, {"v": "<i>&"})
    assert rendered == {"body.html": "<b>&lt;i&gt;&amp;</b>", "subject.txt": "<b><i>&</b>"}
    assert engine.render({"a.html": "{{ u }}"}, {"u": trusted("https://x/y?a=1&b=2")}) == {
        "a.html": "https://x/y?a=1&b=2"
    }


def test_a_loop_bomb_runs_out_of_fuel_quickly(engine):
    bomb = "{% for a in range(100000) %}{% for b in range(100000) %}x{% endfor %}{% endfor %}"
    started = time.perf_counter()
    with pytest.raises(RenderingError) as caught:
        engine.render({"bomb.txt": bomb}, {})
    assert caught.value.problem.is_out_of_fuel
    assert time.perf_counter() - started < 2


def test_templates_cannot_change_the_callers_data(engine):
    data = {"order": {"id": 1, "lines": [1, 2]}}
    attempts = [
        "{{ context.order.lines.append(3) }}",
        "{{ context.order.lines.extend([1]) }}",
        "{{ context.order.clear() }}",
        "{% set _ = (context.order|attr('cl' ~ 'ear'))() %}",
    ]
    for source in attempts:
        with pytest.raises(RenderingError):
            engine.render({"t.txt": source}, {"context": data})
    assert data == {"order": {"id": 1, "lines": [1, 2]}}


@pytest.mark.parametrize(
    ("source", "strict"),
    [
        ("{{ order.items }}", True),
        ("{% for i in order['values'] %}{% endfor %}", True),
        ("{{ order.lines.append(1) }}", True),
        ("{{ order|attr('x') }}", True),
        ("<p>Your items</p>{{ order.id }}", False),
        ("{% for x in xs %}{{ loop.index }}{% endfor %}", False),
        ("{% for k, v in order|items %}{{ k }}{% endfor %}", False),
    ],
)
def test_views_only_where_a_template_names_a_method(engine, source, strict):
    assert engine.compile({"t.txt": source}).strict is strict


def test_list_methods_render_like_missing_keys(engine):
    rendered = engine.render(
        {"t.txt": "[{{ context.l.append }}]{% for x in context.l.pop %}x{% endfor %}"},
        {"context": {"l": [1]}},
    )
    assert rendered == {"t.txt": "[]"}


def test_a_key_named_like_a_method_is_read_as_a_key(engine):
    rendered = engine.render(
        {"t.txt": "{% for i in context.items %}{{ i.name }}{% endfor %}"},
        {"context": {"items": [{"name": "tea"}, {"name": "cake"}]}},
    )
    assert rendered == {"t.txt": "teacake"}


def test_missing_attributes_render_empty(engine):
    rendered = engine.render(
        {"t.txt": "[{{ profile.address.city }}]{% for x in context.none %}x{% endfor %}"},
        {"profile": {}, "context": {}},
    )
    assert rendered == {"t.txt": "[]"}


def test_compilation_is_cached_by_source(engine):
    first = engine.compile({"a.txt": "{{ x }}"})
    assert engine.compile({"a.txt": "{{ x }}"}) is first
    assert engine.compile({"a.txt": "{{ y }}"}) is not first


def _outcome(render: Callable[[], dict[str, str]]) -> dict[str, str] | str:
    try:
        return render()
    except RenderingError as exc:
        return str(exc)


def _full_views(engine: TemplateEngine, sources: dict[str, str], data: dict) -> dict[str, str]:
    """Renders with every container copied into views, whatever the templates read."""
    compiled = engine.compile(sources)
    views = {key: template_views(value) for key, value in data.items()}
    return {name: compiled.render(name, views, engine.max_output_chars) for name in sources}


@pytest.mark.parametrize(
    ("source", "paths"),
    [
        ("{{ context.order.items|length }}", (("context", "order", "items"),)),
        (
            "{% for i in context.order.items %}{{ i.name }}{{ loop.index }}{% endfor %}"
            "{{ profile.keys }}",
            (("context", "order", "items"), ("profile", "keys")),
        ),
        ("{{ context.items.first.count }}", (("context", "items", "first", "count"),)),
        # Each is a read that no static path pins down: all the data becomes views.
        ("{% for o in context.orders %}{{ o.items }}{% endfor %}", None),
        ("{{ context.order['items'] }}", None),
        ("{{ context|attr('items') }}", None),
        ("{% set context = profile.address %}{{ context.items }}", None),
        ("{{ context.items }}{% set context = profile %}{{ context.items }}", None),
        ("{{ 'context.items' }}", None),
        ("{{ (context.order).items }}", None),
    ],
)
def test_method_reads_on_static_paths_are_found(engine, source, paths):
    assert engine.compile({"t.txt": source})._paths == paths


@pytest.mark.parametrize(
    "source",
    [
        "[{{ context.order.items }}]{{ context.order.items|length }}",
        "{% for i in context.order.items %}{{ i.name }}{% endfor %}[{{ context.keys }}]",
        "[{{ context.order.values }}][{{ profile.get }}][{{ context.list.count }}]",
        "[{{ context.items.first.count }}][{{ context.list.pop }}]",
        "{% if context.order.items %}yes{% else %}no{% endif %}",
    ],
)
@pytest.mark.parametrize(
    "context",
    [
        {"order": {"items": [{"name": "tea"}, {"name": "cake"}]}, "list": [1, 2]},
        {"order": {"id": 1}, "list": [], "items": {"first": [3]}},
        {"order": [1, 2], "keys": "k", "list": "not a list"},
        {},
    ],
)
def test_guarding_static_paths_renders_like_full_views(engine, source, context):
    data = {"profile": {"firstName": "Ada"}, "context": context}
    snapshot = repr(data)
    sources = {"t.txt": source}
    assert engine.compile(sources)._paths is not None
    assert _outcome(lambda: engine.render(sources, data)) == _outcome(
        lambda: _full_views(engine, sources, data)
    )
    # Only copies are wrapped: the caller's data is as it was.
    assert repr(data) == snapshot
