"""Raw RFC 5322 / MIME bytes of one email, written directly rather than through the stdlib.

The stdlib `email` package builds and serializes a message in ~3 ms; writing the few headers and
parts Tidings needs with the C-backed encoders of `binascii` takes ~0.2 ms, and this runs once per
message on the delivery hot path. The stdlib package stays what the tests parse the output with.
"""

from __future__ import annotations

import itertools
import os
import re
import time
from binascii import b2a_base64, b2a_qp
from collections.abc import Mapping
from datetime import UTC, datetime
from html.parser import HTMLParser

__all__ = ["MessageBuildError", "build_message", "envelope", "html_to_text"]

# RFC 5322 2.1.1: lines SHOULD stay within 78 characters and MUST within 998.
_SOFT_LIMIT = 78
_HARD_LIMIT = 998
# 39 bytes of UTF-8 are 52 base64 characters: a 64-character encoded-word, under RFC 2047's 75,
# and a first line ("Subject: " + word) under 78.
_WORD_BYTES = 39

_ATEXT = r"A-Za-z0-9!#$%&'*+/=?^_`{|}~-"
_DOT_ATOM = re.compile(rf"[{_ATEXT}]+(?:\.[{_ATEXT}]+)*")
# A display name of plain words needs no quoting; anything else is quoted or encoded.
_PLAIN_PHRASE = re.compile(rf"[{_ATEXT}]+(?: [{_ATEXT}]+)*")
# The common address, which then needs no closer look.
_SIMPLE_ADDRESS = re.compile(rf"[{_ATEXT}]+(?:\.[{_ATEXT}]+)*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*")
_ASCII_DOMAIN = re.compile(r"[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*|\[[!-Z^-~]+\]")
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,76}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_HEADER_VALUE_FORBIDDEN = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
# A subject is one line: rendered templates often leave line breaks or tabs in it, which become
# spaces rather than failing the message; C1 controls and Unicode line separators likewise.
_SUBJECT_BREAKS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_FOLD_TOKENS = re.compile(r"[ \t]*[^ \t]+")
_LINE_BREAKS = re.compile(rb"\r\n?|\n")
_HIGH_BYTES = bytes(range(128, 256))
# Multipart boundaries: unique per message of this process without a system call per message.
_BOUNDARY_PREFIX = os.urandom(8).hex().encode("ascii")
_BOUNDARY_COUNTER = itertools.count()

# Headers build_message writes itself; extra headers may not repeat them (Cc/Bcc would add
# recipients the envelope does not have).
_OWN_HEADERS = frozenset(
    {
        "date",
        "from",
        "to",
        "cc",
        "bcc",
        "reply-to",
        "subject",
        "message-id",
        "mime-version",
        "content-type",
        "content-transfer-encoding",
    }
)

_LAST_DATE: list[int | str] = [-1, ""]
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

_TEXT_PART = b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: "
_HTML_PART = b"Content-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: "


