"""Finding where a JSON value that is still being generated ends, without re-reading it each time."""

from __future__ import annotations

_CLOSING = {"{": "}", "[": "]"}


class JsonStrings:
    """Tells, one character at a time, whether JSON text is inside a string literal."""

    def __init__(self) -> None:
        self._inside, self._escaped = False, False

    def structural(self, char: str) -> bool:
        """Take the next character; True if it is outside any string (and not a quote)."""
        if self._inside:
            if self._escaped:
                self._escaped = False
            elif char == "\\":
                self._escaped = True
            elif char == '"':
                self._inside = False
            return False
        if char == '"':
            self._inside = True
            return False
        return True


class JsonValueScan:
    """Scans text that starts with `{` or `[` for the end of that value, skipping JSON strings (whose
    text may hold brackets). Incremental: `end` may be called again as the text grows."""

    def __init__(self) -> None:
        self._position, self._stack, self._strings = 0, list[str](), JsonStrings()

    def end(self, text: str) -> int:
        """Index just past the value's closing bracket, or -1 while it is not closed yet."""
        while self._position < len(text):
            char = text[self._position]
            self._position += 1
            if not self._strings.structural(char):
                continue
            if char in _CLOSING:
                self._stack.append(_CLOSING[char])
            elif self._stack and char == self._stack[-1]:
                self._stack.pop()
                if not self._stack:
                    return self._position
        return -1
