"""Benchmark history: a page of 50 revisions of one chapter through the HTTP API, on novels of
1,000 and of 100,000 commits, next to `git log -n 50 -- <path>` on the same bare repositories.

    python scripts/bench/history.py [--sizes 1000,100000] [--requests 200] [--git-runs 15]
                                    [--diff-runs 20] [--write-docs]

One novel per size is created through a server subprocess (signup, POST /api/v1/novels);
with the server stopped, its history is written straight into its bare repository (one commit
imports 20 chapters of a few paragraphs each, then every commit is a small edit of one chapter,
the chapters in rotation, three writers on two devices each, author times spread over 14
days, messages and trailers as the server writes them), the head is moved once with
`advance_head` and the repository packed into one pack. The start-up check
(`storage.reindex.check_novels`) then builds each novel's revision index from Git, timed.
The last two commits put a 100 KB chapter in and revise it in a few dozen places, for the
word diff. The server restarts and answers sequential requests from one client on loopback,
every kind of request and size taking turns in blocks, so that a change in the machine's load
(it is shared) falls on every row alike.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import itertools
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pygit2

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from _common import DOCS, cpu_seconds, machine, write_docs  # noqa: E402

from storage.db import connect, open_database  # noqa: E402
from storage.history import history_page  # noqa: E402
from storage.reindex import check_novels  # noqa: E402
from storage.repository import COMMITTER_EMAIL, COMMITTER_NAME, NovelRepository  # noqa: E402
from tests.servers import start_server  # noqa: E402

PAGE = 50
# "Well under a second" for the diff: half a second.
GOAL_PAGE_MS, GOAL_VS_GIT, GOAL_FLAT, GOAL_DIFF_MS = 20.0, 20.0, 1.5, 500.0
# Git without user or system config, as maintenance runs it: none may change what it does.
GIT_ENV = {**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull}
IMPORT_REF = "refs/openwrite-bench/import"
TARGET = 6  # the chapter whose history is paged (chapters/07-...): it has a full page at 1,000
BLOCK = 20  # requests of one row before the next row's turn
TITLES = [
    "The Harbour Light", "Salt and Rope", "A Keeper Arrives", "Fog on the Causeway",
    "The Lamp Room", "Letters from the Mainland", "Storm Tide", "What the Gulls Saw",
    "The Supply Boat", "Night Watch", "A Door in the Cliff", "The Drowned Bell",
    "Winter Stores", "The Inspector", "Low Water", "Signals", "The Long Night",
    "Wreckage", "Morning on the Rocks", "Home Port",
]  # fmt: skip
# The most frequent words; below them `vocabulary()` invents rarer ones.
COMMON_WORDS = [
    "the", "a", "and", "of", "to", "in", "on", "her", "his", "their", "it", "was", "had",
    "said", "keeper", "lamp", "tower", "sea", "stone", "rope", "salt", "tide", "wind", "door",
    "fog", "night", "storm", "gull", "harbour", "boat", "bell", "glass", "iron", "light",
    "dark", "cold", "water", "cliff", "rock", "shore", "wave", "island", "mainland", "letter",
    "oil", "wick", "lens", "stair", "window", "morning", "evening", "slowly", "quietly",
    "again", "never", "always", "still", "under", "over", "across", "behind", "beyond",
    "toward", "against", "walked", "climbed", "watched", "waited", "listened", "turned",
    "opened", "closed", "carried", "lifted", "pulled", "broke", "remembered", "wondered",
    "knew", "thought", "heard", "saw", "felt", "kept", "left", "found", "lost", "old", "young",
    "grey", "white", "black", "heavy", "narrow", "long", "short", "bright", "faint", "sudden",
    "distant", "small",
]  # fmt: skip
SYLLABLES = ("ka", "ro", "len", "mi", "tha", "vor", "el", "san", "dur", "ith", "on", "bre", "wyn",
             "gal", "mor", "te", "ast", "fen", "lo", "ri")  # fmt: skip


# -- the novel's text ------------------------------------------------------------------------


def vocabulary(size: int = 6000) -> tuple[list[str], list[float]]:
    """Words and the cumulative weights of Zipf's law (the word of rank r is used 1/r as
    often as the commonest), as in prose: a 100 KB chapter then has words that occur once
    in it, which the word diff anchors on, where a small vocabulary would have none."""
    rng = random.Random(0)
    words, seen = list(COMMON_WORDS), set(COMMON_WORDS)
    while len(words) < size:
        made = "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4)))
        if made not in seen:
            seen.add(made)
            words.append(made)
    return words, list(itertools.accumulate(1 / rank for rank in range(1, size + 1)))


VOCABULARY, CUMULATIVE = vocabulary()


def some_words(rng: random.Random, count: int) -> list[str]:
    return rng.choices(VOCABULARY, cum_weights=CUMULATIVE, k=count)


def sentence(rng: random.Random) -> str:
    words = some_words(rng, rng.randint(6, 16))
    if len(words) > 8 and rng.random() < 0.4:
        words[rng.randrange(3, len(words) - 3)] += ","
    return words[0].capitalize() + " " + " ".join(words[1:]) + "."


def paragraph(rng: random.Random) -> list[str]:
    return [sentence(rng) for _ in range(rng.randint(3, 6))]


@dataclass
class Chapter:
    """A chapter as a writer revises it: paragraphs of sentences, a few hundred words."""

    number: int
    title: str
    paragraphs: list[list[str]]

    @property
    def path(self) -> str:
        slug = "-".join(self.title.lower().split())
        return f"chapters/{self.number:02d}-{slug}.md"

    def text(self) -> str:
        body = "\n\n".join(" ".join(p) for p in self.paragraphs)
        return f"---\ntitle: {self.title}\nnumber: {self.number}\n---\n\n{body}\n"

    def revise(self, rng: random.Random) -> None:
        """One small edit: a word changed, a sentence added or cut, a paragraph added or cut."""
        before = self.text()
        while self.text() == before:  # a word replaced by itself: no edit, no commit
            self._edit(rng)

    def _edit(self, rng: random.Random) -> None:
        sentences = self.paragraphs[rng.randrange(len(self.paragraphs))]
        roll = rng.random()
        if roll < 0.5:
            k = rng.randrange(len(sentences))
            words = sentences[k].split(" ")
            # Never the last word: it carries the full stop.
            words[rng.randrange(len(words) - 1)] = some_words(rng, 1)[0]
            sentences[k] = " ".join(words)
        elif roll < 0.75:
            sentences.insert(rng.randrange(len(sentences) + 1), sentence(rng))
        elif roll < 0.9 and len(sentences) > 2:
            del sentences[rng.randrange(len(sentences))]
        elif len(self.paragraphs) < 8:
            self.paragraphs.insert(rng.randrange(len(self.paragraphs) + 1), paragraph(rng))
        else:
            del self.paragraphs[rng.randrange(len(self.paragraphs))]
        if len(sentences) > 9:
            del sentences[0]


def long_draft(chapter: Chapter, rng: random.Random, size: int = 100_000) -> None:
    """Make `chapter` a draft of about `size` bytes."""
    chapter.paragraphs = []
    while len(chapter.text().encode()) < size:
        chapter.paragraphs.append(paragraph(rng))


def scattered_revision(chapter: Chapter, rng: random.Random) -> None:
    """A read-through of a long draft: 30 words changed, a paragraph added, a sentence cut."""
    for _ in range(30):
        sentences = chapter.paragraphs[rng.randrange(len(chapter.paragraphs))]
        k = rng.randrange(len(sentences))
        words = sentences[k].split(" ")
        words[rng.randrange(len(words) - 1)] = some_words(rng, 1)[0]
        sentences[k] = " ".join(words)
    middle = len(chapter.paragraphs) // 2
    chapter.paragraphs.insert(middle, paragraph(rng))
    del chapter.paragraphs[middle // 2][0]


# -- building a novel's history ------------------------------------------------------------


@dataclass
class Writer:
    id: str
    name: str
    email: str
    devices: tuple[str, str]


@dataclass
class Fixture:
    """One novel of the run; `build_history` fills in the rest."""

    size: int
    novel_id: str
    repo: Path
    chapter: str = ""  # the chapter paged
    long_chapter: str = ""  # the 100 KB chapter diffed between diff_from and diff_to
    diff_from: str = ""
    diff_to: str = ""
    long_bytes: int = 0
    build_seconds: float = 0.0
    repack_seconds: float = 0.0
    index_seconds: float = 0.0
    pack_bytes: int = 0


def edits_of(size: int) -> int:
    """Small edits in a novel of `size` commits: all but the server's first commit, the
    import of the chapters, the long draft and its revision."""
    return size - 4


def build_history(fixture: Fixture, writers: list[Writer], seed: int) -> None:
    """Grow the novel (its first commit made by the server) to `fixture.size` commits.

    Written with `git fast-import` into a side ref, in the server's commit format, then
    published with `advance_head`. fast-import writes a pack straight away; through
    `write_commit` (four loose objects a commit) 100,000 commits took 135 s to write and
    186 s to pack on a busy two-CPU machine, against ~40 s and ~30 s.
    """
    rng = random.Random(seed)
    chapters = [Chapter(n, title, [paragraph(rng) for _ in range(rng.randint(4, 6))])
                for n, title in enumerate(TITLES, 1)]  # fmt: skip
    edits = edits_of(fixture.size)
    began = time.perf_counter()
    step = 14 * 86400 / fixture.size
    start = time.time() - 14 * 86400
    repo = NovelRepository.open(fixture.repo)
    with repo.lock(timeout=60):
        first = repo.head()
        importer = subprocess.Popen(
            ["git", f"--git-dir={fixture.repo}", "fast-import", "--quiet", "--done"],
            stdin=subprocess.PIPE, env=GIT_ENV,
        )  # fmt: skip
        stream = importer.stdin
        assert stream is not None
        n = 0

        def commit(changes: dict[str, str], via_device: bool, message: str | None = None) -> None:
            nonlocal n
            n += 1
            writer = writers[(n // 250) % len(writers)]
            device = writer.devices[(n // 50) % 2]
            trailers = {"User-Id": writer.id}
            if via_device:
                trailers |= {"Device-Id": device, "Op-Id": f"op-{n}"}
            when = int(start + step * n + step * rng.random() / 2)
            # The layout of `storage.repository`'s messages: text, a blank line, trailers.
            text = (message or f"Sync from {device}") + "\n\n"
            text += "".join(f"{key}: {value}\n" for key, value in trailers.items())
            data = text.encode()
            parts = [
                f"commit {IMPORT_REF}\n".encode(),
                f"author {writer.name} <{writer.email}> {when} +0000\n".encode(),
                f"committer {COMMITTER_NAME} <{COMMITTER_EMAIL}> {when} +0000\n".encode(),
                f"data {len(data)}\n".encode(), data,
                f"from {first}\n".encode() if n == 1 else b"",
            ]  # fmt: skip
            for path, content in changes.items():
                blob = content.encode()
                parts += [f"M 100644 inline {path}\ndata {len(blob)}\n".encode(), blob, b"\n"]
            stream.write(b"".join(parts) + b"\n")

        commit({c.path: c.text() for c in chapters}, True)
        for k in range(edits):
            chapter = chapters[k % len(chapters)]
            chapter.revise(rng)
            via_device = rng.random() < 0.8
            commit({chapter.path: chapter.text()}, via_device,
                   None if via_device else f"Edit chapter {chapter.path}")  # fmt: skip
        long = chapters[-1]
        long_draft(long, rng)
        commit({long.path: long.text()}, True)
        scattered_revision(long, rng)
        commit({long.path: long.text()}, True)
        stream.write(b"done\n")
        stream.close()
        if importer.wait() != 0:
            raise RuntimeError(f"git fast-import failed ({importer.returncode})")
        side = pygit2.Repository(str(fixture.repo))
        head = str(side.references[IMPORT_REF].target)
        side.references.delete(IMPORT_REF)
        repo = NovelRepository.open(fixture.repo)
        repo.advance_head(head, first, reason="bench history")
    fixture.chapter, fixture.long_chapter = chapters[TARGET].path, long.path
    fixture.diff_to, fixture.diff_from = head, repo.revision(head).parents[0]
    fixture.long_bytes = len(long.text().encode())
    fixture.build_seconds = time.perf_counter() - began
    began = time.perf_counter()
    # With a fresh delta search (-f): fast-import deltas each blob against the one written
    # before it, another chapter's, where the server's repacks find each file's own past.
    subprocess.run(["git", f"--git-dir={fixture.repo}", "repack", "-a", "-d", "-f", "-q"],
                   env=GIT_ENV, check=True)  # fmt: skip
    fixture.repack_seconds = time.perf_counter() - began
    fixture.pack_bytes = sum(p.stat().st_size for p in (fixture.repo / "objects/pack").iterdir())


def index_history(data_dir: Path, fixture: Fixture) -> None:
    """The server's start-up check: finds the novel's head moved and indexes the new commits."""
    db = open_database(data_dir / "openwrite.db", readers=1)
    try:
        began = time.perf_counter()
        report = check_novels(db, data_dir / "novels")
        fixture.index_seconds = time.perf_counter() - began
    finally:
        db.close()
    assert report.histories == [fixture.novel_id], report


async def create_novels(url: str, sizes: list[int]) -> tuple[dict, list[Writer], list[str]]:
    writers, token = [], None
    async with aiohttp.ClientSession() as session:
        for k, (name, devices) in enumerate(
            (("Ada Keeper", ("ada-laptop", "ada-phone")),
             ("Ben Marsh", ("ben-desktop", "ben-tablet")),
             ("Cleo Hart", ("cleo-laptop", "cleo-phone")))
        ):  # fmt: skip
            account = {"name": name, "email": f"writer{k}@example.com", "password": "correct horse"}
            async with session.post(url + "/api/v1/auth/signup", json=account) as response:
                assert response.status == 201, await response.text()
                answer = await response.json()
            writers.append(Writer(answer["user"]["id"], name, account["email"], devices))
            token = token or answer["token"]
        headers = {"Authorization": f"Bearer {token}"}
        novel_ids = []
        for size in sizes:
            async with session.post(
                url + "/api/v1/novels", json={"title": f"Keeper ({size} commits)"}, headers=headers
            ) as response:
                assert response.status == 201, await response.text()
                novel_ids.append((await response.json())["id"])
    return headers, writers, novel_ids


def git_log(repo: Path, path: str, *args: str) -> tuple[float, str]:
    """Seconds `git log -n 50 -- <path>` takes (process start included), and its output."""
    began = time.perf_counter()
    done = subprocess.run(
        ["git", f"--git-dir={repo}", "log", "-n", str(PAGE), *args, "--", path],
        env=GIT_ENV, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return time.perf_counter() - began, done.stdout


# -- measuring -----------------------------------------------------------------------------


@dataclass
class Timing:
    latencies: list[float] = field(default_factory=list)
    cpu: float = 0.0  # server CPU seconds over the timed requests

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    @property
    def mean(self) -> float:
        return statistics.fmean(self.latencies) * 1000

    @property
    def cpu_us(self) -> float:
        return self.cpu / len(self.latencies) * 1e6


@dataclass
class Request:
    """One GET, and what answering it should give (checked on the first answer)."""

    url: str
    params: dict[str, str]
    items: int | None = None


class Client:
    """One keep-alive connection, sequential requests, with the standard library's
    `http.client`: a GET costs it about 110 µs of CPU and 240 µs on the clock against a bare
    aiohttp handler, aiohttp's own client 170 and 300 (measured here, 3,000 requests)."""

    def __init__(self, url: str, headers: dict, pid: int):
        parts = urllib.parse.urlsplit(url)
        self.connection = http.client.HTTPConnection(parts.hostname, parts.port)
        self.headers, self.pid = headers, pid

    def get(self, request: Request) -> tuple[float, dict]:
        target = urllib.parse.urlsplit(request.url).path
        if request.params:
            target += "?" + urllib.parse.urlencode(request.params)
        began = time.perf_counter()
        self.connection.request("GET", target, headers=self.headers)
        response = self.connection.getresponse()
        body = response.read()
        elapsed = time.perf_counter() - began
        assert response.status == 200, body[:500]
        return elapsed, json.loads(body)

    def compare(
        self, cases: dict[str, dict[int, Request]], count: int
    ) -> dict[str, dict[int, Timing]]:
        """`count` timed requests of each, after a warm-up, taking turns in blocks of `BLOCK`
        so that a change in the machine's load falls on every row alike."""
        timings = {name: {size: Timing() for size in sizes} for name, sizes in cases.items()}
        turns = [(name, size, request) for name, sizes in cases.items()
                 for size, request in sizes.items()]  # fmt: skip
        for name, size, request in turns:
            for _ in range(BLOCK):
                _, answer = self.get(request)
            if request.items is not None:
                assert len(answer["items"]) == request.items, (name, size, len(answer["items"]))
        for done in range(0, count, BLOCK):
            for name, size, request in turns:
                timing = timings[name][size]
                before = cpu_seconds(self.pid)
                for _ in range(min(BLOCK, count - done)):
                    timing.latencies.append(self.get(request)[0])
                timing.cpu += cpu_seconds(self.pid) - before
        return timings

    def walk(self, url: str, params: dict[str, str]) -> Walk:
        """Follow next_cursor from the newest page to the oldest."""
        walk = Walk()
        cursor = None
        began = time.perf_counter()
        while True:
            query = params | ({"cursor": cursor} if cursor else {})
            _, answer = self.get(Request(url, query))
            walk.pages += 1
            if len(answer["items"]) == PAGE:
                walk.oldest, walk.skipped = Request(url, query, PAGE), walk.items
                walk.oldest_revs = [item["rev"] for item in answer["items"]]
            walk.items += len(answer["items"])
            cursor = answer["next_cursor"]
            if cursor is None:
                walk.seconds = time.perf_counter() - began
                return walk


