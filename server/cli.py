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

from server.config import Settings
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


def serve(args: argparse.Namespace) -> int:
    from server.app import create_app

    settings = _settings(args)
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    if shutil.which("git") is None:
        logging.getLogger("openwrite").error(
            "the `git` command is not installed: clones over HTTP will fail (apt-get install git)"
        )
    web.run_app(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        access_log_format='%a "%r" %s %b %Tfs',
        print=lambda text: print(text.replace("======== ", "").replace(" ========", ""), flush=True),
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
    p = tasks.add_parser("create-user", help="create a user (password from OPENWRITE_ADMIN_PASSWORD or a prompt)")
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
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except OpenWriteError as exc:
        print(f"openwrite: {exc.message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
