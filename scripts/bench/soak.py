"""Soak the server: many simulated devices syncing, pulling and listening on the event stream
for a while, with the server's memory, file descriptors, errors and every acknowledged sync
checked at the end.

    python scripts/bench/soak.py [--devices 200] [--writers 20] [--seconds 60] [--think 5]
                                 [--listeners 0.5] [--max-rss-mb 300] [--json FILE]
                                 [--url URL [--pid PID]] [--write-docs]

What it models: writers with two or three novels each (alternately), and each novel synced
by several devices of its writer (a laptop, a tablet, a phone ...), every device logged in
with its own session. A device keeps a copy of its novel's files and the commit it last saw
(its base). It waits a think time (exponential, mean `--think` seconds), then mostly edits a
paragraph of a chapter (a word replaced or a sentence added; mostly in paragraphs of its
own, sometimes anywhere, so some syncs merge word by word and a few conflict) and syncs it,
as a real client would: keep the base from the answer, resend an unanswered request (a
timeout, a broken connection, a 503) as it is, with the same op_id, and on a 409 pull and
make the edit again on the fresh text. Sometimes it pulls instead (`GET .../sync?since=`).
A share of the devices (`--listeners`) keep `GET /api/v1/events` open and pull when their
novel moves to a head they have not seen; the others poll `GET /api/v1/sync/feed` now and
then and pull when it names their novel. A device's first action is always a sync.

What it reports: operations per second by kind, p50/p95/p99 latency by kind, what the client
handled (409s, conflicted syncs) and errors by kind and status (every 5xx, timeout, broken
connection or unexpected status is an error; the goal is none), events received and how long
after the acknowledgement of a sync they arrived, and the server's memory: peak RSS (VmHWM
from /proc at the end: the goal is under `--max-rss-mb`), RSS sampled every second (its
maximum, its value at each tenth of the run, and the final one, to see growth) and the open
file descriptors and threads before and after the load (`--settle` seconds after it), to see
leaks. Then the server is stopped with SIGINT (how long that takes is reported too) and
pygit2 checks that every head a device was answered is in its novel's history and that every
device's copy of the files equals the tree of its base (the `files` answers were right).
Exit status 1 when an error occurred, the server's log has an ERROR line, a head was lost, a
copy differs, or peak RSS reached the limit.

By default the server is a subprocess on a temporary data directory (fsync on, as in
production); `--url` soaks a running server instead (then `--pid` for its memory, and the
acknowledged heads are checked through the API: a pull `since` a lost head answers 409).
The load comes from this process on the same machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pygit2

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from _common import DOCS, cpu_seconds, machine, write_docs  # noqa: E402

from tests.servers import ServerProcess, start_server  # noqa: E402

PASSWORD = "correct horse battery"
CHAPTERS = 3  # per novel
PARAGRAPHS = 16  # per chapter, ~500 bytes each: ~8 KB chapters
FAVOURITE = 0.7  # the share of edits a device makes in its favourite chapter
OWN_PARAGRAPHS = 0.9  # the share of edits a device makes in paragraphs of its own
APPEND = 0.3  # the share of edits that add a sentence instead of replacing a word
RETRIES = 8  # attempts of one sync before the device gives the edit up
WORDS = [
    "the",
    "sea",
    "lamp",
    "stone",
    "keeper",
    "tower",
    "night",
    "storm",
    "gull",
    "rope",
    "salt",
    "tide",
    "wind",
    "door",
    "fog",
    "harbour",
    "light",
    "shore",
]
DEVICE_KINDS = ["laptop", "tablet", "phone", "desktop", "e-reader"]


# -- what the devices measure ------------------------------------------------------------


def percentiles(values: list[float]) -> dict[str, float]:
    """p50/p95/p99/max in milliseconds (`statistics.quantiles`, inclusive method)."""
    if not values:
        return {"p50_ms": 0.0, "p95_ms": 0.0, "p99_ms": 0.0, "max_ms": 0.0}
    if len(values) == 1:
        cuts = [values[0]] * 99
    else:
        cuts = statistics.quantiles(values, n=100, method="inclusive")
    return {
        "p50_ms": cuts[49] * 1000,
        "p95_ms": cuts[94] * 1000,
        "p99_ms": cuts[98] * 1000,
        "max_ms": max(values) * 1000,
    }


@dataclass
class Stats:
    ok: Counter = field(default_factory=Counter)  # kind -> answered as expected
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    handled: Counter = field(default_factory=Counter)  # (kind, what) the client dealt with
    errors: Counter = field(default_factory=Counter)  # (kind, what): the goal is none
    sync_status: Counter = field(default_factory=Counter)
    pulls: Counter = field(default_factory=Counter)  # why a device pulled
    events: int = 0
    events_relevant: int = 0  # for the listener's own novel, at a head it had not seen
    events_before_ack: int = 0
    event_delays: list[float] = field(default_factory=list)
    acked_at: dict[str, float] = field(default_factory=dict)  # head -> when first answered
    acked: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))  # novel -> heads
    error_samples: list[str] = field(default_factory=list)

    def answered(self, kind: str, seconds: float) -> None:
        self.latencies[kind].append(seconds)

    def error(self, kind: str, what: str, detail: str = "") -> None:
        self.errors[(kind, what)] += 1
        if len(self.error_samples) < 20:
            self.error_samples.append(f"{kind} {what} {detail[:300]}".strip())

    def ack(self, novel_id: str, head: str) -> None:
        self.acked[novel_id].add(head)
        self.acked_at.setdefault(head, time.perf_counter())

    def event(self, head: str) -> None:
        self.events += 1
        at = self.acked_at.get(head)
        if at is None:
            self.events_before_ack += 1
        else:
            self.event_delays.append(time.perf_counter() - at)


# -- text: chapters and edits ------------------------------------------------------------


def chapter_text(rng: random.Random, number: int) -> str:
    paragraphs = [
        f"P{p} " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(80, 100))) + "."
        for p in range(PARAGRAPHS)
    ]
    front = (
        f"---\ntitle: Chapter {number}\nnumber: {number}\nweight: {number}\n"
        "status: draft\ndraft: true\n---\n"
    )
    return front + "\n\n".join(paragraphs) + "\n"


def chapter_path(number: int) -> str:
    return f"chapters/{number:02d}-chapter-{number}.md"


def edit_paragraph(text: str, rng: random.Random, paragraph: int, word: str) -> str:
    """`text` with a word of paragraph `paragraph` replaced by `word`, or a sentence with it
    added at the paragraph's end."""
    lines = text.split("\n")
    marker = f"P{paragraph} "
    index = next((i for i, line in enumerate(lines) if line.startswith(marker)), None)
    if index is None:  # not ours to lose: fall back to the last line of prose
        index = max(i for i, line in enumerate(lines) if line.strip())
    if rng.random() < APPEND:
        lines[index] += f" The {rng.choice(WORDS)} {word} {rng.choice(WORDS)}."
    else:
        words = lines[index].split(" ")
        words[rng.randrange(1, len(words)) if len(words) > 1 else 0] = word
        lines[index] = " ".join(words)
    return "\n".join(lines)


