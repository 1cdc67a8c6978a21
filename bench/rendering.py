"""Render throughput of a 3.7 KB personalized email: compiled once and cached vs every time."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import minijinja

from bench import fixtures
from bench.harness import Case, Plan, Result, measure, result
from tidings.config import Settings
from tidings.content.engine import TemplateEngine
from tidings.content.schemas import EmailContent
from tidings.content.service import (
    check_content,
    render_content,
    template_sources,
    template_variables,
)
from tidings.vocabulary import Category, Channel

NAME = "rendering"
CACHED = "render, compiled once (cached)"
UNCACHED = "render, compiled every time"
CACHED_TIME = "render, compiled once: time per render"
CHECK = "check_content (review check)"
CEILING = "minijinja alone, plain dicts (ceiling)"
PLAIN = "render, cached, reading no dict-method name"


def _ceiling_environment(fuel: int, sources: Mapping[str, str]) -> minijinja.Environment:
    """minijinja configured like the engine, without the engine: what the library itself does."""
    environment = minijinja.Environment(
        fuel=fuel,
        debug=False,
        undefined_behavior="chainable",
        auto_escape_callback=lambda name: "html" if name.endswith(".html") else None,
    )
    for name, source in sources.items():
        environment.add_template(name, source)
    return environment


def _variables() -> dict[str, Any]:
    return template_variables(
        profile=fixtures.PROFILE,
        context=fixtures.CONTEXT,
        campaign_id="0193a1f0-bench-campaign",
        campaign_name="Order shipped",
        unsubscribe_url=fixtures.UNSUBSCRIBE_URL,
    )


def run(plan: Plan) -> list[Result]:
    settings = Settings()
    fuel, max_bytes = settings.template_fuel, settings.template_max_bytes
    engine = TemplateEngine(fuel=fuel, max_source_bytes=max_bytes)
    content = EmailContent.model_validate(fixtures.CONTENT)
    variables = _variables()

    # Both paths must produce the same message, and the review must accept the content.
    expected = render_content(engine, content, variables)
    fresh = TemplateEngine(fuel=fuel, max_source_bytes=max_bytes, cache_size=1)
    if render_content(fresh, content, variables) != expected:
        raise AssertionError("cached and uncached renders differ")
    # Every order item and the unsubscribe link's token, in both bodies (HTML escapes "/").
    wanted = [item["name"] for item in fixtures.CONTEXT["order"]["items"]]
    wanted.append(fixtures.UNSUBSCRIBE_URL.rsplit("/", 1)[1])
    for field in ("html", "text"):
        missing = [text for text in wanted if text not in expected[field]]
        if missing:
            raise AssertionError(f"the rendered {field} lacks {missing}")
    check = check_content(engine, Channel.EMAIL, Category.MARKETING, content)
    if check.errors or check.warnings:
        raise AssertionError(f"the review check rejects the content: {check}")

    sources = template_sources(content)
    ceiling_environment = _ceiling_environment(fuel, sources)
    ceiling_output = {
        name.rsplit(".", 1)[0]: ceiling_environment.render_template(name, **variables)
        for name in sources
    }
    ceiling_same = all(ceiling_output[field] == expected[field] for field in ceiling_output)

    def ceiling(count: int) -> None:
        for _ in range(count):
            for name in sources:
                ceiling_environment.render_template(name, **variables)

    def cached(count: int) -> None:
        for _ in range(count):
            render_content(engine, content, variables)

    def uncached(count: int) -> None:
        for _ in range(count):
            # A fresh engine has an empty cache: parse, check and compile on every render.
            single = TemplateEngine(fuel=fuel, max_source_bytes=max_bytes, cache_size=1)
            render_content(single, content, variables)

    # The same email reading `order.lines` instead of `order.items`: its data needs no strict
    # views (content/engine.py), so this is the fast path of templates that avoid such names.
    plain_content = EmailContent.model_validate(
        {
            key: value.replace("order.items", "order.lines")
            for key, value in fixtures.CONTENT.items()
        }
    )
    plain_order = {**fixtures.CONTEXT["order"], "lines": fixtures.CONTEXT["order"]["items"]}
    plain_variables = {**variables, "context": {**fixtures.CONTEXT, "order": plain_order}}
    if engine.compile(template_sources(plain_content)).strict:
        raise AssertionError("the variant still reads a dict-method name")
    if not engine.compile(sources).strict:
        raise AssertionError("the fixture was expected to need strict views")
    if render_content(engine, plain_content, plain_variables) != expected:
        raise AssertionError("the variant renders differently")

    def plain(count: int) -> None:
        for _ in range(count):
            render_content(engine, plain_content, plain_variables)

    def review_check(count: int) -> None:
        for _ in range(count):
            check_content(engine, Channel.EMAIL, Category.MARKETING, content)

    timings = measure(
        [
            Case(CACHED, cached),
            Case(UNCACHED, uncached),
            Case(CHECK, review_check),
            Case(CEILING, ceiling),
            Case(PLAIN, plain),
        ],
        plan,
    )
    size = fixtures.source_bytes()
    output = sum(len(text.encode("utf-8")) for text in expected.values() if text)
    uncached_result = result(
        UNCACHED,
        timings.throughput(UNCACHED),
        "renders/s",
        timings.operations_per_round[UNCACHED],
        note="reference: a fresh TemplateEngine(cache_size=1) per render",
    )
    # The cached path against the uncached one: the ratio is the compile cache's speed-up.
    cached_result = result(
        CACHED,
        timings.throughput(CACHED),
        "renders/s",
        timings.operations_per_round[CACHED],
        reference=uncached_result,
        note=f"subject+html+text: {size} B of templates, {output} B rendered",
    )
    per_render = result(
        CACHED_TIME,
        timings.microseconds(CACHED),
        "us",
        timings.operations_per_round[CACHED],
        note="the same rounds as the renders/s figure, as time per render",
    )
    check_result = result(
        CHECK,
        timings.microseconds(CHECK),
        "us",
        timings.operations_per_round[CHECK],
        reference=per_render,
        note="shared engine with a warm compile cache; ratio = its cost in cached renders",
    )
    ceiling_result = result(
        CEILING,
        timings.throughput(CEILING),
        "renders/s",
        timings.operations_per_round[CEILING],
        reference=cached_result,
        note="the same three templates and data, straight into minijinja; ratio = headroom"
        + ("" if ceiling_same else " (WARNING: its output differs from the engine's)"),
    )
    plain_result = result(
        PLAIN,
        timings.throughput(PLAIN),
        "renders/s",
        timings.operations_per_round[PLAIN],
        reference=cached_result,
        note="order.lines for order.items: plain dict copies instead of strict views",
    )
    return [
        cached_result,
        uncached_result,
        per_render,
        check_result,
        ceiling_result,
        plain_result,
    ]
