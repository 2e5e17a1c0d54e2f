"""Benchmark `git clone` over smart HTTP against Git's own limit, and what a revision costs
on disk.

    python scripts/bench/clone.py [--chapters 20] [--commits 10000] [--repeats 9]
                                  [--edits 1000] [--write-docs]

A novel is created through a server subprocess; its history is grown with the storage layer
directly (`NovelRepository.write_commit` + `advance_head`: one-word edits to ~50 KB
chapters, one pack each as a sync writes them, folded as the library's upkeep folds them),
then `openwrite admin reindex` and `openwrite admin maintenance` run as an admin would. With
the server restarted, `git clone` through it (token as the password) is timed against `git
clone --no-local` of the same bare repository from disk — Git's upload-pack over a pipe, the
limit — in back-to-back pairs (which of the two goes first alternates), `--repeats` pairs.
The goal is judged on the median of the pairs' ratios: the two clones of a pair see the same
load, which on a shared machine moves far more between pairs.

Separately, a novel with one 50 KB chapter gets `--edits` one-word edits: the growth of its
repository on disk after maintenance, divided by the edits, is the cost of a revision.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from _common import DOCS, cpu_seconds, machine, write_docs  # noqa: E402

from storage.library import Library  # noqa: E402
from storage.repository import Author, NovelRepository  # noqa: E402
from tests.servers import ServerProcess, start_server  # noqa: E402

GOAL_RATIO, GOAL_BYTES_PER_REVISION = 1.3, 2048
WORDS = ["the", "sea", "lamp", "stone", "keeper", "tower", "night", "storm", "gull", "rope",
         "salt", "tide", "wind", "door", "fog"]  # fmt: skip
AUTHOR = Author("Bench Writer", "bench@example.com")
GIT_ENV = {
    **{k: v for k, v in os.environ.items() if not k.startswith("GIT_")},
    "GIT_TERMINAL_PROMPT": "0",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
}


def chapter_text(rng: random.Random, number: int, size: int = 50_000) -> str:
    """About `size` bytes of prose in ~500-byte paragraphs, with generator front matter."""
    paragraphs, total = [], 0
    while total < size:
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(80, 100))) + "."
        paragraphs.append(text)
        total += len(text) + 2
    front = (
        f"---\ntitle: Chapter {number}\nnumber: {number}\nweight: {number}\n"
        "status: draft\ndraft: true\n---\n"
    )
    return front + "\n\n".join(paragraphs) + "\n"


def one_word_edit(text: str, rng: random.Random, word: str) -> str:
    body_start = text.index("---\n", 4) + 4
    lines = text[body_start:].split("\n")
    index = rng.randrange(0, len(lines), 2)  # paragraphs are the even lines
    words = lines[index].split(" ")
    words[rng.randrange(len(words))] = word
    lines[index] = " ".join(words)
    return text[:body_start] + "\n".join(lines)


# -- building the novels ------------------------------------------------------------------------


async def create_novels(url: str, titles: list[str]) -> tuple[str, list[str]]:
    """A writer and her novels, through the API; returns her session token and novel ids."""
    async with aiohttp.ClientSession() as session:
        account = {"name": "Bench Writer", "email": AUTHOR.email, "password": "correct horse"}
        async with session.post(url + "/api/v1/auth/signup", json=account) as response:
            assert response.status == 201, await response.text()
            token = (await response.json())["token"]
        ids = []
        for title in titles:
            async with session.post(
                url + "/api/v1/novels",
                json={"title": title},
                headers={"Authorization": f"Bearer {token}"},
            ) as response:
                assert response.status == 201, await response.text()
                ids.append((await response.json())["id"])
    return token, ids


def publish(repo: NovelRepository, library: Library, commit: str, head: str) -> None:
    """Move the head to `commit` as a sync does (its objects become one pack), with the
    library's upkeep, so the history is packed as the server leaves it."""
    repo.advance_head(commit, head, reason="bench")
    library.note_write(repo.path.name.removesuffix(".git"))


def grow(path: Path, chapters: int, commits: int, seed: int) -> None:
    """`chapters` chapters in one commit, then `commits` one-word edits spread over them."""
    rng = random.Random(seed)
    repo = NovelRepository.open(path)
    library = Library(path.parent)
    texts = {f"chapters/chapter-{n:02d}.md": chapter_text(rng, n) for n in range(1, chapters + 1)}
    paths = sorted(texts)
    with repo.lock(timeout=60):
        head = repo.head()
        first = repo.write_commit(parent=head, changes=texts, author=AUTHOR, message="Chapters")
        repo.advance_head(first, head, reason="bench")
        head = first
        for n in range(commits):
            path = paths[n % len(paths)]
            texts[path] = one_word_edit(texts[path], rng, f"w{n}")
            commit = repo.write_commit(
                parent=head, changes={path: texts[path]}, author=AUTHOR, message=f"Edit {n}"
            )
            publish(repo, library, commit, head)
            head = commit
            if (n + 1) % 2000 == 0:
                print(f"  {n + 1} commits", flush=True)
    library.close()  # waits for its repacks


