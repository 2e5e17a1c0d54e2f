"""Accounts: sign-up, login, logout, `me`, sessions and personal access tokens."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import apsw

from server import models as m
from server.endpoints import Call, Endpoint
from storage import accounts, organizations
from storage.access import Level, authorize_org
from storage.credentials import dummy_password_hash, hash_password, verify_password
from storage.errors import Invalid, NotFound, Unauthorized
from storage.ids import format_time


def _auth_answer(user: dict, token: str, session: dict) -> dict:
    return {"user": accounts.public_user(user), "token": token, "expires_at": session["expires_at"]}


async def signup(call: Call) -> dict:
    body: m.SignupBody = call.body
    settings = call.settings
    password_hash = await asyncio.to_thread(hash_password, body.password, n=settings.scrypt_n)
    user_agent = call.request.headers.get("User-Agent")

    def create(conn: apsw.Connection) -> dict:
        user = accounts.create_user(
            conn, name=body.name, email=body.email, password_hash=password_hash
        )
        token, session = accounts.create_session(
            conn, user["id"], ttl=settings.session_ttl, user_agent=user_agent
        )
        return _auth_answer(user, token, session)

    return await call.db.write(create)


async def login(call: Call) -> dict:
    body: m.LoginBody = call.body
    settings = call.settings
    policy = accounts.LoginPolicy(
        max_failures=settings.login_max_failures,
        lockout=timedelta(seconds=settings.login_lockout_seconds),
    )
    await call.db.read(accounts.check_login_allowed, body.email)
    account = await call.db.read(accounts.find_account, body.email)
    # An unknown address costs a full hash too, so timing does not tell who has an account.
    stored = account["password_hash"] if account else dummy_password_hash(settings.scrypt_n)
    valid = await asyncio.to_thread(verify_password, body.password, stored)
    if not valid or account is None:
        await call.db.write(accounts.record_login_failure, body.email, policy)
        raise Unauthorized("email or password is wrong", code="invalid_credentials")
    user_agent = call.request.headers.get("User-Agent")

    def start(conn: apsw.Connection) -> dict:
        accounts.check_login_allowed(conn, body.email)
        accounts.clear_login_failures(conn, body.email)
        token, session = accounts.create_session(
            conn, account["id"], ttl=settings.session_ttl, user_agent=user_agent
        )
        return _auth_answer(account, token, session)

    return await call.db.write(start)


async def logout(call: Call) -> None:
    principal = call.principal
    if principal.kind == "session":
        await call.db.write(accounts.delete_session, principal.user_id, principal.credential_id)
    else:
        await call.db.write(
            accounts.delete_access_token, principal.user_id, principal.credential_id
        )


async def me(call: Call) -> dict:
    def load(conn: apsw.Connection) -> dict:
        return {
            "user": accounts.get_user(conn, call.user_id),
            "organizations": organizations.memberships(conn, call.user_id),
            "active_organization_id": call.principal.active_organization_id,
            "active_team_id": call.principal.active_team_id,
        }

    return await call.db.read(load)


async def list_sessions(call: Call) -> dict:
    rows = await call.db.read(accounts.list_sessions, call.user_id)
    current = call.principal.credential_id if call.principal.kind == "session" else None
    return {"items": [{**r, "current": r["id"] == current} for r in rows], "next_cursor": None}


async def delete_session(call: Call) -> None:
    await call.db.write(accounts.delete_session, call.user_id, call.params["session_id"])


async def set_session_context(call: Call) -> dict:
    """Remember the organization (and team) this session works in."""
    body: m.SessionContextBody = call.body
    principal = call.principal
    if principal.kind != "session":
        raise Invalid("only sessions keep an active organization", code="not_a_session")

    def update(conn: apsw.Connection) -> dict:
        org_id = team_id = None
        if body.organization is not None:
            org, _ = authorize_org(conn, principal, body.organization, Level.READ)
            org_id = org["id"]
        if body.team_id is not None:
            team = organizations.team_of_member(conn, body.team_id, principal.user_id)
            if team is None or (org_id is not None and team["organization_id"] != org_id):
                raise NotFound("team not found")
            team_id, org_id = team["id"], team["organization_id"]
        row = accounts.set_session_context(
            conn, principal.credential_id, organization_id=org_id, team_id=team_id
        )
        return {**row, "current": True}

    return await call.db.write(update)


async def create_token(call: Call) -> dict:
    body: m.TokenBody = call.body
    limit = datetime.now(UTC) + timedelta(days=call.settings.token_max_days)
    expires = body.expires_at or datetime.now(UTC) + timedelta(days=90)
    if expires <= datetime.now(UTC) or expires > limit:
        raise Invalid(
            f"expires_at must be in the future and within {call.settings.token_max_days} days",
            code="invalid_expiry",
        )
    token, row = await call.db.write(
        lambda conn: accounts.create_access_token(
            conn,
            call.user_id,
            name=body.name,
            scopes=list(body.scopes),
            expires_at=format_time(expires),
        )
    )
    return {**row, "token": token}


async def list_tokens(call: Call) -> dict:
    return {
        "items": await call.db.read(accounts.list_access_tokens, call.user_id),
        "next_cursor": None,
    }


async def delete_token(call: Call) -> None:
    await call.db.write(accounts.delete_access_token, call.user_id, call.params["token_id"])


ENDPOINTS = [
    Endpoint("POST", "/api/v1/auth/signup", signup,
             "Create an account and its personal organization", "accounts", body=m.SignupBody,
             response=m.AuthAnswer, status=201, auth="none", errors=(409, 413, 415, 422)),
    Endpoint("POST", "/api/v1/auth/login", login, "Log in with email and password", "accounts",
             body=m.LoginBody, response=m.AuthAnswer, auth="none", errors=(401, 415, 422, 429)),
    Endpoint("POST", "/api/v1/auth/logout", logout, "End the calling session (or revoke the token)",
             "accounts", status=204, writes=False),
    Endpoint("GET", "/api/v1/me", me, "The caller and their organizations", "accounts",
             response=m.Me),
    Endpoint("GET", "/api/v1/auth/sessions", list_sessions, "The caller's sessions", "accounts",
             response=m.SessionList),
    Endpoint("PUT", "/api/v1/auth/sessions/current", set_session_context,
             "Set the calling session's active organization and team", "accounts",
             body=m.SessionContextBody, response=m.Session, writes=False, errors=(404, 422)),
    # Revoking another credential is a write: a read-scope token may only end itself
    # (POST /auth/logout), never its owner's other sessions and tokens.
    Endpoint("DELETE", "/api/v1/auth/sessions/{session_id}", delete_session, "Revoke a session",
             "accounts", status=204, errors=(404,)),
    Endpoint("POST", "/api/v1/tokens", create_token, "Create a personal access token", "accounts",
             body=m.TokenBody, response=m.NewAccessToken, status=201, errors=(422,)),
    Endpoint("GET", "/api/v1/tokens", list_tokens, "The caller's access tokens (never the secret)",
             "accounts", response=m.AccessTokenList),
    Endpoint("DELETE", "/api/v1/tokens/{token_id}", delete_token, "Revoke an access token",
             "accounts", status=204, errors=(404,)),
]  # fmt: skip
