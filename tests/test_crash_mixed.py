"""A server killed with SIGKILL at a random moment of a mixed load, several rounds: devices
syncing (an unanswered sync is resent as is), a writer editing chapters, characters and
locations through the content routes, `git clone` over HTTP in a loop, and
`openwrite admin maintenance` repacking beside them (itself killed mid-run or left to
finish). After each round the server is restarted, the load paused, and:

- every write answered 2xx is there: a sync's head is in the novel's history and the
  text the device sent is in that head's history; an edit's commit holds what it wrote,
  and an item nobody wrote to since holds it still; each device's paragraph is its last
  answered text or the one it is still resending;
- every clone that completed is a whole repository (`git fsck --strict`) whose head is in
  the novel's history and reaches every head answered before the clone began;
- every repository passes `git fsck --strict`, SQLite's `integrity_check` is ok;
- the index agrees with Git: the novel's head is `refs/heads/main`, the chapter,
  character and location rows are those of the files at the head, the word count is
  theirs, and the revision index holds exactly the commits the head reaches, with their
  parents and first-parent line.

`OPENWRITE_CRASH_SEED` picks other kill moments and edits."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import random
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import apsw
import pygit2
import pytest

from storage.content_index import describe
from storage.db import connect, query, query_one
from storage.documents import parse_document
from storage.layout import kind_of
from tests.servers import REPO_ROOT, ServerProcess, free_port, start_server

SEED = int(os.environ.get("OPENWRITE_CRASH_SEED", "20240611"))
NOVELS = 2
DEVICES_PER_NOVEL = 2
ROUNDS = 4
LOAD_SECONDS = (0.8, 2.0)
ITEMS_PER_KIND = 3
STORM = "chapters/storm.md"
PARAGRAPHS = 4
# (folder, the front-matter field that names an item)
KINDS = {
    "chapter": ("chapters", "title"),
    "character": ("characters", "name"),
    "location": ("locations", "name"),
}
# The index columns that must equal what the file at the head describes.
INDEX_COLUMNS = {
    "chapter": ("id", "path", "title", "number", "status", "word_count", "blob"),
    "character": ("id", "path", "name", "role", "word_count", "blob"),
    "location": ("id", "path", "name", "type", "parent_id", "word_count", "blob"),
}
GIT_ENV = {
    **{k: v for k, v in os.environ.items() if not k.startswith("GIT_")},
    "GIT_TERMINAL_PROMPT": "0",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_ASKPASS": "",
}
REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=10)
DOWN = (TimeoutError, aiohttp.ClientError, ConnectionError)

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs the git command")


# -- what the clients were told -------------------------------------------------------------


@dataclass
class Device:
    novel_id: str
    name: str
    slot: int
    base: str | None = None
    text: str | None = None
    op: int = 0
    pending: dict | None = None
    pending_word: str | None = None
    answered_word: str = "first"
    conflicted: bool = False


@dataclass(frozen=True)
class SyncAnswer:
    novel_id: str
    device: str
    head: str
    blob: str  # of the text the device sent


@dataclass(frozen=True)
class EditAnswer:
    novel_id: str
    kind: str
    item_id: str
    path: str
    head: str
    label: str
    content: str


@dataclass
class Item:
    """An item the writer created (answered 201): its last answered version, and the
    versions sent since without an answer (each may or may not have landed)."""

    novel_id: str
    kind: str
    id: str
    path: str
    answered: tuple[str, str]
    unanswered: list[tuple[str, str]] = field(default_factory=list)

    def possible(self) -> list[tuple[str, str]]:
        return [self.answered, *self.unanswered]


@dataclass(frozen=True)
class Clone:
    novel_id: str
    path: Path
    acknowledged: int  # how many heads of the novel had been answered when it began
    ok: bool
    error: str


@dataclass
class Ledger:
    acknowledged: dict[str, list[str]]  # novel -> every head answered 2xx, in answer order
    syncs: list[SyncAnswer] = field(default_factory=list)
    edits: list[EditAnswer] = field(default_factory=list)
    items: dict[str, Item] = field(default_factory=dict)
    clones: list[Clone] = field(default_factory=list)
    maintenance: list[tuple[int, str]] = field(default_factory=list)  # (returncode, output)
    unexpected: list[tuple[int, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    repacks_killed: int = 0


# -- the load -----------------------------------------------------------------------------


def paragraph(index: int, word: str) -> str:
    return f"Paragraph {index} begins here and the {word} word changes often."


def opening() -> str:
    body = "\n\n".join(paragraph(i, "first") for i in range(PARAGRAPHS))
    return f"---\ntitle: Storm\n---\n{body}\n"


def blob_of(text: str) -> str:
    return str(pygit2.hash(text.encode("utf-8")))


async def device_loop(
    session: aiohttp.ClientSession, url: str, headers: dict, device: Device, ledger: Ledger,
    stop: asyncio.Event,
) -> None:  # fmt: skip
    """Edit the device's own paragraph, sync, and resend an unanswered sync as is."""
    path = f"{url}/api/v1/novels/{device.novel_id}/sync"
    while not stop.is_set():
        try:
            if device.base is None:
                async with session.get(path, headers=headers, timeout=REQUEST_TIMEOUT) as pull:
                    pulled = await pull.json()
                if pull.status != 200:
                    ledger.unexpected.append((pull.status, str(pulled)[:300]))
                    return
                device.text = next(f["content"] for f in pulled["files"] if f["path"] == STORM)
                device.base = pulled["head"]
            if device.pending is None:
                device.op += 1
                word = f"{device.name}x{device.op}"
                lines = device.text.split("\n")
                mine = next(i for i, line in enumerate(lines)
                            if line.startswith(f"Paragraph {device.slot} "))  # fmt: skip
                lines[mine] = paragraph(device.slot, word)
                device.pending_word = word
                change = {"path": STORM, "content": "\n".join(lines)}
                device.pending = {"device_id": device.name, "op_id": f"op-{device.op}",
                                  "base": device.base, "changes": [change]}  # fmt: skip
            async with session.post(
                path, json=device.pending, headers=headers, timeout=REQUEST_TIMEOUT
            ) as response:
                answer = await response.json()
        except DOWN:
            await asyncio.sleep(0.05)  # the server is down: keep the unanswered sync
            continue
        if response.status == 200:
            sent = device.pending["changes"][0]["content"]
            ledger.syncs.append(SyncAnswer(device.novel_id, device.name, answer["head"],
                                           blob_of(sent)))  # fmt: skip
            ledger.acknowledged[device.novel_id].append(answer["head"])
            device.conflicted |= answer["status"] == "conflicted"
            for entry in answer["files"]:
                if entry["path"] == STORM:
                    device.text = entry["content"]
            device.base, device.answered_word = answer["head"], device.pending_word
            device.pending = device.pending_word = None
        elif response.status == 503:
            await asyncio.sleep(0.05)
        else:
            ledger.unexpected.append((response.status, str(answer)[:300]))
            device.pending = device.pending_word = None