class MessageBuildError(ValueError):
    """The message cannot be written as given; retrying the same input cannot help.

    `reason` is a stable code: invalid_address, invalid_header, invalid_message_id, empty_body,
    and from the SMTP adapter dkim_error.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def build_message(
    *,
    message_id: str,
    from_address: str,
    from_name: str | None,
    to: str,
    reply_to: str | None,
    subject: str,
    html: str | None,
    text: str | None,
    headers: Mapping[str, str] | None = None,
    domain: str | None = None,
    date: datetime | None = None,
) -> bytes:
    """The message as it goes after SMTP's DATA: CRLF line endings, every line within 998 octets.

    multipart/alternative (text/plain, then text/html) when there is HTML, with the plain text
    derived from the HTML when `text` is empty; a single text/plain part when there is no HTML.
    The Message-ID is `<message_id@domain>`, the domain defaulting to the sender's.
    Raises MessageBuildError when an address, a header or the id cannot be written safely.
    """
    sender = _address(from_address, "from address")
    recipient = _address(to, "recipient address")
    if len(message_id) > 200 or not _DOT_ATOM.fullmatch(message_id):
        raise MessageBuildError(
            "invalid_message_id", f"{message_id!r} cannot be the left part of a Message-ID"
        )
    id_domain = sender.rpartition("@")[2] if domain is None else _domain(domain, "domain")

    parts = [
        f"Date: {_format_date(date)}\r\n",
        _mailbox_header("From", from_name, sender),
        f"To: {recipient}\r\n",
    ]
    if reply_to:
        parts.append(f"Reply-To: {_address(reply_to, 'reply-to address')}\r\n")
    parts.append(_subject_header(subject))
    parts.append(f"Message-ID: <{message_id}@{id_domain}>\r\nMIME-Version: 1.0\r\n")
    if headers:
        for name, value in headers.items():
            parts.append(_extra_header(name, value))

    if not html:
        if not text:
            raise MessageBuildError("empty_body", "the message has neither HTML nor text")
        encoding, body = _encode_body(text, None)
        return b"".join(("".join(parts).encode("ascii"), _TEXT_PART, encoding, b"\r\n\r\n", body))

    if not text:
        text = html_to_text(html)
    # Quoted-printable never writes "=_" (its "=" is followed by hex digits or a line break) and
    # base64 never writes "_"; a 7bit body that holds the boundary is quoted-printable instead.
    boundary = b"=_tidings_%s_%x" % (_BOUNDARY_PREFIX, next(_BOUNDARY_COUNTER))
    text_encoding, text_body = _encode_body(text, boundary)
    html_encoding, html_body = _encode_body(html, boundary)
    parts.append(
        f'Content-Type: multipart/alternative;\r\n boundary="{boundary.decode("ascii")}"\r\n\r\n'
    )
    return b"".join(
        (
            "".join(parts).encode("ascii"),
            b"--" + boundary + b"\r\n",
            _TEXT_PART + text_encoding + b"\r\n\r\n",
            text_body,
            b"\r\n--" + boundary + b"\r\n",
            _HTML_PART + html_encoding + b"\r\n\r\n",
            html_body,
            b"\r\n--" + boundary + b"--\r\n",
        )
    )


def envelope(*, from_address: str, to: str) -> tuple[str, list[str]]:
    """The SMTP envelope (MAIL FROM, RCPT TO list) matching build_message's headers."""
    return _address(from_address, "from address"), [_address(to, "recipient address")]


def html_to_text(html: str) -> str:
    """A readable plain-text version of an HTML body: tags dropped, entities decoded, links kept
    as "text (url)", paragraphs and line breaks kept, other whitespace collapsed."""
    extractor = _TextExtractor()
    extractor.feed(html)
    extractor.close()
    joined = _SPACES.sub(" ", "".join(extractor.out))
    joined = _BREAKS.sub(lambda m: "\n\n" if _PARAGRAPH in m.group() else "\n", joined)
    lines = [line.strip(" ") for line in joined.split("\n")]
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip("\n")


# --- headers -------------------------------------------------------------------------------


def _address(address: str, what: str) -> str:
    """The address as it can go into a header and an SMTP command: ASCII, IDNA domain."""
    if len(address) > 254:
        # RFC 5321's limit on a path; it also keeps every header line short enough.
        raise MessageBuildError("invalid_address", f"the {what} is longer than 254 characters")
    if _SIMPLE_ADDRESS.fullmatch(address):
        return address
    local, at, domain = address.rpartition("@")
    if not at or not local or not _DOT_ATOM.fullmatch(local):
        if local and not local.isascii() and at:
            raise MessageBuildError(
                "invalid_address",
                f"the {what} {address!r} has a non-ASCII local part, which needs SMTPUTF8",
            )
        raise MessageBuildError("invalid_address", f"the {what} {address!r} is not usable")
    return f"{local}@{_domain(domain, what)}"


def _domain(domain: str, what: str) -> str:
    if not domain.isascii():
        try:
            domain = domain.encode("idna").decode("ascii")
        except UnicodeError:
            raise MessageBuildError(
                "invalid_address", f"the domain of the {what} is not a valid domain name"
            ) from None
    if not _ASCII_DOMAIN.fullmatch(domain):
        raise MessageBuildError("invalid_address", f"the domain of the {what} is not usable")
    return domain


def _format_date(moment: datetime | None) -> str:
    if moment is None:
        # Messages built in the same second share the formatted date.
        second = int(time.time())
        if _LAST_DATE[0] != second:
            _LAST_DATE[:] = [second, _format_date(datetime.fromtimestamp(second, UTC))]
        return str(_LAST_DATE[1])
    else:
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        t = moment.astimezone(UTC).timetuple()
    return (
        f"{_DAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon - 1]} {t.tm_year:04d} "
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} +0000"
    )


