"""Review (step 6): what blocks activation and what only deserves a look. No I/O here."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tidings.content.engine import TemplateEngine
from tidings.content.schemas import parse_content
from tidings.content.service import check_content
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
) -> ReviewResult:
    """Checks one version of a campaign against everything activation needs."""
    result = ReviewResult()
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
            if path not in known:
                result.warnings.append(
                    FieldError(
                        source_field,
                        f"profile.{path} is used, but no profile of this workspace has it",
                    )
                )

    _review_audience(result, category, version["audience"])
    _review_schedule(result, version, now)
    return result


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


def _review_audience(result: ReviewResult, category: Category, audience: Mapping[str, Any]) -> None:
    if category is Category.MARKETING and not audience.get("audience_id"):
        result.warnings.append(
            FieldError(
                "audience.audience_id",
                "no audience: the campaign can only be triggered with recipients in the call",
            )
        )
    if category is Category.TRANSACTIONAL and audience.get("audience_id"):
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
