"""Ingestion benchmark: counterparty's poller against lemon24's ``reader`` on the same feeds.

The local feed server (tests/support/feedserver.py) runs in its own process, listening on several
loopback addresses (127.0.0.1, 127.0.0.2, ...) so per-host politeness caps apply as they would on
the internet; it serves K copies of the 46 corpus feeds under distinct URLs (``/copy/N/...``).
Each side runs in its own process, so CPU time and peak RSS are its own:

1. **cold ingest, counterparty**: empty SQLite database, ``sync_config`` + ``poll_all`` over K*46
   feeds; feeds/s, entries/s, CPU seconds (process + parse workers), peak RSS (process and the
   largest worker), and the longest event-loop stall (a 5 ms ticker's worst lateness);
2. **warm pass, counterparty**: a second database with 5,000 feed URLs whose stored validators
   are current (as after an earlier poll), so every request is answered 304;
3. **cold ingest, reader** (the baseline): ``make_reader(db).update_feeds()`` over the same URLs.

    .venv/bin/python -m bench.ingest --copies 10 --warm 5000

Results are printed as JSON, ratios against reader included.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
CORPUS = Path(os.environ.get("COUNTERPARTY_SHARED", REPO.parent / "shared")) / "corpus"


def feed_names() -> list[str]:
    manifest = json.loads((CORPUS / "manifest.json").read_text(encoding="utf-8"))
    return [item["file"].removeprefix("corpus/") for item in manifest]


def make_urls(bases: list[str], copies: int, names: list[str], *, offset: int = 0) -> list[str]:
    urls = []
    for copy in range(offset, offset + copies):
        for i, name in enumerate(names):
            base = bases[(copy * len(names) + i) % len(bases)]
            urls.append(f"{base}/copy/{copy}/{name}")
    return urls


def rusage() -> dict[str, float]:
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        "cpu_self": me.ru_utime + me.ru_stime,
        "cpu_children": kids.ru_utime + kids.ru_stime,
        "rss_self_mb": me.ru_maxrss / 1024,
    }


class ProcessTreeSampler:
    """Samples this process and its descendants (the forkserver and the parse workers, which
    are not our direct children and so escape RUSAGE_CHILDREN) every 50 ms: CPU seconds per
    process and the peak of the summed RSS.

    The sampler's own CPU (reading /proc from a thread of this process) is measured and taken
    out of ``cpu_self_s`` and ``cpu_s``: it is the benchmark's cost, not the bot's. The list of
    descendants is refreshed every 0.5 s (listing them scans every process on the machine)."""

    def __init__(self) -> None:
        import threading

        import psutil

        self._me = psutil.Process()
        self._procs: list[psutil.Process] = [self._me]
        self._cpu: dict[int, float] = {}
        self._base: dict[int, float] = {}
        self.peak_rss_mb = 0.0
        self.overhead_s = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _refresh(self) -> None:
        import psutil

        # A child exiting while listing: keep the previous list until the next refresh.
        with contextlib.suppress(psutil.Error):
            self._procs = [self._me, *self._me.children(recursive=True)]

    def _sample(self) -> None:
        import psutil

        total = 0
        for proc in self._procs:
            try:
                times = proc.cpu_times()
                rss = proc.memory_info().rss
            except psutil.Error:
                continue  # exited between listing and reading
            self._cpu[proc.pid] = times.user + times.system
            self._base.setdefault(proc.pid, self._cpu[proc.pid] if proc is self._me else 0.0)
            total += rss
        self.peak_rss_mb = max(self.peak_rss_mb, total / 2**20)

    def _run(self) -> None:
        ticks = 0
        while not self._stop.wait(0.05):
            if ticks % 10 == 0:
                self._refresh()
            ticks += 1
            self._sample()
            self.overhead_s = time.thread_time()

    def __enter__(self) -> ProcessTreeSampler:
        self._refresh()
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._refresh()
        self._sample()

    def final_sample(self) -> None:
        """Read every process once more now (before the parse workers exit with their CPU)."""
        self._refresh()
        self._sample()

    @property
    def cpu_self_s(self) -> float:
        pid = self._me.pid
        return self._cpu.get(pid, 0.0) - self._base.get(pid, 0.0) - self.overhead_s

    @property
    def cpu_s(self) -> float:
        total = sum(cpu - self._base.get(pid, 0.0) for pid, cpu in self._cpu.items())
        return total - self.overhead_s


class StallMonitor:
    """Measures the event loop's worst lateness on a 5 ms ticker."""

    def __init__(self) -> None:
        self.worst = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(0.005)
            self.worst = max(self.worst, loop.time() - before - 0.005)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> float:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        return self.worst


