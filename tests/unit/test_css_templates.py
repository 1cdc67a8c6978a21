"""CSS inlined into a template once per version: the same messages as inlining each one."""

from __future__ import annotations

from html.parser import HTMLParser
from typing import Any

import pytest

from tidings.channels.email.css import inline_css, inline_template
from tidings.content.engine import TemplateEngine

ENGINE = TemplateEngine(fuel=1_000_000, max_source_bytes=1_000_000)

ORDER = """<!DOCTYPE html>
<html lang="{{ profile.locale|default('en') }}"><head><title>Order {{ context.id }}</title>
<style>
  body { margin: 0 } .item td { padding: 8px } a.button { color: #fff; background: #06c }
  table.wrap > tbody > tr > td { border: 0 }
  @media (max-width: 600px) { .item td { padding: 2px } }
</style></head>
<body><table class="wrap">
  <tr><td><h1>Hi {{ profile.name|default('there') }} &amp; welcome,</h1>
  {% if profile.tier == "gold" %}<p>Gold: {{ context.points }} points &times; 2</p>
  {% elif profile.tier %}<p>{{ profile.tier|title }} member</p>
  {% else %}<p>Join us</p>{% endif %}</td></tr>
  {% for item in context.items %}
  <tr class="item"{% if loop.index is even %} style="background: #fafafa"{% endif %}>
    <td><a href="{{ item.url }}?utm={{ context.id|urlencode }}">{{ item.name }}</a>
    {% if item.qty > 1 %}<br><small>{{ item.qty }} &middot; each</small>{% endif %}</td>
  </tr>
  {% endfor %}
  <tr><td><a class="button" href="{{ context.url }}">Track</a>
  <!-- sent to {{ profile.name }} --></td></tr>
</table></body></html>"""

VARIABLES: list[dict[str, Any]] = [
    {
        "profile": {"name": "Ada <script>", "tier": "gold", "locale": "fr"},
        "context": {
            "id": "A-1",
            "points": 3,
            "url": "https://t.example/1",
            "items": [
                {"name": "Mug", "url": "https://s.example/1", "qty": 2},
                {"name": 'Card "deck"', "url": "https://s.example/2", "qty": 1},
                {"name": "Tea & cake", "url": "https://s.example/3", "qty": 3},
            ],
        },
    },
    {"profile": {"tier": "silver"}, "context": {"id": "B 2", "items": []}},
    {"profile": {}, "context": {"id": "C", "items": [{"name": "x", "url": "u", "qty": 1}]}},
]


# Elements an HTML parser adds where they are missing: present or not, a mail client builds
# the same document.
IMPLIED = {"html", "head", "body", "tbody"}


