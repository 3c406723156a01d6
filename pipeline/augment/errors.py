"""The one exception type for malformed policies."""

from __future__ import annotations


class PolicyError(ValueError):
    """A policy (JSON, dict, archive or Python objects) is malformed.

    The message names where the problem is, e.g.
    ``sub-policy 3, op 2: probability 1.4 is outside [0, 1]`` (indices are 0-based, as in
    the JSON arrays), so a person can fix the file without reading a traceback.
    """
