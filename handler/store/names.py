"""Model names are identifiers, never paths.

A name reaches the file system only after it passed `is_valid_model_name`, so `../x`, `/etc/passwd`,
NUL bytes or 10 KB strings are refused before any path is built from them.
"""

from __future__ import annotations

import re

MAX_NAME_LENGTH = 128
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:+@-]*")
# These would be shadowed by the static routes /v1/models/chat and /v1/models/embeddings.
RESERVED_NAMES = frozenset({"chat", "embeddings"})


def is_valid_model_name(name: str) -> bool:
    return (
        0 < len(name) <= MAX_NAME_LENGTH
        and _NAME.fullmatch(name) is not None
        and ".." not in name
        and name not in RESERVED_NAMES
    )