def item_content(rng: random.Random, kind: str, version: int) -> str:
    words = [f"{kind[:2]}{version}w{i}" for i in range(rng.randint(3, 40))]
    return " ".join(words) + "\n\nThe end of this version."


async def editor_loop(
    session: aiohttp.ClientSession, url: str, headers: dict, novel_id: str, ledger: Ledger,
    rng: random.Random, versions: itertools.count, stop: asyncio.Event,
) -> None:  # fmt: skip
    """A writer creating and rewriting chapters, characters and locations, one at a time."""
    while not stop.is_set():
        kind = rng.choice(sorted(KINDS))
        folder, label_key = KINDS[kind]
        version = next(versions)
        mine = [i for i in ledger.items.values() if i.novel_id == novel_id and i.kind == kind]
        create = not mine or (len(mine) < ITEMS_PER_KIND and rng.random() < 0.5)
        item = None if create else rng.choice(mine)
        label = f"{kind.capitalize()} take {version}"
        content = item_content(rng, kind, version)
        target = f"{url}/api/v1/novels/{novel_id}/{folder}"
        method = "POST" if item is None else "PATCH"
        if item is not None:
            target += f"/{item.id}"
        body = {label_key: label, "content": content}
        try:
            async with session.request(
                method, target, json=body, headers=headers, timeout=REQUEST_TIMEOUT
            ) as response:
                answer = await response.json()
        except DOWN:
            if item is not None:
                item.unanswered.append((label, content))
            await asyncio.sleep(0.05)
            continue
        if response.status in (200, 201):
            row = answer[kind]
            if item is None:
                item = ledger.items[row["id"]] = Item(
                    novel_id, kind, row["id"], row["path"], (label, content)
                )
            item.answered, item.unanswered = (label, content), []
            ledger.edits.append(EditAnswer(novel_id, kind, item.id, item.path, answer["head"],
                                           label, content))  # fmt: skip
            ledger.acknowledged[novel_id].append(answer["head"])
        elif response.status == 503:
            if item is not None:
                item.unanswered.append((label, content))
            await asyncio.sleep(0.05)
        else:
            ledger.unexpected.append((response.status, str(answer)[:300]))