# -- setting up writers, novels and devices ----------------------------------------------


@dataclass
class Novel:
    id: str
    writer: int
    devices: int = 0  # how many devices sync it


@dataclass
class Plan:
    novels: list[Novel]
    devices: list[tuple[str, int, int, bool]]  # name, writer, novel index, listens
    emails: list[str]


def plan(args: argparse.Namespace) -> Plan:
    """Writers own two or three novels alternately; devices go round-robin over the novels,
    each novel's devices belong to its writer; every `1 / listeners`-th device listens."""
    rng = random.Random(f"{args.seed}-plan")
    novels = [Novel("", w) for w in range(args.writers) for _ in range(2 + w % 2)]
    tag = f"{os.getpid()}-{int(time.time())}"
    emails = [f"soak-{tag}-{w}@example.com" for w in range(args.writers)]
    devices = []
    listeners = int(round(args.devices * args.listeners))
    chosen = set(rng.sample(range(args.devices), listeners))
    for k in range(args.devices):
        n = k % len(novels)
        kind = DEVICE_KINDS[novels[n].devices % len(DEVICE_KINDS)]
        devices.append((f"w{novels[n].writer}-n{n}-{kind}-{k}", novels[n].writer, n, k in chosen))
        novels[n].devices += 1
    return Plan(novels, devices, emails)


async def expect(response: aiohttp.ClientResponse, status: int) -> dict:
    if response.status != status:
        raise RuntimeError(
            f"setup: {response.method} {response.url} answered "
            f"{response.status}: {await response.text()}"
        )
    return await response.json()