def _mailbox_header(name: str, display: str | None, address: str) -> str:
    display = display.strip(" ") if display else ""
    if not display:
        return f"{name}: {address}\r\n"
    if _CONTROL.search(display):
        raise MessageBuildError(
            "invalid_header", f"the {name} name contains a line break or control character"
        )
    # Python's parser (and others) decode "=?...?=" even inside a quoted string: such names are
    # encoded so that they read back literally.
    if display.isascii() and "=?" not in display:
        if _PLAIN_PHRASE.fullmatch(display):
            phrase = display
        else:
            phrase = '"' + display.replace("\\", "\\\\").replace('"', '\\"') + '"'
        line = f"{name}: {phrase} <{address}>"
        if len(line) <= _SOFT_LIMIT:
            return line + "\r\n"
        if len(line) <= _HARD_LIMIT:
            return f"{name}: {phrase}\r\n <{address}>\r\n"
    words = "\r\n ".join(_encoded_words(display))
    return f"{name}: {words}\r\n <{address}>\r\n"


def _subject_header(subject: str) -> str:
    subject = _SUBJECT_BREAKS.sub(" ", subject).strip(" ")
    if not subject:
        return "Subject:\r\n"
    if subject.isascii() and "=?" not in subject:
        folded = _fold("Subject", subject)
        if folded is not None:
            return folded
    return "Subject: " + "\r\n ".join(_encoded_words(subject)) + "\r\n"


def _extra_header(name: str, value: str) -> str:
    if not _HEADER_NAME.fullmatch(name):
        raise MessageBuildError("invalid_header", f"{name!r} is not a valid header name")
    if name.lower() in _OWN_HEADERS:
        raise MessageBuildError("invalid_header", f"the {name} header is written by Tidings")
    if _HEADER_VALUE_FORBIDDEN.search(value):
        raise MessageBuildError(
            "invalid_header", f"the value of {name} contains a line break or control character"
        )
    value = value.strip(" \t")
    if not value.isascii():
        # Only unstructured values can carry encoded-words; non-ASCII is meaningless elsewhere.
        return f"{name}: " + "\r\n ".join(_encoded_words(value)) + "\r\n"
    folded = _fold(name, value)
    if folded is None:
        raise MessageBuildError(
            "invalid_header", f"the value of {name} has a word too long for a header line"
        )
    return folded


def _fold(name: str, value: str) -> str | None:
    """`name: value` folded before whitespace into lines of at most 78 characters where the words
    allow; None when a single word would not fit even in a 998-character line."""
    line = f"{name}: {value}"
    if len(line) <= _SOFT_LIMIT:
        return line + "\r\n"
    lines: list[str] = []
    current = f"{name}:"
    filled = False
    for token in _FOLD_TOKENS.findall(value):
        if not filled:
            current += " " + token
            filled = True
        elif len(current) + len(token) > _SOFT_LIMIT:
            # The token starts with its whitespace, so the new line is a valid continuation.
            lines.append(current)
            current = token
        else:
            current += token
        if len(current) > _HARD_LIMIT:
            return None
    lines.append(current)
    return "\r\n".join(lines) + "\r\n"


def _encoded_words(text: str) -> list[str]:
    """RFC 2047 "B" encoded-words, each holding whole UTF-8 characters."""
    data = _utf8(text)
    words = []
    start, size = 0, len(data)
    while start < size:
        end = min(start + _WORD_BYTES, size)
        while end < size and data[end] & 0xC0 == 0x80:
            end -= 1
        chunk = b2a_base64(data[start:end], newline=False).decode("ascii")
        words.append(f"=?utf-8?b?{chunk}?=")
        start = end
    return words


# --- bodies --------------------------------------------------------------------------------


