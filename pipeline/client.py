"""Fetch the served policy: conditional GET (ETag), an on-disk cache, offline fallback.

    from pipeline.client import fetch_policy
    policy = fetch_policy("http://localhost:8000")        # the service's base URL
    transform = ImageTransform(policy)                    # a per-image torchvision transform

Each call asks the service with ``If-None-Match`` (the ETag of the cached copy): an unchanged
policy costs a 304 and no body, a new one replaces the cache. When the service cannot be
reached (or answers 5xx), the cached copy is used with a ``StalePolicyWarning``; with no cached
copy the call fails with ``PolicyFetchError`` (one line). Only the standard library is used.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import urllib.error
import urllib.parse
import urllib.request
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pipeline.augment import Policy, PolicyError
from pipeline.errors import AutoaugError, first_line
from pipeline.files import write_text_atomic
from pipeline.hashing import digest

Source = Literal["downloaded", "not-modified", "offline-cache"]


class PolicyFetchError(AutoaugError):
    """The policy could not be fetched and there is no cached copy to fall back on."""


class StalePolicyWarning(UserWarning):
    """The service could not be reached; a cached (possibly outdated) policy is used."""


@dataclass(frozen=True)
class ServedPolicy:
    """A fetched policy with what the service said about it."""

    policy: Policy
    version: int
    etag: str | None
    fingerprint: str | None
    mlflow_run_id: str | None
    published_at: str | None
    source: Source
    """downloaded (200), not-modified (304: the cache was current) or offline-cache."""


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/autoaug/policies`` (``~/.cache/autoaug/policies``)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "autoaug" / "policies"


def policy_url(url: str) -> str:
    """The service's base URL -> its ``/policy`` endpoint, also under a path prefix (a reverse
    proxy's ``https://host/autoaug/``); an endpoint URL (``.../policy``, ``.../policies/3`` for a
    fixed version) is used as given."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise PolicyFetchError(f"{url!r} is not an http(s) URL of the autoaug service")
    path = parts.path.rstrip("/")
    if path.endswith("/policy") or re.search(r"/policies/\d+$", path):
        return url
    return urllib.parse.urlunsplit(parts._replace(path=path + "/policy"))


def _cache_file(cache_dir: Path, url: str) -> Path:
    return cache_dir / f"{digest(url)}.json"


def _read_cache(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # no cache, or a damaged one: behave as if there were none
    return data if isinstance(data, dict) and isinstance(data.get("body"), dict) else None


def _served(body: dict[str, Any], etag: str | None, source: Source, url: str) -> ServedPolicy:
    try:
        document = body["policy"]
        policy = Policy.from_dict(document)
        version = int(body["version"])
    except (KeyError, TypeError, ValueError, PolicyError) as exc:
        raise PolicyFetchError(f"{url}: not an autoaug policy response ({first_line(exc)})") from exc
    fingerprint, run_id, published_at = (
        _optional_str(body.get(key)) for key in ("fingerprint", "mlflow_run_id", "published_at")
    )
    served = {"url": url, "version": version, "fingerprint": fingerprint, "mlflow_run_id": run_id,
              "published_at": published_at}
    policy = Policy(policy.sub_policies, metadata={**policy.metadata, "served": served})
    return ServedPolicy(policy, version, etag, fingerprint, run_id, published_at, source)


def _optional_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _offline(cached: dict[str, Any] | None, url: str, reason: str, cache: Path) -> ServedPolicy:
    if cached is None:
        raise PolicyFetchError(f"cannot fetch the policy from {url} ({reason}) and nothing is cached in {cache.parent}")
    served = _served(cached["body"], cached.get("etag"), "offline-cache", url)
    warnings.warn(
        f"cannot reach {url} ({reason}); using the cached policy version {served.version} "
        f"fetched {cached.get('fetched_at', 'earlier')}",
        StalePolicyWarning,
        stacklevel=3,
    )
    return served


def fetch_served_policy(
    url: str, cache_dir: str | os.PathLike[str] | None = None, timeout: float = 10.0
) -> ServedPolicy:
    """Fetch the policy served at ``url`` (the service's base URL or a policy endpoint) with
    its version and provenance; see the module docstring for caching and offline use."""
    from datetime import UTC, datetime

    endpoint = policy_url(url)
    cache = _cache_file(Path(cache_dir) if cache_dir is not None else default_cache_dir(), endpoint)
    cached = _read_cache(cache)
    headers = {"Accept": "application/json", "User-Agent": "autoaug-client"}
    if cached is not None and cached.get("etag"):
        headers["If-None-Match"] = str(cached["etag"])
    request = urllib.request.Request(endpoint, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read()
            etag = response.headers.get("ETag")
    except urllib.error.HTTPError as exc:
        if exc.code == 304 and cached is not None:
            return _served(cached["body"], cached.get("etag"), "not-modified", endpoint)
        detail = _error_detail(exc)
        if exc.code >= 500:  # service up but unable (e.g. 503 nothing published): use the cache
            return _offline(cached, endpoint, f"HTTP {exc.code}: {detail}", cache)
        raise PolicyFetchError(f"{endpoint}: HTTP {exc.code}: {detail}") from None
    except (OSError, http.client.HTTPException) as exc:  # URLError, refused, reset, timeout, ...
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        text = first_line(reason) if isinstance(reason, BaseException) else str(reason)
        return _offline(cached, endpoint, text, cache)
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise PolicyFetchError(f"{endpoint}: the answer is not JSON ({first_line(exc)})") from None
    served = _served(body, etag, "downloaded", endpoint)  # validate before caching
    cache.parent.mkdir(parents=True, exist_ok=True)
    record = {"url": endpoint, "etag": etag, "fetched_at": datetime.now(UTC).isoformat(timespec="seconds"),
              "body": body}
    write_text_atomic(cache, json.dumps(record, indent=2))
    return served


def _error_detail(exc: urllib.error.HTTPError) -> str:
    try:
        text = str(json.loads(exc.read())["detail"])
        return text.splitlines()[0] if text.strip() else str(exc.reason)
    except (ValueError, KeyError, TypeError, OSError, IndexError):
        return str(exc.reason)


def fetch_policy(url: str, cache_dir: str | os.PathLike[str] | None = None, timeout: float = 10.0) -> Policy:
    """The policy served at ``url`` (e.g. ``http://localhost:8000``), ready for
    ``ImageTransform(policy)`` or a batch. Cached in ``cache_dir`` (default
    ``~/.cache/autoaug/policies``); offline, the cached copy is used with a StalePolicyWarning.
    ``policy.metadata["served"]`` records the version, data fingerprint and MLflow run id."""
    return fetch_served_policy(url, cache_dir=cache_dir, timeout=timeout).policy


__all__ = [
    "PolicyFetchError",
    "ServedPolicy",
    "StalePolicyWarning",
    "default_cache_dir",
    "fetch_policy",
    "fetch_served_policy",
    "policy_url",
]