async def populate(url: str, the_plan: Plan, seed: str) -> list[str]:
    """Sign up the writers, create their novels with their chapters, and log every device in
    (its own session); returns the devices' tokens."""
    rng = random.Random(f"{seed}-chapters")
    async with aiohttp.ClientSession() as session:
        writer_headers = []
        for w, email in enumerate(the_plan.emails):
            account = {"name": f"Soak Writer {w}", "email": email, "password": PASSWORD}
            async with session.post(url + "/api/v1/auth/signup", json=account) as response:
                token = (await expect(response, 201))["token"]
            writer_headers.append({"Authorization": f"Bearer {token}"})
        for n, novel in enumerate(the_plan.novels):
            headers = writer_headers[novel.writer]
            async with session.post(
                url + "/api/v1/novels", json={"title": f"Soak {n}"}, headers=headers
            ) as response:
                novel.id = (await expect(response, 201))["id"]
            changes = [
                {"path": chapter_path(c), "content": chapter_text(rng, c)}
                for c in range(1, CHAPTERS + 1)
            ]
            body = {"device_id": "soak-setup", "op_id": "setup", "base": None, "changes": changes}
            async with session.post(
                url + f"/api/v1/novels/{novel.id}/sync", json=body, headers=headers
            ) as response:
                await expect(response, 200)

        async def login(writer: int) -> str:
            body = {"email": the_plan.emails[writer], "password": PASSWORD}
            async with session.post(url + "/api/v1/auth/login", json=body) as response:
                return (await expect(response, 200))["token"]

        tokens = []
        batch = 16
        for start in range(0, len(the_plan.devices), batch):
            chunk = the_plan.devices[start : start + batch]
            tokens += await asyncio.gather(*(login(writer) for _, writer, _, _ in chunk))
    return tokens


# -- one device ------------------------------------------------------------------------------


