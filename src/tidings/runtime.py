"""The objects one process shares: settings, database, template engine, authenticator."""

from __future__ import annotations

from dataclasses import dataclass, field

from tidings.config import Settings
from tidings.content.engine import TemplateEngine
from tidings.db import Database
from tidings.signals import WorkSignal
from tidings.workspaces.service import Authenticator


@dataclass
class Runtime:
    settings: Settings
    db: Database
    templates: TemplateEngine
    authenticator: Authenticator
    # Wakes this process's worker when the API queues messages that are due now.
    work: WorkSignal = field(default_factory=WorkSignal)

    @classmethod
    def from_settings(cls, settings: Settings) -> Runtime:
        db = Database(settings.resolved_database_url)
        return cls(
            settings=settings,
            db=db,
            templates=TemplateEngine(
                fuel=settings.template_fuel, max_source_bytes=settings.template_max_bytes
            ),
            authenticator=Authenticator(db),
        )

    def close(self) -> None:
        self.db.dispose()
