"""OpenAI message content → the plain text chat templates expect."""

from __future__ import annotations

from typing import Any


class UnsupportedContent(ValueError):
    """A content part this text-only server cannot use (image_url, input_audio, …)."""

    def __init__(self, part_type: str) -> None:
        super().__init__(f"content parts of type {part_type!r} are not supported; only 'text' parts are")
        self.part_type = part_type


def content_text(content: Any) -> str:
    """Flatten `content` (string, list of text parts, or None) to one string; text parts join with newlines."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    texts: list[str] = []
    for part in content:
        part_type = part.get("type") if isinstance(part, dict) else type(part).__name__
        if part_type != "text" or not isinstance(part.get("text"), str):
            raise UnsupportedContent(str(part_type))
        texts.append(part["text"])
    return "\n".join(texts)