class Device:
    def __init__(
        self,
        args: argparse.Namespace,
        url: str,
        name: str,
        token: str,
        novel: Novel,
        slot: int,
        listens: bool,
        stats: Stats,
    ) -> None:
        self.args, self.url, self.name, self.novel, self.slot = args, url, name, novel, slot
        self.listens, self.stats = listens, stats
        self.headers = {"Authorization": f"Bearer {token}"}
        self.rng = random.Random(f"{args.seed}-{name}")
        self.timeout = aiohttp.ClientTimeout(total=args.timeout)
        self.session: aiohttp.ClientSession | None = None
        self.base: str | None = None
        self.files: dict[str, str] = {}
        self.seen: set[str] = set()  # every head this device has held
        self.moved = asyncio.Event()  # the event stream named a head of our novel we lack
        self.cursor: str | None = None
        self.ops = 0
        self.syncs = 0
        self.gave_up = 0

    # -- requests ----------------------------------------------------------------------

    async def call(self, kind: str, method: str, path: str, body: dict | None = None):
        """(status, decoded JSON) of one request; (None, None) after a timeout or a broken
        connection, which count as errors. 5xx and statuses other than 200 and 409 count as
        errors too; the caller decides what to do next."""
        began = time.perf_counter()
        try:
            async with self.session.request(
                method, self.url + path, json=body, headers=self.headers, timeout=self.timeout
            ) as response:
                raw = await response.read()
                status = response.status
        except TimeoutError:
            self.stats.error(kind, "timeout", path)
            return None, None
        except aiohttp.ClientError as exc:
            self.stats.error(kind, type(exc).__name__, f"{path}: {exc}")
            return None, None
        self.stats.answered(kind, time.perf_counter() - began)
        try:
            answer = json.loads(raw) if raw else None
        except ValueError:
            answer = None
        if status == 200:
            self.stats.ok[kind] += 1
        elif status == 409:
            self.stats.handled[(kind, "409 " + error_code(answer))] += 1
        else:
            self.stats.error(kind, f"{status} {error_code(answer)}", raw.decode(errors="replace"))
        return status, answer

    def take(self, answer: dict) -> None:
        """The device now holds the answer's head: every file that differs came with it."""
        for entry in answer["files"]:
            if entry["content"] is None:
                self.files.pop(entry["path"], None)
            else:
                self.files[entry["path"]] = entry["content"]
        self.base = answer["head"]
        self.seen.add(self.base)

    async def pull(self, why: str) -> None:
        self.stats.pulls[why] += 1
        since = f"?since={self.base}" if self.base else ""
        status, answer = await self.call(
            "pull", "GET", f"/api/v1/novels/{self.novel.id}/sync" + since
        )
        if status == 409:  # our base is unknown there: start over from the head
            self.base, self.files = None, {}
            status, answer = await self.call("pull", "GET", f"/api/v1/novels/{self.novel.id}/sync")
        if status == 200:
            self.take(answer)

    def edit(self) -> dict[str, str]:
        """One paragraph of one chapter edited: mostly the device's favourite chapter and its
        own paragraphs there."""
        chapters = sorted(p for p in self.files if p.startswith("chapters/"))
        if self.rng.random() < FAVOURITE:
            path = chapters[self.slot % len(chapters)]
        else:
            path = self.rng.choice(chapters)
        mine = [p for p in range(PARAGRAPHS) if p % self.novel.devices == self.slot]
        if mine and self.rng.random() < OWN_PARAGRAPHS:
            paragraph = self.rng.choice(mine)
        else:
            paragraph = self.rng.randrange(PARAGRAPHS)
        word = f"{self.name.rsplit('-', 1)[-1]}x{self.ops}"
        return {path: edit_paragraph(self.files[path], self.rng, paragraph, word)}

    async def sync(self) -> None:
        changes = self.edit()
        body = {
            "device_id": self.name,
            "op_id": f"op-{self.ops}",
            "base": self.base,
            "changes": [{"path": p, "content": c} for p, c in changes.items()],
        }
        path = f"/api/v1/novels/{self.novel.id}/sync"
        for attempt in range(RETRIES):
            status, answer = await self.call("sync", "POST", path, body)
            if status == 200:
                self.syncs += 1
                self.stats.sync_status[answer["status"]] += 1
                self.stats.ack(self.novel.id, answer["head"])
                self.take(answer)
                return
            if status == 409:  # pull, then make the edit again on the fresh text
                await self.pull("after 409")
                self.ops += 1
                changes = self.edit()
                body = {
                    **body,
                    "op_id": f"op-{self.ops}",
                    "base": self.base,
                    "changes": [{"path": p, "content": c} for p, c in changes.items()],
                }
            elif status is None or status >= 500:  # unanswered: the same request again
                await asyncio.sleep(min(5.0, 0.2 * 2**attempt) * (0.5 + self.rng.random()))
            else:
                break
        self.gave_up += 1

    async def poll_feed(self) -> None:
        moved = False
        for _ in range(10):  # follow the cursor until it stops moving
            query = f"?limit=500&cursor={self.cursor}" if self.cursor else "?limit=500"
            status, answer = await self.call("feed", "GET", "/api/v1/sync/feed" + query)
            if status != 200:
                return
            moved |= any(
                item["novel_id"] == self.novel.id and item["head"] not in self.seen
                for item in answer["items"]
            )
            if answer["cursor"] == self.cursor:
                break
            self.cursor = answer["cursor"]
        if moved:
            await self.pull("feed")

    # -- the event stream ----------------------------------------------------------------

    async def listen(self) -> None:
        """Keep `GET /api/v1/events` open; a head of our novel we have not seen wakes the
        device to pull. A stream that ends or breaks before the soak does is an error, and
        the device reconnects."""
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.args.timeout, sock_read=60)
        while True:
            began = time.perf_counter()
            try:
                async with self.session.get(
                    self.url + "/api/v1/events", headers=self.headers, timeout=timeout
                ) as response:
                    if response.status != 200:
                        self.stats.error("events", str(response.status), await response.text())
                        await asyncio.sleep(1)
                        continue
                    await self.read_events(response, began)
                self.stats.error("events", "stream ended")
            except TimeoutError:
                self.stats.error("events", "timeout")
            except aiohttp.ClientError as exc:
                self.stats.error("events", type(exc).__name__, str(exc))
            await asyncio.sleep(1)

    async def read_events(self, response: aiohttp.ClientResponse, began: float) -> None:
        name, data = None, []
        async for raw in response.content:
            line = raw.decode().rstrip("\r\n")
            if line == ": connected":
                self.stats.answered("events", time.perf_counter() - began)
                self.stats.ok["events"] += 1
            elif line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())
            elif not line:
                if name == "head":
                    self.on_head(json.loads("\n".join(data)))
                name, data = None, []

    def on_head(self, event: dict) -> None:
        self.stats.event(event["head"])
        if event["novel_id"] == self.novel.id and event["head"] not in self.seen:
            self.stats.events_relevant += 1
            self.moved.set()

    # -- the device's life -------------------------------------------------------------

    async def think(self, stop_at: float) -> None:
        """Wait a think time, pulling whenever the event stream says the novel moved."""
        loop = asyncio.get_running_loop()
        pause = min(self.rng.expovariate(1 / self.args.think), 5 * self.args.think)
        until = min(stop_at, loop.time() + pause)
        while (remaining := until - loop.time()) > 0:
            if self.moved.is_set():
                self.moved.clear()
                await self.pull("event")
                continue
            try:
                await asyncio.wait_for(self.moved.wait(), remaining)
            except TimeoutError:
                return

    async def run(self, start_at: float, stop_at: float) -> None:
        loop = asyncio.get_running_loop()
        connector = aiohttp.TCPConnector(limit=4)
        async with aiohttp.ClientSession(connector=connector) as self.session:
            listener = asyncio.create_task(self.listen()) if self.listens else None
            try:
                await asyncio.sleep(max(0.0, start_at - loop.time()))
                while self.base is None and loop.time() < stop_at:
                    await self.pull("start")
                    if self.base is None:
                        await asyncio.sleep(1)
                first = True
                while loop.time() < stop_at:
                    self.ops += 1
                    roll = self.rng.random()
                    if first or roll >= self.args.pull_share + self.args.feed_share:
                        await self.sync()
                        first = False
                    elif roll < self.args.pull_share:
                        await self.pull("now and then")
                    elif self.listens:
                        await self.sync()
                    else:
                        await self.poll_feed()
                    await self.think(stop_at)
            finally:
                if listener is not None:
                    listener.cancel()
                    await asyncio.gather(listener, return_exceptions=True)


