"""Accounts: sign-up, login, logout, `me`, sessions and personal access tokens."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from aiohttp.test_utils import TestClient

from server.config import Settings
from storage.db import connect
from storage.ids import now, parse_time, stamp_at
from tests.conftest import Writer, sign_up
from tests.db_snapshot import row_counts

PASSWORD = "correct horse"


async def login(client: TestClient, email: str, password: str = PASSWORD) -> tuple[int, dict]:
    response = await client.post("/api/v1/auth/login", json={"email": email, "password": password})
    return response.status, await response.json()


def as_writer(writer: Writer, token: str) -> Writer:
    return Writer(writer.client, writer.user, token, writer.org)


def in_days(days: float) -> str:
    return (datetime.now(UTC) + timedelta(days=days)).isoformat()


async def new_token(writer: Writer, scopes: list[str], name: str = "laptop") -> dict:
    status, answer = await writer.call("POST", "/api/v1/tokens", {"name": name, "scopes": scopes})
    assert status == 201, answer
    return answer


# -- sign-up ----------------------------------------------------------------------


async def test_signup_answers_the_user_a_session_token_and_creates_a_personal_organization(
    client: TestClient,
):
    response = await client.post(
        "/api/v1/auth/signup",
        json={"name": "Ann Writer", "email": "ann.writer@example.com", "password": PASSWORD},
    )
    assert response.status == 201
    answer = await response.json()
    assert answer["user"]["email"] == "ann.writer@example.com"
    assert answer["user"]["name"] == "Ann Writer"
    assert answer["token"].startswith("ows_")
    assert datetime.fromisoformat(answer["expires_at"]) > datetime.now(UTC)
    assert "password" not in str(answer) and "password_hash" not in str(answer)

    ann = Writer(client, answer["user"], answer["token"], "")
    status, me = await ann.call("GET", "/api/v1/me")
    assert status == 200
    assert me["user"] == answer["user"]
    [personal] = me["organizations"]
    assert personal["role"] == "owner" and personal["slug"] == "ann-writer"
    assert me["active_organization_id"] == personal["id"]
    status, org = await ann.call("GET", f"/api/v1/orgs/{personal['slug']}")
    assert status == 200 and org["personal"] is True and org["role"] == "owner"


async def test_signing_up_twice_with_one_email_is_a_conflict_in_any_letter_case(
    client: TestClient, settings: Settings
):
    await sign_up(client, email="twice@example.com")
    before = row_counts(settings.database_path)
    response = await client.post(
        "/api/v1/auth/signup",
        json={"name": "Again", "email": "TWICE@example.com", "password": PASSWORD},
    )
    assert response.status == 409
    assert (await response.json())["error"]["code"] == "email_taken"
    assert row_counts(settings.database_path) == before


async def test_two_writers_with_one_mailbox_name_get_distinct_personal_slugs(client: TestClient):
    first = await sign_up(client, email="sam@one.example")
    second = await sign_up(client, email="sam@two.example")
    assert first.org == "sam" and second.org.startswith("sam-") and second.org != first.org


async def test_signup_with_a_bad_email_and_short_password_names_both_fields(
    client: TestClient, settings: Settings
):
    response = await client.post(
        "/api/v1/auth/signup", json={"name": "X", "email": "not-an-email", "password": "short"}
    )
    assert response.status == 422
    error = (await response.json())["error"]
    assert error["code"] == "validation_failed"
    assert {tuple(f["loc"]) for f in error["details"]["fields"]} == {("email",), ("password",)}
    assert row_counts(settings.database_path)["user"] == 0


# -- login, logout, me ------------------------------------------------------------


async def test_login_with_the_right_password_opens_a_new_working_session(ann: Writer):
    status, answer = await login(ann.client, ann.user["email"])
    assert status == 200
    assert answer["user"]["id"] == ann.user["id"] and answer["token"] != ann.token
    status, me = await as_writer(ann, answer["token"]).call("GET", "/api/v1/me")
    assert status == 200 and me["user"]["id"] == ann.user["id"]


async def test_login_with_a_wrong_password_or_unknown_email_is_invalid_credentials(ann: Writer):
    for email, password in (
        (ann.user["email"], "wrong password"),
        ("nobody@example.com", PASSWORD),
    ):
        response = await ann.client.post(
            "/api/v1/auth/login", json={"email": email, "password": password}
        )
        assert response.status == 401
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert (await response.json())["error"]["code"] == "invalid_credentials"


async def test_logout_ends_the_session_and_its_token_stops_working(ann: Writer):
    status, _ = await ann.call("POST", "/api/v1/auth/logout")
    assert status == 204
    response = await ann.client.get("/api/v1/me", headers=ann.headers)
    assert response.status == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="openwrite"'
    assert (await response.json())["error"]["code"] == "invalid_token"


async def test_logout_with_a_personal_access_token_revokes_that_token_only(ann: Writer):
    token = await new_token(ann, ["read"])
    status, _ = await as_writer(ann, token["token"]).call("POST", "/api/v1/auth/logout")
    assert status == 204
    assert (await as_writer(ann, token["token"]).call("GET", "/api/v1/me"))[0] == 401
    assert (await ann.call("GET", "/api/v1/me"))[0] == 200


async def test_me_without_credentials_is_401_with_a_bearer_challenge(client: TestClient):
    response = await client.get("/api/v1/me")
    assert response.status == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="openwrite"'
    assert (await response.json())["error"]["code"] == "unauthorized"


async def test_a_token_sent_as_the_basic_auth_password_works_like_a_bearer_token(ann: Writer):
    import base64

    basic = base64.b64encode(f"anything:{ann.token}".encode()).decode()
    response = await ann.client.get("/api/v1/me", headers={"Authorization": f"Basic {basic}"})
    assert response.status == 200
    wrong = base64.b64encode(b"anything:ows_not-a-token").decode()
    response = await ann.client.get("/api/v1/me", headers={"Authorization": f"Basic {wrong}"})
    assert response.status == 401
    assert response.headers["WWW-Authenticate"] == 'Basic realm="openwrite"'


async def test_repeated_failed_logins_lock_the_address_with_retry_after(
    ann: Writer, bob: Writer, settings: Settings
):
    for _ in range(settings.login_max_failures):
        assert (await login(ann.client, ann.user["email"], "wrong password"))[0] == 401
    response = await ann.client.post(
        "/api/v1/auth/login", json={"email": ann.user["email"], "password": PASSWORD}
    )
    assert response.status == 429
    assert (await response.json())["error"]["code"] == "login_throttled"
    assert 0 < int(response.headers["Retry-After"]) <= settings.login_lockout_seconds + 1
    # Another address is not affected, and the locked writer's session still works.
    assert (await login(bob.client, bob.user["email"]))[0] == 200
    assert (await ann.call("GET", "/api/v1/me"))[0] == 200


async def test_a_successful_login_clears_earlier_failures(ann: Writer, settings: Settings):
    for _ in range(settings.login_max_failures - 1):
        assert (await login(ann.client, ann.user["email"], "wrong password"))[0] == 401
    assert (await login(ann.client, ann.user["email"]))[0] == 200
    assert (await login(ann.client, ann.user["email"], "wrong password"))[0] == 401
    assert (await login(ann.client, ann.user["email"]))[0] == 200


# -- sessions ---------------------------------------------------------------------


async def test_sessions_are_listed_with_the_current_one_marked_and_can_be_revoked(ann: Writer):
    _, second = await login(ann.client, ann.user["email"])
    other = as_writer(ann, second["token"])
    status, listing = await ann.call("GET", "/api/v1/auth/sessions")
    assert status == 200 and len(listing["items"]) == 2 and listing["next_cursor"] is None
    [current] = [s for s in listing["items"] if s["current"]]
    [second_session] = [s for s in listing["items"] if not s["current"]]
    assert "token" not in second_session and "token_hash" not in second_session

    status, _ = await ann.call("DELETE", f"/api/v1/auth/sessions/{second_session['id']}")
    assert status == 204
    assert (await other.call("GET", "/api/v1/me"))[0] == 401
    status, listing = await ann.call("GET", "/api/v1/auth/sessions")
    assert [s["id"] for s in listing["items"]] == [current["id"]]
    status, body = await ann.call("DELETE", f"/api/v1/auth/sessions/{second_session['id']}")
    assert status == 404 and body["error"]["code"] == "not_found"


async def test_the_session_remembers_its_active_organization_and_team(ann: Writer):
    status, org = await ann.call("POST", "/api/v1/orgs", {"name": "Guild", "slug": "guild"})
    assert status == 201
    _, team = await ann.call("POST", "/api/v1/orgs/guild/teams", {"name": "Editors"})
    status, _ = await ann.call(
        "POST", f"/api/v1/orgs/guild/teams/{team['id']}/members", {"user_id": ann.user["id"]}
    )
    assert status == 201

    status, session = await ann.call(
        "PUT", "/api/v1/auth/sessions/current", {"organization": "guild", "team_id": team["id"]}
    )
    assert status == 200
    assert session["active_organization_id"] == org["id"]
    assert session["active_team_id"] == team["id"] and session["current"] is True
    _, me = await ann.call("GET", "/api/v1/me")
    assert me["active_organization_id"] == org["id"] and me["active_team_id"] == team["id"]
    # A novel created without `org` lands in the active organization.
    _, novel = await ann.call("POST", "/api/v1/novels", {"title": "Guild Book"})
    assert novel["organization_slug"] == "guild"

    status, session = await ann.call("PUT", "/api/v1/auth/sessions/current", {"organization": None})
    assert status == 200 and session["active_organization_id"] is None
    _, novel = await ann.call("POST", "/api/v1/novels", {"title": "Personal Book"})
    assert novel["organization_slug"] == ann.org


async def test_a_session_cannot_switch_to_an_organization_or_team_it_is_not_in(
    ann: Writer, bob: Writer, settings: Settings
):
    _, team = await bob.call("POST", f"/api/v1/orgs/{bob.org}/teams", {"name": "Bob's"})
    before = row_counts(settings.database_path)
    status, body = await ann.call("PUT", "/api/v1/auth/sessions/current", {"organization": bob.org})
    assert status == 404
    status, body = await ann.call("PUT", "/api/v1/auth/sessions/current", {"team_id": team["id"]})
    assert status == 404
    assert row_counts(settings.database_path) == before
    _, me = await ann.call("GET", "/api/v1/me")
    assert me["active_team_id"] is None


async def test_only_sessions_keep_an_active_organization(ann: Writer):
    token = await new_token(ann, ["read", "write"])
    status, body = await as_writer(ann, token["token"]).call(
        "PUT", "/api/v1/auth/sessions/current", {"organization": ann.org}
    )
    assert status == 422 and body["error"]["code"] == "not_a_session"


# -- personal access tokens --------------------------------------------------------


async def test_a_personal_access_token_is_shown_once_and_never_listed(ann: Writer):
    created = await new_token(ann, ["read", "write"], name="sync laptop")
    assert created["token"].startswith("owt_")
    assert created["token_prefix"] == created["token"][:8]
    assert created["scopes"] == ["read", "write"]
    status, listing = await ann.call("GET", "/api/v1/tokens")
    assert status == 200
    [listed] = listing["items"]
    assert listed["id"] == created["id"] and listed["name"] == "sync laptop"
    assert "token" not in listed
    assert created["token"] not in str(listing)
    assert created["token"][8:20] not in str(listing)


async def test_a_read_token_reads_but_cannot_write(ann: Writer):
    _, novel = await ann.call("POST", "/api/v1/novels", {"title": "Draft"})
    reader = as_writer(ann, (await new_token(ann, ["read"]))["token"])
    assert (await reader.call("GET", f"/api/v1/novels/{novel['id']}"))[0] == 200
    assert (await reader.call("GET", "/api/v1/novels"))[0] == 200
    status, body = await reader.call("POST", "/api/v1/novels", {"title": "Nope"})
    assert status == 403 and body["error"]["code"] == "insufficient_scope"
    status, body = await reader.call("PATCH", f"/api/v1/novels/{novel['id']}", {"title": "Nope"})
    assert status == 403 and body["error"]["code"] == "insufficient_scope"
    status, body = await reader.call("POST", "/api/v1/tokens", {"name": "x", "scopes": ["read"]})
    assert status == 403
    _, novels = await ann.call("GET", "/api/v1/novels")
    assert [n["title"] for n in novels["items"]] == ["Draft"]


async def test_a_read_token_ends_itself_but_revokes_nothing_else(ann: Writer):
    """A leaked read-only token must not be able to lock its owner out."""
    other = await new_token(ann, ["read", "write"])
    created = await new_token(ann, ["read"])
    reader = as_writer(ann, created["token"])
    _, sessions = await ann.call("GET", "/api/v1/auth/sessions")
    session_id = sessions["items"][0]["id"]

    status, body = await reader.call("DELETE", f"/api/v1/tokens/{other['id']}")
    assert status == 403 and body["error"]["code"] == "insufficient_scope"
    status, body = await reader.call("DELETE", f"/api/v1/auth/sessions/{session_id}")
    assert status == 403 and body["error"]["code"] == "insufficient_scope"
    assert (await ann.call("GET", "/api/v1/me"))[0] == 200
    _, tokens = await ann.call("GET", "/api/v1/tokens")
    assert {t["id"] for t in tokens["items"]} == {other["id"], created["id"]}

    assert (await reader.call("POST", "/api/v1/auth/logout"))[0] == 204
    assert (await reader.call("GET", "/api/v1/me"))[0] == 401
    _, tokens = await ann.call("GET", "/api/v1/tokens")
    assert [t["id"] for t in tokens["items"]] == [other["id"]]


async def test_a_write_token_creates_novels(ann: Writer):
    writer = as_writer(ann, (await new_token(ann, ["read", "write"]))["token"])
    status, novel = await writer.call("POST", "/api/v1/novels", {"title": "By token"})
    assert status == 201 and novel["owner_id"] == ann.user["id"]


async def test_a_revoked_token_is_401(ann: Writer):
    created = await new_token(ann, ["read"])
    token_writer = as_writer(ann, created["token"])
    assert (await token_writer.call("GET", "/api/v1/me"))[0] == 200
    status, _ = await ann.call("DELETE", f"/api/v1/tokens/{created['id']}")
    assert status == 204
    response = await ann.client.get("/api/v1/me", headers=token_writer.headers)
    assert response.status == 401 and "WWW-Authenticate" in response.headers
    assert (await ann.call("GET", "/api/v1/tokens"))[1]["items"] == []
    assert (await ann.call("DELETE", f"/api/v1/tokens/{created['id']}"))[0] == 404


def expire_token(settings: Settings, token_id: str) -> None:
    """Move an access token's expiry a second into the past, straight in the database."""
    conn = connect(settings.database_path)
    try:
        conn.execute(
            "UPDATE personal_access_token SET expires_at = ? WHERE id = ?",
            ((datetime.now(UTC) - timedelta(seconds=1)).isoformat(), token_id),
        )
    finally:
        conn.close()


