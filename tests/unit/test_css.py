"""CSS inlining of <style> blocks into style attributes."""

from __future__ import annotations

from tidings.channels.email.css import inline_css


def test_rules_move_into_style_attributes_and_at_rules_stay():
    html = (
        "<html><head><STYLE>p.note { color: #c00 } td { padding: 4px }"
        " @media (max-width: 600px) { p { margin: 0 } }</STYLE></head>"
        "<body><p class='note' style='font-weight: bold'>Hi 日本 &amp; you</p>"
        "<table><tr><td>cell</td></tr></table></body></html>"
    )
    inlined = inline_css(html)
    assert "color: #c00" in inlined and "font-weight: bold" in inlined
    assert '<td style="padding: 4px;">' in inlined
    assert "@media (max-width: 600px)" in inlined
    assert "p.note" not in inlined
    assert "Hi 日本 &amp; you" in inlined


def test_html_without_style_is_returned_as_it_is():
    html = "<p>Hello <a href='https://example.com/?a=1&b=2'>link</a>"
    assert inline_css(html) is html


def test_remote_stylesheets_are_never_fetched():
    # A fetch would fail here (no network, nothing listens on port 9) and raise.
    html = (
        '<link rel="stylesheet" href="http://127.0.0.1:9/x.css">'
        "<style>p { color: red }</style><p>x</p>"
    )
    inlined = inline_css(html)
    assert 'style="color: red;"' in inlined
    assert 'href="http://127.0.0.1:9/x.css"' in inlined


def test_broken_css_does_not_stop_the_message():
    for html in ("<style>}}}{{{</style><p>x</p>", "<style>p{color:</style><p>x"):
        assert "<p" in inline_css(html)


def test_ascii_html_stays_ascii_after_inlining() -> None:
    html = (
        "<html><head><style>p{color:red}</style></head>"
        "<body><p>2&times;3&nbsp;&middot;</p></body></html>"
    )
    inlined = inline_css(html)
    assert inlined.isascii()
    assert '<p style="color: red;">2&#215;3&nbsp;&#183;</p>' in inlined


def test_html_that_was_not_ascii_keeps_its_characters() -> None:
    inlined = inline_css(
        "<html><head><style>p{color:red}</style></head><body><p>Zoë \u00d7</p></body></html>"
    )
    assert "Zoë \u00d7" in inlined