def error_code(answer: object) -> str:
    if isinstance(answer, dict) and isinstance(answer.get("error"), dict):
        return str(answer["error"].get("code", ""))
    return ""


# -- the server: memory and file descriptors -----------------------------------------------


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM (kB) and Threads of a process, from /proc/<pid>/status."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM", "Threads"):
            values[key] = int(rest.split()[0])
    return values


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@dataclass
class Server:
    pid: int | None
    samples: list[tuple[float, int, int]] = field(default_factory=list)  # seconds, RSS kB, fds
    before: dict[str, int] = field(default_factory=dict)
    after: dict[str, int] = field(default_factory=dict)
    cpu_cores: float | None = None
    log_errors: list[str] = field(default_factory=list)
    shutdown_seconds: float | None = None
    load_seconds: float = 0.0
    killed: bool = False

    def snapshot(self) -> dict[str, int]:
        if self.pid is None:
            return {}
        return {**proc_status(self.pid), "fds": open_fds(self.pid)}

    async def sample(self, every: float) -> None:
        began = time.perf_counter()
        while self.pid is not None:
            status = proc_status(self.pid)
            self.samples.append((time.perf_counter() - began, status["VmRSS"], open_fds(self.pid)))
            await asyncio.sleep(every)

    def timeline(self) -> list[tuple[int, float]]:
        """RSS in MB at each tenth of the load (the sample nearest to it), not the settling
        after it."""
        during = [s for s in self.samples if s[0] <= self.load_seconds] or self.samples
        if not during:
            return []
        end = during[-1][0]
        points = []
        for tenth in range(11):
            at = end * tenth / 10
            nearest = min(during, key=lambda s: abs(s[0] - at))
            points.append((tenth * 10, nearest[1] / 1024))
        return points


def interrupt(server: ServerProcess, grace: float) -> tuple[float, bool]:
    """SIGINT, as `serve` is stopped by hand or by a service manager; SIGKILL after `grace`
    seconds. Returns how long it took and whether it had to be killed."""
    began = time.perf_counter()
    server.process.send_signal(signal.SIGINT)
    try:
        server.process.wait(grace)
        return time.perf_counter() - began, False
    except subprocess.TimeoutExpired:
        server.kill()
        return time.perf_counter() - began, True


def server_log_errors(server: ServerProcess) -> list[str]:
    return [
        line
        for line in server.log().splitlines()
        if " ERROR " in line or " CRITICAL " in line or line.startswith("Traceback")
    ]


# -- the soak ------------------------------------------------------------------------------


async def soak(
    args: argparse.Namespace, url: str, the_plan: Plan, tokens: list[str], server: Server
) -> tuple[Stats, list[Device], float]:
    stats = Stats()
    slots: Counter = Counter()
    devices = []
    for (name, _, n, listens), token in zip(the_plan.devices, tokens, strict=True):
        novel = the_plan.novels[n]
        devices.append(Device(args, url, name, token, novel, slots[n], listens, stats))
        slots[n] += 1
    loop = asyncio.get_running_loop()
    server.before = server.snapshot()
    cpu_before = cpu_seconds(server.pid) if server.pid else None
    sampler = asyncio.create_task(server.sample(args.sample)) if server.pid else None
    began = time.perf_counter()
    start, stop_at = loop.time(), loop.time() + args.seconds
    rng = random.Random(f"{args.seed}-starts")
    stagger = min(args.think, args.seconds / 4)
    await asyncio.gather(
        *(device.run(start + rng.uniform(0, stagger), stop_at) for device in devices)
    )
    seconds = server.load_seconds = time.perf_counter() - began
    if server.pid:
        server.cpu_cores = (cpu_seconds(server.pid) - cpu_before) / seconds
        await asyncio.sleep(args.settle)  # let the server close what the devices left
        sampler.cancel()
        await asyncio.gather(sampler, return_exceptions=True)
        server.after = server.snapshot()
    return stats, devices, seconds


# -- checking that nothing acknowledged was lost ---------------------------------------------


@dataclass
class Verdict:
    heads: int = 0
    lost: list[str] = field(default_factory=list)
    copies: int = 0
    copies_differ: list[str] = field(default_factory=list)


