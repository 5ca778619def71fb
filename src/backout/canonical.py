"""Canonical JSON: the one byte form that digests and the audit log's hash chain are taken of."""

from __future__ import annotations

from typing import Any

import orjson

from backout.errors import ValidationError


def canonical_json(value: Any) -> bytes:
    """Canonical JSON bytes: sorted keys, compact separators, UTF-8."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except TypeError as exc:  # orjson refuses integers beyond 64 bits and non-JSON types
        raise ValidationError(f"value cannot be stored as canonical JSON: {exc}") from exc
