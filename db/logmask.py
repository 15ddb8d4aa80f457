"""A logging filter that masks anything that looks like an API key, installed on every handler we create."""
from __future__ import annotations

import logging
import os
import re

# OpenAlgo keys are 64 hex chars; also mask long opaque tokens and apikey=... / "api_key": "..." pairs.
_PATTERNS = [
    re.compile(r"(?i)(api[_-]?key[\"']?\s*[:=]\s*[\"']?)([^\s\"'&,}]+)"),
    re.compile(r"\b[0-9a-fA-F]{32,}\b"),
    re.compile(r"\bgAAAAA[0-9A-Za-z_\-=]{20,}"),  # Fernet tokens
]
_extra: set[str] = set()


def register_secret(value: str) -> None:
    """Mask this exact value too (e.g. a key of unusual shape entered by the user)."""
    if value and len(value) >= 6:
        _extra.add(value)


def redact(text: str) -> str:
    for s in _extra:
        if s in text:
            text = text.replace(s, "***")
    text = _PATTERNS[0].sub(lambda m: m.group(1) + "***", text)
    for p in _PATTERNS[1:]:
        text = p.sub("***", text)
    return text


class SecretMaskFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        red = redact(msg)
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if red != msg or record.args:
            record.msg, record.args = red, None
        return True


class PrivateFileHandler(logging.FileHandler):
    """A FileHandler whose file is created 0600, and tightened to 0600 when it exists with a looser mode: the log
    records orders, positions and account names. Every (re)open goes through ``_open`` (delay=True, a rotating
    subclass), so every file it writes gets the same mode."""

    def _open(self):
        fh = open(self.baseFilename, self.mode, encoding=self.encoding, errors=self.errors,
                  opener=lambda path, flags: os.open(path, flags, 0o600))
        if os.fstat(fh.fileno()).st_mode & 0o077:
            os.fchmod(fh.fileno(), 0o600)
        return fh


def install(level: int = logging.INFO, logfile: str | None = None) -> None:
    """Configure root logging with the mask filter on every handler (idempotent)."""
    root = logging.getLogger()
    root.setLevel(level)
    if not any(isinstance(f, SecretMaskFilter) for h in root.handlers for f in h.filters):
        handlers = [logging.StreamHandler()]
        if logfile:
            handlers.append(PrivateFileHandler(logfile))
        fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
        for h in handlers:
            h.setFormatter(fmt)
            h.addFilter(SecretMaskFilter())
            root.addHandler(h)
    for h in root.handlers:
        if not any(isinstance(f, SecretMaskFilter) for f in h.filters):
            h.addFilter(SecretMaskFilter())