async def clone_loop(
    url: str, token: str, novel_ids: list[str], ledger: Ledger, clones_dir: Path,
    stop: asyncio.Event,
) -> None:  # fmt: skip
    """`git clone --bare` of each novel in turn, as a backup script would run it."""
    authority = url.replace("http://", f"http://backup:{token}@", 1)
    for n in itertools.count():
        if stop.is_set():
            return
        novel_id = novel_ids[n % len(novel_ids)]
        target = clones_dir / f"{len(ledger.clones)}-{novel_id}.git"
        acknowledged = len(ledger.acknowledged[novel_id])
        process = await asyncio.create_subprocess_exec(
            "git", "clone", "--bare", "--quiet", f"{authority}/git/{novel_id}.git", str(target),
            env=GIT_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        try:
            _, err = await asyncio.wait_for(process.communicate(), 30)
        except TimeoutError:
            process.kill()
            _, err = await process.communicate()
        ok = process.returncode == 0
        ledger.clones.append(Clone(novel_id, target, acknowledged, ok, err.decode()[-500:]))
        if not ok:
            await asyncio.sleep(0.05)


@dataclass
class Maintenance:
    """`openwrite admin maintenance` run again and again, in its own process group so
    that a kill takes its `git repack` with it."""

    process: asyncio.subprocess.Process | None = None

    async def loop(self, data_dir: Path, ledger: Ledger, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "server.cli", "admin", "maintenance", "--quiet",
                "--data-dir", str(data_dir), cwd=REPO_ROOT, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
            out, _ = await self.process.communicate()
            ledger.maintenance.append((self.process.returncode, out.decode()[-2000:]))

    def kill(self) -> str:
        """SIGKILL the running command and its children; says what it caught (a note)."""
        if self.process is None or self.process.returncode is not None:
            return "maintenance idle"
        caught = _group_commands(self.process.pid)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        return f"maintenance killed in {caught}"

    async def kill_in_git(self, rng: random.Random, deadline: float) -> str:
        """Wait until the command runs `git` (repack, prune-packed), then kill it."""
        loop = asyncio.get_running_loop()
        while loop.time() < deadline:
            process = self.process
            running = process is not None and process.returncode is None
            if running and "git" in _children_commands(process.pid):
                await asyncio.sleep(rng.uniform(0, 0.01))
                return self.kill()
            await asyncio.sleep(0.001)
        return "maintenance never seen in git"


def _children_commands(pid: int) -> list[str]:
    """The command names of a process's children (Linux /proc; cheap enough to poll)."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []
    names = []
    for child in children:
        with contextlib.suppress(OSError):
            names.append(Path(f"/proc/{child}/comm").read_text().strip())
    return names


def _group_commands(group: int) -> list[str]:
    """The command names of a process group's members (Linux /proc; for notes only)."""
    names = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        name, rest = text[text.index("(") + 1 : text.rindex(")")], text[text.rindex(")") + 2 :]
        if int(rest.split()[2]) == group:
            names.append(name)
    return sorted(names)


async def prepare(url: str) -> tuple[dict, str, list[str]]:
    """A writer, a read-only access token for the backups, and novels with a shared chapter."""
    async with aiohttp.ClientSession() as session:
        async with session.post(url + "/api/v1/auth/signup", json={
            "name": "Mixed Writer", "email": "mixed@example.com", "password": "correct horse",
        }) as response:  # fmt: skip
            assert response.status == 201
            headers = {"Authorization": f"Bearer {(await response.json())['token']}"}
        async with session.post(
            url + "/api/v1/tokens", json={"name": "backup", "scopes": ["read"]}, headers=headers
        ) as response:
            assert response.status == 201
            token = (await response.json())["token"]
        novel_ids = []
        for n in range(NOVELS):
            async with session.post(
                url + "/api/v1/novels", json={"title": f"Mixed {n}"}, headers=headers
            ) as response:
                assert response.status == 201
                novel_id = (await response.json())["id"]
            body = {"device_id": "setup", "op_id": "setup", "base": None,
                    "changes": [{"path": STORM, "content": opening()}]}  # fmt: skip
            async with session.post(
                url + f"/api/v1/novels/{novel_id}/sync", json=body, headers=headers
            ) as response:
                assert response.status == 200
            novel_ids.append(novel_id)
    return headers, token, novel_ids


async def crash_round(
    server: ServerProcess, headers: dict, token: str, novel_ids: list[str], devices: list[Device],
    versions: dict[str, itertools.count], ledger: Ledger, rng: random.Random, clones_dir: Path,
    kill_maintenance: bool,
) -> ServerProcess:  # fmt: skip
    """Load, SIGKILL at a random moment, stop the load, restart; answers the new server.

    With `kill_maintenance`, the maintenance command is killed too, while it runs `git`
    (the server may go on writing beside what the repack left), then once more whatever
    it is doing. Otherwise the run going on when the server dies is left to finish."""
    stop, maintenance = asyncio.Event(), Maintenance()
    url = server.url
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        tasks = [asyncio.create_task(device_loop(session, url, headers, d, ledger, stop))
                 for d in devices]  # fmt: skip
        tasks += [
            asyncio.create_task(editor_loop(session, url, headers, novel_id, ledger,
                                            random.Random(rng.random()), versions[novel_id], stop))
            for novel_id in novel_ids
        ]  # fmt: skip
        tasks.append(asyncio.create_task(clone_loop(url, token, novel_ids, ledger, clones_dir,
                                                    stop)))  # fmt: skip
        # In a killing round the maintenance loop outlives the server until a kill caught
        # it in `git`, so that a slow start of Python does not let it escape.
        maintenance_stop = asyncio.Event()
        tasks.append(
            asyncio.create_task(maintenance.loop(server.data_dir, ledger, maintenance_stop))
        )
        loop = asyncio.get_running_loop()
        deadline, jitter = loop.time() + rng.uniform(*LOAD_SECONDS), random.Random(rng.random())
        try:
            if kill_maintenance:
                catch = asyncio.create_task(maintenance.kill_in_git(jitter, deadline + 5))
                tasks.append(catch)
            await asyncio.sleep(max(0.0, deadline - loop.time()))
            server.kill()
            stop.set()
            if kill_maintenance:
                caught = await catch
                ledger.notes.append(caught)
                ledger.repacks_killed += "'git'" in caught
            maintenance_stop.set()
            if kill_maintenance:
                ledger.notes.append(maintenance.kill())  # else the run going on may finish
            await asyncio.gather(*tasks)
        finally:  # a failed client: leave nothing running
            stop.set()
            maintenance_stop.set()
            maintenance.kill()
            for task in tasks:
                task.cancel()
    return await asyncio.to_thread(start_server, server.data_dir, port=server.port)


# -- the checks ---------------------------------------------------------------------------


def fsck(git_dir: Path) -> None:
    done = subprocess.run(
        ["git", "--git-dir", str(git_dir), "fsck", "--strict", "--no-progress"],
        capture_output=True, text=True, env=GIT_ENV,
    )  # fmt: skip
    assert done.returncode == 0, f"{git_dir}: {done.stdout}{done.stderr}"
    assert "error" not in done.stderr.lower(), f"{git_dir}: {done.stderr}"
    assert "missing" not in done.stdout + done.stderr, f"{git_dir}: {done.stdout}{done.stderr}"


def reachable(repo: pygit2.Repository, head: str) -> dict[str, list[str]]:
    """Every commit `head` reaches, with its parents."""
    return {
        str(commit.id): [str(p) for p in commit.parent_ids]
        for commit in repo.walk(pygit2.Oid(hex=head), pygit2.enums.SortMode.TOPOLOGICAL)
    }


def first_parent_line(history: dict[str, list[str]], head: str) -> set[str]:
    line, rev = set(), head
    while rev is not None:
        line.add(rev)
        rev = history[rev][0] if history[rev] else None
    return line


def file_at(repo: pygit2.Repository, rev: str, path: str) -> str | None:
    try:
        entry = repo[pygit2.Oid(hex=rev)].peel(pygit2.Commit).tree[path]
    except KeyError:
        return None
    return repo[entry.id].data.decode("utf-8")


def files_at(repo: pygit2.Repository, rev: str) -> dict[str, tuple[str, str]]:
    """(text, blob) of every file at `rev`, by path."""
    files = {}
    tree = repo[pygit2.Oid(hex=rev)].peel(pygit2.Commit).tree
    for folder in tree:
        if folder.type_str != "tree":
            continue
        for entry in repo[folder.id]:
            blob = repo[entry.id]
            files[f"{folder.name}/{entry.name}"] = (blob.data.decode("utf-8"), str(entry.id))
    return files


def words(text: str) -> int:
    return len(text.split())


def check_index(conn: apsw.Connection, repo: pygit2.Repository, novel_id: str, head: str) -> None:
    """The item rows and word counts are those of the files at the head."""
    files = files_at(repo, head)
    for kind, columns in INDEX_COLUMNS.items():
        expected = sorted(
            tuple(describe(path, text, blob)[c] for c in columns)
            for path, (text, blob) in files.items()
            if kind_of(path) == kind
        )
        rows = query(conn, f"SELECT {', '.join(columns)} FROM {kind} WHERE novel_id = ?",
                     (novel_id,))  # fmt: skip
        assert sorted(tuple(r[c] for c in columns) for r in rows) == expected, kind
    total = sum(r["word_count"] for r in query(
        conn, "SELECT word_count FROM chapter WHERE novel_id = ?", (novel_id,)))  # fmt: skip
    novel = query_one(conn, "SELECT current_word_count FROM novel WHERE id = ?", (novel_id,))
    assert novel["current_word_count"] == total
    newest = query_one(conn, "SELECT total_words FROM revision WHERE novel_id = ? AND rev = ?",
                       (novel_id, head))  # fmt: skip
    assert newest is not None and newest["total_words"] == total, (newest, total)


def check_revisions(
    conn: apsw.Connection, novel_id: str, history: dict[str, list[str]], head: str
) -> None:
    """The revision index holds exactly the commits the head reaches, as Git has them."""
    rows = {
        r["rev"]: r
        for r in query(
            conn, "SELECT rev, parents, mainline FROM revision WHERE novel_id = ?", (novel_id,)
        )
    }
    assert sorted(set(history) - set(rows)) == [], "commits missing from the revision index"
    assert sorted(set(rows) - set(history)) == [], "indexed revisions the head does not reach"
    mainline = first_parent_line(history, head)
    for rev, row in rows.items():
        assert json.loads(row["parents"]) == history[rev], rev
        assert bool(row["mainline"]) == (rev in mainline), rev


def check_syncs(
    repo: pygit2.Repository, novel_id: str, history: dict[str, list[str]], head: str,
    ledger: Ledger, devices: list[Device],
) -> None:  # fmt: skip
    """Each answered sync's head is in history, and what the device sent is in its past."""
    holding: dict[str, list[str]] = {}  # blob of the shared chapter -> commits that hold it
    for rev in history:
        text = file_at(repo, rev, STORM)
        if text is not None:
            holding.setdefault(blob_of(text), []).append(rev)
    for sync in ledger.syncs:
        if sync.novel_id != novel_id:
            continue
        assert sync.head in history, f"answered head {sync.head} of {sync.device} is lost"
        assert any(
            rev == sync.head or repo.descendant_of(pygit2.Oid(hex=sync.head), pygit2.Oid(hex=rev))
            for rev in holding.get(sync.blob, [])
        ), f"the text {sync.device} sent is not in the history of {sync.head}"
    lines = file_at(repo, head, STORM).split("\n")
    for device in devices:
        if device.novel_id != novel_id or device.conflicted:
            continue
        mine = next(line for line in lines if line.startswith(f"Paragraph {device.slot} "))
        possible = {paragraph(device.slot, w) for w in (device.answered_word, device.pending_word)
                    if w is not None}  # fmt: skip
        assert mine in possible, device.name


def check_edits(
    conn: apsw.Connection, repo: pygit2.Repository, novel_id: str, head: str, ledger: Ledger
) -> int:
    """Each answered edit's commit holds what it wrote; each item holds its last version.
    Answers how many items hold a version whose answer the crash swallowed."""
    swallowed = 0
    for edit in ledger.edits:
        if edit.novel_id != novel_id:
            continue
        text = file_at(repo, edit.head, edit.path)
        assert text is not None, f"{edit.path} missing at the answered {edit.head}"
        document = parse_document(text)
        label = KINDS[edit.kind][1]
        assert (document.meta[label], document.meta["id"], document.body) == (
            edit.label,
            edit.item_id,
            edit.content,
        ), f"{edit.path} at {edit.head}"
    for item in ledger.items.values():
        if item.novel_id != novel_id:
            continue
        text = file_at(repo, head, item.path)
        assert text is not None, f"{item.path} was answered 201 and is gone"
        document = parse_document(text)
        now = (document.meta[KINDS[item.kind][1]], document.body)
        assert now in item.possible(), f"{item.path}: {now[0]} is not a version it was sent"
        swallowed += now != item.answered
        row = query_one(conn, f"SELECT * FROM {item.kind} WHERE novel_id = ? AND id = ?",
                        (novel_id, item.id))  # fmt: skip
        assert row is not None, f"{item.kind} {item.id} is not in the index"
        assert (row["path"], row[KINDS[item.kind][1]], row["word_count"]) == (
            item.path,
            now[0],
            words(now[1]),
        )
    return swallowed


def check_clones(data_dir: Path, ledger: Ledger) -> int:
    """Every completed clone is whole and at a head at least as new as those answered
    before it began; only the one running when the server died may fail. Answers how
    many completed, and removes them."""
    failed = [clone.error for clone in ledger.clones if not clone.ok]
    assert len(failed) <= 1, f"clones failed while the server was up: {failed}"
    for clone in ledger.clones:
        if not clone.ok:
            continue
        fsck(clone.path)
        head = str(pygit2.Repository(str(clone.path)).references["refs/heads/main"].target)
        repo = pygit2.Repository(str(data_dir / "novels" / f"{clone.novel_id}.git"))
        assert repo.get(head) is not None, f"the cloned head {head} is not the server's"
        past = reachable(repo, head)
        for answered in ledger.acknowledged[clone.novel_id][: clone.acknowledged]:
            assert answered in past, f"a clone at {head} lacks {answered}, answered before it"
    completed = len(ledger.clones) - len(failed)
    for clone in ledger.clones:
        shutil.rmtree(clone.path, ignore_errors=True)
    ledger.clones.clear()
    return completed


def check_after_restart(
    data_dir: Path, novel_ids: list[str], ledger: Ledger, devices: list[Device]
) -> int:
    """Everything but the clones; answers how many items hold an unanswered version."""
    swallowed = 0
    conn = connect(data_dir / "openwrite.db")
    try:
        assert query(conn, "PRAGMA integrity_check") == [{"integrity_check": "ok"}]
        assert query(conn, "PRAGMA foreign_key_check") == []
        for novel_id in novel_ids:
            repo_path = data_dir / "novels" / f"{novel_id}.git"
            fsck(repo_path)
            repo = pygit2.Repository(str(repo_path))
            head = str(repo.references["refs/heads/main"].target)
            novel = query_one(conn, "SELECT head FROM novel WHERE id = ?", (novel_id,))
            assert novel["head"] == head
            history = reachable(repo, head)
            lost = [h for h in ledger.acknowledged[novel_id] if h not in history]
            assert lost == [], "answered heads missing from the novel's history"
            check_revisions(conn, novel_id, history, head)
            check_index(conn, repo, novel_id, head)
            check_syncs(repo, novel_id, history, head, ledger, devices)
            swallowed += check_edits(conn, repo, novel_id, head, ledger)
    finally:
        conn.close()
    return swallowed


def test_mixed_load_killed_again_and_again_keeps_every_answered_write(tmp_path: Path):
    data_dir, clones_dir = tmp_path / "data", tmp_path / "clones"
    clones_dir.mkdir()
    rng = random.Random(SEED)
    server = start_server(data_dir, port=free_port())
    try:
        headers, token, novel_ids = asyncio.run(prepare(server.url))
        ledger = Ledger({novel_id: [] for novel_id in novel_ids})
        devices = [Device(novel_id, f"d{n}{slot}", slot)
                   for n, novel_id in enumerate(novel_ids)
                   for slot in range(DEVICES_PER_NOVEL)]  # fmt: skip
        versions = {novel_id: itertools.count(1) for novel_id in novel_ids}
        clones = syncs = edits = 0
        for round_ in range(ROUNDS):
            server = asyncio.run(crash_round(server, headers, token, novel_ids, devices,
                                             versions, ledger, rng, clones_dir,
                                             kill_maintenance=round_ % 2 == 0))  # fmt: skip
            note = (
                f"round {round_}: {len(ledger.syncs) - syncs} syncs and"
                f" {len(ledger.edits) - edits} edits answered,"
                f" {sum(c.ok for c in ledger.clones)}/{len(ledger.clones)} clones complete,"
                f" maintenance exits so far {[code for code, _ in ledger.maintenance]}"
            )
            print(note, *ledger.notes, sep="\n")  # shown when the test fails
            ledger.notes.clear()
            assert ledger.unexpected == []
            swallowed = check_after_restart(data_dir, novel_ids, ledger, devices)
            print(f"items holding a version whose answer was lost: {swallowed}")
            clones += check_clones(data_dir, ledger)
            assert len(ledger.syncs) > syncs and len(ledger.edits) > edits, "no load this round"
            syncs, edits = len(ledger.syncs), len(ledger.edits)
    finally:
        server.kill()

    assert clones >= ROUNDS, "too few clones completed to prove anything"
    failed = [(code, out) for code, out in ledger.maintenance if code not in (0, -signal.SIGKILL)]
    assert failed == []
    assert any(code == 0 for code, _ in ledger.maintenance), "no maintenance run finished"
    assert ledger.repacks_killed > 0, "no repack was killed mid-run"
