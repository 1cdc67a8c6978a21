"""Content logic: which templates a message has, what they read, checking and rendering them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from tidings.content.engine import (
    HTML_SUFFIX,
    RenderingError,
    TemplateEngine,
    trusted,
)
from tidings.content.sandbox import RESOURCE_KINDS, render_in
from tidings.content.schemas import Content, EmailContent, PushContent, SmsContent
from tidings.errors import FieldError, InvalidInput
from tidings.vocabulary import Category, Channel

TEXT_SUFFIX = ".txt"
# What templates see besides profile and context. Kept small on purpose: each name is a promise.
PROVIDED_VARIABLES = frozenset({"profile", "context", "campaign", "unsubscribe_url"})
UNSUBSCRIBE_VARIABLE = "unsubscribe_url"


def template_sources(content: Content) -> dict[str, str]:
    """Named template sources of a content; the suffix decides HTML auto-escaping."""
    sources: dict[str, str] = {}

    def put(name: str, value: str | None, suffix: str = TEXT_SUFFIX) -> None:
        if value:
            sources[name + suffix] = value

    if isinstance(content, EmailContent):
        put("subject", content.subject)
        put("html", content.html, HTML_SUFFIX)
        put("text", content.text)
    elif isinstance(content, SmsContent):
        put("body", content.body)
    elif isinstance(content, PushContent):
        put("title", content.title)
        put("body", content.body)
        put("deeplink", content.deeplink)
        for key, value in (content.data or {}).items():
            put(f"data.{key}", value)
    return sources


def content_field(template_name: str) -> str:
    """`html.html` -> `content.html`: the request field a template came from."""
    return "content." + template_name.rsplit(".", 1)[0]


def _required_fields(content: Content) -> list[str]:
    if isinstance(content, EmailContent):
        return ["subject", "html"]
    if isinstance(content, SmsContent):
        return ["body"]
    return ["title", "body"]


@dataclass(frozen=True, slots=True)
class ContentCheck:
    """What review learns from the content alone."""

    errors: list[FieldError]
    warnings: list[FieldError]
    # Path read -> the first content field that reads it.
    profile_paths: dict[str, str]
    context_paths: dict[str, str]


def check_content(
    engine: TemplateEngine, channel: Channel, category: Category, content: Content | None
) -> ContentCheck:
    errors: list[FieldError] = []
    warnings: list[FieldError] = []
    profile_paths: dict[str, str] = {}
    context_paths: dict[str, str] = {}
    if content is None:
        errors.append(FieldError("content", f"the {channel} content is missing"))
        return ContentCheck(errors, warnings, profile_paths, context_paths)
    for name in _required_fields(content):
        if not getattr(content, name):
            errors.append(FieldError(f"content.{name}", "is required before activation"))

    sources = template_sources(content)
    compilable: dict[str, str] = {}
    for name, source in sources.items():
        field = content_field(name)
        problem = engine.syntax_problem(source)
        if problem is not None:
            errors.append(
                FieldError(
                    field, f"template error: {problem.message}", problem.line, problem.column
                )
            )
            continue
        compilable[name] = source
        for variable in engine.variables(source):
            top, _, rest = variable.partition(".")
            if top == "profile" and rest:
                profile_paths.setdefault(rest, field)
            elif top == "context" and rest:
                context_paths.setdefault(rest, field)
            elif top not in PROVIDED_VARIABLES and top not in engine.builtin_names:
                errors.append(
                    FieldError(
                        field,
                        f"unknown variable '{variable}': templates see "
                        + ", ".join(sorted(PROVIDED_VARIABLES)),
                    )
                )

    # A trial render with empty data finds names that can never work (unknown filters,
    # functions, tests) and templates that exhaust their fuel even without data.
    compiled_ok = compilable and not any(error.field.startswith("content.") for error in errors)
    # It runs in the memory-capped sandbox: a template that builds too much text is an error.
    if compiled_ok:
        results = render_in(engine.sandbox, engine, compilable, sample_variables(), outputs=False)
        for name, outcome in results.items():
            if isinstance(outcome, str):
                continue
            trouble = outcome
            issue = FieldError(content_field(name), trouble.message, trouble.line, trouble.column)
            if trouble.is_unknown_name or trouble.is_out_of_fuel or trouble.kind in RESOURCE_KINDS:
                errors.append(issue)
            else:
                warnings.append(
                    FieldError(
                        issue.field,
                        f"fails to render without data: {trouble.message}",
                        trouble.line,
                        trouble.column,
                    )
                )

    if (
        channel is Channel.EMAIL
        and category is Category.MARKETING
        and isinstance(content, EmailContent)
        and content.html
        # A template that does not compile lists no variables: its syntax error says enough.
        and all(name in compilable for name in sources if name.startswith(("html", "text")))
        and not any(
            UNSUBSCRIBE_VARIABLE in engine.variables(source)
            for name, source in sources.items()
            if name.startswith(("html", "text"))
        )
    ):
        errors.append(
            FieldError(
                "content.html",
                "marketing email must contain {{ unsubscribe_url }} so recipients can opt out",
            )
        )
    return ContentCheck(errors, warnings, profile_paths, context_paths)


def refuse_resource_bombs(engine: TemplateEngine, content: Content) -> None:
    """Refuses content whose templates exhaust the sandbox's memory or time on sample data.
    minijinja (3.1 on) charges fuel for the size of the text an operation builds, so most
    memory bombs end out of fuel instead, harmlessly: the draft saves and review blocks it.

    Saving a draft accepts templates that review will reject (syntax, unknown names), but a
    template that blows up is refused at once, naming its field. The verdict is cached, so the
    review of the same templates that follows costs nothing more.
    """
    sources = {
        name: source
        for name, source in template_sources(content).items()
        if engine.syntax_problem(source) is None
    }
    if not sources:
        return
    results = render_in(engine.sandbox, engine, sources, sample_variables(), outputs=False)
    errors = [
        FieldError(content_field(name), problem.message)
        for name, problem in results.items()
        if not isinstance(problem, str) and problem.kind in RESOURCE_KINDS
    ]
    if errors:
        raise InvalidInput(f"{errors[0].field}: {errors[0].message}", errors=errors)


def sample_variables() -> dict[str, Any]:
    return {
        "profile": {},
        "context": {},
        "campaign": {"id": "", "name": ""},
        "unsubscribe_url": "",
    }


def template_variables(
    *,
    profile: Mapping[str, Any],
    context: Mapping[str, Any],
    campaign_id: str,
    campaign_name: str,
    unsubscribe_url: str | None,
) -> dict[str, Any]:
    return {
        "profile": profile,
        "context": context,
        "campaign": {"id": campaign_id, "name": campaign_name},
        "unsubscribe_url": trusted(unsubscribe_url or ""),
    }


def render_content(
    engine: TemplateEngine,
    content: Content,
    variables: Mapping[str, Any],
    *,
    isolated: bool = False,
) -> dict[str, Any]:
    """Renders every template of the content; the result has the content's own shape.

    `isolated` renders in the engine's memory-capped sandbox: for data an author chose
    (previews, proofs). Deliveries render here, for speed (the crash guard covers them).
    """
    sources = template_sources(content)
    if isolated:
        rendered: dict[str, str] = {}
        for name, outcome in render_in(
            engine.sandbox, engine, sources, variables, outputs=True
        ).items():
            if not isinstance(outcome, str):
                raise RenderingError(name, outcome)
            rendered[name] = outcome
    else:
        rendered = engine.render(sources, variables)
    result: dict[str, Any] = {}
    for name, text in rendered.items():
        field = name.rsplit(".", 1)[0]
        if field.startswith("data."):
            result.setdefault("data", {})[field.removeprefix("data.")] = text
        else:
            result[field] = text
    for name in _declared_fields(content):
        result.setdefault(name, None)
    if isinstance(content, SmsContent) and content.media_urls:
        # Not templates: MMS media URLs go as authored.
        result["media_urls"] = list(content.media_urls)
    if isinstance(content, PushContent):
        # Not templates: the badge is a number and the sound names a file of the app.
        result["badge"], result["sound"] = content.badge, content.sound
    return result


def _declared_fields(content: Content) -> Iterable[str]:
    return type(content).model_fields.keys()
