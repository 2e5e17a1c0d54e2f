"""The `openwrite` command: `serve` runs the server, `admin ...` manages it from the shell."""

from __future__ import annotations

import argparse
import getpass
import logging
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

from aiohttp import web

from server.access_log import AccessLog
from server.config import Settings
from server.memory import freeze_start_up_objects
from storage import accounts, organizations
from storage.credentials import hash_password
from storage.db import Database, open_database
from storage.errors import OpenWriteError


def _settings(args: argparse.Namespace) -> Settings:
    return Settings.from_env(
        host=getattr(args, "host", None),
        port=getattr(args, "port", None),
        data_dir=args.data_dir,
    )


async def _settle(app: web.Application) -> None:
    """Start-up is over: what it made lives as long as the server (server/memory.py)."""
    kept = freeze_start_up_objects()
    logging.getLogger("openwrite").info(
        "start-up done: %d objects set aside from garbage collection", kept
    )


def serve(args: argparse.Namespace) -> int:
    from server.app import create_app

    settings = _settings(args)
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    # The format above uses none of these, and gathering them is a fifth of the cost of
    # a record; see "Optimization" in Python's logging HOWTO. (The access log writes its
    # lines in the same format without records: server/access_log.py.)
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging._srcfile = None
    if shutil.which("git") is None:
        logging.getLogger("openwrite").error(
            "the `git` command is not installed: clones over HTTP will fail (apt-get install git)"
        )
    app = create_app(settings)
    app.on_startup.append(_settle)  # after the app's own start-up (its cleanup contexts)
    web.run_app(
        app,
        host=settings.host,
        port=settings.port,
        access_log_class=AccessLog,
        access_log=logging.getLogger("aiohttp.access") if settings.access_log else None,
        print=lambda text: print(
            text.replace("======== ", "").replace(" ========", ""), flush=True
        ),
    )
    return 0


def _with_database(settings: Settings, work: Callable[[Database], object]) -> object:
    settings.repositories_dir.mkdir(parents=True, exist_ok=True)
    db = open_database(settings.database_path, readers=1)
    try:
        return work(db)
    finally:
        db.close()


def create_user(args: argparse.Namespace) -> int:
    settings = _settings(args)
    password = os.environ.get("OPENWRITE_ADMIN_PASSWORD") or getpass.getpass("Password: ")
    if len(password) < 8:
        print("the password needs at least 8 characters", file=sys.stderr)
        return 2
    password_hash = hash_password(password, n=settings.scrypt_n)
    user = _with_database(
        settings,
        lambda db: db.write_sync(
            lambda conn: accounts.create_user(
                conn, name=args.name, email=args.email, password_hash=password_hash
            )
        ),
    )
    print(f"created user {user['id']} <{user['email']}>")
    return 0


def create_org(args: argparse.Namespace) -> int:
    settings = _settings(args)

    def create(conn):  # noqa: ANN001, ANN202
        owner = accounts.find_account(conn, args.owner)
        if owner is None:
            raise OpenWriteError(f"no user with email {args.owner}")
        return organizations.create_organization(
            conn, slug=args.slug, name=args.name, owner_id=owner["id"]
        )

    org = _with_database(settings, lambda db: db.write_sync(create))
    print(f"created organization {org['slug']} ({org['id']})")
    return 0


def reindex(args: argparse.Namespace) -> int:
    """Rebuild every novel's index rows from its Git repository."""
    from storage.reindex import check_novels

    settings = _settings(args)
    report = _with_database(
        settings, lambda db: check_novels(db, settings.repositories_dir, force=True)
    )
    print(f"checked {report.checked} novels, rebuilt {len(report.repaired)} from Git")
    for novel_id in report.missing:
        print(f"novel {novel_id}: no repository found", file=sys.stderr)
    for novel_id in report.damaged:
        print(f"novel {novel_id}: its repository is damaged (see the log)", file=sys.stderr)
    return 1 if report.missing or report.damaged else 0


def maintenance(args: argparse.Namespace) -> int:
    """Repack every novel's repository (all loose objects into one delta-compressed pack)."""
    from tqdm import tqdm

    from storage import content_index
    from storage.library import Library

    settings = _settings(args)

    def run(db: Database) -> int:
        library = Library(settings.repositories_dir)
        failed = 0
        try:
            novels = db.read_sync(content_index.novel_heads)
            for row in tqdm(novels, desc="repacking", unit="novel", disable=args.quiet):
                if library.maintain(row["id"], force=True) is None:
                    failed += 1
        finally:
            library.close()
        return failed

    failed = _with_database(settings, run)
    if failed:
        print(f"{failed} novels could not be repacked (see the log)", file=sys.stderr)
    return 1 if failed else 0


