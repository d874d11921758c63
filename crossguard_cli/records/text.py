"""What a prompt's text means to the model: normalisation, and when a prompt is blank.

Both belong with the records (not the scorer) because whether a record is `empty` is decided
when it is read: a line of zero-width spaces is as empty as a blank line, and every front end
must agree on that before anything is scored.
"""

from __future__ import annotations

import unicodedata


def normalize_text(text: str) -> str:
    """NFKC-fold and drop format characters, so `b\\u200bomb` and full-width letters read as words.

    Zero-width spaces and joiners, soft hyphens, bidi controls and the BOM are Unicode format
    characters (category Cf): invisible to a reader, but they split a word into pieces the
    model has never seen. NFKC maps compatibility forms (full-width, ligatures) to plain ones.
    """
    if text.isascii():  # already in normal form, and no format characters: the common case, free
        return text
    folded = unicodedata.normalize("NFKC", text)
    if folded.isascii():
        return folded
    # Look up each distinct character once, not each character: a per-character loop in Python
    # cost more than tokenising the prompt.
    drop = {ord(ch): None for ch in set(folded) if not ch.isascii() and unicodedata.category(ch) == "Cf"}
    return folded.translate(drop) if drop else folded


def _visible(ch: str) -> bool:
    if ch.isspace():
        return False
    if ch.isascii():
        return ch.isprintable()  # control characters (NUL, ESC, DEL ...) are read as nothing
    return unicodedata.category(ch) not in ("Cf", "Cc") and bool(normalize_text(ch).strip())


def is_blank(text: str | None) -> bool:
    """True when nothing is left of `text` after normalisation but whitespace, format and control
    characters (which tokenizers drop: such a prompt would be scored as an empty premise).

    Looks at the first non-space character, then (only when that one is invisible) at each
    distinct character once, so a 2 MB prompt costs milliseconds here.
    """
    rest = (text or "").strip()
    if not rest:
        return True
    if _visible(rest[0]):
        return False
    return not any(_visible(ch) for ch in set(rest))


__all__ = ["is_blank", "normalize_text"]