def grow_more(path: Path, edits: int, seed: int) -> None:
    """`edits` one-word edits to the novel's one chapter."""
    rng = random.Random(seed)
    repo = NovelRepository.open(path)
    library = Library(path.parent)
    with repo.lock(timeout=60):
        head = repo.head()
        (chapter,) = repo.files(head, "chapters/")
        text = repo.read_text(chapter, head).text
        for n in range(edits):
            text = one_word_edit(text, rng, f"e{n}")
            commit = repo.write_commit(
                parent=head, changes={chapter: text}, author=AUTHOR, message=f"Edit {n}"
            )
            publish(repo, library, commit, head)
            head = commit
    library.close()


def admin(data_dir: Path, *task: str) -> None:
    command = [sys.executable, "-m", "server.cli", "admin", *task, "--data-dir", str(data_dir)]
    subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)


def disk_bytes(path: Path) -> int:
    """Bytes the repository's objects take (loose objects and packs)."""
    return sum(f.stat().st_size for f in (path / "objects").rglob("*") if f.is_file())


# -- timing clones ------------------------------------------------------------------------------


@dataclass
class Clones:
    name: str
    seconds: list[float] = field(default_factory=list)
    # CPU seconds of every process of a clone: the client's Git processes, and for HTTP
    # the server with its upload-pack and pack-objects. Less disturbed by other load.
    cpu: list[float] = field(default_factory=list)
    server_python: list[float] = field(default_factory=list)
    pack_bytes: int = 0

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


