"""Server settings: defaults, then `OPENWRITE_*` environment variables, then flags."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

from storage.credentials import DEFAULT_SCRYPT_N


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8080
    data_dir: Path = Path("data")
    # Origins a browser editor may call us from; empty means no CORS headers at all.
    cors_origins: tuple[str, ...] = ()
    max_body_bytes: int = 16 * 1024 * 1024
    max_file_bytes: int = 2 * 1024 * 1024
    max_changes: int = 500
    session_days: int = 30
    token_max_days: int = 366
    scrypt_n: int = DEFAULT_SCRYPT_N
    login_max_failures: int = 5
    login_lockout_seconds: int = 900
    sqlite_readers: int = 4
    # Bounded reads (tokens, rows, pages) on the event loop's own never-waiting
    # connection rather than a reader thread; false sends every read to the threads.
    sqlite_quick_reads: bool = True
    loose_object_threshold: int = 1000
    git_timeout_seconds: int = 600
    # Git processes (upload-pack) one server process runs at once; a request beyond them
    # waits up to git_queue_seconds for a slot, then is a 503 `git_busy`.
    git_max_processes: int = 8
    git_queue_seconds: int = 30
    # How long an AI completion's token reservation holds if it is never settled.
    ai_reservation_seconds: int = 900
    secret_key: str | None = field(default=None, repr=False)
    log_level: str = "INFO"
    # One line per request at INFO (~9 µs of CPU each); false leaves it out.
    access_log: bool = True
    # Hand memory freed inside malloc's arenas back to the system this often (glibc's
    # malloc_trim; server/memory.py); 0 never does.
    memory_trim_seconds: int = 60
    # Close a novel's repository kept open between calls (storage/library.py, Shelf) once
    # unused this long; 0 keeps none open (each call opens and closes its own).
    repository_idle_seconds: int = 60

    @property
    def database_path(self) -> Path:
        return self.data_dir / "openwrite.db"

    @property
    def repositories_dir(self) -> Path:
        return self.data_dir / "novels"

    @property
    def session_ttl(self) -> timedelta:
        return timedelta(days=self.session_days)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: Any) -> Settings:
        """Defaults, overridden by `OPENWRITE_<FIELD>` variables, overridden by `overrides`."""
        environ = dict(os.environ if environ is None else environ)
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = environ.get(f"OPENWRITE_{f.name.upper()}")
            if raw is None:
                continue
            values[f.name] = _convert(f.name, f.default, raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        settings = replace(cls(), **values)
        return replace(settings, data_dir=Path(settings.data_dir))


def _convert(name: str, default: Any, raw: str) -> Any:
    if isinstance(default, bool):
        return raw.strip().lower() in ("1", "true", "yes", "on")
    if isinstance(default, int):
        try:
            return int(raw)
        except ValueError:
            raise SystemExit(
                f"OPENWRITE_{name.upper()} must be a whole number, got {raw!r}"
            ) from None
    if isinstance(default, tuple):
        return tuple(part.strip().rstrip("/") for part in raw.split(",") if part.strip())
    if isinstance(default, Path):
        return Path(raw)
    return raw