def verify_on_disk(data_dir: Path, stats: Stats, devices: list[Device]) -> Verdict:
    """With the server stopped: every acknowledged head is reachable from its novel's `main`,
    and every device's copy of the files is the tree of its base."""
    verdict = Verdict()
    repos: dict[str, pygit2.Repository] = {}
    for novel_id, heads in stats.acked.items():
        repo = repos[novel_id] = pygit2.Repository(str(data_dir / "novels" / f"{novel_id}.git"))
        main = repo.references["refs/heads/main"].target
        history = {str(c.id) for c in repo.walk(main, pygit2.enums.SortMode.NONE)}
        verdict.heads += len(heads)
        verdict.lost += [f"{novel_id} {head}" for head in sorted(heads - history)]
    for device in devices:
        if device.base is None:
            continue
        repo = repos.get(device.novel.id) or pygit2.Repository(
            str(data_dir / "novels" / f"{device.novel.id}.git")
        )
        verdict.copies += 1
        if device.files != tree_files(repo, repo[device.base].tree):
            verdict.copies_differ.append(f"{device.name} at {device.base}")
    return verdict


def tree_files(repo: pygit2.Repository, tree: pygit2.Tree, prefix: str = "") -> dict[str, str]:
    files = {}
    for entry in tree:
        if entry.type_str == "tree":
            files.update(tree_files(repo, repo[entry.id], f"{prefix}{entry.name}/"))
        else:
            files[prefix + entry.name] = repo[entry.id].data.decode()
    return files


async def verify_by_api(url: str, stats: Stats, devices: list[Device]) -> Verdict:
    """Against a running server: a pull `since` a head that is not in the novel's history
    answers 409 unknown_base."""
    verdict = Verdict()
    writer_of = {d.novel.id: d.headers for d in devices}
    limit = asyncio.Semaphore(8)
    async with aiohttp.ClientSession() as session:

        async def check(novel_id: str, head: str) -> None:
            async with (
                limit,
                session.get(
                    f"{url}/api/v1/novels/{novel_id}/sync?since={head}", headers=writer_of[novel_id]
                ) as response,
            ):
                await response.read()
                if response.status != 200:
                    verdict.lost.append(f"{novel_id} {head} ({response.status})")

        checks = [(n, h) for n, heads in stats.acked.items() for h in heads]
        verdict.heads = len(checks)
        await asyncio.gather(*(check(n, h) for n, h in checks))
    return verdict


# -- the report ------------------------------------------------------------------------------

KINDS = ["sync", "pull", "feed", "events"]


def summary(
    args: argparse.Namespace,
    the_plan: Plan,
    stats: Stats,
    devices: list[Device],
    seconds: float,
    server: Server,
    verdict: Verdict,
) -> dict:
    kinds = {}
    for kind in KINDS + sorted(set(stats.latencies) - set(KINDS)):
        if kind not in stats.latencies and not any(k == kind for k, _ in stats.errors):
            continue
        kinds[kind] = {
            "ok": stats.ok[kind],
            "per_second": stats.ok[kind] / seconds if seconds else 0.0,
            **percentiles(stats.latencies[kind]),
            "handled": {w: c for (k, w), c in stats.handled.items() if k == kind},
            "errors": {w: c for (k, w), c in stats.errors.items() if k == kind},
        }
    syncs = [d.syncs for d in devices]
    hwm = server.after.get("VmHWM")
    rss = [s[1] for s in server.samples]
    result = {
        "seconds": seconds,
        "devices": len(devices),
        "writers": args.writers,
        "novels": len(the_plan.novels),
        "listeners": sum(d.listens for d in devices),
        "think": args.think,
        "kinds": kinds,
        "errors": sum(stats.errors.values()),
        "error_samples": stats.error_samples,
        "sync_status": dict(stats.sync_status),
        "syncs_given_up": sum(d.gave_up for d in devices),
        "pulls": dict(stats.pulls),
        "syncs_per_device": {
            "min": min(syncs, default=0),
            "max": max(syncs, default=0),
            "mean": statistics.fmean(syncs) if syncs else 0.0,
        },
        "devices_without_sync": sum(1 for s in syncs if s == 0),
        "events": {
            "received": stats.events,
            "for_own_novel_unseen_head": stats.events_relevant,
            "before_ack": stats.events_before_ack,
            "after_ack": percentiles(stats.event_delays),
        },
        "server": {
            "pid": server.pid,
            "peak_rss_mb": hwm / 1024 if hwm else None,
            "max_sampled_rss_mb": max(rss) / 1024 if rss else None,
            "final_rss_mb": server.after["VmRSS"] / 1024 if server.after else None,
            "rss_start_mb": server.before["VmRSS"] / 1024 if server.before else None,
            "rss_timeline_mb": server.timeline(),
            "rss_samples": [
                (round(t, 1), round(kb / 1024, 1), fds) for t, kb, fds in server.samples
            ],
            "fds_start": server.before.get("fds"),
            "fds_max": max((s[2] for s in server.samples), default=None),
            "fds_end": server.after.get("fds"),
            "threads_start": server.before.get("Threads"),
            "threads_end": server.after.get("Threads"),
            "cpu_cores": server.cpu_cores,
            "log_errors": len(server.log_errors),
            "shutdown_seconds": server.shutdown_seconds,
            "killed_after_grace": server.killed,
            "log_error_samples": server.log_errors[:10],
        },
        "verification": {
            "acknowledged_heads": verdict.heads,
            "lost": verdict.lost,
            "device_copies_checked": verdict.copies,
            "device_copies_differ": verdict.copies_differ,
        },
    }
    peak = result["server"]["peak_rss_mb"]
    result["failures"] = [
        *(["errors"] if result["errors"] else []),
        *(["server log errors"] if server.log_errors else []),
        *(["lost acknowledged heads"] if verdict.lost else []),
        *(["device copies differ"] if verdict.copies_differ else []),
        *(["peak RSS"] if peak is not None and peak >= args.max_rss_mb else []),
    ]
    return result


