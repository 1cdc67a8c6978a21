"""Shared inputs: a realistic personalized marketing email and the data it is rendered with."""

from __future__ import annotations

from typing import Any

SUBJECT = (
    "{{ profile.firstName|default('Friend')|title }}, your order "
    "#{{ context.order.id }} ships soon{% if profile.loyalty.tier == 'gold' %} "
    "(+{{ context.order.points }} points){% endif %}"
)

HTML = """<!DOCTYPE html>
<html lang="{{ profile.locale|default('en') }}">
<head>
  <meta charset="utf-8">
  <title>Your order {{ context.order.id }}</title>
  <style>
    body { margin: 0; background: #f4f4f7; font-family: Helvetica, Arial, sans-serif; }
    .item td { padding: 8px 12px; border-bottom: 1px solid #eee; }
  </style>
</head>
<body>
<table class="wrap" role="presentation" width="100%" cellpadding="0" cellspacing="0">
  <tr><td style="padding: 24px;">
    <h1>Hi {{ profile.firstName|default('there')|title }},</h1>
    {% if profile.loyalty.tier == "gold" %}
    <p>As a <strong>Gold member</strong> you earn double points: this order adds
       {{ context.order.points }} points to your {{ profile.loyalty.points }}.</p>
    {% elif profile.loyalty.tier %}
    <p>You are a {{ profile.loyalty.tier|title }} member with
       {{ profile.loyalty.points }} points.</p>
    {% else %}
    <p>Join our loyalty programme and earn points on every order.</p>
    {% endif %}
    <p>Thanks for order <strong>#{{ context.order.id }}</strong>. On its way to
       {{ profile.address.city|default('you') }}:</p>
  </td></tr>
  <tr><td>
    <table role="presentation" width="100%" cellpadding="0" cellspacing="0">
      <tr class="item"><th>Item</th><th>Qty</th><th align="right">Price</th></tr>
      {% for item in context.order.items %}
      <tr class="item"{% if loop.index is even %} style="background: #fafafa;"{% endif %}>
        <td>
          <a href="{{ item.url }}?utm_source=email&amp;utm_campaign={{ campaign.id|urlencode }}">
            {{ item.name }}</a>
          {% if item.variant %}<br><small>{{ item.variant|upper }}</small>{% endif %}
          {% if item.qty > 1 %}<br><small>{{ item.qty }} &times; {{ context.order.currency }}
            {{ "%.2f"|format(item.price) }}</small>{% endif %}
        </td>
        <td>{{ item.qty }}</td>
        <td align="right">{{ context.order.currency }}
          {{ "%.2f"|format(item.price * item.qty) }}</td>
      </tr>
      {% endfor %}
      <tr class="total">
        <td colspan="2">Total ({{ context.order.items|default([])|length }} items)</td>
        <td align="right">{{ context.order.currency }}
          {{ "%.2f"|format(context.order.total|default(0)) }}</td>
      </tr>
    </table>
  </td></tr>
  <tr><td align="center">
    <a class="button" href="{{ context.order.tracking_url }}">Track your parcel</a>
  </td></tr>
  {% if profile.interests %}
  <tr><td style="padding: 0 24px 24px;">
    <p>Picked for you, because you like {{ profile.interests|join(", ") }}:
    {% for tip in context.recommendations %}<a href="{{ tip.url }}">{{ tip.name }}</a>
    {%- if not loop.last %} &middot; {% endif %}{% endfor %}</p>
  </td></tr>
  {% endif %}
  <tr><td class="footer">
    Sent to {{ profile.email }}.<br>
    <a href="{{ unsubscribe_url }}">Unsubscribe</a>
  </td></tr>
</table>
</body>
</html>
"""

TEXT = """Hi {{ profile.firstName|default('there')|title }},

Thanks for your order #{{ context.order.id }} placed on {{ context.order.placed_on }}.
{% for item in context.order.items %}
- {{ item.qty }} x {{ item.name }}{% if item.variant %} ({{ item.variant }}){% endif %}: \
{{ context.order.currency }} {{ "%.2f"|format(item.price * item.qty) }}
{%- endfor %}

Total: {{ context.order.currency }} {{ "%.2f"|format(context.order.total|default(0)) }}
Track your parcel: {{ context.order.tracking_url }}
{% if profile.loyalty.tier %}
Loyalty: {{ profile.loyalty.tier|title }}, {{ profile.loyalty.points }} points.
{% endif %}
Unsubscribe: {{ unsubscribe_url }}
"""

CONTENT: dict[str, str] = {"subject": SUBJECT, "html": HTML, "text": TEXT}

PROFILE: dict[str, Any] = {
    "firstName": "ada",
    "lastName": "Lovelace",
    "email": "ada@example.com",
    "locale": "en",
    "address": {"city": "London", "country": "GB"},
    "loyalty": {"tier": "gold", "points": 1280},
    "interests": ["tea", "mathematics", "engines"],
}

_ITEMS: list[dict[str, Any]] = [
    {"name": "Analytical Engine Mug", "variant": "blue", "qty": 2, "price": 12.5},
    {"name": "Punched Card Notebook", "variant": None, "qty": 1, "price": 8.9},
    {"name": "Difference Engine Poster", "variant": "A2", "qty": 1, "price": 24.0},
    {"name": "Earl Grey, 250 g", "variant": None, "qty": 3, "price": 6.75},
    {"name": "Brass Gear Bookmark", "variant": "gold", "qty": 1, "price": 4.2},
]

CONTEXT: dict[str, Any] = {
    "order": {
        "id": "A-100482",
        "placed_on": "2026-11-21",
        "currency": "EUR",
        "points": 142,
        "tracking_url": "https://track.example.com/A-100482",
        "items": [
            {**item, "url": f"https://shop.example.com/p/{index}"}
            for index, item in enumerate(_ITEMS, start=1)
        ],
        "total": round(sum(item["price"] * item["qty"] for item in _ITEMS), 2),
    },
    "recommendations": [
        {"name": "Jacquard Loom Scarf", "url": "https://shop.example.com/p/90"},
        {"name": "Bernoulli Numbers Print", "url": "https://shop.example.com/p/91"},
    ],
}

UNSUBSCRIBE_URL = "https://tidings.example.com/unsubscribe/2f9c1e7a"


def source_bytes() -> int:
    """Size of the three templates together, in UTF-8 bytes."""
    return sum(len(source.encode("utf-8")) for source in CONTENT.values())