def rotate_key(args: argparse.Namespace) -> int:
    """Re-seal every stored secret under a new server key; the server must be stopped.

    Crash-safe order: (1) stage the new key in data/secret.key.new (fsynced); (2) one
    SQLite transaction re-seals every secret, recomputes key hashes and replaces the
    verifier; (3) rename secret.key.new over secret.key. Until (2) commits the old key
    still opens everything; after it, the new key is on disk. If (3) did not happen, the
    server refuses the old key at start-up, and running this command again finishes it.
    """
    from storage import ai_providers
    from storage.keyring import ensure_key_verifier, replace_key_verifier
    from storage.secrets import (
        KEY_FILE_NAME,
        SecretBox,
        ServerKey,
        ServerKeyError,
        discard_staged_key,
        install_staged_key,
        load_server_key,
        read_staged_key,
        stage_server_key,
    )

    settings = _settings(args)
    data_dir, key_file = settings.data_dir, settings.data_dir / KEY_FILE_NAME
    if not settings.database_path.exists():
        raise OpenWriteError(f"no database at {settings.database_path}")
    if not settings.secret_key and not key_file.exists():
        raise OpenWriteError(f"no server key: neither OPENWRITE_SECRET_KEY nor {key_file}")
    old_box = SecretBox(load_server_key(data_dir, settings.secret_key))
    db = open_database(settings.database_path, readers=1)
    try:
        try:
            db.write_sync(ensure_key_verifier, old_box)
        except ServerKeyError:
            staged = read_staged_key(data_dir)
            if staged is None:
                raise
            db.write_sync(ensure_key_verifier, SecretBox(staged))
            install_staged_key(data_dir)
            print(f"finished an interrupted rotation: the server key is now {staged.key_id}")
            _warn_about_env_key(settings)
            return 0
        if args.new_key:
            new_key = ServerKey.from_text(args.new_key, source="--new-key")
        else:
            new_key = ServerKey.generate()
        new_box = SecretBox(new_key)
        if new_box.key_id == old_box.key_id:
            raise OpenWriteError("the new key is the current key")
        stage_server_key(data_dir, new_key)

        def reseal(conn) -> int:  # noqa: ANN001
            count = ai_providers.reseal_secrets(conn, old_box, new_box)
            replace_key_verifier(conn, new_box)
            return count

        try:
            count = db.write_sync(reseal)
        except OpenWriteError:
            discard_staged_key(data_dir)  # rolled back: the old key is still the key
            raise
        install_staged_key(data_dir)
    finally:
        db.close()
    print(
        f"re-sealed the secrets of {count} AI provider connection(s);"
        f" server key {old_box.key_id} -> {new_box.key_id}, written to {key_file}"
    )
    _warn_about_env_key(settings)
    return 0


def _warn_about_env_key(settings: Settings) -> None:
    if settings.secret_key:
        print(
            "OPENWRITE_SECRET_KEY still holds the old key: unset it (the new key is in"
            f" {settings.data_dir / 'secret.key'}) or set it to the new key before starting",
            file=sys.stderr,
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="openwrite", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    def data_dir_flag(p: argparse.ArgumentParser) -> None:
        p.add_argument("--data-dir", type=Path, help="where the database and repositories live")

    p = commands.add_parser("serve", help="run the HTTP server")
    p.add_argument("--host", help="interface to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port to listen on (default 8080)")
    data_dir_flag(p)
    p.set_defaults(run=serve)

    admin = commands.add_parser("admin", help="manage the server from the shell")
    tasks = admin.add_subparsers(dest="task", required=True)
    p = tasks.add_parser(
        "create-user", help="create a user (password from OPENWRITE_ADMIN_PASSWORD or a prompt)"
    )
    p.add_argument("--email", required=True)
    p.add_argument("--name", required=True)
    data_dir_flag(p)
    p.set_defaults(run=create_user)
    p = tasks.add_parser("create-org", help="create an organization owned by an existing user")
    p.add_argument("--slug", required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--owner", required=True, help="the owner's email")
    data_dir_flag(p)
    p.set_defaults(run=create_org)
    p = tasks.add_parser("reindex", help="rebuild the content index of every novel from Git")
    data_dir_flag(p)
    p.set_defaults(run=reindex)
    p = tasks.add_parser("maintenance", help="repack every novel's repository")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    data_dir_flag(p)
    p.set_defaults(run=maintenance)
    p = tasks.add_parser(
        "rotate-key", help="re-seal stored secrets under a new server key (stop the server first)"
    )
    p.add_argument(
        "--new-key", help="base64url of 32 bytes (default: generate one); visible in `ps`"
    )
    data_dir_flag(p)
    p.set_defaults(run=rotate_key)
    return parser


# Flags whose value is a key: base64url, so it may begin with "-", which argparse would
# take for a flag of its own ("expected one argument").
_KEY_FLAGS = frozenset({"--new-key"})


def _keys_joined(argv: list[str]) -> list[str]:
    """`--new-key KEY` as `--new-key=KEY`, so a key beginning with "-" is still a value."""
    joined: list[str] = []
    rest = iter(argv)
    for arg in rest:
        value = next(rest, None) if arg in _KEY_FLAGS else None
        joined.append(arg if value is None else f"{arg}={value}")
    return joined


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(_keys_joined(sys.argv[1:] if argv is None else argv))
    try:
        return args.run(args)
    except OpenWriteError as exc:
        print(f"openwrite: {exc.message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
