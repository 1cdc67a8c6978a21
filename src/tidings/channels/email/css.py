"""CSS of <style> blocks moved into style attributes, which is all that many mail clients read.

Inlining happens after rendering, per message, and only to HTML that has a <style> element: a
template cannot be inlined once per campaign version before rendering, because the HTML parser
(html5ever, inside css-inline) rewrites what it parses: it moves text it finds between table
rows (`{% for %}` there) out of the table, and escapes `<` and `>` in `{{ a > b }}`, which would
change what the template does. The cost, measured with css-inline 0.24 on one core: 0.14 ms for
a 2 KB message with 3 rules, 2.1 ms for a 30 KB one with 150 rules (css-inline holds the GIL, so
a thread would not help). HTML without <style> costs one search for the tag.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from html.parser import HTMLParser

import css_inline

__all__ = ["inline_css", "inline_template"]

_STYLE_TAG = re.compile("<style", re.IGNORECASE)

# @media and other at-rules cannot go into an attribute and stay in a <style> block, where the
# clients that support them (responsive layouts) read them. Remote stylesheets are never
# fetched: a <link> would otherwise make the worker request any URL a template names.
_INLINER = css_inline.CSSInliner(
    keep_at_rules=True, keep_link_tags=True, load_remote_stylesheets=False
)


def inline_css(html: str) -> str:
    """`html` with its <style> rules applied to the elements they select; unchanged without any
    <style> element, or when css-inline cannot process it."""
    if "<style" not in html and _STYLE_TAG.search(html) is None:
        return html
    try:
        inlined = _INLINER.inline(html)
    except (css_inline.InlineError, ValueError):
        # Unusable CSS is the author's to fix; the message still goes, as the author wrote it.
        return html
    if html.isascii() and not inlined.isascii():
        # The parser decodes character references (&times;, &nbsp;): written back as references,
        # ASCII HTML stays ASCII and goes out 7bit, not quoted-printable (building the message
        # cost 5x more, and its size grew).
        return inlined.encode("ascii", "xmlcharrefreplace").decode("ascii")
    return inlined


# --- Inlining a template once per version ----------------------------------------------------
#
# Rendering then inlining every message costs ~0.15-0.2 ms (the parse and the selector
# matching of css-inline), a fifth of a message's work. For most email templates the result
# is the same as inlining the template once and rendering that, because:
#   - with selectors that look only at an element's ancestors and its own static attributes
#     (type, class, id, descendant and child combinators), the rules an element matches do not
#     change when a loop repeats it or a condition leaves out a sibling;
#   - autoescaped expressions only add text, never elements.
# `inline_template` does it when it can show those conditions hold, and answers None
# otherwise, leaving the message to the per-message path. The template tags are hidden from
# the HTML parser behind placeholders (comments where they stand between elements, so the
# parser's table rules cannot move them; bare words inside tags and attribute values), and
# the parse must give back every tag and placeholder in the same order: anything the parser
# moved, closed or opened on its own means the template's shape is not the message's.

_TEMPLATE_TAG = re.compile(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}", re.DOTALL)
_STYLE_BLOCK = re.compile(r"<style\b[^>]*>(.*?)</style\s*>", re.IGNORECASE | re.DOTALL)
_CSS_COMMENT = re.compile(r"/\*.*?\*/", re.DOTALL)
_CSS_DECLARATIONS = re.compile(r"\{[^{}]*\}")
# Selectors whose match depends on siblings or on content, which loops and conditions change.
_POSITIONAL_SELECTOR = re.compile(r":(?:first|last|nth|only)-|:empty|:not\(|:has\(|:is\(|[+~]")
_STATEMENT_WORD = re.compile(r"\{%[-+]?\s*(\w+)")
_BLOCK_ENDS = {"if": "endif", "for": "endfor", "with": "endwith"}
_BLOCK_MIDDLES = frozenset({"elif", "else"})
_PLAIN_STATEMENTS = frozenset({"break", "continue"})
# Filters that turn text into markup: the template would not show the elements they make.
_MARKUP_FILTER = re.compile(r"\b(?:safe|urlize)\b")
_VOID_ELEMENTS = frozenset(
    {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta"}
    | {"param", "source", "track", "wbr"}
)
# Elements the HTML parser adds on its own without changing the content's shape.
_IMPLIED_ELEMENTS = frozenset({"html", "head", "body", "tbody"})
# Attributes the selectors read (class, id) or the inliner rewrites (style).
_SELECTED_ATTRIBUTES = frozenset({"class", "id", "style"})
_SELECTED_NAME = re.compile(r"(?<![\w:-])(?:class|id)\s*=", re.IGNORECASE)

# Where a hidden piece of template stands, which decides its placeholder: between elements
# (a comment, which the parser's table rules leave in place), among a tag's attributes (a bare
# attribute name), or inside an attribute value, a comment or a <title> (a bare word).
_TEXT, _ATTRIBUTES, _WORD = "text", "attributes", "word"


@dataclass(frozen=True, slots=True)
class _Hidden:
    placeholder: str
    source: str
    where: str

    @property
    def written(self) -> str:
        """How the placeholder reads in the inliner's output."""
        if self.where == _TEXT:
            return f"<!--{self.placeholder}-->"
        if self.where == _ATTRIBUTES:
            return f'{self.placeholder}=""'
        return self.placeholder


