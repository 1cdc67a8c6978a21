"""The server's secret key: TIDINGS_SECRET_KEY, or one generated once and kept in the data dir."""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
from pathlib import Path

from tidings.config import Settings

log = logging.getLogger("tidings.secret_key")

SECRET_KEY_FILE = "secret_key"
MIN_KEY_CHARS = 32


class SecretKeyError(RuntimeError):
    """The stored key cannot be used; an operator's problem to report at start."""


def key_path(settings: Settings) -> Path:
    return settings.data_dir / SECRET_KEY_FILE


def load_secret_key(settings: Settings) -> bytes:
    """The key that signs links: TIDINGS_SECRET_KEY when set, else the one in the data dir,
    generated (32 random bytes, base64url) by the first process that needs it.

    The file is written beside itself and linked into place, so a process starting at the same
    moment reads either no file or the whole key, never half of one; of two processes that
    generate one, the first link wins and the other reads it.
    """
    if settings.secret_key:
        return settings.secret_key.encode("utf-8")
    if not settings.resolved_database_url.startswith("sqlite"):
        # Workers and API processes on other machines would each generate their own key, and a
        # link minted by one would not open on another.
        log.warning(
            "TIDINGS_SECRET_KEY is unset: using a key kept in %s; set the same "
            "TIDINGS_SECRET_KEY on every process that shares this database",
            key_path(settings),
        )
    path = key_path(settings)
    stored = _read(path)
    if stored is None:
        _create(path)
        stored = _read(path)
        if stored is None:
            raise SecretKeyError(f"{path} could not be created")
    return stored


def _read(path: Path) -> bytes | None:
    try:
        text = path.read_text("utf-8").strip()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise SecretKeyError(f"{path} cannot be read: {exc}") from exc
    if len(text) < MIN_KEY_CHARS:
        raise SecretKeyError(
            f"{path} holds no usable key (fewer than {MIN_KEY_CHARS} characters): delete it "
            "(links in messages sent so far stop working) or set TIDINGS_SECRET_KEY"
        )
    return text.encode("utf-8")


def _create(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    draft = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(secrets.token_urlsafe(32) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        with contextlib.suppress(FileExistsError):  # another process was first: its key wins
            os.link(draft, path)
            log.info("generated the secret key that signs links: %s", path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(draft)