def ms(value: float) -> str:
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}"


def verification_line(verification: dict) -> str:
    heads, lost = verification["acknowledged_heads"], len(verification["lost"])
    copies, differ = (
        verification["device_copies_checked"],
        len(verification["device_copies_differ"]),
    )
    line = f"Acknowledged heads in their novel's history: {heads - lost} of {heads}"
    if copies:
        line += f"; device copies equal to their base's tree: {copies - differ} of {copies}"
    return line + "."


def report(args: argparse.Namespace, command: str, result: dict) -> str:
    facts = machine()
    s = result["server"]
    lines = [
        f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC: `{command}`",
        "",
        f"Machine: {facts['nproc']} CPUs (`nproc`), {facts['cpu']}; Python {facts['python']},"
        f" aiohttp {facts['aiohttp']}; load average {facts['load']} when the report was"
        " written. Client and server share the machine"
        + (f" ({args.url})." if args.url else "; fsync on (as in production)."),
        "",
        f"{result['devices']} devices ({result['listeners']} on the event stream) of"
        f" {result['writers']} writers on {result['novels']} novels of {CHAPTERS} ~8 KB"
        f" chapters, think time {args.think} s (mean), for {result['seconds']:.0f} s.",
        "",
        "| operation | ok | per s | p50 ms | p95 ms | p99 ms | max ms | handled | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for kind, k in result["kinds"].items():
        handled = ", ".join(f"{w}: {c}" for w, c in k["handled"].items()) or "–"
        errors = ", ".join(f"{w}: {c}" for w, c in k["errors"].items()) or "0"
        lines.append(
            f"| {kind} | {k['ok']} | {k['per_second']:.1f} | {ms(k['p50_ms'])} |"
            f" {ms(k['p95_ms'])} | {ms(k['p99_ms'])} | {ms(k['max_ms'])} | {handled} | {errors} |"
        )
    status = ", ".join(f"{w} {c}" for w, c in sorted(result["sync_status"].items()))
    per = result["syncs_per_device"]
    ev = result["events"]
    after = ev["after_ack"]
    verification = result["verification"]
    lines += [
        "",
        "(`events`: streams opened, and the time until the server's `: connected`.)",
        f"Syncs: {status}; given up {result['syncs_given_up']}; per device"
        f" {per['min']}–{per['max']} (mean {per['mean']:.1f}), devices without one:"
        f" {result['devices_without_sync']}. Pulls by reason: "
        + ", ".join(f"{w} {c}" for w, c in sorted(result["pulls"].items()))
        + ".",
        f"Events received: {ev['received']} ({ev['for_own_novel_unseen_head']} for the"
        f" listener's novel at a head it had not seen); after the sync's acknowledgement"
        f" p50 {ms(after['p50_ms'])} ms, p99 {ms(after['p99_ms'])} ms; {ev['before_ack']}"
        " arrived before it.",
    ]
    if s["pid"]:
        timeline = " → ".join(f"{mb:.0f}" for _, mb in s["rss_timeline_mb"])
        lines.append(
            f"Server: peak RSS (VmHWM) {s['peak_rss_mb']:.1f} MB (goal < {args.max_rss_mb:.0f}"
            f" MB); sampled RSS {s['rss_start_mb']:.1f} MB before the load, max"
            f" {s['max_sampled_rss_mb']:.1f}, final {s['final_rss_mb']:.1f}; at each tenth of"
            f" the load: {timeline} MB. Open file descriptors {s['fds_start']} before, max"
            f" {s['fds_max']}, {s['fds_end']} {args.settle:.0f} s after; threads"
            f" {s['threads_start']} → {s['threads_end']}. CPU {s['cpu_cores']:.2f} cores."
            + ("" if args.url else f" Error lines in its log: {s['log_errors']}.")
        )
    if s["shutdown_seconds"] is not None:
        lines.append(
            f"Shutdown on SIGINT after the load: {s['shutdown_seconds']:.1f} s"
            + (
                f" (did not exit; killed after {args.shutdown_grace:.0f} s)."
                if s["killed_after_grace"]
                else "."
            )
        )
    lines += [
        verification_line(verification),
        "",
        f"Goals: no errors ({result['errors']}: {'met' if not result['errors'] else 'missed'});"
        f" peak RSS < {args.max_rss_mb:.0f} MB ("
        + (
            "not measured"
            if s["peak_rss_mb"] is None
            else f"{s['peak_rss_mb']:.0f} MB: "
            + ("met" if s["peak_rss_mb"] < args.max_rss_mb else "missed")
        )
        + "); no acknowledged sync lost ("
        + ("met" if not verification["lost"] else f"{len(verification['lost'])} lost: missed")
        + ").",
    ]
    return "\n".join(lines)


# -- main ----------------------------------------------------------------------------------


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=200, help="simulated devices (200)")
    parser.add_argument(
        "--writers", type=int, default=20, help="writers, with 2 or 3 novels each (20: 50 novels)"
    )
    parser.add_argument("--seconds", type=float, default=60.0, help="how long the load runs (60)")
    parser.add_argument(
        "--think",
        type=float,
        default=5.0,
        help="mean think time between a device's operations, seconds (5)",
    )
    parser.add_argument(
        "--listeners", type=float, default=0.5, help="share of devices on the event stream (0.5)"
    )
    parser.add_argument(
        "--pull-share",
        type=float,
        default=0.15,
        help="share of a device's operations that are pulls (0.15)",
    )
    parser.add_argument(
        "--feed-share",
        type=float,
        default=0.25,
        help="share that polls the feed, for devices not listening (0.25)",
    )
    parser.add_argument("--timeout", type=float, default=30.0, help="per request, seconds (30)")
    parser.add_argument(
        "--max-rss-mb",
        type=float,
        default=300.0,
        help="fail when the server's peak RSS reaches this (300)",
    )
    parser.add_argument("--sample", type=float, default=1.0, help="RSS sampling period (1 s)")
    parser.add_argument(
        "--settle",
        type=float,
        default=20.0,
        help="seconds to wait after the load before counting fds: more than the event"
        " stream's 15 s keep-alive, by which the server notices a listener that left (20)",
    )
    parser.add_argument(
        "--shutdown-grace",
        type=float,
        default=30.0,
        help="seconds the server has to exit on SIGINT before it is killed (30)",
    )
    parser.add_argument("--seed", default="soak", help="seed of every random choice")
    parser.add_argument("--url", help="soak a running server instead of starting one")
    parser.add_argument("--pid", type=int, help="with --url: the server's process id, for memory")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    parser.add_argument(
        "--write-docs", action="store_true", help=f"update {DOCS.relative_to(ROOT)}"
    )
    return parser.parse_args(argv)