_Event = tuple[str, str, tuple[tuple[str, str], ...]]


def inline_template(source: str) -> str | None:
    """The HTML template `source` with its <style> rules inlined, such that rendering it gives
    what rendering `source` and then `inline_css` would; None when that cannot be shown (the
    caller then inlines each rendered message)."""
    if "<style" not in source and _STYLE_TAG.search(source) is None:
        return None
    stylesheets = _STYLE_BLOCK.findall(source)
    if not _positionless(" ".join(stylesheets)) or any(
        _TEMPLATE_TAG.search(sheet) for sheet in stylesheets
    ):
        return None  # positional selectors, or a stylesheet that is itself a template
    tags = _TEMPLATE_TAG.findall(source)
    token = _placeholder_prefix(source)
    try:
        hidden_source, hidden = _hide(source, token)
    except _Unshowable:
        return None
    before = _shape(hidden_source, token)
    if before is None or not _blocks_are_whole(before, hidden):
        return None
    if "[" in "".join(stylesheets) and any(piece.where != _TEXT for piece in hidden.values()):
        return None  # attribute selectors, and attributes or values some messages differ in
    try:
        inlined = _INLINER.inline(hidden_source)
    except (css_inline.InlineError, ValueError):
        return None
    # The same elements and placeholders in the same order, or the parser moved, closed or
    # opened something on its own and the template's shape is not the messages'.
    if _shape(inlined, token) != before:
        return None
    if hidden_source.isascii() and not inlined.isascii():
        inlined = inlined.encode("ascii", "xmlcharrefreplace").decode("ascii")
    for piece in hidden.values():
        if inlined.count(piece.written) != 1:
            return None
        inlined = inlined.replace(piece.written, piece.source)
    return inlined if _TEMPLATE_TAG.findall(inlined) == tags else None


class _Unshowable(Exception):
    """The template has a construct whose effect on inlining cannot be shown to be nil."""


def _positionless(stylesheet: str) -> bool:
    selectors = _CSS_COMMENT.sub(" ", stylesheet)
    while (stripped := _CSS_DECLARATIONS.sub(" ", selectors)) != selectors:
        selectors = stripped
    return _POSITIONAL_SELECTOR.search(selectors) is None


def _placeholder_prefix(source: str) -> str:
    # Lower-case letters: the HTML parser lower-cases attribute names.
    prefix = "tidingstpl"
    while prefix in source.lower():
        prefix += "x"
    return prefix


def _statement(tag: str) -> str | None:
    """The statement's keyword (`if`, `endfor`...), None for an expression or a comment."""
    found = _STATEMENT_WORD.match(tag)
    return found.group(1) if found else None


def _hide(source: str, token: str) -> tuple[str, dict[str, _Hidden]]:
    """`source` with its template tags replaced by placeholders, and what each replaced. The
    template tags among one tag's attributes (`<tr{% if odd %} class="odd"{% endif %}>`) are
    hidden together with what lies between them, as one attribute."""
    hidden: dict[str, _Hidden] = {}
    pieces: list[str] = []
    position = 0
    matches = list(_TEMPLATE_TAG.finditer(source))
    # Where a tag stands is read with every template tag blanked out: their own quotes and
    # angle brackets (`{% if qty > 1 %}`) are not HTML.
    blanked = _TEMPLATE_TAG.sub(lambda found: " " * len(found.group()), source)
    index = 0
    while index < len(matches):
        match = matches[index]
        where = _where(blanked, match.start())
        end, last = match.end(), index
        if where == _ATTRIBUTES:
            # Up to the last template tag before this element's tag closes.
            closing = blanked.find(">", match.end())
            while last + 1 < len(matches) and (
                closing == -1 or matches[last + 1].start() < closing
            ):
                last += 1
                closing = blanked.find(">", matches[last].end())
            end = matches[last].end()
        group = [m.group() for m in matches[index : last + 1]]
        _check_statements(group, balanced=where == _ATTRIBUTES)
        if where == _ATTRIBUTES and _SELECTED_NAME.search(blanked[match.start() : end]):
            # A class or id that only some messages have: selectors may match them there.
            raise _Unshowable
        placeholder = f"{token}{len(hidden)}z"
        hidden[placeholder] = _Hidden(placeholder, source[match.start() : end], where)
        pieces.append(source[position : match.start()])
        pieces.append(hidden[placeholder].written.removesuffix('=""'))
        position = end
        index = last + 1
    pieces.append(source[position:])
    return "".join(pieces), hidden


