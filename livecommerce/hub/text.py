"""Cleaning user text: comments and names are plain text, one line, no control characters."""

from __future__ import annotations

import re
import unicodedata

# Bidirectional overrides and isolates (U+202A..U+202E, U+2066..U+2069) can make a comment
# display as something else; zero-width joiner (U+200D) stays because emoji need it.
_BIDI_CONTROLS = dict.fromkeys([*range(0x202A, 0x202F), *range(0x2066, 0x206A)])
_WHITESPACE_RUN = re.compile(r"\s+")


def clean_text(raw: str) -> str:
    """NFC-normalise, drop control and bidi characters, fold whitespace runs to one space."""
    text = unicodedata.normalize("NFC", raw).translate(_BIDI_CONTROLS)
    text = "".join(
        " " if character in "\t\n\r" else character
        for character in text
        if character in "\t\n\r" or unicodedata.category(character) != "Cc"
    )
    return _WHITESPACE_RUN.sub(" ", text).strip()


def contains_keyword(text: str, keywords: tuple[str, ...]) -> bool:
    """Case-insensitive substring match; keywords are stored casefolded."""
    folded = text.casefold()
    return any(keyword in folded for keyword in keywords)