@dataclass
class Walk:
    """Every page of a history; `oldest` asks for the oldest full page, after `skipped`."""

    pages: int = 0
    items: int = 0
    seconds: float = 0.0
    oldest: Request | None = None
    skipped: int = 0
    oldest_revs: list[str] = field(default_factory=list)


@dataclass
class Results:
    pages: dict[str, dict[int, Timing]] = field(default_factory=dict)
    walks: dict[str, dict[int, Walk]] = field(default_factory=dict)
    # "newest": the first page's `git log`; "oldest": with --skip to the oldest full page.
    git: dict[str, dict[int, list[float]]] = field(default_factory=dict)
    diff: list[float] = field(default_factory=list)
    diff_ops: int = 0
    storage: dict[int, Timing] = field(default_factory=dict)


def measure(args: argparse.Namespace, url: str, headers: dict, pid: int,
            fixtures: list[Fixture]) -> Results:  # fmt: skip
    results = Results()
    client = Client(url, headers, pid)
    history = {f.size: f"{url}/api/v1/novels/{f.novel_id}/history" for f in fixtures}
    by_path = {f.size: {"path": f.chapter, "limit": str(PAGE)} for f in fixtures}
    everything = {f.size: {"limit": str(PAGE)} for f in fixtures}
    for f in fixtures:
        _, page = client.get(Request(history[f.size], by_path[f.size]))
        _, log = git_log(f.repo, f.chapter, "--format=%H")
        revs = [item["rev"] for item in page["items"]]
        assert revs == log.split(), f"size {f.size}: the API page is not git log's"
    for name, params in (("path", by_path), ("all", everything)):
        results.walks[name] = walks = {}
        for f in fixtures:
            walks[f.size] = client.walk(history[f.size], params[f.size])
        print(f"walked every page ({name}): " + ", ".join(
            f"{size}: {w.pages} pages in {w.seconds:.1f} s" for size, w in walks.items()
        ), flush=True)  # fmt: skip
    for size, w in results.walks["all"].items():
        assert w.items == size, f"size {size}: {w.items} revisions in the history"
    skip = {size: f"--skip={w.skipped}" for size, w in results.walks["path"].items()}
    for f in fixtures:
        _, log = git_log(f.repo, f.chapter, skip[f.size], "--format=%H")
        oldest = results.walks["path"][f.size].oldest_revs
        assert oldest == log.split(), f"size {f.size}: the oldest page is not git log's"
    cases = {
        "novel": {f.size: Request(f"{url}/api/v1/novels/{f.novel_id}", {}) for f in fixtures},
        "path": {s: Request(history[s], by_path[s], PAGE) for s in history},
        "all": {s: Request(history[s], everything[s], PAGE) for s in history},
        "path, oldest": {s: w.oldest for s, w in results.walks["path"].items()},
        "all, oldest": {s: w.oldest for s, w in results.walks["all"].items()},
    }
    results.pages = client.compare(cases, args.requests)
    results.git = {"newest": {f.size: [] for f in fixtures}, "oldest": {}}
    results.git["oldest"] = {f.size: [] for f in fixtures}
    for _ in range(args.git_runs):
        for f in fixtures:
            results.git["newest"][f.size].append(git_log(f.repo, f.chapter)[0])
            results.git["oldest"][f.size].append(git_log(f.repo, f.chapter, skip[f.size])[0])
    largest = fixtures[-1]
    diff = Request(
        f"{url}/api/v1/novels/{largest.novel_id}/diff",
        {"from": largest.diff_from, "to": largest.diff_to, "path": largest.long_chapter},
    )
    for run in range(args.diff_runs + 2):
        elapsed, answer = client.get(diff)
        if run >= 2:
            results.diff.append(elapsed)
    results.diff_ops = len(answer["files"][0]["ops"])
    return results


