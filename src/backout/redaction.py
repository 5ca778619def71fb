"""Redaction: the one function every output passes secrets through.

For every layer that prints, logs or records something a person may read: the audit log's
events, ``--json`` and table output, reports, error messages and log lines. Secrets that
reach backout are mostly URLs — a Slack-compatible webhook's path is its secret, a store
URL may carry a password, an object-storage or Prometheus URL a token in its query — and a
few named values (``password``, ``token``, ...) in structured data.

:func:`redact` walks strings, mappings and sequences and returns a redacted copy:

* in any text, every URL loses its password (``user:***@``), the values of query
  parameters that carry credentials (``token``, ``key``, ``sig``, ...), and — for an HTTP(S)
  URL that is a webhook (``hook`` in its host or path) or whose path holds a token-like
  segment (long, mixed case and digits) — its path (``/…``);
* in a mapping, a value under a webhook key (``webhook``, ``webhooks``, ``*_webhook``) is
  reduced to scheme and host whatever its path, and a value under a secret key
  (``password``, ``token``, ``secret``, ``api_key``, ``authorization``, ...) becomes ``***``.

Redacting is idempotent, so a value may pass through it at every layer it crosses.
:func:`install_log_redaction` makes every log record of the process go through it too.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

__all__ = ["MASK", "install_log_redaction", "redact", "redact_text", "redact_url"]

MASK = "***"
ELIDED = "/…"

# A URL in running text: a scheme, "://", then anything up to white space or a quote.
_URL = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^\s'\"<>`]+")
# Query parameters whose values are credentials (S3/GCS presigned URLs, API tokens).
_SECRET_PARAM = re.compile(
    r"(?i)^(x-amz-(signature|credential|security-token)|x-goog-(signature|credential)|"
    r"sig|signature|token|access_token|id_token|refresh_token|auth|apikey|api_key|key|"
    r"secret|client_secret|password|passwd|pwd|code)$"
)
# Keys of structured data whose values are secrets.
_SECRET_KEY = re.compile(
    r"(?i)^(.*[_\-])?(password|passwd|secret|token|api_?key|authorization|credentials?|"
    r"private_key|access_key)$"
)
_WEBHOOK_KEY = re.compile(r"(?i)^(.*[_\-])?(webhook|webhooks|hook|hooks|webhook_url)$")
# A path segment that looks like a secret token rather than a word or a hash: long, mixing
# upper and lower case with digits (Slack's and Discord's webhook tokens, API keys). Commit
# hashes and run ids (lowercase hex) stay, so lineage and MLflow links remain readable.
_TOKENISH = re.compile(r"^(?=.*[0-9])(?=.*[a-z])(?=.*[A-Z])[A-Za-z0-9_\-]{16,}$")
# Hosts and paths that are webhooks whatever their tokens look like.
_HOOKISH = re.compile(r"(?i)hook")


def redact_url(url: str, *, keep_path: bool = True) -> str:
    """``url`` fit to show: no password, no credential query values, no secret path.

    With ``keep_path=False`` (a webhook, whose path is its secret) only the scheme, host
    and port remain. A URL with nothing secret in it comes back unchanged; text that does
    not parse as a URL comes back with its scheme only.
    """
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError for a port that is not a number)
    except ValueError:
        return url.split("://", 1)[0] + "://…"
    netloc = parts.netloc
    if parts.password is not None:
        host = netloc.rsplit("@", 1)[1]
        netloc = f"{quote(parts.username or '', safe='')}:{MASK}@{host}"
    elif parts.username is not None and _TOKENISH.match(parts.username):
        netloc = f"{MASK}@{netloc.rsplit('@', 1)[1]}"  # a token used as the user name
    path, query = parts.path, parts.query
    web = parts.scheme.lower() in ("http", "https")
    secret_path = web and (
        any(_TOKENISH.match(seg) for seg in path.split("/"))
        or (_HOOKISH.search(netloc + path) is not None and path not in ("", "/"))
    )
    if (not keep_path and (path not in ("", "/") or query)) or secret_path:
        path, query = ELIDED, ""
    elif query:
        query = "&".join(
            f"{k}={MASK}" if _SECRET_PARAM.match(unquote(k)) else f"{k}={v}" if sep else k
            for k, sep, v in (pair.partition("=") for pair in query.split("&"))
        )
    if (netloc, path, query) == (parts.netloc, parts.path, parts.query) and not parts.fragment:
        return url
    # A fragment is dropped: it never reaches a server and may hold a token.
    return urlunsplit((parts.scheme, netloc, path, query, ""))


# A control-API token (``bko_<id>_<secret>``): its id may be shown, its secret never.
_API_TOKEN = re.compile(r"\b(bko_[0-9a-f]{8}_)[A-Za-z0-9_\-]+")


def redact_text(text: str) -> str:
    """``text`` with every URL in it passed through :func:`redact_url`, and the secret of
    every control-API token masked."""
    if "bko_" in text:
        text = _API_TOKEN.sub(lambda m: m.group(1) + MASK, text)
    if "://" not in text:  # the common case, and cheap
        return text
    return _URL.sub(lambda m: _redact_match(m.group(0)), text)


def _redact_match(url: str) -> str:
    # Trailing punctuation belongs to the sentence, not the URL.
    stripped = url.rstrip(".,;:)]}")
    return redact_url(stripped) + url[len(stripped) :]


def redact(value: Any, *, key: str = "") -> Any:
    """A redacted copy of ``value`` (text, mapping, sequence or scalar); see the module."""
    if isinstance(value, str):
        if key and _SECRET_KEY.match(key):
            return MASK if value else value
        if key and _WEBHOOK_KEY.match(key):
            return redact_url(value, keep_path=False) if "://" in value else MASK
        return redact_text(value)
    if isinstance(value, Mapping):
        return {k: redact(v, key=str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        items = [redact(v, key=key if _WEBHOOK_KEY.match(key) else "") for v in value]
        return items if isinstance(value, list) else tuple(items)
    return value


class _RedactingRecordFactory:
    """Wraps the log record factory so that every record's text is redacted once."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __call__(self, *args: Any, **kwargs: Any) -> logging.LogRecord:
        record: logging.LogRecord = self.inner(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a malformed call: leave it for logging to report as it does
            return record
        record.msg, record.args = redact_text(message), None
        if record.exc_info and not record.exc_text:
            # Formatters use exc_text when it is set, so the traceback is redacted as well.
            record.exc_text = redact_text(logging.Formatter().formatException(record.exc_info))
        return record


def install_log_redaction() -> None:
    """Redact every log record this process writes from now on (idempotent)."""
    factory = logging.getLogRecordFactory()
    if not isinstance(factory, _RedactingRecordFactory):
        logging.setLogRecordFactory(_RedactingRecordFactory(factory))
