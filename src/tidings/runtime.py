"""The objects one process shares: settings, database, template engine, authenticator, writer."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from tidings.config import Settings
from tidings.content.engine import TemplateEngine
from tidings.content.sandbox import shared_sandbox
from tidings.db import Database
from tidings.executions.acceptor import TriggerAcceptor
from tidings.secret_key import load_secret_key
from tidings.signals import WorkSignal
from tidings.workspaces.limits import KeyRateLimiter
from tidings.workspaces.service import Authenticator


@dataclass
class Runtime:
    settings: Settings
    db: Database
    templates: TemplateEngine
    authenticator: Authenticator
    # Wakes this process's worker when the API queues messages that are due now.
    work: WorkSignal = field(default_factory=WorkSignal)
    key_limiter: KeyRateLimiter = field(default_factory=lambda: KeyRateLimiter(0))

    @classmethod
    def from_settings(cls, settings: Settings) -> Runtime:
        db = Database(settings.resolved_database_url)
        return cls(
            settings=settings,
            db=db,
            templates=TemplateEngine(
                fuel=settings.template_fuel,
                max_source_bytes=settings.template_max_bytes,
                sandbox=shared_sandbox(
                    settings.template_memory_limit_mb, settings.template_check_seconds
                ),
            ),
            authenticator=Authenticator(db),
            key_limiter=KeyRateLimiter(settings.api_rate_limit),
        )

    @cached_property
    def acceptor(self) -> TriggerAcceptor:
        """Commits the API's trigger requests in groups; its thread starts with the first."""
        return TriggerAcceptor(self.db, self.work)

    @cached_property
    def secret_key(self) -> bytes:
        """Signs links in messages; read (or generated) once per process."""
        return load_secret_key(self.settings)

    def close(self) -> None:
        if "acceptor" in self.__dict__:
            self.acceptor.close()
        self.db.dispose()