# An idle asyncio loop in its own process, measuring its worst lateness the same way: what the
# machine alone (other load, scheduler) does to a loop that has nothing to do. Our stall is
# reported next to it.
_IDLE_LOOP = """
import asyncio, sys, threading
worst = 0.0
async def main():
    global worst
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), loop.call_soon_threadsafe(stop.set)),
                     daemon=True).start()
    while not stop.is_set():
        before = loop.time()
        await asyncio.sleep(0.005)
        worst = max(worst, loop.time() - before - 0.005)
asyncio.run(main())
print(worst * 1000)
"""


class IdleLoopControl:
    def __enter__(self) -> IdleLoopControl:
        self._proc = subprocess.Popen(
            [sys.executable, "-c", _IDLE_LOOP],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.worst_ms = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        out, _ = self._proc.communicate(input="", timeout=30)
        self.worst_ms = float(out.strip() or 0)


# --- side 1 and 2: counterparty ---------------------------------------------------------------


def settings_for(urls: list[str], database_url: str) -> Any:
    from bot.settings import Environment, FileConfig, Settings

    config = FileConfig.model_validate({"feeds": [{"url": u} for u in urls]})
    return Settings(file=config, env=Environment(), config_path=None, database_url=database_url)


async def ours_cold(urls: list[str], workdir: Path) -> dict[str, Any]:
    from sqlalchemy import func, select

    from bot.feeds.pipeline import Poller
    from bot.storage.db import open_database
    from bot.storage.schema import entries

    url = f"sqlite:///{workdir / 'cold.db'}"
    engine = open_database(url)
    settings = settings_for(urls, url)
    monitor = StallMonitor()
    with IdleLoopControl() as control, ProcessTreeSampler() as sampler:
        started = time.perf_counter()
        monitor.start()
        async with Poller(settings, engine) as poller:
            await poller.sync_config()
            summary = await poller.poll_all(datetime.now(UTC))
            # Sample before the workers exit (their CPU time goes with them).
            elapsed = time.perf_counter() - started
            sampler.final_sample()
        stall = await monitor.stop()
    with engine.connect() as conn:
        stored = conn.execute(select(func.count()).select_from(entries)).scalar_one()
    engine.dispose()
    return {
        "feeds": summary.feeds,
        "failed": summary.failed,
        "entries": stored,
        "seconds": elapsed,
        "feeds_per_s": summary.fetched / elapsed,
        "entries_per_s": stored / elapsed,
        "cpu_s": sampler.cpu_s,
        "cpu_main_process_s": sampler.cpu_self_s,
        "cpu_sampler_overhead_s": sampler.overhead_s,
        "peak_rss_mb": sampler.peak_rss_mb,
        "longest_stall_ms": stall * 1000,
        "idle_loop_control_stall_ms": control.worst_ms,
    }


async def ours_warm(urls: list[str], workdir: Path) -> dict[str, Any]:
    """5,000 feeds whose stored ETag/Last-Modified are current: every answer is a 304."""
    import httpx
    from sqlalchemy import update

    from bot.feeds.pipeline import Poller
    from bot.storage.db import open_database
    from bot.storage.schema import feeds

    url = f"sqlite:///{workdir / 'warm.db'}"
    engine = open_database(url)
    settings = settings_for(urls, url)
    validators: dict[str, tuple[str, str]] = {}
    async with httpx.AsyncClient() as client:
        for feed_url in urls:
            name = feed_url.split("/copy/", 1)[1].split("/", 1)[1]
            if name not in validators:
                response = await client.get(feed_url)
                validators[name] = (response.headers["etag"], response.headers["last-modified"])
    async with Poller(settings, engine) as poller:
        await poller.sync_config()
        with engine.begin() as conn:  # what an earlier poll would have stored
            for feed_url in urls:
                etag, modified = validators[feed_url.split("/copy/", 1)[1].split("/", 1)[1]]
                conn.execute(
                    update(feeds)
                    .where(feeds.c.url == feed_url)
                    .values(etag=etag, last_modified=modified, baseline_done=True)
                )
        monitor = StallMonitor()
        with IdleLoopControl() as control:
            started = time.perf_counter()
            monitor.start()
            summary = await poller.poll_all(datetime.now(UTC))
            elapsed = time.perf_counter() - started
            stall = await monitor.stop()
    engine.dispose()
    return {
        "feeds": summary.feeds,
        "not_modified": summary.not_modified,
        "failed": summary.failed,
        "seconds": elapsed,
        "feeds_per_s": summary.feeds / elapsed,
        "longest_stall_ms": stall * 1000,
        "idle_loop_control_stall_ms": control.worst_ms,
    }


async def _debugged(work: Any) -> Any:
    """Run ``work`` with asyncio's debug mode logging every callback that holds the loop for
    more than 50 ms (with where it came from): how the stalls below were found."""
    import logging

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    asyncio.get_running_loop().slow_callback_duration = 0.05
    return await work


def run_ours(
    urls_file: Path, warm_file: Path, workdir: Path, *, loop_debug: bool = False
) -> dict[str, Any]:
    urls = json.loads(urls_file.read_text())
    warm = json.loads(warm_file.read_text())

    def run(work: Any) -> Any:
        if loop_debug:
            return asyncio.run(_debugged(work), debug=True)
        return asyncio.run(work)

    cold = run(ours_cold(urls, workdir))
    warm_result = run(ours_warm(warm, workdir)) if warm else None
    return {"cold": cold, "warm": warm_result}


# --- side 3: reader ---------------------------------------------------------------------------


def run_reader(urls_file: Path, workdir: Path) -> dict[str, Any]:
    from reader import make_reader

    urls = json.loads(urls_file.read_text())
    reader = make_reader(str(workdir / "reader.sqlite"))
    for url in urls:
        reader.add_feed(url)
    before = rusage()
    started = time.perf_counter()
    reader.update_feeds()
    elapsed = time.perf_counter() - started
    after = rusage()
    counts = reader.get_entry_counts()
    total = counts.total or 0
    broken = sum(1 for feed in reader.get_feeds() if feed.last_exception)
    reader.close()
    return {
        "cold": {
            "feeds": len(urls),
            "failed": broken,
            "entries": total,
            "seconds": elapsed,
            "feeds_per_s": (len(urls) - broken) / elapsed,
            "entries_per_s": total / elapsed,
            "cpu_s": (after["cpu_self"] - before["cpu_self"])
            + (after["cpu_children"] - before["cpu_children"]),
            "peak_rss_mb": after["rss_self_mb"],
        }
    }


# --- the orchestrator -------------------------------------------------------------------------


def side(kind: str, *args: str, show_stderr: bool = False) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, "-m", "bench.ingest", "--side", kind, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise SystemExit(f"{kind} side failed:\n{result.stderr[-4000:]}")
    if show_stderr:
        sys.stderr.write(result.stderr)
    return json.loads(result.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--copies", type=int, default=10, help="copies of the 46 corpus feeds")
    parser.add_argument("--warm", type=int, default=5000, help="feeds in the all-304 pass")
    parser.add_argument("--hosts", type=int, default=16, help="loopback addresses to serve on")
    parser.add_argument("--no-reader", action="store_true", help="skip the reader baseline")
    parser.add_argument(
        "--loop-debug",
        action="store_true",
        help="asyncio debug mode: log callbacks that hold the loop over 50 ms (slows the run; "
        "for finding stalls, not for numbers)",
    )
    parser.add_argument("--side", choices=["ours", "reader"], help=argparse.SUPPRESS)
    parser.add_argument("--urls", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--warm-urls", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.side == "ours":
        result = run_ours(args.urls, args.warm_urls, args.workdir, loop_debug=args.loop_debug)
        print(json.dumps(result))
        return 0
    if args.side == "reader":
        print(json.dumps(run_reader(args.urls, args.workdir)))
        return 0

    # Imported here: the measured sides ("ours", "reader") do not need the feed server.
    from tests.support.feedserver import serving_in_process

    hosts = ",".join(f"127.0.0.{i}" for i in range(1, args.hosts + 1))
    with serving_in_process(CORPUS, hosts) as bases:
        names = feed_names()
        with tempfile.TemporaryDirectory(prefix="cp-bench-") as tmp:
            work = Path(tmp)
            cold_urls = make_urls(bases, args.copies, names)
            warm_copies = -(-args.warm // len(names))
            # The warm pass uses other copies, so nothing is shared with the cold database.
            warm_urls = make_urls(bases, warm_copies, names, offset=args.copies)[: args.warm]
            (work / "cold.json").write_text(json.dumps(cold_urls))
            (work / "warm.json").write_text(json.dumps(warm_urls))
            ours = side(
                "ours",
                "--urls", str(work / "cold.json"),
                "--warm-urls", str(work / "warm.json"),
                "--workdir", str(work),
                *(["--loop-debug"] if args.loop_debug else []),
                show_stderr=args.loop_debug,
            )  # fmt: skip
            baseline = (
                None
                if args.no_reader
                else side("reader", "--urls", str(work / "cold.json"), "--workdir", str(work))
            )
    report: dict[str, Any] = {
        "copies": args.copies,
        "hosts": args.hosts,
        "cpu_count": os.cpu_count(),
        "counterparty": ours,
        "reader": baseline,
    }
    if baseline:
        report["ratio_feeds_per_s"] = ours["cold"]["feeds_per_s"] / baseline["cold"]["feeds_per_s"]
        report["ratio_cpu_s"] = ours["cold"]["cpu_s"] / baseline["cold"]["cpu_s"]
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