def command_line(argv: list[str] | None) -> str:
    return " ".join(["python scripts/bench/soak.py", *(sys.argv[1:] if argv is None else argv)])


def run(args: argparse.Namespace, work: Path) -> dict:
    the_plan = plan(args)
    process = None
    if args.url:
        url, server = args.url.rstrip("/"), Server(args.pid)
    else:
        process = start_server(work / "data")
        url, server = process.url, Server(process.process.pid)
    stopped = False
    try:
        began = time.perf_counter()
        tokens = asyncio.run(populate(url, the_plan, args.seed))
        print(
            f"set up {args.writers} writers, {len(the_plan.novels)} novels and"
            f" {len(tokens)} device sessions in {time.perf_counter() - began:.1f} s;"
            f" soaking for {args.seconds:.0f} s ...",
            flush=True,
        )
        stats, devices, seconds = asyncio.run(soak(args, url, the_plan, tokens, server))
        if args.url:
            verdict = asyncio.run(verify_by_api(url, stats, devices))
        else:
            server.shutdown_seconds, server.killed = interrupt(process, args.shutdown_grace)
            stopped = True
    finally:
        if process is not None and not stopped:
            process.kill()
    if process is not None:
        server.log_errors = server_log_errors(process)
        verdict = verify_on_disk(process.data_dir, stats, devices)
    return summary(args, the_plan, stats, devices, seconds, server, verdict)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    with tempfile.TemporaryDirectory(prefix="openwrite-soak-") as tmp:
        result = run(args, Path(tmp))
    text = report(args, command_line(argv), result)
    print()
    print(text)
    for sample in result["error_samples"]:
        print("  error:", sample)
    for line in result["server"]["log_error_samples"]:
        print("  server log:", line)
    for lost in result["verification"]["lost"][:20]:
        print("  lost:", lost)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2), encoding="utf-8")
    if args.write_docs:
        write_docs("soak", "Soak (`scripts/bench/soak.py`)", text)
        print(f"\nupdated {DOCS}")
    if result["failures"]:
        print("\nFAILED: " + ", ".join(result["failures"]))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