def _check_statements(tags: list[str], balanced: bool) -> None:
    depth = 0
    for tag in tags:
        if _MARKUP_FILTER.search(tag):
            raise _Unshowable
        word = _statement(tag)
        if word is None:
            continue
        if word in _BLOCK_ENDS:
            depth += 1
        elif word in _BLOCK_ENDS.values():
            depth -= 1
        elif (
            word not in _BLOCK_MIDDLES
            and word not in _PLAIN_STATEMENTS
            and not (word == "set" and "=" in tag)
        ):
            # Macros, includes, captured or raw blocks, filter blocks, autoescape changes.
            raise _Unshowable
        if balanced and depth < 0:
            raise _Unshowable
    if balanced and depth:
        raise _Unshowable


def _where(source: str, offset: int) -> str:
    """Whether offset lies between elements, among a tag's attributes, or where only a word
    fits (an attribute value, a comment, the text of a <title> or <textarea>)."""
    head = source[:offset]
    if head.rfind("<!--") > head.rfind("-->"):
        return _WORD
    opener, closer = head.rfind("<"), head.rfind(">")
    if opener > closer:
        inside = head[opener:]
        # In a quoted value when the quotes before it in the tag are unbalanced.
        value = re.search(r"([\w:-]+)\s*=\s*(\"[^\"]*|'[^']*)$", inside)
        if value is not None and (inside.count('"') % 2 or inside.count("'") % 2):
            if value.group(1).lower() in _SELECTED_ATTRIBUTES:
                raise _Unshowable
            return _WORD
        if re.fullmatch(r"</?[\w:-]*", inside) or re.search(r"=\s*$", inside):
            raise _Unshowable  # part of an element's name, or an unquoted attribute value
        return _ATTRIBUTES
    lowered = head.lower()
    for element in ("title", "textarea"):
        if lowered.rfind(f"<{element}") > lowered.rfind(f"</{element}"):
            return _WORD
    return _TEXT


class _ShapeReader(HTMLParser):
    """The elements and placeholders of an HTML text in order, without implied elements."""

    def __init__(self, token: str) -> None:
        super().__init__(convert_charrefs=True)
        self.placeholders = re.compile(rf"{token}\d+z")
        self.events: list[_Event] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _IMPLIED_ELEMENTS:
            return
        attributes = tuple(sorted((name, value or "") for name, value in attrs))
        if any(self.placeholders.fullmatch(name) for name, _value in attributes):
            # Template tags among the attributes: the element must receive no style, since
            # they may take away the attribute it would be merged into.
            marked = attributes
        else:
            marked = tuple(item for item in attributes if self.placeholders.search(item[1]))
        self.events.append(("start", tag, marked))
        if tag in _VOID_ELEMENTS:
            self.events.append(("end", tag, ()))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in _VOID_ELEMENTS and tag not in _IMPLIED_ELEMENTS:
            self.events.append(("end", tag, ()))

    def handle_endtag(self, tag: str) -> None:
        if tag not in _IMPLIED_ELEMENTS and tag not in _VOID_ELEMENTS:
            self.events.append(("end", tag, ()))

    def handle_data(self, data: str) -> None:
        for found in self.placeholders.findall(data):
            self.events.append(("placeholder", found, ()))

    handle_comment = handle_data


def _shape(html: str, token: str) -> list[_Event] | None:
    reader = _ShapeReader(token)
    try:
        reader.feed(html)
        reader.close()
    except AssertionError:  # html.parser's reaction to some malformed declarations
        return None
    # The <style> element goes, or keeps only its at-rules: not part of the content's shape.
    return [event for event in reader.events if event[1] != "style"]


def _blocks_are_whole(shape: list[_Event], hidden: dict[str, _Hidden]) -> bool:
    """Every if/for/with block between elements opens and closes elements in balance (each
    of its statements stands among the same open elements), so that a block repeated or left
    out by a message is whole elements, and the elements are where the template has them."""
    open_elements: list[str] = []
    blocks: list[tuple[str, tuple[str, ...]]] = []
    for kind, name, _attributes in shape:
        if kind == "start":
            open_elements.append(name)
        elif kind == "end":
            if not open_elements or open_elements[-1] != name:
                return False
            open_elements.pop()
        elif hidden[name].where == _TEXT:
            word = _statement(hidden[name].source)
            here = tuple(open_elements)
            if word in _BLOCK_ENDS:
                blocks.append((word, here))
            elif word in _BLOCK_MIDDLES or word in _BLOCK_ENDS.values():
                if not blocks or blocks[-1][1] != here:
                    return False
                if word not in _BLOCK_MIDDLES and _BLOCK_ENDS[blocks.pop()[0]] != word:
                    return False
    return not blocks and not open_elements