class _Structure(HTMLParser):
    """Elements with their attributes (styles parsed) and text with whitespace collapsed: two
    HTML texts a mail client shows alike have the same structure."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.items: list[tuple[Any, ...]] = []
        self.text = ""

    def _flush(self) -> None:
        if words := " ".join(self.text.split()):
            self.items.append(("text", words))
        self.text = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._flush()
        if tag in IMPLIED:
            return
        attributes = {name: value or "" for name, value in attrs}
        if "style" in attributes:
            attributes["style"] = " ".join(
                sorted(part.strip() for part in attributes["style"].split(";") if part.strip())
            )
        self.items.append(("start", tag, tuple(sorted(attributes.items()))))

    def handle_endtag(self, tag: str) -> None:
        self._flush()
        if tag in IMPLIED:
            return
        self.items.append(("end", tag))

    def handle_data(self, data: str) -> None:
        self.text += data

    def handle_comment(self, data: str) -> None:
        self.text += f"<!--{' '.join(data.split())}-->"


def structure(html: str) -> list[tuple[Any, ...]]:
    parser = _Structure()
    parser.feed(html)
    parser.close()
    parser._flush()
    return parser.items


def render(template: str, variables: dict[str, Any]) -> str:
    return ENGINE.render({"body.html": template}, variables)["body.html"]


def test_the_inlined_template_renders_what_inlining_each_message_gives():
    inlined = inline_template(ORDER)
    assert inlined is not None
    assert "@media (max-width: 600px)" in inlined and "body { margin" not in inlined
    assert 'style="padding: 8px;' in inlined  # the rule is in the td's attribute
    for variables in VARIABLES:
        per_message = inline_css(render(ORDER, variables))
        assert structure(render(inlined, variables)) == structure(per_message)
    # A gold member's message: the loop and the conditions ran, and the values are escaped.
    first = render(inlined, VARIABLES[0])
    assert first.count('<tr class="item"') == 3 and "Ada &lt;script&gt;" in first
    assert "Card &#34;deck&#34;" in first or "Card &quot;deck&quot;" in first


def test_ascii_templates_stay_ascii():
    inlined = inline_template(ORDER)
    assert inlined is not None and inlined.isascii()


@pytest.mark.parametrize(
    ("why", "template"),
    [
        ("no style", "<p>{{ x }}</p>"),
        ("positional selector", "<style>tr:nth-child(2) td {color: red}</style><p>{{ x }}</p>"),
        ("sibling combinator", "<style>p + p {color: red}</style><p>{{ x }}</p><p>y</p>"),
        ("first-child", "<style>li:first-child {color: red}</style><ul><li>{{ x }}</li></ul>"),
        ("a template in the stylesheet", "<style>p {color: {{ c }}}</style><p>x</p>"),
        ("a template in a class", '<style>.a {color: red}</style><p class="{{ c }}">x</p>'),
        ("a template in an id", '<style>#a {color: red}</style><p id="a{{ c }}">x</p>'),
        ("a template in a style", '<style>p {color: red}</style><p style="{{ s }}">x</p>'),
        ("an unquoted value", "<style>p {color: red}</style><a href={{ u }}>x</a>"),
        ("a templated tag name", "<style>p {color: red}</style><{{ t }}>x</{{ t }}>"),
        (
            "a block that is not whole elements",
            '<style>.a p {color: red}</style>{% if x %}<div class="a">{% else %}<div>'
            "{% endif %}<p>x</p></div>",
        ),
        ("markup from a value", "<style>p {color: red}</style><div>{{ x|safe }}</div>"),
        ("a macro", "<style>p {color: red}</style>{% macro m() %}<p>x</p>{% endmacro %}"),
        ("an include", '<style>p {color: red}</style>{% include "x" %}'),
        ("a raw block", "<style>p {color: red}</style>{% raw %}<p>{{ x }}</p>{% endraw %}"),
        (
            "a captured block",
            "<style>p {color: red}</style>{% set x %}<p>y</p>{% endset %}{{ x }}",
        ),
        (
            "attribute selectors and templated attributes",
            '<style>a[href^="https"] {color: red}</style><a href="{{ u }}">x</a>',
        ),
        (
            "a styled element with a template among its attributes",
            '<style>td {color: red}</style><table><tr><td{% if r %} align="right"{% endif %}>'
            "x</td></tr></table>",
        ),
        (
            "a class some messages have",
            '<style>.hl {color: red}</style><p{% if x %} class="hl"{% endif %}>x</p>',
        ),
        (
            "attribute selectors and templated attributes",
            '<style>a[target] {color: red}</style><a{% if x %} target="_blank"{% endif %}>x</a>',
        ),
        ("text the parser moves out of a table", "<style>td {color: red}</style><table>x<tr>"),
        ("an element the parser closes", "<style>p {color: red}</style><p>a<p>b"),
    ],
)
def test_templates_whose_inlining_could_differ_are_left_to_each_message(why: str, template: str):
    assert inline_template(template) is None, why


def test_loops_between_table_rows_are_inlined_in_place():
    template = (
        "<style>td {color: red}</style><table>{% for r in rows %}<tr><td>{{ r }}</td></tr>"
        "{% endfor %}</table>"
    )
    inlined = inline_template(template)
    assert inlined is not None
    html = render(inlined, {"rows": ["a", "b"]})
    assert html.count('<td style="color: red;">') == 2
    assert structure(html) == structure(inline_css(render(template, {"rows": ["a", "b"]})))
