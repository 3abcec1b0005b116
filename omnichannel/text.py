"""Text policies for channels: plain text instead of markdown, long messages split on words."""

from __future__ import annotations

import re

__all__ = ["numbered_list", "plain_text", "split_text"]

_MARKUP = re.compile(r"[*_\[`#~]")  # a text without one of these has no markdown to strip
_LINK = re.compile(r"!?\[([^\]]*)\]\(([^)\s]+)\)")
_EMPHASIS = re.compile(r"(\*\*|__)(?=\S)(.+?)(?<=\S)\1|(?<![\w*])\*(?=\S)([^*\n]+?)(?<=\S)\*(?!\w)")
_CODE_FENCE = re.compile(r"^```[^\n]*\n?|^```$", re.MULTILINE)
_INLINE_CODE = re.compile(r"`([^`\n]+)`")
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+", re.MULTILINE)
_STRIKE = re.compile(r"~~(?=\S)(.+?)(?<=\S)~~")


def plain_text(text: str) -> str:
    """Turn common markdown into the plain text a channel without markup should show.

    ``**bold**`` → ``bold``, ``[label](url)`` → ``label (url)``, headings and code fences lose
    their markers. Text without markdown is returned unchanged.
    """
    if _MARKUP.search(text) is None:
        return text
    text = _CODE_FENCE.sub("", text)
    text = _LINK.sub(lambda m: f"{m[1]} ({m[2]})" if m[1] and m[1] != m[2] else m[2], text)
    text = _EMPHASIS.sub(lambda m: m[2] if m[2] is not None else m[3], text)
    text = _STRIKE.sub(r"\1", text)
    text = _INLINE_CODE.sub(r"\1", text)
    return _HEADING.sub("", text)


def split_text(text: str, limit: int) -> list[str]:
    """Split ``text`` into parts of at most ``limit`` characters, on word boundaries.

    Paragraph and line breaks are preferred over spaces; a single word longer than ``limit`` is
    cut. Whitespace at the cut is dropped; nothing else is lost or reordered.
    """
    if limit <= 0:
        raise ValueError("limit must be positive")
    parts: list[str] = []
    rest = text
    while len(rest) > limit:
        window = rest[: limit + 1]
        cut = -1
        for sep in ("\n\n", "\n", " "):
            cut = window.rfind(sep)
            if cut > 0:
                break
        if cut <= 0:
            parts.append(rest[:limit])
            rest = rest[limit:]
            continue
        head = rest[:cut].rstrip()
        if head:
            parts.append(head)
        rest = rest[cut:].lstrip()
    if rest or not parts:
        parts.append(rest)
    return parts


def numbered_list(title: str | None, labels: list[str]) -> str:
    """Render button labels as a numbered text list (for channels without buttons)."""
    lines = [title] if title else []
    lines.extend(f"{i}. {label}" for i, label in enumerate(labels, 1))
    return "\n".join(lines)
