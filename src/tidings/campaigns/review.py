"""Review (step 6): what blocks activation and what only deserves a look. No I/O here."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tidings.channels.push.payload import MAX_PAYLOAD_BYTES, estimated_sizes
from tidings.content.engine import TemplateEngine
from tidings.content.schemas import Content, PushContent, parse_content
from tidings.content.service import check_content, content_field, template_sources
from tidings.errors import FieldError, InvalidInput
from tidings.vocabulary import Category, Channel


@dataclass(slots=True)
class ReviewResult:
    errors: list[FieldError] = field(default_factory=list)
    warnings: list[FieldError] = field(default_factory=list)
    profile_paths: list[str] = field(default_factory=list)
    context_paths: list[str] = field(default_factory=list)

    @property
    def ready(self) -> bool:
        return not self.errors


def review_version(
    *,
    engine: TemplateEngine,
    category: Category,
    channel: Channel,
    version: Mapping[str, Any],
    configuration: Mapping[str, Any] | None,
    known_profile_paths: Callable[[set[str]], set[str]],
    now: datetime,
    default_smtp_url: str | None = None,
    audience_exists: Callable[[str], bool] | None = None,
) -> ReviewResult:
    """Checks one version of a campaign against everything activation needs.

    `audience_exists` says whether the workspace has an audience; without it the audience a
    marketing campaign names is not looked up.
    """
    result = ReviewResult()
    high_throughput = category is Category.TRANSACTIONAL and bool(
        version["audience"].get("high_throughput")
    )
    _review_configuration(result, category, channel, version, configuration)
    if (
        channel is Channel.EMAIL
        and configuration is not None
        and not configuration["settings"].get("smtp_url")
        and not default_smtp_url
    ):
        result.warnings.append(
            FieldError(
                "channel_configuration_id",
                "no SMTP relay: neither the configuration nor TIDINGS_SMTP_URL names one",
            )
        )

    try:
        content = parse_content(channel, version["content"])
    except InvalidInput as exc:
        result.errors.extend(exc.errors)
        content = None
    else:
        check = check_content(engine, channel, category, content)
        result.errors.extend(check.errors)
        result.warnings.extend(check.warnings)
        result.profile_paths = sorted(check.profile_paths)
        result.context_paths = sorted(check.context_paths)
        known = known_profile_paths(set(check.profile_paths))
        for path, source_field in sorted(check.profile_paths.items()):
            # High-throughput content may read no profile at all: that error says enough.
            if path not in known and not high_throughput:
                result.warnings.append(
                    FieldError(
                        source_field,
                        f"profile.{path} is used, but no profile of this workspace has it",
                    )
                )

        if high_throughput:
            _review_high_throughput_content(result, engine, content)
        if isinstance(content, PushContent):
            _review_push_payload(result, content, configuration)

    _review_audience(result, category, version["audience"], audience_exists)
    _review_schedule(result, version, now)
    return result


def _review_push_payload(
    result: ReviewResult, content: PushContent, configuration: Mapping[str, Any] | None
) -> None:
    """Measures the payload with the templates as written: an estimate, as rendering changes
    the length. Over the limit, a content without templates can never fit (an error); one
    with templates may still fit once rendered (a warning: a message that does not fails
    with payload_too_large)."""
    provider = "dev"
    if configuration is not None and configuration["channel"] == Channel.PUSH.value:
        provider = str(configuration["settings"].get("provider") or "dev")
    sizes = estimated_sizes(content.model_dump(), provider)
    over = {name: size for name, size in sizes.items() if size > MAX_PAYLOAD_BYTES}
    if not over:
        return
    measured = ", ".join(f"{name.upper()} {size} bytes" for name, size in sorted(over.items()))
    sources = template_sources(content).values()
    templated = any("{{" in source or "{%" in source for source in sources)
    if templated:
        result.warnings.append(
            FieldError(
                "content",
                f"the push payload is about {measured} before rendering, over the "
                f"{MAX_PAYLOAD_BYTES}-byte limit; messages that stay over it once rendered "
                "fail with payload_too_large",
            )
        )
    else:
        result.errors.append(
            FieldError(
                "content",
                f"the push payload is {measured}, over the providers' {MAX_PAYLOAD_BYTES}-byte "
                "limit",
            )
        )


def _review_high_throughput_content(
    result: ReviewResult, engine: TemplateEngine, content: Content | None
) -> None:
    """High-throughput recipients are external: no stored profile, only the call's context."""
    if content is None:
        return
    for name, source in template_sources(content).items():
        if engine.syntax_problem(source) is not None:
            continue  # check_content reported it
        for variable in sorted(engine.variables(source)):
            if variable.partition(".")[0] == "profile":
                result.errors.append(
                    FieldError(
                        content_field(name),
                        f"{variable} is not available: a high-throughput campaign sends to "
                        "external recipients with no profile; personalize with context",
                    )
                )


def _review_configuration(
    result: ReviewResult,
    category: Category,
    channel: Channel,
    version: Mapping[str, Any],
    configuration: Mapping[str, Any] | None,
) -> None:
    name = "channel_configuration_id"
    if not version["channel_configuration_id"]:
        result.errors.append(FieldError(name, "choose a channel configuration"))
    elif configuration is None:
        result.errors.append(FieldError(name, "no such channel configuration in this workspace"))
    else:
        if configuration["channel"] != channel.value:
            result.errors.append(
                FieldError(
                    name,
                    f"the configuration is for {configuration['channel']}, "
                    f"the campaign for {channel}",
                )
            )
        if configuration["category"] != category.value:
            result.errors.append(
                FieldError(
                    name,
                    f"category mismatch: the campaign is {category}, "
                    f"the configuration {configuration['category']}",
                )
            )


def _review_audience(
    result: ReviewResult,
    category: Category,
    audience: Mapping[str, Any],
    audience_exists: Callable[[str], bool] | None,
) -> None:
    audience_id = audience.get("audience_id")
    if (
        category is Category.MARKETING
        and audience_id
        and audience_exists is not None
        and not audience_exists(audience_id)
    ):
        result.errors.append(
            FieldError("audience.audience_id", "no such audience in this workspace")
        )
    if category is Category.MARKETING and audience.get("high_throughput"):
        result.errors.append(
            FieldError(
                "audience.high_throughput",
                "only transactional campaigns can be high-throughput",
            )
        )
    if category is Category.MARKETING and not audience_id:
        result.warnings.append(
            FieldError(
                "audience.audience_id",
                "no audience: the campaign can only be triggered with recipients in the call",
            )
        )
    if category is Category.TRANSACTIONAL and audience_id:
        result.warnings.append(
            FieldError(
                "audience.audience_id",
                "transactional campaigns take recipients in the call; the audience is ignored",
            )
        )


def _review_schedule(result: ReviewResult, version: Mapping[str, Any], now: datetime) -> None:
    start_at, end_at = version["start_at"], version["end_at"]
    if start_at and end_at and end_at <= start_at:
        result.errors.append(FieldError("schedule.end_at", "must be after schedule.start_at"))
    elif end_at and end_at <= now:
        result.errors.append(FieldError("schedule.end_at", "is in the past"))