async def test_an_expired_token_is_401(ann: Writer, settings: Settings):
    created = await new_token(ann, ["read"])
    expire_token(settings, created["id"])
    status, body = await as_writer(ann, created["token"]).call("GET", "/api/v1/me")
    assert status == 401 and body["error"]["code"] == "invalid_token"


async def test_token_expiry_must_be_in_the_future_within_the_limit_and_zoned(
    ann: Writer, settings: Settings
):
    status, token = await ann.call(
        "POST", "/api/v1/tokens", {"name": "short", "scopes": ["read"], "expires_at": in_days(1)}
    )
    assert status == 201
    assert datetime.fromisoformat(token["expires_at"]) < datetime.now(UTC) + timedelta(days=2)
    before = row_counts(settings.database_path)
    for expires_at, code in (
        (in_days(-1), "invalid_expiry"),
        (in_days(settings.token_max_days + 1), "invalid_expiry"),
        ("2030-01-01T00:00:00", "validation_failed"),
    ):
        status, body = await ann.call(
            "POST", "/api/v1/tokens", {"name": "x", "scopes": ["read"], "expires_at": expires_at}
        )
        assert status == 422 and body["error"]["code"] == code, (expires_at, body)
    status, body = await ann.call("POST", "/api/v1/tokens", {"name": "x", "scopes": ["admin"]})
    assert status == 422 and body["error"]["details"]["fields"][0]["loc"][0] == "scopes"
    assert row_counts(settings.database_path) == before


