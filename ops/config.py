"""Building the one Settings object from PATCHLOG_* variables and CLI flags."""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Mapping
from typing import Any

import msgspec

from patchlog.streams.limits import Limits
from patchlog.streams.settings import Settings

__all__ = [
    "ENV_PREFIX",
    "env_help",
    "load_settings",
    "redact",
    "redis_url_source",
    "settings_env",
]

ENV_PREFIX = "PATCHLOG_"
_LIMIT_FIELDS = {f.name for f in msgspec.structs.fields(Limits)}


def env_help() -> list[tuple[str, str]]:
    """(variable, default) for every setting, for the README and ``--help``."""
    defaults = Settings()
    out = [
        (ENV_PREFIX + f.name.upper(), str(getattr(defaults, f.name)))
        for f in msgspec.structs.fields(Settings)
        if f.name != "limits"
    ]
    out += [
        (ENV_PREFIX + name.upper(), str(getattr(defaults.limits, name)))
        for name in sorted(_LIMIT_FIELDS)
    ]
    return out


def load_settings(
    env: Mapping[str, str] | None = None, overrides: Mapping[str, Any] | None = None
) -> Settings:
    """Settings from ``env`` (default ``os.environ``), then ``overrides`` (CLI flags;
    ``None`` values ignored). ``PATCHLOG_REDIS_URL`` falls back to ``REDIS_URL``.

    Raises ``ValueError`` naming the variable and the expected type.
    """
    env = os.environ if env is None else env
    raw: dict[str, Any] = {}
    limits: dict[str, Any] = {}
    for f in msgspec.structs.fields(Settings):
        value = env.get(ENV_PREFIX + f.name.upper())
        if value is not None and f.name != "limits":
            raw[f.name] = value
    for name in _LIMIT_FIELDS:
        value = env.get(ENV_PREFIX + name.upper())
        if value is not None:
            limits[name] = value
    if "redis_url" not in raw and env.get("REDIS_URL"):
        raw["redis_url"] = env["REDIS_URL"]
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        (limits if key in _LIMIT_FIELDS else raw)[key] = value
    try:
        if limits:
            raw["limits"] = msgspec.convert(limits, Limits, strict=False)
        return msgspec.convert(raw, Settings, strict=False)
    except msgspec.ValidationError as err:
        path = str(err).rsplit("`$.", 1)[-1].rstrip("`")
        raise ValueError(f"{ENV_PREFIX}{path.upper()}: {err}") from None


def redis_url_source(
    env: Mapping[str, str] | None = None, overrides: Mapping[str, Any] | None = None
) -> str | None:
    """Where ``load_settings`` took the server URL from, by the same precedence:
    ``--redis-url``, ``PATCHLOG_REDIS_URL`` or ``REDIS_URL``; ``None`` if from nowhere
    (the embedded server)."""
    env = os.environ if env is None else env
    if (overrides or {}).get("redis_url") is not None:
        return "--redis-url"
    if env.get(ENV_PREFIX + "REDIS_URL") is not None:
        return ENV_PREFIX + "REDIS_URL"
    if env.get("REDIS_URL"):
        return "REDIS_URL"
    return None


def redact(url: str) -> str:
    """``url`` with its password replaced by ``***``, for messages and logs."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rsplit("@", 1)[1]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def settings_env(settings: Settings) -> dict[str, str]:
    """``PATCHLOG_*`` variables that make ``load_settings`` rebuild ``settings`` exactly:
    how ``patchlog up`` hands its whole effective configuration (flags included) to the
    worker processes it starts."""
    values: dict[str, Any] = msgspec.to_builtins(settings)
    limits: dict[str, Any] = values.pop("limits")
    return {
        ENV_PREFIX + name.upper(): str(value)
        for name, value in {**values, **limits}.items()
        if value is not None
    }
