"""How an SMS body is encoded on the air and how many segments it costs (pure functions).

A body that fits GSM 03.38's 7-bit alphabet (the basic set, plus its extension table whose
characters take an escape and so two septets) goes as GSM-7: 160 septets in one message, 153
per segment once it is split (the user data header takes the rest). Anything else goes as
UCS-2 (UTF-16 on today's networks): 70 code units alone, 67 per segment; a character beyond
the Basic Multilingual Plane (most emoji) is two units. Neither an escape pair nor a surrogate
pair is split across two segments, so segments are filled greedily as handsets do.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

# GSM 03.38 basic character set, in code order (0x1B, the escape to the extension, left out).
GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ"
    "ÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
# The extension table: each character is sent as ESC + code, two septets.
GSM7_EXTENSION = frozenset("^{}\\[~]|€\f")

GSM7_SINGLE = 160
GSM7_SEGMENT = 153
UCS2_SINGLE = 70
UCS2_SEGMENT = 67


class SmsEncoding(StrEnum):
    GSM7 = "gsm7"
    UCS2 = "ucs2"


@dataclass(frozen=True, slots=True)
class SmsLength:
    encoding: SmsEncoding
    # Septets (GSM-7) or UTF-16 code units (UCS-2) of the whole body.
    units: int
    segments: int


def _fill(sizes: list[int], single: int, per_segment: int) -> int:
    """Segments needed for characters of the given sizes, none split across two."""
    total = sum(sizes)
    if total <= single:
        return 1
    segments, used = 1, 0
    for size in sizes:
        if used + size > per_segment:
            segments += 1
            used = 0
        used += size
    return segments


def measure(body: str) -> SmsLength:
    """The encoding a body needs, its length in that encoding, and its segment count (an
    empty body is still one message)."""
    if all(char in GSM7_BASIC or char in GSM7_EXTENSION for char in body):
        sizes = [2 if char in GSM7_EXTENSION else 1 for char in body]
        return SmsLength(SmsEncoding.GSM7, sum(sizes), _fill(sizes, GSM7_SINGLE, GSM7_SEGMENT))
    sizes = [2 if ord(char) > 0xFFFF else 1 for char in body]
    return SmsLength(SmsEncoding.UCS2, sum(sizes), _fill(sizes, UCS2_SINGLE, UCS2_SEGMENT))
