"""Imports every feature's tables so the shared MetaData is complete (for Alembic and tests)."""

from __future__ import annotations

from tidings.audiences import models as audiences_models
from tidings.campaigns import models as campaigns_models
from tidings.channels import models as channels_models
from tidings.db.metadata import metadata
from tidings.executions import models as executions_models
from tidings.feedback import models as feedback_models
from tidings.profiles import models as profiles_models
from tidings.reports import models as reports_models
from tidings.rules import models as rules_models
from tidings.suppressions import models as suppressions_models
from tidings.tracking import models as tracking_models
from tidings.users import models as users_models
from tidings.webhooks import models as webhooks_models
from tidings.workspaces import models as workspaces_models

__all__ = [
    "audiences_models",
    "campaigns_models",
    "channels_models",
    "executions_models",
    "feedback_models",
    "metadata",
    "profiles_models",
    "reports_models",
    "rules_models",
    "suppressions_models",
    "tracking_models",
    "users_models",
    "webhooks_models",
    "workspaces_models",
]
