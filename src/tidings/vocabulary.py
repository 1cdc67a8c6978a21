"""Words every feature shares: channels, campaign categories, identity namespaces."""

from __future__ import annotations

import re
from enum import StrEnum


class Channel(StrEnum):
    EMAIL = "email"
    SMS = "sms"
    PUSH = "push"


class Category(StrEnum):
    """Marketing needs opt-in and obeys business rules; transactional ignores marketing consent."""

    MARKETING = "marketing"
    TRANSACTIONAL = "transactional"


NAMESPACE_PATTERN = r"^[A-Za-z][A-Za-z0-9_.\-]{0,63}$"
EMAIL_NAMESPACE = "email"
PHONE_NAMESPACE = "phone"
E164_PATTERN = re.compile(r"^\+[1-9][0-9]{6,14}$")