async def test_tokens_are_stored_only_as_hashes(ann: Writer, settings: Settings):
    created = await new_token(ann, ["read", "write"])
    secrets = [created["token"], ann.token]
    for secret in secrets:
        assert (await as_writer(ann, secret).call("GET", "/api/v1/me"))[0] == 200
    files = [p for p in settings.data_dir.glob("openwrite.db*") if p.is_file()]
    assert settings.database_path in files
    stored = b"".join(p.read_bytes() for p in files)
    for secret in secrets:
        assert secret.encode() not in stored
        assert secret[8:].encode() not in stored
    import hashlib

    assert hashlib.sha256(created["token"].encode()).hexdigest().encode() in stored


async def test_another_writers_session_or_token_cannot_be_revoked(ann: Writer, bob: Writer):
    created = await new_token(ann, ["read"])
    _, sessions = await ann.call("GET", "/api/v1/auth/sessions")
    assert (await bob.call("DELETE", f"/api/v1/tokens/{created['id']}"))[0] == 404
    session_id = sessions["items"][0]["id"]
    assert (await bob.call("DELETE", f"/api/v1/auth/sessions/{session_id}"))[0] == 404
    assert (await as_writer(ann, created["token"]).call("GET", "/api/v1/me"))[0] == 200
    assert (await ann.call("GET", "/api/v1/me"))[0] == 200