def timed_clone(source: str, target: Path, *extra: str) -> tuple[float, float]:
    """Wall seconds and CPU seconds (the clone and all its child processes) of a clone."""
    shutil.rmtree(target, ignore_errors=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.perf_counter()
    subprocess.run(
        ["git", "clone", "-q", *extra, source, str(target)],
        env=GIT_ENV,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    seconds = time.perf_counter() - began
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return seconds, after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime


def process_tree_cpu(pid: int) -> float:
    """CPU seconds of a process and of its children it has waited for, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(value) for value in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def pack_size(clone: Path) -> int:
    return sum(p.stat().st_size for p in (clone / ".git" / "objects" / "pack").glob("*.pack"))


def compare(
    server: ServerProcess, token: str, novel_id: str, repository: Path, repeats: int, work: Path
) -> tuple[Clones, Clones]:
    http = Clones("git clone over HTTP (this server)")
    local = Clones("git clone --no-local from disk (limit)")
    url = server.url.replace("http://", f"http://bench:{token}@") + f"/git/{novel_id}.git"
    # One of each first, untimed: warm the page cache and the server.
    timed_clone(url, work / "warm-http")
    timed_clone(str(repository), work / "warm-local", "--no-local")
    for n in range(repeats):
        for run in (http, local) if n % 2 == 0 else (local, http):
            target = work / f"clone-{n}"
            if run is http:
                python_before = cpu_seconds(server.process.pid)
                tree_before = process_tree_cpu(server.process.pid)
                seconds, cpu = timed_clone(url, target)
                run.server_python.append(cpu_seconds(server.process.pid) - python_before)
                cpu += process_tree_cpu(server.process.pid) - tree_before
            else:
                seconds, cpu = timed_clone(str(repository), target, "--no-local")
            run.seconds.append(seconds)
            run.cpu.append(cpu)
            run.pack_bytes = pack_size(target)
    return http, local


# -- the report ---------------------------------------------------------------------------------


@dataclass
class Result:
    http: Clones
    local: Clones
    commits: int
    chapters: int
    repo_bytes: int
    edits: int
    base_bytes: int
    edited_bytes: int

    @property
    def ratio(self) -> float:
        """The median over back-to-back pairs of HTTP time / limit time."""
        pairs = zip(self.http.seconds, self.local.seconds, strict=True)
        return statistics.median([http / limit for http, limit in pairs])

    @property
    def bytes_per_revision(self) -> float:
        return (self.edited_bytes - self.base_bytes) / self.edits


def report(args: argparse.Namespace, result: Result) -> str:
    facts = machine()
    http, local = result.http, result.local
    lines = [
        f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC: `python scripts/bench/clone.py --chapters"
        f" {args.chapters} --commits {args.commits} --repeats {args.repeats} --edits"
        f" {args.edits}`",
        "",
        f"Machine: {facts['nproc']} CPUs (`nproc`), {facts['cpu']}; Python {facts['python']},"
        f" aiohttp {facts['aiohttp']}; {git_version()}; load average {facts['load']} when the"
        " report was written. Client and server share the machine.",
        "",
        f"A novel of {result.chapters} chapters of ~50 KB and {result.commits + 2} commits"
        " (one-word edits), after `openwrite admin maintenance`:"
        f" {result.repo_bytes / 1e6:.1f} MB of objects on disk. {args.repeats} back-to-back"
        " pairs of clones (which goes first alternates); protocol v2 (Git's default).",
        "",
        "| what | median s | min s | max s | CPU s, all processes | server Python CPU s |"
        " pack MB |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for run in (http, local):
        python = f"{statistics.median(run.server_python):.3f}" if run.server_python else "–"
        lines.append(
            f"| {run.name} | {run.median:.3f} | {min(run.seconds):.3f} | {max(run.seconds):.3f}"
            f" | {statistics.median(run.cpu):.2f} | {python} | {run.pack_bytes / 1e6:.1f} |"
        )
    per_revision = result.bytes_per_revision
    met_ratio = result.ratio <= GOAL_RATIO
    met_size = per_revision < GOAL_BYTES_PER_REVISION
    lines += [
        "",
        f"HTTP / limit: {result.ratio:.2f}x, the median of the pairs' ratios (goal ≤"
        f" {GOAL_RATIO}x: {'met' if met_ratio else 'missed'}). Also: ratio of the medians"
        f" {http.median / local.median:.2f}x, of the fastest clones"
        f" {min(http.seconds) / min(local.seconds):.2f}x, of the CPU time of all processes"
        f" {statistics.median(http.cpu) / statistics.median(local.cpu):.2f}x.",
        "",
        f"Disk per revision: a novel with one 50 KB chapter grew from"
        f" {result.base_bytes / 1e3:.1f} KB to {result.edited_bytes / 1e3:.1f} KB of objects"
        f" after {result.edits} one-word edits and maintenance: {per_revision:.0f} bytes per"
        f" revision (goal < {GOAL_BYTES_PER_REVISION} bytes: {'met' if met_size else 'missed'}).",
    ]
    return "\n".join(lines)


def git_version() -> str:
    return subprocess.run(["git", "--version"], capture_output=True, text=True).stdout.strip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chapters", type=int, default=20, help="chapters of the novel (20)")
    parser.add_argument("--commits", type=int, default=10_000, help="one-word edits (10000)")
    parser.add_argument("--repeats", type=int, default=9, help="pairs of timed clones (9)")
    parser.add_argument("--edits", type=int, default=1000,
                        help="edits for the disk-per-revision figure (1000)")  # fmt: skip
    parser.add_argument("--write-docs", action="store_true", help="update docs/benchmarks.md")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="openwrite-clone-bench-") as tmp:
        work = Path(tmp)
        data_dir = work / "data"
        server = start_server(data_dir)
        try:
            token, (big, small) = asyncio.run(
                create_novels(server.url, ["Ten Thousand Revisions", "One Chapter"])
            )
        finally:
            server.stop()
        big_path = data_dir / "novels" / f"{big}.git"
        small_path = data_dir / "novels" / f"{small}.git"
        print(f"growing {args.commits} commits over {args.chapters} chapters ...", flush=True)
        grow(big_path, args.chapters, args.commits, seed=1)
        grow(small_path, 1, 0, seed=2)
        admin(data_dir, "maintenance", "--quiet")
        base_bytes = disk_bytes(small_path)
        grow_more(small_path, args.edits, seed=3)
        print("reindexing and repacking ...", flush=True)
        admin(data_dir, "reindex")
        admin(data_dir, "maintenance", "--quiet")
        server = start_server(data_dir)
        try:
            http, local = compare(server, token, big, big_path, args.repeats, work)
        finally:
            server.stop()
        result = Result(
            http, local, args.commits, args.chapters, disk_bytes(big_path), args.edits,
            base_bytes, disk_bytes(small_path),
        )  # fmt: skip
    text = report(args, result)
    print()
    print(text)
    if args.write_docs:
        write_docs("clone", "Clone (`scripts/bench/clone.py`)", text)
        print(f"\nupdated {DOCS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