def _utf8(text: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        # Lone surrogates (JSON can carry "\ud800") have no UTF-8 form.
        return text.encode("utf-8", "replace")


def _encode_body(text: str, boundary: bytes | None) -> tuple[bytes, bytes]:
    """(Content-Transfer-Encoding, encoded body) for a UTF-8 text part.

    ASCII text whose lines fit in 998 octets goes as it is, 7bit: encoding it costs more than
    writing the rest of the message. `boundary` is the multipart boundary that follows the
    body (the line break before it belongs to the boundary, so the body need not end with
    one); None for a single part, which ends the message and so must end with a line break.
    Otherwise quoted-printable keeps mostly-ASCII text readable and small; once more than one
    byte in six is non-ASCII, base64 is the smaller of the two (QP spends 3 bytes per such
    byte, base64 4/3 per byte). Those two end with a line break (a soft one for QP, which adds
    nothing to the text).
    """
    data = _utf8(text)
    if b"\r" in data:
        data = _LINE_BREAKS.sub(b"\r\n", data)
    elif b"\n" in data:
        data = data.replace(b"\n", b"\r\n")
    if data.isascii():
        if (
            b"\0" not in data
            and (boundary is not None or data.endswith(b"\r\n"))
            and _lines_fit(data)
            and (boundary is None or boundary not in data)
        ):
            return b"7bit", data
        high = 0
    else:
        high = len(data) - len(data.translate(None, _HIGH_BYTES))
    if high * 6 > len(data):
        encoded = b2a_base64(data, newline=False)
        lines = [encoded[i : i + 76] for i in range(0, len(encoded), 76)]
        lines.append(b"")
        return b"base64", b"\r\n".join(lines)
    encoded = b2a_qp(data, istext=True)
    if b"\n" not in data:
        # b2a_qp ends lines the way the input's first line ends, or with a bare LF when the input
        # has no line break at all: then every break it wrote is a soft one.
        encoded = encoded.replace(b"=\n", b"=\r\n")
    if not encoded.endswith(b"\r\n"):
        last_line = len(encoded) - encoded.rfind(b"\n") - 1
        if last_line >= 76:
            # Room for the soft break below without going over QP's 76 characters a line.
            cut = len(encoded) - (3 if encoded[-3:-2] == b"=" else 1)
            encoded = encoded[:cut] + b"=\r\n" + encoded[cut:]
        # A soft line break: the message ends with CRLF without adding one to the text.
        encoded += b"=\r\n"
    return b"quoted-printable", encoded


def _lines_fit(data: bytes) -> bool:
    """Whether every line of `data` (CRLF line breaks) is within 998 octets.

    Jumps to the last line break within reach of each line's start rather than splitting:
    a few searches for a body of a few kilobytes instead of one object per line.
    """
    start, size = 0, len(data)
    while size - start > _HARD_LIMIT:
        # A break that starts within 998 octets of `start` ends the line that starts there.
        end = data.rfind(b"\r\n", start, start + _HARD_LIMIT + 2)
        if end < 0:
            return False
        start = end + 2
    return True


# --- HTML to text --------------------------------------------------------------------------

# Block elements leave markers that merge with their neighbours, so that "</tr><tr>" is one line
# break and "</p><p>" one blank line; <br> is a literal line break and adds up.
_LINE = "\x00"
_PARAGRAPH = "\x01"
_BREAKS = re.compile(r"[ \x00\x01]*[\x00\x01][ \x00\x01]*")
_SPACES = re.compile(r"[^\S\n\x00\x01]+")
_COLLAPSE = re.compile(r"\s+")
_BLANK_LINES = re.compile(r"\n{3,}")
_SKIPPED = frozenset({"script", "style", "title", "template", "noscript"})
_PARAGRAPHS = frozenset(
    {"p", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "table", "ul", "ol", "dl", "pre"}
)
_LINES = frozenset(
    {
        "div",
        "tr",
        "section",
        "article",
        "header",
        "footer",
        "main",
        "nav",
        "aside",
        "address",
        "dt",
        "dd",
        "hr",
        "center",
        "form",
        "figure",
        "figcaption",
    }
)


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self._skipping = 0
        self._links: list[tuple[str, int]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIPPED:
            self._skipping += 1
        elif self._skipping:
            return
        elif tag == "br":
            self.out.append("\n")
        elif tag in _PARAGRAPHS:
            self.out.append(_PARAGRAPH)
        elif tag == "li":
            self.out.append(_LINE + "- ")
        elif tag in _LINES:
            self.out.append(_LINE)
        elif tag == "a":
            href = next((value for name, value in attrs if name == "href" and value), "")
            self._links.append((href.strip(), len(self.out)))
        elif tag == "img":
            alt = next((value for name, value in attrs if name == "alt" and value), "")
            if alt:
                self.out.append(" " + _COLLAPSE.sub(" ", alt).strip() + " ")

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIPPED:
            self._skipping = max(0, self._skipping - 1)
        elif self._skipping:
            return
        elif tag in _PARAGRAPHS:
            self.out.append(_PARAGRAPH)
        elif tag in _LINES:
            self.out.append(_LINE)
        elif tag in ("td", "th"):
            self.out.append(" ")
        elif tag == "a" and self._links:
            href, start = self._links.pop()
            if not href or href.startswith(("#", "javascript:")):
                return
            label = "".join(self.out[start:]).replace(_LINE, " ").replace(_PARAGRAPH, " ")
            label = _COLLAPSE.sub(" ", label).strip()
            shown = href.removeprefix("mailto:")
            if not label:
                self.out.append(f" {shown} ")
            elif label not in (href, shown):
                self.out.append(f" ({shown})")

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            if _LINE in data or _PARAGRAPH in data:
                data = data.replace(_LINE, "").replace(_PARAGRAPH, "")
            self.out.append(_COLLAPSE.sub(" ", data))
