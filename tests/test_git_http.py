"""Backup by `git clone`: the real `git` command against the server over loopback — clone,
fetch, shallow clones and ls-remote in protocol v0 and v2, tokens as Basic passwords, the
refusals (401 with a Basic challenge, 404 across tenants, 403 on push), gzip request bodies,
and the timeouts and disconnects that must never leave an upload-pack running."""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import os
import subprocess
import time
import urllib.request
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from server.app import create_app
from server.config import Settings
from server.git_http import pkt_line
from server.state import GIT_SLOTS, LIBRARY, SETTINGS
from storage.repository import Author, NovelRepository
from tests.conftest import Writer, sign_up
from tests.db_snapshot import data_state
from tests.servers import start_server

ALLOWED_ORIGIN = "https://editor.example"
BASIC = 'Basic realm="openwrite"'
# Git as a backup script runs it: never a prompt, no user or system config of this machine.
GIT_ENV = {
    **{k: v for k, v in os.environ.items() if not k.startswith("GIT_")},
    "GIT_TERMINAL_PROMPT": "0",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_ASKPASS": "",
    "SSH_ASKPASS": "",
}
PROTOCOLS = ["0", "1", "2"]


@dataclass
class GitRun:
    code: int
    stdout: str
    stderr: str


async def git(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None, check: bool = True
) -> GitRun:
    """Run `git` without blocking the event loop the in-process server answers on."""
    process = await asyncio.create_subprocess_exec(
        "git",
        *args,
        cwd=cwd,
        env={**GIT_ENV, **(env or {})},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    run = GitRun(process.returncode or 0, out.decode(), err.decode())
    if check:
        assert run.code == 0, f"git {' '.join(args)} failed:\n{run.stderr}"
    return run


def git_url(client: TestClient, novel_id: str, token: str | None = None) -> str:
    """The clone URL of a novel; the token as the password, as `git` users write it."""
    url = str(client.make_url(f"/git/{novel_id}.git"))
    if token is None:
        return url
    return url.replace("http://", f"http://writer:{token}@", 1)


async def new_novel(writer: Writer, title: str = "The Lighthouse", **fields: object) -> dict:
    status, novel = await writer.call("POST", "/api/v1/novels", {"title": title, **fields})
    assert status == 201, novel
    return novel


async def add(writer: Writer, novel_id: str, kind: str, body: dict) -> dict:
    status, answer = await writer.call("POST", f"/api/v1/novels/{novel_id}/{kind}", body)
    assert status == 201, answer
    return answer


async def head_of(writer: Writer, novel_id: str) -> str:
    status, novel = await writer.call("GET", f"/api/v1/novels/{novel_id}")
    assert status == 200
    return novel["head"]


async def personal_token(writer: Writer, scopes: list[str] | None = None) -> dict:
    status, token = await writer.call(
        "POST", "/api/v1/tokens", {"name": "backup", "scopes": scopes or ["read"]}
    )
    assert status == 201, token
    return token


def basic(token: str, user: str = "git") -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{token}".encode()).decode()}


def upload_pack_processes(repository: Path) -> list[int]:
    """Processes working in `repository`: upload-pack and its pack-objects (cwd = the repo)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if Path(os.readlink(entry / "cwd")).resolve() == repository.resolve():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


async def until_no_upload_pack(repository: Path) -> None:
    """Wait for the server to have ended every Git process in `repository`."""
    for _ in range(600):
        if not upload_pack_processes(repository):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"git processes still running in {repository}")


async def until_git_requests_done(client: TestClient) -> None:
    """Wait for the server to have finished every Git request (each holds a slot until its
    process is reaped), so a test that cut one off ends with nothing of it left running:
    a subprocess reaped after the test's event loop closed fails the next test."""
    slots, most = client.app[GIT_SLOTS], client.app[SETTINGS].git_max_processes
    for _ in range(600):
        if slots._value == most:  # asyncio.Semaphore keeps its count there
            return
        await asyncio.sleep(0.05)
    raise AssertionError("git requests still running")


async def until_upload_pack(repository: Path) -> None:
    """Wait for a Git process of the server to be running in `repository`."""
    for _ in range(600):
        if upload_pack_processes(repository):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"no git process started in {repository}")


