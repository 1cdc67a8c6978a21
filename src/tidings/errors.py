"""The one exception tree of Tidings; each class says whether retrying could help.

TidingsError
├── InvalidInput            the caller sent something wrong (field-level errors attached)
│   └── NotReady            a campaign failed review and cannot be activated
├── NotFound                no such resource in the caller's workspace
├── Conflict                the resource's state forbids the operation (e.g. a transition)
│   └── InvalidTransition   a state machine refused a move
├── AuthenticationFailed    no or unknown credentials
├── PermissionDenied        credentials lack the scope
├── RateLimited             the key sent more than its rate; retryable after `retry_after`
└── Unavailable             a dependency is down; retryable
    └── StorageFull         the database's disk (or PostgreSQL's) is full: 507, nothing written
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class FieldError:
    """One problem with one field, named by its dotted path in the request body."""

    field: str
    message: str
    line: int | None = None
    column: int | None = None

    def as_dict(self) -> dict[str, object]:
        data: dict[str, object] = {"field": self.field, "message": self.message}
        if self.line is not None:
            data["line"] = self.line
        if self.column is not None:
            data["column"] = self.column
        return data


class TidingsError(Exception):
    """Root of every error Tidings raises on purpose."""

    status = 500
    title = "Internal error"
    retryable = False

    def __init__(self, detail: str, *, errors: list[FieldError] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors: list[FieldError] = errors or []
        # RFC 9457 extension members of the answer, added where more is known than where the
        # error was raised (the import job a failed import was).
        self.extensions: dict[str, str] = {}


class InvalidInput(TidingsError):
    status = 422
    title = "Invalid input"

    @classmethod
    def on(cls, field_name: str, message: str) -> InvalidInput:
        return cls(f"{field_name}: {message}", errors=[FieldError(field_name, message)])


class NotReady(InvalidInput):
    title = "Campaign is not ready"


class NotFound(TidingsError):
    status = 404
    title = "Not found"


class Conflict(TidingsError):
    status = 409
    title = "Conflict"


class InvalidTransition(Conflict):
    title = "Transition not allowed"


class AuthenticationFailed(TidingsError):
    status = 401
    title = "Authentication required"


class PermissionDenied(TidingsError):
    status = 403
    title = "Permission denied"


class RateLimited(TidingsError):
    status = 429
    title = "Too many requests"
    retryable = True

    def __init__(self, detail: str, *, retry_after: float) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class Unavailable(TidingsError):
    status = 503
    title = "Service unavailable"
    retryable = True


class StorageFull(Unavailable):
    # 507 rather than 503: a load balancer's retry elsewhere will not help, an operator must.
    status = 507
    title = "Insufficient storage"


@dataclass(slots=True)
class ErrorCollector:
    """Gathers field errors so a caller sees all of them at once, not one per round trip."""

    errors: list[FieldError] = field(default_factory=list)

    def add(self, field_name: str, message: str, **position: int | None) -> None:
        self.errors.append(FieldError(field_name, message, **position))

    def raise_if_any(self, detail: str) -> None:
        if self.errors:
            raise InvalidInput(detail, errors=list(self.errors))