def storage_pages(database: Path, fixtures: list[Fixture], count: int) -> dict[int, Timing]:
    """The same page from `storage.history.history_page` in this process: SQLite and the
    rows made into revisions, without HTTP, authentication or the response model."""
    conn = connect(database)
    timings = {f.size: Timing() for f in fixtures}

    def page(f: Fixture) -> None:
        history_page(conn, f.novel_id, path=f.chapter, limit=PAGE, after=None)

    try:
        for f in fixtures:
            for _ in range(BLOCK):
                page(f)
        for done in range(0, count, BLOCK):
            for f in fixtures:
                cpu = time.process_time()
                for _ in range(min(BLOCK, count - done)):
                    began = time.perf_counter()
                    page(f)
                    timings[f.size].latencies.append(time.perf_counter() - began)
                timings[f.size].cpu += time.process_time() - cpu
    finally:
        conn.close()
    return timings


# -- the report ----------------------------------------------------------------------------

NAMES = {
    "storage": "`history_page()` alone, in this process: the chapter's newest page",
    "novel": "`GET /api/v1/novels/{id}` (auth and one row: the HTTP floor)",
    "path": "page of one chapter (`path=`), newest",
    "path, oldest": "page of one chapter, oldest (last cursor)",
    "all": "page of all files, newest",
    "all, oldest": "page of all files, oldest (last cursor)",
}


