"""Options of business push, the offline push webhook and retention (issue 14),
for the plugins that store messages (``twistd goim`` and ``twistd goim-logic``)."""

from typing import Any
from urllib.parse import urlsplit

from twisted.python import usage

from goim.config import Setting, secret_file


def optional_secret_file(value: Any) -> bytes:
    """A secret read from a file (at least 16 characters), or ``b""`` when no file is named."""
    if value in (None, "", b""):
        return b""
    return secret_file(value)


def webhook_url(value: Any) -> str:
    """An ``http://`` or ``https://`` URL, or empty (no webhook)."""
    text = str(value or "").strip()
    if not text:
        return ""
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL")
    return text


def non_negative_days(value: Any) -> float:
    number = float(value)
    if not number >= 0:
        raise ValueError("must be 0 or more")
    return number


def positive_days(value: Any) -> float:
    number = float(value)
    if not number > 0:
        raise ValueError("must be positive")
    return number


#: the settings; each fills the config field of its name
CHAT_SETTINGS = [
    Setting("push-key-file", "", optional_secret_file, "file holding the API key of POST /push/messages (business push); none: push is off (API code 1101)", field="push_key"),
    Setting("webhook-url", "", webhook_url, "URL that gets a signed JSON POST for each stored message whose user has no online device; none: off"),
    Setting("webhook-secret-file", "", optional_secret_file, "file holding the HMAC-SHA256 key that signs webhook bodies (required with --webhook-url)", field="webhook_secret"),
    Setting("retention-days", 0.0, non_negative_days, "days stored messages are kept (then deleted by a periodic job); 0: forever"),
    Setting("dedupe-days", 30.0, positive_days, "days send dedupe records are kept (a retried send older than that could be stored again)"),
]


def check_chat_settings(options: Any) -> None:
    """Cross-checks of the settings above.

    Raises:
        usage.UsageError: a webhook URL without a secret.
    """
    if options["webhook-url"] and not options["webhook-secret-file"]:
        raise usage.UsageError("--webhook-url needs --webhook-secret-file (the HMAC key that signs each POST)")
