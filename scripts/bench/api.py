"""Benchmark the API: authenticated `GET /api/v1/novels` and `POST /api/v1/novels` per second
against one server process, next to a bare aiohttp handler answering the same JSON (the ceiling).

    python scripts/bench/api.py [--clients 32] [--duration 5] [--rounds 5] [--novels 20]
                                [--writers 4] [--write-docs]

Both servers run as subprocesses on loopback; the load comes from this process (one
aiohttp ClientSession, `--clients` concurrent workers), so on a small machine the client
competes with the server for CPU: the figures are a floor, and the ratio is the fair number.
The ceiling and the reads are measured in alternating rounds (`--duration` seconds each in
all), so that other work on the machine weighs on both alike.

A second server process on the same data directory sends every read to its reader threads
(`OPENWRITE_SQLITE_QUICK_READS=false`), the way all reads went before quick reads: its
reads are measured in the same rounds, and again beside `--writers` clients creating
novels, to show a read on the event loop costs the other requests no more than a read on
a thread does.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from _common import DOCS, cpu_seconds, machine, write_docs  # noqa: E402

from tests.servers import ServerProcess, free_port, start_server  # noqa: E402

GOAL_READS, GOAL_RATIO = 1500, 0.40


@dataclass
class Run:
    name: str
    ok: int = 0
    errors: dict[int, int] = field(default_factory=dict)
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    server_cpu: float | None = None  # CPU seconds the server process used per wall second

    @property
    def rate(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        if not self.latencies:
            return 0.0
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    def line(self) -> str:
        cpu = f", server CPU {self.server_cpu:.2f} cores" if self.server_cpu is not None else ""
        errors = f", errors {self.errors}" if self.errors else ""
        return (
            f"{self.name:<34} {self.rate:8.0f} req/s  p50 {self.percentile(0.5):6.1f} ms"
            f"  p99 {self.percentile(0.99):6.1f} ms"
            f"  ({self.ok} in {self.seconds:.1f} s{cpu}{errors})"
        )


async def load(
    session: aiohttp.ClientSession,
    name: str,
    method: str,
    url: str,
    *,
    headers: dict[str, str],
    expect: int,
    clients: int,
    duration: float,
    max_requests: int,
    pid: int | None,
    body: bool = False,
    run: Run | None = None,
) -> Run:
    """`clients` workers send requests until `duration` seconds or `max_requests` pass;
    counted into `run` when given (one more round of it)."""
    run = run if run is not None else Run(name)
    sent = 0
    loop = asyncio.get_running_loop()
    stop = loop.time() + duration

    async def worker(k: int) -> None:
        nonlocal sent
        while loop.time() < stop and sent < max_requests:
            sent += 1
            payload = {"title": f"Bench {k}.{sent}"} if body else None
            began = time.perf_counter()
            async with session.request(method, url, headers=headers, json=payload) as response:
                await response.read()
            if response.status == expect:
                run.ok += 1
                run.latencies.append(time.perf_counter() - began)
            else:
                run.errors[response.status] = run.errors.get(response.status, 0) + 1

    cpu_before = cpu_seconds(pid) if pid else None
    began = time.perf_counter()
    await asyncio.gather(*(worker(k) for k in range(clients)))
    seconds = time.perf_counter() - began
    if pid and cpu_before is not None:
        cpu = cpu_seconds(pid) - cpu_before + (run.server_cpu or 0.0) * run.seconds
        run.server_cpu = cpu / (run.seconds + seconds)
    run.seconds += seconds
    return run


def start_bare(body_file: Path, log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    with open(log, "ab") as out:
        process = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("_bare.py")), str(port), str(body_file)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=1):
                return process, url
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"the bare handler did not start:\n{log.read_text()}")


async def benchmark(
    args: argparse.Namespace, server: ServerProcess, threaded: ServerProcess, work: Path
) -> dict[str, Run]:
    """`server` reads the quick way (on its event loop); `threaded`, a second process on
    the same data directory, sends every read to its reader threads."""
    connector = aiohttp.TCPConnector(limit=args.clients + args.writers)
    async with aiohttp.ClientSession(connector=connector) as session:
        async with session.post(
            server.url + "/api/v1/auth/signup",
            json={
                "name": "Bench Writer",
                "email": "bench@example.com",
                "password": "correct horse",
            },
        ) as response:
            assert response.status == 201, await response.text()
            token = (await response.json())["token"]
        headers = {"Authorization": f"Bearer {token}"}
        for i in range(args.novels):
            async with session.post(
                server.url + "/api/v1/novels", json={"title": f"Seed {i}"}, headers=headers
            ) as response:
                assert response.status == 201, await response.text()
        listing_path = f"/api/v1/novels?limit={args.novels}"
        async with session.get(server.url + listing_path, headers=headers) as response:
            listing = await response.read()
        body_file = work / "novels.json"
        body_file.write_bytes(listing)
        bare, bare_url = start_bare(body_file, work / "bare.log")
        runs: dict[str, Run] = {}

        async def reads(name: str, url: str, pid: int | None, auth: dict, seconds: float) -> None:
            run = runs.setdefault(name, Run(name))
            await load(session, name, "GET", url, headers=auth, expect=200,
                       clients=args.clients, duration=seconds,
                       max_requests=args.max_requests, pid=pid, run=run)  # fmt: skip

        async def creations(name: str, url: str, pid: int, seconds: float) -> None:
            run = runs.setdefault(name, Run(name))
            await load(session, name, "POST", url + "/api/v1/novels", headers=headers,
                       expect=201, clients=args.writers, duration=seconds,
                       max_requests=args.max_requests, pid=pid, body=True, run=run)  # fmt: skip

        try:
            targets = [
                ("bare aiohttp handler (ceiling)", bare_url + "/api/v1/novels", bare.pid, {}),
                (READS, server.url + listing_path, server.process.pid, headers),
                (THREADED, threaded.url + listing_path, threaded.process.pid, headers),
            ]
            for _, url, _, auth in targets:
                await load(session, "warm-up", "GET", url, headers=auth, expect=200,
                           clients=args.clients, duration=1, max_requests=args.max_requests,
                           pid=None)  # fmt: skip
            seconds = args.duration / args.rounds
            for round_ in range(args.rounds):
                for name, url, pid, auth in targets[:: 1 if round_ % 2 == 0 else -1]:
                    await reads(name, url, pid, auth, seconds)
            # Reads beside writes: a read done on the event loop must not make the reads
            # wait on the writes any more than a reader thread does.
            for round_ in range(args.rounds):
                pair = [(server, READS_MIXED, CREATES_MIXED),
                        (threaded, THREADED_MIXED, THREADED_CREATES_MIXED)]  # fmt: skip
                for process, read_name, write_name in pair[:: 1 if round_ % 2 == 0 else -1]:
                    await asyncio.gather(
                        reads(read_name, process.url + listing_path, process.process.pid,
                              headers, seconds),
                        creations(write_name, process.url, process.process.pid, seconds),
                    )  # fmt: skip
            # Server CPU in the mixed rounds is the process's, shared by reads and writes.
            for name in (CREATES_MIXED, THREADED_CREATES_MIXED):
                runs[name].server_cpu = None
            await creations(CREATES, server.url, server.process.pid, args.duration)
            runs[CREATES].name = CREATES
            await load(session, WRITES, "POST", server.url + "/api/v1/novels", headers=headers,
                       expect=201, clients=args.clients, duration=args.duration,
                       max_requests=args.max_requests, pid=server.process.pid, body=True,
                       run=runs.setdefault(WRITES, Run(WRITES)))  # fmt: skip
        finally:
            bare.terminate()
            bare.wait()
    print(f"answer size: {len(listing)} bytes ({args.novels} novels)")
    return runs


READS = "GET /api/v1/novels (session)"
THREADED = "GET /api/v1/novels, reads on reader threads (`SQLITE_QUICK_READS=false`)"
READS_MIXED = "GET /api/v1/novels while novels are created"
CREATES_MIXED = "POST /api/v1/novels beside those reads"
THREADED_MIXED = "GET /api/v1/novels while novels are created, reads on reader threads"
THREADED_CREATES_MIXED = "POST /api/v1/novels beside those reads (reader threads)"
CREATES = "POST /api/v1/novels alone (the same writers)"
WRITES = "POST /api/v1/novels (session)"


def report(args: argparse.Namespace, runs: dict[str, Run]) -> str:
    bare, reads, writes = runs["bare aiohttp handler (ceiling)"], runs[READS], runs[WRITES]
    threaded = runs[THREADED]
    ratio = reads.rate / bare.rate if bare.rate else 0.0
    facts = machine()
    verdict = "met" if reads.rate >= GOAL_READS and ratio >= GOAL_RATIO else "missed"
    lines = [
        f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC: `python scripts/bench/api.py "
        f"--clients {args.clients} --duration {args.duration} --rounds {args.rounds}"
        f" --novels {args.novels} --writers {args.writers}`",
        "",
        f"Machine: {facts['nproc']} CPUs (`nproc`), {facts['cpu']}; Python {facts['python']},"
        f" aiohttp {facts['aiohttp']}; load average {facts['load']} when the report was"
        " written. Client and servers share the machine; the two servers share one data"
        " directory.",
        "",
        "| what | requests/s | p50 ms | p99 ms | server CPU (cores) | CPU µs/request |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for run in runs.values():
        cpu = f"{run.server_cpu:.2f}" if run.server_cpu is not None else "–"
        per = f"{run.server_cpu / run.rate * 1e6:.0f}" if run.server_cpu and run.rate else "–"
        lines.append(
            f"| {run.name} | {run.rate:.0f} | {run.percentile(0.5):.1f} |"
            f" {run.percentile(0.99):.1f} | {cpu} | {per} |"
        )
    mixed, threaded_mixed = runs[READS_MIXED], runs[THREADED_MIXED]
    lines += [
        "",
        f"Authenticated reads: {reads.rate:.0f}/s = {ratio:.0%} of the bare handler"
        f" ({threaded.rate:.0f}/s = {threaded.rate / bare.rate:.0%} with reads on reader"
        f" threads); writes: {writes.rate:.0f}/s. Goal (≥{GOAL_READS} reads/s and"
        f" ≥{GOAL_RATIO:.0%} of the ceiling): {verdict}.",
        "",
        f"Quick reads against reader threads, in the same run: {reads.rate / threaded.rate:.2f}x"
        f" the reads alone; beside {args.writers} clients creating novels, reads p99"
        f" {mixed.percentile(0.99):.1f} ms against {threaded_mixed.percentile(0.99):.1f} ms,"
        f" creations {runs[CREATES_MIXED].rate:.0f}/s against"
        f" {runs[THREADED_CREATES_MIXED].rate:.0f}/s (alone: {runs[CREATES].rate:.0f}/s).",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=32, help="concurrent clients (32)")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measurement (5)")
    parser.add_argument(
        "--rounds", type=int, default=5, help="alternating rounds of ceiling and reads (5)"
    )
    parser.add_argument("--max-requests", type=int, default=200_000, help="cap per measurement")
    parser.add_argument("--novels", type=int, default=20, help="novels in the listed org (20)")
    parser.add_argument(
        "--writers", type=int, default=4, help="clients creating novels beside the reads (4)"
    )
    parser.add_argument(
        "--write-docs", action="store_true", help=f"update {DOCS.relative_to(ROOT)}"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="openwrite-bench-") as tmp:
        work = Path(tmp)
        server = start_server(work / "data")
        try:
            threaded = start_server(work / "data", env={"OPENWRITE_SQLITE_QUICK_READS": "false"})
            try:
                runs = asyncio.run(benchmark(args, server, threaded, work))
            finally:
                threaded.stop()
        finally:
            server.stop()
    for run in runs.values():
        print(run.line())
    text = report(args, runs)
    print()
    print(text)
    if args.write_docs:
        write_docs("api", "API throughput (`scripts/bench/api.py`)", text)
        print(f"\nupdated {DOCS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