def report(args: argparse.Namespace, fixtures: list[Fixture], results: Results) -> str:
    facts = machine()
    git_version = subprocess.run(["git", "--version"], capture_output=True, text=True).stdout
    small, large = fixtures[0], fixtures[-1]
    lines = [
        f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC: `python scripts/bench/history.py --sizes"
        f" {','.join(str(f.size) for f in fixtures)} --requests {args.requests} --git-runs"
        f" {args.git_runs} --diff-runs {args.diff_runs}`",
        "",
        f"Machine: {facts['nproc']} CPUs (`nproc`), {facts['cpu']}; Python {facts['python']},"
        f" aiohttp {facts['aiohttp']}, {git_version.strip()}; load average {facts['load']} when"
        " the report was written. Client, server and `git` share the machine.",
        "",
        "Each novel: 20 chapters of a few hundred words, one small edit of one chapter per"
        " commit, the chapters in rotation (a chapter changes every 20th commit); the"
        f" repository in one pack. A page is {PAGE} revisions, timed over {args.requests}"
        f" sequential requests per row from one client after {BLOCK} of warm-up, the rows"
        f" taking turns every {BLOCK} requests. Chapter paged: `{large.chapter}`.",
        "",
        "| commits | request | p50 ms | p99 ms | mean ms | server CPU µs/request |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for name, timings in [*results.pages.items(), ("storage", results.storage)]:
        for size, t in timings.items():
            lines.append(
                f"| {size} | {NAMES[name]} | {t.percentile(0.5):.2f} | {t.percentile(0.99):.2f}"
                f" | {t.mean:.2f} | {t.cpu_us:.0f} |"
            )
    for which, timings in results.git.items():
        for size, runs in timings.items():
            skip = f" --skip={results.walks['path'][size].skipped}" if which == "oldest" else ""
            lines.append(
                f"| {size} | `git log -n {PAGE}{skip} -- <chapter>` ({which} page), median of"
                f" {len(runs)} runs | {statistics.median(runs) * 1000:.2f} | – |"
                f" {statistics.fmean(runs) * 1000:.2f} | – |"
            )
    page = results.pages["path"]
    p50, p99 = page[large.size].percentile(0.5), page[large.size].percentile(0.99)
    git_ms = statistics.median(results.git["newest"][large.size]) * 1000
    vs_git = git_ms / p50
    floor = results.pages["novel"][large.size].percentile(0.5)
    storage = results.storage[large.size].percentile(0.5)
    deep = results.pages["path, oldest"][large.size].percentile(0.5)
    deep_git = statistics.median(results.git["oldest"][large.size]) * 1000
    flat = p50 / page[small.size].percentile(0.5)
    diff_p50 = statistics.median(results.diff) * 1000
    lines += ["", "Every page, following `next_cursor` from the newest to the oldest:", ""]
    for name, walks in results.walks.items():
        for size, w in walks.items():
            what = "one chapter" if name == "path" else "all files"
            lines.append(
                f"- {size} commits, {what}: {w.pages} pages, {w.items} revisions in"
                f" {w.seconds:.1f} s ({w.seconds / w.pages * 1000:.1f} ms a page)"
            )
    lines += ["", "Building each novel (fsync off; not a goal):", ""]
    for f in fixtures:
        lines.append(
            f"- {f.size} commits: written in {f.build_seconds:.1f} s, packed in"
            f" {f.repack_seconds:.1f} s ({f.pack_bytes / 1e6:.1f} MB); its revision index built"
            f" from Git by the start-up check (`check_novels`) in {f.index_seconds:.1f} s"
            f" ({f.size / f.index_seconds:.0f} commits/s)"
        )
    met = {True: "met", False: "missed"}
    lines += [
        "",
        f"Word diff of the {large.long_bytes // 1000} KB chapter between two revisions (30 words"
        f" changed, a paragraph added, a sentence cut; `GET /diff?from=&to=&path=`,"
        f" {results.diff_ops} runs of text): p50 {diff_p50:.0f} ms, slowest"
        f" {max(results.diff) * 1000:.0f} ms of {len(results.diff)}.",
        "",
        f"Goals at {large.size} commits: a page of one chapter in < {GOAL_PAGE_MS:.0f} ms"
        f" (p99 {p99:.2f} ms: {met[p99 < GOAL_PAGE_MS]}); ≥ {GOAL_VS_GIT:.0f}x faster than"
        f" `git log` (p50 against git's median: {vs_git:.1f}x, {met[vs_git >= GOAL_VS_GIT]});"
        f" the same cost as at {small.size} commits within {GOAL_FLAT}x (p50: {flat:.2f}x,"
        f" {met[flat <= GOAL_FLAT]}); the diff well under a second (p50 < {GOAL_DIFF_MS:.0f} ms:"
        f" {diff_p50:.0f} ms, {met[diff_p50 < GOAL_DIFF_MS]}).",
        "",
        f"For scale: {GOAL_VS_GIT:.0f}x faster than git's {git_ms:.1f} ms leaves"
        f" {git_ms / GOAL_VS_GIT:.2f} ms for the whole request, and the HTTP floor (an"
        f" authenticated read of one row) is {floor:.2f} ms; `history_page()` alone takes"
        f" {storage:.2f} ms ({git_ms / storage:.0f}x faster than git). On the chapter's oldest"
        f" page git walks the whole history: {deep_git:.0f} ms, {deep_git / deep:.0f}x the API's"
        f" {deep:.2f} ms.",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,100000",
                        help="commits of each novel, smallest first (1000,100000)")  # fmt: skip
    parser.add_argument("--requests", type=int, default=200, help="timed requests per row (200)")
    parser.add_argument("--git-runs", type=int, default=15, help="git log runs per row (15)")
    parser.add_argument("--diff-runs", type=int, default=20, help="timed diff requests (20)")
    parser.add_argument("--write-docs", action="store_true", help="update docs/benchmarks.md")
    args = parser.parse_args()
    sizes = sorted(int(size) for size in args.sizes.split(","))
    # From 1000 commits on, the paged chapter (changed every 20th commit) has a full page
    # and more, so every page row times 50 revisions.
    if len(sizes) < 2 or sizes[0] < 1000:
        parser.error("--sizes: two sizes or more, each of 1000 commits or more")
    with tempfile.TemporaryDirectory(prefix="openwrite-history-bench-") as tmp:
        data_dir = Path(tmp) / "data"
        server = start_server(data_dir)
        try:
            headers, writers, novel_ids = asyncio.run(create_novels(server.url, sizes))
        finally:
            server.stop()
        fixtures = []
        for size, novel_id in zip(sizes, novel_ids, strict=True):
            fixture = Fixture(size, novel_id, data_dir / "novels" / f"{novel_id}.git")
            print(f"{size} commits: writing ...", flush=True)
            build_history(fixture, writers, seed=size)
            print(f"  written in {fixture.build_seconds:.1f} s, packed in"
                  f" {fixture.repack_seconds:.1f} s; indexing ...", flush=True)  # fmt: skip
            index_history(data_dir, fixture)
            print(f"  indexed in {fixture.index_seconds:.1f} s", flush=True)
            fixtures.append(fixture)
        server = start_server(data_dir)
        try:
            results = measure(args, server.url, headers, server.process.pid, fixtures)
        finally:
            server.stop()
        results.storage = storage_pages(data_dir / "openwrite.db", fixtures, args.requests)
        text = report(args, fixtures, results)
    print()
    print(text)
    if args.write_docs:
        write_docs("history", "History (`scripts/bench/history.py`)", text)
        print(f"\nupdated {DOCS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