async def test_leaving_the_active_team_forgets_it_in_the_session(ann: Writer):
    await ann.call("POST", "/api/v1/orgs", {"name": "Guild", "slug": "guild"})
    _, team = await ann.call("POST", "/api/v1/orgs/guild/teams", {"name": "Editors"})
    members = f"/api/v1/orgs/guild/teams/{team['id']}/members"
    await ann.call("POST", members, {"user_id": ann.user["id"]})
    await ann.call("PUT", "/api/v1/auth/sessions/current", {"team_id": team["id"]})
    assert (await ann.call("DELETE", f"{members}/{ann.user['id']}"))[0] == 204
    _, me = await ann.call("GET", "/api/v1/me")
    assert me["active_team_id"] is None and me["active_organization_id"] is not None


def test_now_is_rfc3339_utc_text_with_milliseconds_that_sorts_with_expiry_times():
    """Token expiry is compared as text with `now()`: it must be the stored timestamps'
    exact shape (a different shape would sort wrongly) and the current time."""
    before = datetime.now(UTC)
    stamp = now()
    after = datetime.now(UTC)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", stamp)
    slack = timedelta(milliseconds=1)
    assert before - slack <= parse_time(stamp) <= after + slack
    assert stamp < in_days(1 / 24 / 60).replace("+00:00", "Z")


def test_a_stamp_made_with_the_second_remembered_is_the_one_datetime_formats():
    """`stamp_at` formats each whole second once and reuses it: crossing seconds back and
    forth, milliseconds at the edges, must still give each moment's own text."""
    moments = [1700000000.0, 1700000000.999, 1700000001.0, 1700000000.5, 1700000001.0005,
               0.0, 1.999, 1764064800.123456, 1700000000.9995]  # fmt: skip
    for moment in moments * 2:
        expected = datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        assert stamp_at(moment) == f"{expected}.{int(moment * 1000) % 1000:03d}Z", moment
