"""The project's one hash: blake2b, as hex, over bytes, text or a JSON-able value.

Content ids, sample fingerprints, study names and cache keys all come from here. The digest
size is part of each persisted identifier's format (a content id is 16 hex characters, a
search-space hash 8), so callers that persist a digest name its size; changing it renames
every stored object of that kind.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any


def digest(data: bytes | str, size: int = 8) -> str:
    """Hex blake2b of ``data`` (text is UTF-8 encoded), ``2 * size`` characters."""
    raw = data.encode() if isinstance(data, str) else data
    return hashlib.blake2b(raw, digest_size=size).hexdigest()


def canonical_json(value: Any) -> str:
    """``value`` as JSON with sorted keys and no spaces: equal values give equal text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def json_digest(value: Any, size: int = 8) -> str:
    """Hash of a JSON-serialisable description (a search space, a recipe, a cache key)."""
    return digest(canonical_json(value), size)


def int_digest(data: bytes | str, size: int = 8) -> int:
    """The digest as an unsigned integer (a rank that depends only on ``data``)."""
    return int(digest(data, size), 16)