def v2_fetch_request(want: str) -> bytes:
    """A protocol v2 `fetch` of one commit, all in one request (`done`)."""
    return (
        pkt_line(b"command=fetch\n")
        + b"0001"
        + pkt_line(b"no-progress\n")
        + pkt_line(f"want {want}\n".encode())
        + pkt_line(b"done\n")
        + b"0000"
    )


V2_LS_REFS = pkt_line(b"command=ls-refs\n") + b"0001" + pkt_line(b"symrefs\n") + b"0000"


async def local_commits(clone: Path, count: int) -> None:
    """`count` empty commits on the clone's main, written in one `git fast-import`, dated
    after everything the server has (negotiation offers the newest commits first)."""
    start = int(time.time()) + 3600
    stream = "".join(
        f"commit refs/heads/main\ncommitter Local <local@example.com> {start + n} +0000\n"
        f"data {len(f'local {n}')}\nlocal {n}\n" + ("from HEAD^0\n" if n == 0 else "") + "\n"
        for n in range(count)
    )
    process = await asyncio.create_subprocess_exec(
        "git", "fast-import", "--quiet", cwd=clone, env=GIT_ENV, stdin=asyncio.subprocess.PIPE
    )
    await process.communicate(stream.encode())
    assert process.returncode == 0


@pytest.fixture
async def novel(ann: Writer) -> dict:
    """Ann's private novel with a chapter, a character and a location made through the API."""
    novel = await new_novel(ann, description="A keeper and a storm.")
    await add(ann, novel["id"], "chapters", {"title": "The Keeper", "content": "The lamp turned."})
    await add(ann, novel["id"], "characters", {"name": "Mara", "role": "protagonist"})
    await add(ann, novel["id"], "locations", {"name": "Harbour"})
    return novel


# -- a clone is a complete, readable backup -------------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_clone_with_a_personal_access_token_is_a_complete_backup(
    client: TestClient, ann: Writer, bob: Writer, tmp_path: Path, protocol: str
):
    status, _ = await ann.call("POST", "/api/v1/orgs", {"name": "Ann's Guild", "slug": "guild"})
    assert status == 201
    status, _ = await ann.call(
        "POST", "/api/v1/orgs/guild/members", {"email": bob.user["email"], "role": "member"}
    )
    assert status == 201
    novel = await new_novel(ann, org="guild")
    await add(ann, novel["id"], "chapters", {"title": "The Keeper", "content": "The lamp turned."})
    await add(bob, novel["id"], "chapters", {"title": "Fog", "content": "Fog came in."})
    await add(ann, novel["id"], "characters", {"name": "Mara", "role": "protagonist"})
    await add(bob, novel["id"], "locations", {"name": "Harbour"})
    token = await personal_token(ann)
    clone = tmp_path / "backup"

    await git(
        "-c", f"protocol.version={protocol}", "clone",
        git_url(client, novel["id"], token["token"]), str(clone),
    )  # fmt: skip

    assert (await git("symbolic-ref", "HEAD", cwd=clone)).stdout.strip() == "refs/heads/main"
    head = (await git("rev-parse", "HEAD", cwd=clone)).stdout.strip()
    assert head == await head_of(ann, novel["id"])
    names = sorted(p.relative_to(clone).as_posix() for p in clone.rglob("*.md"))
    assert names == [
        "chapters/fog.md", "chapters/the-keeper.md", "characters/mara.md",
        "locations/harbour.md", "novel.md",
    ]  # fmt: skip
    keeper = (clone / "chapters" / "the-keeper.md").read_text()
    assert keeper.startswith("---\n") and "title: The Keeper" in keeper
    assert "The lamp turned." in keeper
    authors = set((await git("log", "--format=%an <%ae>", cwd=clone)).stdout.splitlines())
    assert authors == {
        f"Ann Writer <{ann.user['email']}>",
        f"Bob Other <{bob.user['email']}>",
    }
    fsck = await git("fsck", "--strict", "--no-dangling", cwd=clone)
    assert fsck.stderr.strip() == ""


