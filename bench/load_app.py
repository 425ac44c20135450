"""Load test of the web app: many browser sessions uploading and reviewing real tiles.

Run from the repository root:

    .venv/bin/python bench/load_app.py --tiles ../shared/data --sessions 3 --minutes 1

The script starts ``streamlit run app/Home.py`` on a free loopback port (or, with
``--url``, targets an app already running on loopback) and drives it from one headless
Chromium (Debian's ``/usr/bin/chromium``, through Playwright's async API) with one
browser context per simulated user. Each user opens the Review page and uploads a tile
drawn at random from ``--tiles``. It waits until the prediction is shown and then until
the page is idle (reconstructions and class activation maps drawn), and looks at it
for a random think time. Then it removes the tile from the uploader and uploads the
next one. After ``--uploads-per-session`` tiles
the user closes its context, so that its Streamlit session ends, and opens a new one.

Reported:

- errors: failed or timed-out page actions, error boxes shown in the page, and lines
  with ``Traceback`` or `` ERROR `` in the server log;
- latency percentiles from the upload to the prediction shown, and to the idle page;
- the resident memory (RSS) of the server process every ``--sample-seconds``, its
  per-minute maximum and its linear trend over the second half of the run, then for
  ``--cooldown-seconds`` after the last session closed.

``--json FILE`` writes every latency and memory sample. Streamlit keeps a disconnected
session (uploads included) for ``server.disconnectedSessionTTL`` seconds (120 by
default in Streamlit 1.67) before it frees it, so a cooldown longer than that shows
whether closed sessions release their memory.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import re
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from gastricvision.imaging import IMAGE_SUFFIXES  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ERROR_SELECTORS = ('[data-testid="stAlertContentError"]', '[data-testid="stException"]')
UPLOAD_INPUT = '[data-testid="stFileUploaderDropzoneInput"]'
UPLOAD_CHIP_DELETE = '[data-testid="stFileChipDeleteBtn"]'
PREDICTION_METRIC = "P(Abnormal)"
SERVER_ERROR = re.compile(r"Traceback|\sERROR\s")


# --------------------------------------------------------------------------- records


@dataclass
class Review:
    """One upload by one user.

    Attributes:
        user: Index of the simulated user.
        tile: Path of the uploaded tile.
        started: Seconds since the start of the run.
        shown_s: Seconds from the upload to the prediction shown, or None on failure.
        idle_s: Seconds from the upload to the idle page, or None on failure.
        error: What failed, or None.
    """

    user: int
    tile: str
    started: float
    shown_s: float | None = None
    idle_s: float | None = None
    error: str | None = None


@dataclass
class MemorySample:
    """Server memory at one moment.

    Attributes:
        elapsed_s: Seconds since the start of the run.
        rss_mib: Resident set size of the server process and its children, in MiB.
        cpu_percent: Server CPU use since the previous sample (100 = one core).
        open_sessions: Browser contexts open at that moment.
        phase: ``warmup``, ``load`` or ``cooldown``.
    """

    elapsed_s: float
    rss_mib: float
    cpu_percent: float
    open_sessions: int
    phase: str


@dataclass
class RunState:
    """Shared by the user tasks and the memory sampler."""

    started: float = field(default_factory=time.monotonic)
    phase: str = "warmup"
    open_sessions: int = 0
    sessions_opened: int = 0
    reviews: list[Review] = field(default_factory=list)
    memory: list[MemorySample] = field(default_factory=list)

    def elapsed(self) -> float:
        return time.monotonic() - self.started


# --------------------------------------------------------------------------- server


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_health(url: str, process: subprocess.Popen | None, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            sys.exit(f"error: streamlit exited with status {process.returncode}; see the server log")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.read().strip() == b"ok":
                    return
        except OSError:
            pass
        time.sleep(0.5)
    sys.exit(f"error: {url} did not answer within {timeout:.0f} s")


def start_server(port: int, log_path: Path) -> subprocess.Popen:
    command = [
        sys.executable, "-m", "streamlit", "run", "app/Home.py",
        "--server.port", str(port), "--server.address", "127.0.0.1", "--server.headless", "true",
    ]
    env = {**os.environ, "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false"}
    with log_path.open("w") as handle:
        return subprocess.Popen(command, cwd=REPO, env=env, stdout=handle, stderr=subprocess.STDOUT)


def stop_server(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=30)


def listening_process(url: str) -> psutil.Process:
    """Find the process listening on the loopback port of ``url``."""
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    for connection in psutil.net_connections(kind="tcp"):
        if connection.status == psutil.CONN_LISTEN and connection.laddr.port == port and connection.pid:
            return psutil.Process(connection.pid)
    sys.exit(f"error: no process listens on port {port}; pass --server-pid")


def check_loopback(url: str) -> None:
    host = url.split("://", 1)[-1].split("/", 1)[0].rsplit(":", 1)[0].strip("[]")
    if host not in ("127.0.0.1", "localhost", "::1"):
        sys.exit(f"error: {url} is not a loopback address; this script only loads a local app")


# --------------------------------------------------------------------------- memory


def process_rss(process: psutil.Process) -> float:
    total = process.memory_info().rss
    for child in process.children(recursive=True):
        try:
            total += child.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total / 2**20


def lower_client_priority(server: psutil.Process, niceness: int) -> None:
    """Set the niceness of this script's child processes (Chromium, Playwright), except the server's.

    Chromium raises the priority of its browser process (niceness -8 when run as root),
    so on a small machine the simulated users take the CPU from the server they load.
    """
    served = {server.pid} | {child.pid for child in server.children(recursive=True)}
    for child in psutil.Process().children(recursive=True):
        if child.pid in served:
            continue
        try:
            if child.nice() < niceness:
                child.nice(niceness)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue


def sample_memory(process: psutil.Process, state: RunState, interval: float, stop: threading.Event, client_nice: int = 0) -> None:
    process.cpu_percent(None)
    while not stop.is_set():
        if client_nice:
            try:
                lower_client_priority(process, client_nice)
            except psutil.NoSuchProcess:
                return
        try:
            state.memory.append(
                MemorySample(
                    round(state.elapsed(), 1), round(process_rss(process), 1), process.cpu_percent(None),
                    state.open_sessions, state.phase,
                )
            )
        except psutil.NoSuchProcess:
            return
        stop.wait(interval)


# --------------------------------------------------------------------------- users


async def wait_until_idle(page) -> None:
    """Wait until the script run and any spinner have finished."""
    await page.wait_for_timeout(300)
    await page.locator('[data-testid="stStatusWidgetRunningIcon"]').first.wait_for(state="detached")
    await page.locator('[data-testid="stSpinner"]').first.wait_for(state="detached")


async def page_errors(page) -> list[str]:
    texts = []
    for selector in ERROR_SELECTORS:
        texts += await page.locator(selector).all_inner_texts()
    return texts


async def remove_uploads(page) -> None:
    """Remove the tiles uploaded before: the uploader keeps adding files otherwise."""
    chips = page.locator(UPLOAD_CHIP_DELETE)
    while await chips.count():
        await chips.first.click()
        await wait_until_idle(page)


async def review_tile(page, tile: Path, review: Review, start: float) -> None:
    await page.locator(UPLOAD_INPUT).set_input_files(str(tile))
    # The tile's caption names the file and is drawn after the prediction, so an old
    # caption still on the page cannot be taken for this upload.
    await page.locator('[data-testid="stCaptionContainer"]', has_text=tile.name).first.wait_for()
    await page.locator('[data-testid="stMetric"]', has_text=PREDICTION_METRIC).first.wait_for()
    review.shown_s = time.monotonic() - start
    await wait_until_idle(page)
    review.idle_s = time.monotonic() - start
    errors = await page_errors(page)
    if errors:
        review.error = "error box: " + " | ".join(errors)[:300]


async def run_user(index: int, browser, url: str, tiles: list[Path], args, state: RunState, deadline: float) -> None:
    from playwright.async_api import Error as PlaywrightError

    rng = random.Random(args.seed * 1000 + index)
    previous: Path | None = None
    await asyncio.sleep(rng.uniform(0, args.ramp_seconds))
    while time.monotonic() < deadline:
        context = await browser.new_context(viewport={"width": 1400, "height": 900})
        state.open_sessions += 1
        state.sessions_opened += 1
        page = await context.new_page()
        page.set_default_timeout(args.timeout_seconds * 1000)
        try:
            await page.goto(f"{url}/review")
            await page.locator(UPLOAD_INPUT).wait_for(state="attached")
            for _ in range(args.uploads_per_session):
                if time.monotonic() >= deadline:
                    break
                tile = rng.choice([t for t in tiles if t.name != getattr(previous, "name", None)])
                previous = tile
                await remove_uploads(page)
                start = time.monotonic()
                review = Review(index, str(tile), round(start - state.started, 1))
                state.reviews.append(review)
                try:
                    await review_tile(page, tile, review, start)
                except PlaywrightError as exc:
                    review.error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
                    break  # the page may be in any state: start a new session
                await asyncio.sleep(rng.uniform(*args.think_seconds))
        except PlaywrightError as exc:
            state.reviews.append(Review(index, "(opening the page)", round(state.elapsed(), 1), error=str(exc).splitlines()[0][:200]))
        finally:
            await context.close()
            state.open_sessions -= 1


async def drive(url: str, tiles: list[Path], args, state: RunState) -> dict:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)

        # One review first, so that loading the models is not counted as latency.
        warmup_start = time.monotonic()
        warmup = Review(-1, str(tiles[0]), 0.0)
        context = await browser.new_context()
        page = await context.new_page()
        page.set_default_timeout(args.timeout_seconds * 1000)
        await page.goto(f"{url}/review")
        await review_tile(page, tiles[0], warmup, warmup_start)
        await context.close()
        warmup_seconds = round(time.monotonic() - warmup_start, 1)

        state.phase = "load"
        deadline = time.monotonic() + args.minutes * 60
        await asyncio.gather(*(run_user(i, browser, url, tiles, args, state, deadline) for i in range(args.sessions)))
        await browser.close()
    return {"warmup_s": warmup_seconds, "warmup_error": warmup.error}


# --------------------------------------------------------------------------- report


def percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {key: None for key in ("p50", "p90", "p95", "p99", "max")}
    ordered = sorted(values)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))], 2)

    return {"p50": at(50), "p90": at(90), "p95": at(95), "p99": at(99), "max": round(ordered[-1], 2)}


def trend_mib_per_minute(samples: list[MemorySample]) -> float | None:
    """Least-squares slope of RSS over time, in MiB per minute."""
    if len(samples) < 3:
        return None
    times = [s.elapsed_s / 60 for s in samples]
    values = [s.rss_mib for s in samples]
    mean_t, mean_v = statistics.fmean(times), statistics.fmean(values)
    spread = sum((t - mean_t) ** 2 for t in times)
    if spread == 0:
        return None
    return round(sum((t - mean_t) * (v - mean_v) for t, v in zip(times, values)) / spread, 2)


def memory_summary(samples: list[MemorySample]) -> dict:
    """Summarise RSS before, during and after the load.

    Per minute of load it gives the minimum, which is what the server keeps between
    computations, and the maximum, with the computations in flight.
    """
    load = [s for s in samples if s.phase == "load"]
    cooldown = [s for s in samples if s.phase == "cooldown"]
    per_minute: dict[int, list[float]] = {}
    start = load[0].elapsed_s if load else 0.0
    for sample in load:
        per_minute.setdefault(int((sample.elapsed_s - start) // 60), []).append(sample.rss_mib)
    second_half = load[len(load) // 2 :]
    return {
        "rss_before_load_mib": load[0].rss_mib if load else None,
        "rss_max_mib": max((s.rss_mib for s in load), default=None),
        "rss_end_of_load_mib": load[-1].rss_mib if load else None,
        "rss_per_minute_mib": {minute: [min(values), max(values)] for minute, values in per_minute.items()},
        "trend_second_half_mib_per_min": trend_mib_per_minute(second_half),
        "rss_end_of_cooldown_mib": cooldown[-1].rss_mib if cooldown else None,
        "server_cpu_mean_percent": round(statistics.fmean(s.cpu_percent for s in load), 0) if load else None,
    }


def server_log_errors(log: Path | None) -> list[str]:
    if log is None or not log.exists():
        return []
    return [line for line in log.read_text(errors="replace").splitlines() if SERVER_ERROR.search(line)]


def loaded_models(log: Path | None) -> list[str]:
    if log is None or not log.exists():
        return []
    return re.findall(r"Loaded (\w+) \(", log.read_text(errors="replace"))


def build_report(args, tiles: list[Path], state: RunState, extra: dict, log: Path | None) -> dict:
    reviews = state.reviews
    failed = [r for r in reviews if r.error]
    log_errors = server_log_errors(log)
    return {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": {
            "cpus": os.cpu_count(),
            "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "settings": {
            "sessions": args.sessions, "minutes": args.minutes, "uploads_per_session": args.uploads_per_session,
            "think_seconds": list(args.think_seconds), "tiles": len(tiles), "timeout_seconds": args.timeout_seconds,
            "client_nice": args.client_nice,
        },
        "models": loaded_models(log),
        "sessions_opened": state.sessions_opened,
        "reviews": len(reviews),
        "reviews_ok": len(reviews) - len(failed),
        "errors": len(failed) + len(log_errors),
        "error_examples": [r.error for r in failed[:10]] + log_errors[:10],
        "prediction_shown_s": percentiles([r.shown_s for r in reviews if r.shown_s is not None]),
        "page_idle_s": percentiles([r.idle_s for r in reviews if r.idle_s is not None]),
        "memory": memory_summary(state.memory),
        **extra,
    }


def print_report(report: dict) -> None:
    memory = report["memory"]
    print(f"command:   {report['command']}")
    print(f"machine:   {report['machine']['cpus']} CPUs, {report['machine']['memory_gib']} GiB, {report['machine']['platform']}")
    print(f"models:    {', '.join(report['models']) or 'unknown (see the server log)'}")
    print(f"sessions:  {report['settings']['sessions']} at a time, {report['sessions_opened']} opened in {report['settings']['minutes']} min")
    print(f"reviews:   {report['reviews']} uploads, {report['reviews_ok']} complete, {report['errors']} errors")
    for example in report["error_examples"]:
        print(f"  error: {example}")
    for key, label in (("prediction_shown_s", "upload to prediction shown"), ("page_idle_s", "upload to idle page")):
        values = report[key]
        print(f"latency, {label} (s): " + ", ".join(f"{k} {v}" for k, v in values.items()))
    print(
        f"server RSS (MiB): {memory['rss_before_load_mib']} before load, max {memory['rss_max_mib']}, "
        f"{memory['rss_end_of_load_mib']} at the end, {memory['rss_end_of_cooldown_mib']} after the cooldown"
    )
    print("server RSS per minute of load, min-max (MiB): " + ", ".join(f"{m}: {lo:.0f}-{hi:.0f}" for m, (lo, hi) in memory["rss_per_minute_mib"].items()))
    print(f"server RSS trend over the second half: {memory['trend_second_half_mib_per_min']} MiB/min")
    print(f"server CPU: {memory['server_cpu_mean_percent']} % on average (100 = one core)")


# --------------------------------------------------------------------------- main


def list_tiles(folder: str) -> list[Path]:
    return sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiles", required=True, metavar="DIR", help="folder of real tiles to upload (searched recursively)")
    parser.add_argument("--sessions", type=int, default=3, help="simulated users at a time (default 3)")
    parser.add_argument("--minutes", type=float, default=1.0, help="duration of the load in minutes (default 1)")
    parser.add_argument("--uploads-per-session", type=int, default=5, help="tiles a user reviews before closing its session (default 5)")
    parser.add_argument(
        "--think-seconds", type=lambda text: tuple(float(v) for v in text.split(",")), default=(3.0, 10.0),
        metavar="MIN,MAX", help="pause after each review in seconds, drawn uniformly (default 3,10)",
    )
    parser.add_argument("--ramp-seconds", type=float, default=30.0, help="users start at random times within this many seconds of each other (default 30)")
    parser.add_argument("--timeout-seconds", type=float, default=300.0, help="maximum wait for one page action, in seconds (default 300)")
    parser.add_argument("--sample-seconds", type=float, default=2.0, help="memory sampling interval in seconds (default 2)")
    parser.add_argument("--cooldown-seconds", type=float, default=0.0, help="seconds to keep sampling memory after the last session closed (default 0)")
    parser.add_argument("--url", help="an app already running on loopback, e.g. http://127.0.0.1:8501 (default: start one)")
    parser.add_argument("--server-pid", type=int, help="process to sample with --url (default: the one listening on its port)")
    parser.add_argument(
        "--client-nice", type=int, default=19,
        help="niceness given to the browser processes, so that they do not take the CPU from the server "
             "on the same machine (default 19; 0 leaves them alone)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the tile choices and think times (default 0)")
    parser.add_argument("--json", metavar="FILE", help="also write the report with every sample as JSON")
    parser.add_argument("--server-log", metavar="FILE", help="where the started server logs (default: a temporary file)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    tiles = list_tiles(args.tiles)
    if len(tiles) < 2:
        sys.exit(f"error: {args.tiles} holds fewer than two image files")

    process, log = None, None
    if args.url:
        url = args.url.rstrip("/")
        check_loopback(url)
        server = psutil.Process(args.server_pid) if args.server_pid else listening_process(url)
    else:
        import tempfile

        log = Path(args.server_log) if args.server_log else Path(tempfile.mkdtemp(prefix="gv-load-")) / "streamlit.log"
        port = free_port()
        process = start_server(port, log)
        url = f"http://127.0.0.1:{port}"
        server = psutil.Process(process.pid)
    print(f"app: {url} (server pid {server.pid}{f', log {log}' if log else ''})", flush=True)

    state = RunState()
    stop = threading.Event()
    sampler = threading.Thread(
        target=sample_memory, args=(server, state, args.sample_seconds, stop, args.client_nice), daemon=True
    )
    try:
        wait_for_health(url, process)
        sampler.start()
        extra = asyncio.run(drive(url, tiles, args, state))
        state.phase = "cooldown"
        time.sleep(args.cooldown_seconds)
    finally:
        stop.set()
        if sampler.is_alive():
            sampler.join()
        if process is not None:
            stop_server(process)

    report = build_report(args, tiles, state, extra, log)
    print_report(report)
    if args.json:
        full = {**report, "samples": [s.__dict__ for s in state.memory], "all_reviews": [r.__dict__ for r in state.reviews]}
        Path(args.json).write_text(json.dumps(full, indent=1))
        print(f"wrote {args.json}")
    return 0 if report["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
