"""What each provider is sent for one rendered push content, and whether it fits.

The rendered content is {title, body, data, deeplink, badge, sound}. FCM gets the title and
body as a notification, the data as string pairs (with the deeplink under `deeplink`), the
badge and sound in its Android and APNs overrides, and the deeplink as the web push link when
it is https. APNs gets `aps` (alert, badge, sound) with the data and the deeplink as custom
top-level keys. Both providers refuse more than 4,096 bytes: APNs counts its whole JSON
payload, FCM the notification and data it carries (measured here as their JSON, a close bound).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

MAX_PAYLOAD_BYTES = 4096
DEEPLINK_KEY = "deeplink"


def fcm_message(token: str, content: Mapping[str, Any]) -> dict[str, Any]:
    """The `message` object of an FCM HTTP v1 send request."""
    title, body = content.get("title"), content.get("body")
    badge, sound = content.get("badge"), content.get("sound")
    deeplink = content.get("deeplink")
    message: dict[str, Any] = {"token": token}
    notification = {name: value for name, value in (("title", title), ("body", body)) if value}
    if notification:
        message["notification"] = notification
    data = {str(key): str(value) for key, value in (content.get("data") or {}).items()}
    if deeplink:
        data.setdefault(DEEPLINK_KEY, deeplink)
    if data:
        message["data"] = data
    android: dict[str, Any] = {}
    if sound:
        android["sound"] = sound
    if badge is not None:
        android["notification_count"] = badge
    if android:
        message["android"] = {"notification": android}
    aps: dict[str, Any] = {}
    if badge is not None:
        aps["badge"] = badge
    if sound:
        aps["sound"] = sound
    if aps:
        message["apns"] = {"payload": {"aps": aps}}
    if deeplink and deeplink.startswith("https://"):
        # FCM accepts only an https link for web push; app deeplinks travel in data.
        message["webpush"] = {"fcm_options": {"link": deeplink}}
    return message


def fcm_payload_size(message: Mapping[str, Any]) -> int:
    """Bytes FCM counts against its limit: the notification and the data."""
    return len(orjson.dumps(message.get("notification") or {})) + len(
        orjson.dumps(message.get("data") or {})
    )


def apns_payload(content: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON body of an APNs request: `aps` and the custom keys."""
    alert = {name: content[name] for name in ("title", "body") if content.get(name)}
    aps: dict[str, Any] = {"alert": alert}
    if content.get("badge") is not None:
        aps["badge"] = content["badge"]
    if content.get("sound"):
        aps["sound"] = content["sound"]
    payload: dict[str, Any] = dict(content.get("data") or {})
    if content.get("deeplink"):
        payload.setdefault(DEEPLINK_KEY, content["deeplink"])
    payload["aps"] = aps
    return payload


def estimated_sizes(content: Mapping[str, Any], provider: str) -> dict[str, int]:
    """Payload bytes per provider for content as given (for review: the templates as written,
    which rendering makes longer or shorter). The dev provider is measured for both, as a
    configuration may move to either."""
    sizes: dict[str, int] = {}
    if provider in ("fcm", "dev"):
        sizes["fcm"] = fcm_payload_size(fcm_message("", content))
    if provider in ("apns", "dev"):
        sizes["apns"] = len(orjson.dumps(apns_payload(content)))
    return sizes