async def test_a_session_token_clones_too_and_ls_remote_names_main_as_head(
    client: TestClient, ann: Writer, novel: dict
):
    url = git_url(client, novel["id"], ann.token)
    listed = (await git("ls-remote", "--symref", url)).stdout.splitlines()
    head = await head_of(ann, novel["id"])
    assert "ref: refs/heads/main\tHEAD" in listed
    assert f"{head}\tHEAD" in listed and f"{head}\trefs/heads/main" in listed
    v0 = await git("-c", "protocol.version=0", "ls-remote", url)
    assert v0.stdout.splitlines() == [f"{head}\tHEAD", f"{head}\trefs/heads/main"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_fetch_brings_the_syncs_and_edits_made_after_the_clone(
    client: TestClient, ann: Writer, novel: dict, tmp_path: Path, protocol: str
):
    config = ("-c", f"protocol.version={protocol}")
    clone = tmp_path / "backup"
    await git(*config, "clone", git_url(client, novel["id"], ann.token), str(clone))
    base = (await git("rev-parse", "HEAD", cwd=clone)).stdout.strip()
    path = f"/api/v1/novels/{novel['id']}/sync"
    changes = [{"path": "chapters/storm.md", "content": "---\ntitle: Storm\n---\nRain.\n"}]
    body = {"device_id": "laptop", "op_id": "op-1", "base": base, "changes": changes}
    status, answer = await ann.call("POST", path, body)
    assert status == 200 and answer["status"] == "fast_forward"
    status, chapters = await ann.call("GET", f"/api/v1/novels/{novel['id']}/chapters")
    keeper = next(c for c in chapters["items"] if c["title"] == "The Keeper")
    status, _ = await ann.call(
        "PATCH",
        f"/api/v1/novels/{novel['id']}/chapters/{keeper['id']}",
        {"content": "The lamp turned twice."},
    )
    assert status == 200

    await git(*config, "fetch", "origin", cwd=clone)

    fetched = (await git("rev-parse", "origin/main", cwd=clone)).stdout.strip()
    assert fetched == await head_of(ann, novel["id"])
    await git("merge", "--ff-only", "origin/main", cwd=clone)
    assert (clone / "chapters" / "storm.md").read_text().endswith("Rain.\n")
    assert "The lamp turned twice." in (clone / "chapters" / "the-keeper.md").read_text()
    await git("fsck", "--strict", cwd=clone)


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_shallow_clone_holds_only_the_head_and_can_deepen(
    client: TestClient, ann: Writer, novel: dict, tmp_path: Path, protocol: str
):
    config = ("-c", f"protocol.version={protocol}")
    clone = tmp_path / "shallow"
    await git(*config, "clone", "--depth", "1", git_url(client, novel["id"], ann.token), str(clone))
    assert (await git("rev-list", "--count", "HEAD", cwd=clone)).stdout.strip() == "1"
    assert (clone / "characters" / "mara.md").is_file()
    await git(*config, "fetch", "--unshallow", cwd=clone)
    # novel created, then a chapter, a character and a location: four commits.
    assert (await git("rev-list", "--count", "HEAD", cwd=clone)).stdout.strip() == "4"


async def test_a_fetch_with_many_haves_sends_a_gzip_body_and_succeeds(
    client: TestClient, ann: Writer, novel: dict, tmp_path: Path
):
    clone = tmp_path / "backup"
    url = git_url(client, novel["id"], ann.token)
    await git("-c", "protocol.version=0", "clone", url, str(clone))
    # 300 local commits the server does not have: the later negotiation rounds carry 64
    # and more `have` lines, a request over 1 KiB, which Git sends gzip-compressed.
    await local_commits(clone, 300)
    await add(ann, novel["id"], "chapters", {"title": "Later", "content": "After the storm."})

    fetched = await git(
        "-c", "protocol.version=0", "fetch", "origin", cwd=clone,
        env={"GIT_TRACE_CURL": "1", "GIT_TRACE_CURL_NO_DATA": "1"},
    )  # fmt: skip

    assert "Content-Encoding: gzip" in fetched.stderr
    assert (await git("rev-parse", "origin/main", cwd=clone)).stdout.strip() == await head_of(
        ann, novel["id"]
    )


async def test_a_gzip_request_body_is_answered_like_the_plain_one(
    client: TestClient, ann: Writer, novel: dict
):
    path = f"/git/{novel['id']}.git/git-upload-pack"
    headers = {
        **ann.headers,
        "Content-Type": "application/x-git-upload-pack-request",
        "Git-Protocol": "version=2",
    }
    plain = await client.post(path, data=V2_LS_REFS, headers=headers)
    zipped = await client.post(
        path, data=gzip.compress(V2_LS_REFS), headers={**headers, "Content-Encoding": "gzip"}
    )
    assert plain.status == zipped.status == 200
    assert plain.headers["Content-Type"] == "application/x-git-upload-pack-result"
    answer = await plain.read()
    assert b"refs/heads/main" in answer and b"symref-target:refs/heads/main" in answer
    assert await zipped.read() == answer
    # x-gzip, the old name Git's http-backend accepts too, arrives undecoded: ours to inflate.
    legacy = await client.post(
        path, data=gzip.compress(V2_LS_REFS), headers={**headers, "Content-Encoding": "x-gzip"}
    )
    assert legacy.status == 200 and await legacy.read() == answer
    unknown = await client.post(
        path, data=V2_LS_REFS, headers={**headers, "Content-Encoding": "compress"}
    )
    assert unknown.status == 415
    cut = await client.post(
        path,
        data=gzip.compress(V2_LS_REFS)[:20],  # not even the whole command: Git cannot answer
        headers={**headers, "Content-Encoding": "x-gzip"},
    )
    assert cut.status == 400
    broken = await client.post(
        path, data=b"\x1f\x8b not gzip at all", headers={**headers, "Content-Encoding": "gzip"}
    )
    assert broken.status == 400


async def test_the_advertisement_has_the_service_line_in_v0_and_not_in_v2(
    client: TestClient, ann: Writer, novel: dict
):
    path = f"/git/{novel['id']}.git/info/refs?service=git-upload-pack"
    v0 = await client.get(path, headers=ann.headers)
    assert v0.status == 200
    assert v0.headers["Content-Type"] == "application/x-git-upload-pack-advertisement"
    assert "no-cache" in v0.headers["Cache-Control"]
    body = await v0.read()
    assert body.startswith(b"001e# service=git-upload-pack\n0000")
    assert b"symref=HEAD:refs/heads/main" in body
    v2 = await client.get(path, headers={**ann.headers, "Git-Protocol": "version=2"})
    assert (await v2.read()).startswith(b"000eversion 2\n")


# -- who may clone ----------------------------------------------------------------------------


async def test_without_credentials_git_is_challenged_for_basic_and_gets_nothing(
    client: TestClient, novel: dict, tmp_path: Path
):
    for method, path in (
        ("GET", f"/git/{novel['id']}.git/info/refs?service=git-upload-pack"),
        ("POST", f"/git/{novel['id']}.git/git-upload-pack"),
        ("GET", "/git/nosuchnovel.git/info/refs?service=git-upload-pack"),
    ):
        response = await client.request(method, path)
        assert response.status == 401, path
        assert response.headers["WWW-Authenticate"] == BASIC
    refused = await git("clone", git_url(client, novel["id"]), str(tmp_path / "c"), check=False)
    assert refused.code != 0
    # Git asked for a user name: it understood the challenge (and prompts are off here).
    assert "could not read Username" in refused.stderr
    assert not (tmp_path / "c").exists()


async def test_a_wrong_or_revoked_token_is_a_401_with_a_basic_challenge(
    client: TestClient, ann: Writer, novel: dict, tmp_path: Path
):
    path = f"/git/{novel['id']}.git/info/refs?service=git-upload-pack"
    for header in (basic("ows_wrong"), {"Authorization": "Bearer ows_wrong"}):
        response = await client.get(path, headers=header)
        assert response.status == 401
        assert response.headers["WWW-Authenticate"] == BASIC
        assert (await response.json())["error"]["code"] == "invalid_token"
    wrong = await git("ls-remote", git_url(client, novel["id"], "ows_wrong"), check=False)
    assert wrong.code != 0 and "Authentication failed" in wrong.stderr

    token = await personal_token(ann)
    url = git_url(client, novel["id"], token["token"])
    await git("clone", url, str(tmp_path / "before"))
    status, _ = await ann.call("DELETE", f"/api/v1/tokens/{token['id']}")
    assert status == 204
    revoked = await git("fetch", "origin", cwd=tmp_path / "before", check=False)
    assert revoked.code != 0 and "Authentication failed" in revoked.stderr
    again = await git("clone", url, str(tmp_path / "after"), check=False)
    assert again.code != 0 and not (tmp_path / "after").exists()


async def test_a_public_novel_clones_without_credentials(
    client: TestClient, ann: Writer, novel: dict, tmp_path: Path
):
    status, _ = await ann.call("PATCH", f"/api/v1/novels/{novel['id']}", {"visibility": "public"})
    assert status == 200
    for protocol in PROTOCOLS:
        clone = tmp_path / f"public-v{protocol}"
        await git(
            "-c", f"protocol.version={protocol}", "clone", git_url(client, novel["id"]),
            str(clone),
        )  # fmt: skip
        assert "The lamp turned." in (clone / "chapters" / "the-keeper.md").read_text()


async def test_another_writer_and_anonymous_callers_learn_nothing_of_a_private_novel(
    client: TestClient, ann: Writer, bob: Writer, novel: dict, settings: Settings, tmp_path: Path
):
    base = f"/git/{novel['id']}.git"
    requests = [
        ("GET", base + "/info/refs?service=git-upload-pack", {}, b""),
        ("GET", base + "/info/refs?service=git-receive-pack", {}, b""),
        ("GET", base + "/info/refs", {}, b""),
        ("POST", base + "/git-upload-pack",
         {"Content-Type": "application/x-git-upload-pack-request", "Git-Protocol": "version=2"},
         V2_LS_REFS),
        ("POST", base + "/git-upload-pack",
         {"Content-Type": "application/x-git-upload-pack-request"}, b"0000"),
        ("POST", base + "/git-receive-pack",
         {"Content-Type": "application/x-git-receive-pack-request"}, b"0000"),
    ]  # fmt: skip
    bob_token = await personal_token(bob, ["read", "write"])
    await bob.call("GET", "/api/v1/me", headers={"Authorization": f"Bearer {bob_token['token']}"})
    before = data_state(settings)
    callers = {
        "bob": (bob.headers, 404),
        "bob's token": (basic(bob_token["token"]), 404),
        "anonymous": ({}, 401),
    }
    for name, (credentials, expected) in callers.items():
        for method, path, headers, data in requests:
            response = await client.request(
                method, path, data=data, headers={**credentials, **headers}
            )
            text = await response.text()
            assert response.status == expected, (name, method, path, response.status, text)
            assert novel["id"] not in text and "Lighthouse" not in text
    for token, says in ((bob.token, "not found"), (None, "could not read Username")):
        refused = await git(
            "clone", git_url(client, novel["id"], token), str(tmp_path / "c"), check=False
        )
        assert refused.code != 0 and not (tmp_path / "c").exists()
        assert says in refused.stderr
    assert data_state(settings) == before


async def test_a_read_only_token_of_a_viewer_clones(
    client: TestClient, ann: Writer, bob: Writer, tmp_path: Path
):
    await ann.call("POST", "/api/v1/orgs", {"name": "Guild", "slug": "viewers-guild"})
    await ann.call(
        "POST",
        "/api/v1/orgs/viewers-guild/members",
        {"email": bob.user["email"], "role": "viewer"},
    )
    novel = await new_novel(ann, org="viewers-guild")
    token = await personal_token(bob, ["read"])
    await git("clone", git_url(client, novel["id"], token["token"]), str(tmp_path / "c"))
    assert (tmp_path / "c" / "novel.md").is_file()


async def test_push_is_refused_with_a_message_git_shows(
    client: TestClient, ann: Writer, novel: dict, tmp_path: Path, settings: Settings
):
    clone = tmp_path / "backup"
    await git("clone", git_url(client, novel["id"], ann.token), str(clone))
    (clone / "chapters" / "local.md").write_text("---\ntitle: Local\n---\nMine.\n")
    identity = ("-c", "user.name=Ann", "-c", "user.email=ann@example.com")
    await git("add", ".", cwd=clone)
    await git(*identity, "commit", "-q", "-m", "local edit", cwd=clone)
    before = data_state(settings)

    pushed = await git("push", "origin", "main", cwd=clone, check=False)

    assert pushed.code != 0
    assert "remote: pushing to OpenWrite is not supported yet" in pushed.stderr
    assert "403" in pushed.stderr
    response = await client.post(
        f"/git/{novel['id']}.git/git-receive-pack",
        data=b"0000",
        headers={**ann.headers, "Content-Type": "application/x-git-receive-pack-request"},
    )
    assert response.status == 403
    assert (await response.json())["error"]["code"] == "push_not_supported"
    assert data_state(settings) == before


async def test_requests_git_does_not_make_are_refused_plainly(
    client: TestClient, ann: Writer, novel: dict
):
    base = f"/git/{novel['id']}.git"
    dumb = await client.get(base + "/info/refs", headers=ann.headers)
    assert dumb.status == 404
    other = await client.get(base + "/info/refs?service=git-annex", headers=ann.headers)
    assert other.status == 403
    assert (await other.json())["error"]["code"] == "unsupported_service"
    form = await client.post(
        base + "/git-upload-pack",
        data=b"0000",
        headers={**ann.headers, "Content-Type": "text/plain"},
    )
    assert form.status == 415
    for path in (base + "/HEAD", base + "/objects/info/packs"):
        assert (await client.get(path, headers=ann.headers)).status == 404
    request = {**ann.headers, "Content-Type": "application/x-git-upload-pack-request"}
    garbage = await client.post(base + "/git-upload-pack", data=b"hello git", headers=request)
    assert garbage.status == 400
    assert (await garbage.json())["error"]["code"] == "git_protocol_error"
    # An empty negotiation is Git's to answer, and it answers nothing.
    empty = await client.post(base + "/git-upload-pack", data=b"0000", headers=request)
    assert empty.status == 200 and await empty.read() == b""
    await until_no_upload_pack(client.app[LIBRARY].path(novel["id"]))


# -- browsers ---------------------------------------------------------------------------------


async def test_a_browser_on_an_allowed_origin_may_fetch_packs(
    client: TestClient, ann: Writer, novel: dict
):
    path = f"/git/{novel['id']}.git/git-upload-pack"
    preflight = await client.options(
        path,
        headers={
            "Origin": ALLOWED_ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type, git-protocol",
        },
    )
    assert preflight.status == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == ALLOWED_ORIGIN
    allowed = {
        h.strip().lower() for h in preflight.headers["Access-Control-Allow-Headers"].split(",")
    }
    assert {"authorization", "content-type", "git-protocol"} <= allowed
    assert "POST" in preflight.headers["Access-Control-Allow-Methods"]
    response = await client.post(
        path,
        data=V2_LS_REFS,
        headers={
            **basic(ann.token),
            "Origin": ALLOWED_ORIGIN,
            "Content-Type": "application/x-git-upload-pack-request",
            "Git-Protocol": "version=2",
        },
    )
    assert response.status == 200
    assert response.headers["Access-Control-Allow-Origin"] == ALLOWED_ORIGIN
    assert b"refs/heads/main" in await response.read()
    refused = await client.get(
        f"/git/{novel['id']}.git/info/refs?service=git-upload-pack",
        headers={"Origin": ALLOWED_ORIGIN},
    )
    assert refused.status == 401
    assert refused.headers["Access-Control-Allow-Origin"] == ALLOWED_ORIGIN
    assert "WWW-Authenticate" in refused.headers["Access-Control-Expose-Headers"]


# -- clones beside writes and repacks -----------------------------------------------------------


async def test_clones_beside_syncs_and_full_repacks_always_get_a_consistent_history(
    client: TestClient, ann: Writer, novel: dict, tmp_path: Path
):
    library = client.app[LIBRARY]
    url = git_url(client, novel["id"], ann.token)
    heads = set()
    for round_ in range(4):
        repack = asyncio.get_running_loop().run_in_executor(
            None, lambda: library.maintain(novel["id"], force=True)
        )
        clones = [git("clone", "-q", url, str(tmp_path / f"c{round_}-{n}")) for n in range(3)]
        edit = add(ann, novel["id"], "chapters", {"title": f"Round {round_}", "content": "Wave."})
        await asyncio.gather(repack, edit, *clones)
        for n in range(3):
            clone = tmp_path / f"c{round_}-{n}"
            await git("fsck", "--strict", cwd=clone)
            heads.add((await git("rev-parse", "HEAD", cwd=clone)).stdout.strip())
    final = tmp_path / "final"
    await git("clone", "-q", url, str(final))
    assert (await git("rev-list", "--count", "HEAD", cwd=final)).stdout.strip() == "8"
    assert heads <= set((await git("rev-list", "HEAD", cwd=final)).stdout.split())


# -- timeouts and disconnects -------------------------------------------------------------------


@pytest.fixture
async def impatient(aiohttp_client, settings: Settings) -> TestClient:
    """A server that gives up on a Git exchange after one second without progress."""
    return await aiohttp_client(
        create_app(replace(settings, git_timeout_seconds=1, max_body_bytes=64 * 1024))
    )


async def big_novel(writer: Writer) -> tuple[dict, Path, str]:
    """A novel with a chapter of ~40 MB of incompressible text: its pack outgrows every
    socket buffer, so a client that stops reading really stops the server's writes."""
    novel = await new_novel(writer, "The Long Book")
    path = writer.client.app[LIBRARY].path(novel["id"])
    repo = NovelRepository.open(path)
    head = repo.head()
    text = base64.b64encode(os.urandom(30 * 1024 * 1024)).decode()
    commit = repo.write_commit(
        parent=head,
        changes={"chapters/long.md": text},
        author=Author("Ann Writer", writer.user["email"]),
        message="A long chapter",
    )
    with repo.lock(timeout=10):
        repo.advance_head(commit, head, reason="test")
    return novel, path, commit


async def raw_request(
    client: TestClient, path: str, headers: dict[str, str], body: bytes = b""
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A hand-written HTTP/1.1 request on its own connection, so the test controls pacing."""
    reader, writer = await asyncio.open_connection(client.host, client.port)
    lines = [f"POST {path} HTTP/1.1", f"Host: {client.host}:{client.port}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
    await writer.drain()
    return reader, writer


async def fetch_request(
    client: TestClient, writer: Writer, novel_id: str, body: bytes, *, chunked: bool = False
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A protocol v2 upload-pack request on its own connection; `chunked` sends `body` as
    one chunk with no end, so the server keeps waiting for the rest."""
    framing = {"Transfer-Encoding": "chunked"} if chunked else {"Content-Length": str(len(body))}
    return await raw_request(
        client,
        f"/git/{novel_id}.git/git-upload-pack",
        {
            **writer.headers,
            "Content-Type": "application/x-git-upload-pack-request",
            "Git-Protocol": "version=2",
            **framing,
        },
        f"{len(body):x}\r\n".encode() + body + b"\r\n" if chunked else body,
    )


async def stalled_fetch(
    client: TestClient,
) -> tuple[tuple[Writer, dict], Path, asyncio.StreamReader, asyncio.StreamWriter]:
    """A new writer's novel, and a fetch of it whose chunked body never ends: its
    upload-pack waits for the rest until the server gives up on it."""
    ann = await sign_up(client)
    novel = await new_novel(ann)
    path = client.app[LIBRARY].path(novel["id"])
    head = await head_of(ann, novel["id"])
    request = pkt_line(b"command=fetch\n") + b"0001" + pkt_line(f"want {head}\n".encode())
    reader, writer = await fetch_request(client, ann, novel["id"], request, chunked=True)
    return (ann, novel), path, reader, writer


async def test_a_request_body_that_stalls_ends_in_408_and_kills_upload_pack(
    impatient: TestClient,
):
    _, path, reader, writer = await stalled_fetch(impatient)
    try:
        status_line = await reader.readline()
        assert status_line.startswith(b"HTTP/1.1 408"), status_line
        await until_no_upload_pack(path)
    finally:
        writer.close()


async def test_a_client_that_stops_reading_is_cut_off_and_upload_pack_killed(
    impatient: TestClient,
):
    ann = await sign_up(impatient)
    novel, path, commit = await big_novel(ann)
    reader, writer = await fetch_request(impatient, ann, novel["id"], v2_fetch_request(commit))
    try:
        assert (await reader.readline()).startswith(b"HTTP/1.1 200")
        assert upload_pack_processes(path)
        # Read nothing more: the server's writes block, and after a second it gives up.
        await until_no_upload_pack(path)
        received = 0
        while chunk := await reader.read(1 << 20):
            received += len(chunk)
        # The connection was closed before the whole pack (~30 MB) went out.
        assert received < 30 * 1024 * 1024
    finally:
        writer.close()
    await until_git_requests_done(impatient)


async def test_a_client_that_hangs_up_mid_clone_stops_upload_pack(client: TestClient):
    ann = await sign_up(client)
    novel, path, commit = await big_novel(ann)
    reader, writer = await fetch_request(client, ann, novel["id"], v2_fetch_request(commit))
    assert (await reader.readline()).startswith(b"HTTP/1.1 200")
    await reader.read(64 * 1024)
    writer.transport.abort()
    await until_no_upload_pack(path)
    await until_git_requests_done(client)
    # The server still answers the next clone.
    status, _ = await ann.call("GET", f"/api/v1/novels/{novel['id']}")
    assert status == 200


async def test_a_request_body_over_the_limit_is_413(impatient: TestClient):
    ann = await sign_up(impatient)
    novel = await new_novel(ann)
    haves = b"".join(pkt_line(f"have {n:040x}\n".encode()) for n in range(2000))
    response = await impatient.post(
        f"/git/{novel['id']}.git/git-upload-pack",
        data=pkt_line(f"want {await head_of(ann, novel['id'])}\n".encode()) + b"0000" + haves,
        headers={**ann.headers, "Content-Type": "application/x-git-upload-pack-request"},
    )
    assert response.status == 413
    assert (await response.json())["error"]["details"]["limit"] == 64 * 1024
    await until_no_upload_pack(impatient.app[LIBRARY].path(novel["id"]))


# -- logs -------------------------------------------------------------------------------------


def test_tokens_never_reach_the_server_log(tmp_path: Path):
    """A clone with the token in the URL, against a real server process: its log (access
    log included) shows the request, never the token."""
    server = start_server(tmp_path / "data")
    try:

        def call(method: str, path: str, body: dict, token: str | None = None) -> dict:
            headers = {"Content-Type": "application/json"}
            if token:
                headers["Authorization"] = f"Bearer {token}"
            request = urllib.request.Request(
                server.url + path, data=json.dumps(body).encode(), headers=headers, method=method
            )
            with urllib.request.urlopen(request) as answer:
                return json.loads(answer.read())

        account = {"name": "Ann", "email": "ann@example.com", "password": "correct horse"}
        session = call("POST", "/api/v1/auth/signup", account)["token"]
        novel = call("POST", "/api/v1/novels", {"title": "Logged"}, session)
        token = call("POST", "/api/v1/tokens", {"name": "b", "scopes": ["read"]}, session)["token"]
        url = server.url.replace("http://", f"http://writer:{token}@") + f"/git/{novel['id']}.git"
        for args in (["clone", url, str(tmp_path / "c")], ["ls-remote", url.replace(token, "x")]):
            subprocess.run(["git", *args], env=GIT_ENV, capture_output=True, check=False)
        assert (tmp_path / "c" / "novel.md").is_file()
    finally:
        server.stop()
    log = server.log()
    assert f"/git/{novel['id']}.git/git-upload-pack" in log
    for secret in (token, session, base64.b64encode(f"writer:{token}".encode()).decode()):
        assert secret not in log


async def test_the_openapi_document_describes_the_git_routes_and_their_content_types(
    client: TestClient,
):
    document = await (await client.get("/api/v1/openapi.json")).json()
    info_refs = document["paths"]["/git/{novel_id}.git/info/refs"]["get"]
    assert "application/x-git-upload-pack-advertisement" in info_refs["responses"]["200"]["content"]
    assert {p["name"] for p in info_refs["parameters"]} == {"novel_id", "service"}
    upload = document["paths"]["/git/{novel_id}.git/git-upload-pack"]["post"]
    assert "application/x-git-upload-pack-result" in upload["responses"]["200"]["content"]
    assert {"401", "404", "413"} <= set(upload["responses"])
    push = document["paths"]["/git/{novel_id}.git/git-receive-pack"]["post"]
    assert "403" in push["responses"]


async def test_git_processes_beyond_the_limit_wait_then_get_a_503(
    aiohttp_client, settings: Settings
):
    """One slot: a stalled fetch holds it, the next request queues for its second and is
    told to come back (503 `git_busy`, Retry-After); once the slot frees, Git answers."""
    client = await aiohttp_client(
        create_app(replace(settings, git_max_processes=1, git_queue_seconds=1,
                           git_timeout_seconds=3))
    )  # fmt: skip
    (ann, novel), path, reader, writer = await stalled_fetch(client)
    try:
        await until_upload_pack(path)
        refs = f"/git/{novel['id']}.git/info/refs?service=git-upload-pack"
        busy = await client.get(refs, headers=ann.headers)
        assert busy.status == 503, await busy.text()
        assert busy.headers["Retry-After"] == "5"
        assert (await busy.json())["error"]["code"] == "git_busy"
        status_line = await reader.readline()  # the stalled fetch times out, freeing the slot
        assert status_line.startswith(b"HTTP/1.1 408"), status_line
    finally:
        writer.close()
    await until_no_upload_pack(path)
    answer = await client.get(refs, headers=ann.headers)
    assert answer.status == 200
    assert b"git-upload-pack" in await answer.read()
