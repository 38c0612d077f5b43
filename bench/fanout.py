"""Fan-out benchmark: the hub against a naive Starlette loop, on one server process each.

    PYTHONPATH=. /work/venv/bin/python bench/fanout.py                # a few minutes
    PYTHONPATH=. /work/venv/bin/python bench/fanout.py --quick        # about a minute
    PYTHONPATH=. /work/venv/bin/python bench/fanout.py --viewers 10000 --rate 10 --seconds 20

For each server (`hub`: `python -m livecommerce serve`, embedded; `naive`:
`bench/fanout_naive_server.py` under stock uvicorn; `floor`: `bench/fanout_floor_server.py`, no
framework at all, one `transport.write` per socket: what the kernel and the event loop cost
here) it opens viewers in steps (e.g. 1,000 then
5,000 then 10,000) from several client processes (`bench/fanout_client.py`), and at each step:

- RSS per idle connection: server RSS after the step's sockets are open and settled, minus
  RSS just before, over the sockets added;
- then `--windows` measured windows of `--seconds` each, in which one publisher pins a product
  `--rate` times a second over the HTTP host API (`"title":"bench <time_ns>"`), sequentially,
  skipping ticks it cannot keep (the achieved rate is reported). Per window: deliveries/s
  (text frames the clients counted), server CPU (psutil utime+stime of the server process
  over the window) per delivery, publish-to-receive latency p50/p99 sampled on every
  `--sample-every`-th socket. The table shows medians over windows.

Then, on the hub at the largest step, the slow-consumer run: 1% of the sockets stop reading
(with a 4 KiB receive buffer), and the same windows are measured again on the healthy sockets;
then larger pins (`--overflow-rate`) until the server releases the stalled sockets. Reported:
server RSS and kernel send queues, when the stalled sockets were released and by what.

Everything is on 127.0.0.1; children (servers and client processes) are killed on exit.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import http.client
import json
import multiprocessing
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fanout_client import worker_main

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
SERVER_START_TIMEOUT_S = 30.0
DRAIN_S = 0.5  # after the last publish of a window, for its frames to land
SETTLE_S = 2.0  # after opening sockets, before RSS is read
CLOSE_GRACE_S = 3.0  # the hub aborts a socket 2 s after its close frame

_children: list[Any] = []


def _cleanup() -> None:
    for child in reversed(_children):
        with contextlib.suppress(Exception):
            if isinstance(child, subprocess.Popen):
                if child.poll() is None:
                    os.killpg(child.pid, signal.SIGTERM)
                    try:
                        child.wait(5)
                    except subprocess.TimeoutExpired:
                        os.killpg(child.pid, signal.SIGKILL)
                        child.wait(5)
            elif child.is_alive():
                child.terminate()
                child.join(5)
                if child.is_alive():
                    child.kill()
    _children.clear()


def _on_signal(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def request(port: int, method: str, path: str, body: Any = None, token: str = "") -> Any:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        headers = {"content-type": "application/json"}
        if token:
            headers["authorization"] = f"Bearer {token}"
        connection.request(method, path, None if body is None else json.dumps(body), headers)
        response = connection.getresponse()
        data = response.read()
        if response.status >= 300:
            raise RuntimeError(f"{method} {path}: {response.status} {data[:200]!r}")
        return json.loads(data)
    finally:
        connection.close()


@dataclass
class Server:
    kind: str
    port: int
    process: subprocess.Popen[bytes]
    room_id: str = ""
    token: str = ""

    @property
    def ps(self) -> psutil.Process:
        return psutil.Process(self.process.pid)

    def cpu_s(self) -> float:
        times = self.ps.cpu_times()
        return float(times.user + times.system)

    def system_cpu_s(self) -> float:
        return float(self.ps.cpu_times().system)

    def rss(self) -> int:
        return int(self.ps.memory_info().rss)


def start_server(kind: str, data_dir: Path, viewers_max: int, root: Path = ROOT) -> Server:
    """`root` is the checkout whose code runs: another one for `before`."""
    port = free_port()
    env = dict(os.environ)
    env["PYTHONPATH"] = str(root) + os.pathsep + env.get("PYTHONPATH", "")
    if kind in ("hub", "before"):
        env["LIVECOMMERCE_CONNECTIONS_PER_ADDRESS_MAX"] = str(viewers_max + 100)
        env["LIVECOMMERCE_CONNECTIONS_PER_PROCESS_MAX"] = str(max(30000, viewers_max + 100))
        command = [
            PYTHON,
            "-m",
            "livecommerce",
            "serve",
            "--port",
            str(port),
            "--data",
            str(data_dir),
        ]
    elif kind == "floor":
        command = [PYTHON, "bench/fanout_floor_server.py", "--port", str(port)]
    else:
        command = [
            PYTHON,
            "-m",
            "uvicorn",
            "bench.fanout_naive_server:app",
            "--port",
            str(port),
            "--loop",
            "uvloop",
            "--no-access-log",
            "--log-level",
            "warning",
        ]
    log = (data_dir.parent / f"{kind}-server.log").open("wb")
    process = subprocess.Popen(
        command, cwd=root, env=env, start_new_session=True, stdout=log, stderr=subprocess.STDOUT
    )
    log.close()
    _children.append(process)
    server = Server(kind, port, process)
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{kind} server exited with {process.returncode}")
        try:
            created = request(
                port, "POST", "/api/rooms", {"title": "fan-out bench", "host_name": "bench"}
            )
            break
        except (OSError, http.client.HTTPException):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    server.room_id = created["room_id"]
    server.token = created["host_token"]
    return server


def stop_server(server: Server) -> None:
    if server.process.poll() is None:
        os.killpg(server.process.pid, signal.SIGTERM)
        try:
            server.process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(server.process.pid, signal.SIGKILL)
            server.process.wait(5)
    _children.remove(server.process)


class Clients:
    """Client processes, each holding a share of the sockets."""

    def __init__(self, count: int, port: int) -> None:
        context = multiprocessing.get_context("spawn")
        self.pipes = []
        self.processes = []
        for _ in range(count):
            parent, child = context.Pipe()
            process = context.Process(
                target=worker_main, args=(child, "127.0.0.1", port), daemon=True
            )
            process.start()
            _children.append(process)
            child.close()
            self.pipes.append(parent)
            self.processes.append(process)
        self.opened = 0

    def ask(self, message: tuple[Any, ...], timeout_s: float = 120.0) -> list[Any]:
        for pipe in self.pipes:
            pipe.send(message)
        replies = []
        for pipe in self.pipes:
            if not pipe.poll(timeout_s):
                raise TimeoutError(f"client process did not answer {message[0]!r}")
            replies.append(pipe.recv())
        return replies

    def connect(self, path: str, total: int, sample_every: int) -> tuple[int, int]:
        add = total - self.opened
        share, extra = divmod(add, len(self.pipes))
        for number, pipe in enumerate(self.pipes):
            count = share + (1 if number < extra else 0)
            pipe.send(("connect", path, count, sample_every, self.opened))
            self.opened += count
        replies = []
        for pipe in self.pipes:
            if not pipe.poll(300):
                raise TimeoutError("client process did not finish connecting")
            replies.append(pipe.recv())
        return sum(r["open"] for r in replies), sum(r["failed"] for r in replies)

    def take(self) -> dict[str, Any]:
        total: dict[str, Any] = {"frames": 0, "pins": 0, "bytes": 0, "closed": 0, "open": 0}
        codes: dict[int, int] = {}
        latencies: list[int] = []
        for reply in self.ask(("take",)):
            for key in total:
                total[key] += reply[key]
            for code, number in reply["close_codes"].items():
                codes[code] = codes.get(code, 0) + number
            latencies.extend(reply["latencies_us"])
        total["close_codes"] = codes
        total["latencies_us"] = latencies
        return total

    def cpu_s(self) -> float:
        seconds = 0.0
        for process in self.processes:
            with contextlib.suppress(psutil.Error):
                times = psutil.Process(process.pid).cpu_times()
                seconds += times.user + times.system
        return seconds

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.ask(("close",), 30)
        for pipe, process in zip(self.pipes, self.processes, strict=True):
            with contextlib.suppress(Exception):
                pipe.send(("exit",))
            process.join(10)
            if process.is_alive():
                process.terminate()
                process.join(5)
            _children.remove(process)


def percentile(values: list[int], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, int(fraction * len(ordered)))])


@dataclass
class Window:
    seconds: float
    publishes: int
    deliveries: int
    bytes: int
    server_cpu_s: float
    server_system_cpu_s: float
    client_cpu_s: float
    latencies_us: list[int] = field(repr=False)

    @property
    def deliveries_per_s(self) -> float:
        return self.deliveries / self.seconds

    @property
    def cpu_us_per_delivery(self) -> float:
        return self.server_cpu_s * 1e6 / self.deliveries if self.deliveries else float("nan")

    @property
    def system_us_per_delivery(self) -> float:
        return self.server_system_cpu_s * 1e6 / self.deliveries if self.deliveries else float("nan")

    @property
    def p50_ms(self) -> float:
        return percentile(self.latencies_us, 0.50) / 1000

    @property
    def p99_ms(self) -> float:
        return percentile(self.latencies_us, 0.99) / 1000


def publish_for(server: Server, seconds: float, rate: float, pad: int) -> int:
    """Pin a product `rate` times a second, one request at a time; late ticks are skipped."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    path = f"/api/rooms/{server.room_id}/host"
    headers = {"content-type": "application/json", "authorization": f"Bearer {server.token}"}
    interval = 1.0 / rate
    start = time.monotonic()
    end = start + seconds
    next_at = start
    published = 0
    try:
        while True:
            now = time.monotonic()
            if now >= end:
                break
            if next_at > now:
                time.sleep(min(next_at - now, end - now))
                continue
            product = {
                "product_id": f"p{published % 10}",
                "title": f"bench {time.time_ns()}",
                "price_cents": 1999,
                "currency": "EUR",
                "image": "x" * pad,
            }
            body = json.dumps({"type": "host.pin/v1", "product": product})
            connection.request("POST", path, body, headers)
            response = connection.getresponse()
            response.read()
            if response.status != 200:
                raise RuntimeError(f"publish: {response.status}")
            published += 1
            next_at = max(next_at + interval, time.monotonic())
    finally:
        connection.close()
    return published


def measure_window(
    server: Server, clients: Clients, seconds: float, rate: float, pad: int
) -> Window:
    clients.take()
    cpu_before, system_before, client_cpu_before = (
        server.cpu_s(),
        server.system_cpu_s(),
        clients.cpu_s(),
    )
    started = time.monotonic()
    published = publish_for(server, seconds, rate, pad)
    publishing_s = time.monotonic() - started
    time.sleep(DRAIN_S)
    cpu_after, system_after, client_cpu_after = (
        server.cpu_s(),
        server.system_cpu_s(),
        clients.cpu_s(),
    )
    counted = clients.take()
    return Window(
        seconds=publishing_s,
        publishes=published,
        deliveries=counted["frames"],
        bytes=counted["bytes"],
        server_cpu_s=cpu_after - cpu_before,
        server_system_cpu_s=system_after - system_before,
        client_cpu_s=client_cpu_after - client_cpu_before,
        latencies_us=counted["latencies_us"],
    )


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def summarize(windows: list[Window]) -> dict[str, float]:
    return {
        "publishes_per_s": median([w.publishes / w.seconds for w in windows]),
        "deliveries_per_s": median([w.deliveries_per_s for w in windows]),
        "cpu_us_per_delivery": median([w.cpu_us_per_delivery for w in windows]),
        "system_us_per_delivery": median([w.system_us_per_delivery for w in windows]),
        "server_cpu_pct": median([100 * w.server_cpu_s / (w.seconds + DRAIN_S) for w in windows]),
        "client_cpu_pct": median([100 * w.client_cpu_s / (w.seconds + DRAIN_S) for w in windows]),
        "p50_ms": median([w.p50_ms for w in windows]),
        "p99_ms": median([w.p99_ms for w in windows]),
        "samples": sum(len(w.latencies_us) for w in windows),
    }


def run_windows(
    server: Server,
    clients: Clients,
    args: argparse.Namespace,
    label: str,
    windows: list[Window] | None = None,
) -> dict[str, float]:
    windows = [] if windows is None else windows
    for number in range(args.windows):
        window = measure_window(server, clients, args.seconds, args.rate, args.pad)
        windows.append(window)
        print(
            f"  {label} window {number + 1}/{args.windows}: {window.publishes / window.seconds:.1f} pub/s, "
            f"{window.deliveries_per_s:,.0f} deliveries/s, {window.cpu_us_per_delivery:.2f} µs CPU/delivery "
            f"({window.system_us_per_delivery:.2f} in the kernel), "
            f"p50 {window.p50_ms:.1f} ms, p99 {window.p99_ms:.1f} ms",
            flush=True,
        )
    return summarize(windows)


def run_server(kind: str, args: argparse.Namespace, data_dir: Path) -> dict[str, Any]:
    steps = sorted(args.viewers)
    print(f"{kind}: starting server", flush=True)
    root = args.before if kind == "before" else ROOT
    server = start_server(kind, data_dir / kind, steps[-1], root)
    clients = Clients(args.clients, server.port)
    result: dict[str, Any] = {"steps": []}
    try:
        # Warm up: the room is loaded and the publish path has run once before RSS is read.
        publish_for(server, 0.2, 10, args.pad)
        time.sleep(0.5)
        path = f"/ws/rooms/{server.room_id}"
        for viewers in steps:
            rss_before, added = server.rss(), viewers - clients.opened
            opened_at = time.monotonic()
            open_count, failed = clients.connect(path, viewers, args.sample_every)
            connect_s = time.monotonic() - opened_at
            if failed:
                raise RuntimeError(f"{kind}: {failed} of {added} sockets failed to open")
            time.sleep(SETTLE_S)
            rss_after = server.rss()
            if kind != "floor" and args.keepalive_settle > 0:
                # Each socket is pinged every 20 s, the first time within 20 s of opening: let
                # that start for the new sockets, or later windows pay for pings the first did not.
                time.sleep(args.keepalive_settle)
            clients.take()
            step: dict[str, Any] = {
                "viewers": viewers,
                "open": open_count,
                "failed": failed,
                "connect_s": round(connect_s, 1),
                "rss_mb": rss_after / 2**20,
                "rss_kb_per_idle_connection": (rss_after - rss_before) / 1024 / max(1, added),
            }
            print(
                f"{kind} {viewers:,} viewers: {open_count:,} open, {failed} failed in {connect_s:.1f} s; "
                f"RSS {rss_after / 2**20:.0f} MB, "
                f"{step['rss_kb_per_idle_connection']:.1f} KB per added socket",
                flush=True,
            )
            step.update(run_windows(server, clients, args, f"{kind} {viewers:,}"))
            result["steps"].append(step)
        if kind == "hub" and args.slow_fraction > 0:
            result["slow"] = slow_consumer_run(server, clients, args)
    finally:
        clients.close()
        stop_server(server)
    return result


def kernel_send_queues(port: int) -> tuple[int, int]:
    """Bytes queued in the kernel on the server's side of its established sockets: total, largest."""
    try:
        listing = subprocess.run(
            ["ss", "-tnH", "state", "established", f"( sport = :{port} )"],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return -1, -1
    queued = [int(line.split()[1]) for line in listing.splitlines() if line.split()[1:2]]
    return sum(queued), max(queued, default=0)


def slow_consumer_run(server: Server, clients: Clients, args: argparse.Namespace) -> dict[str, Any]:
    """1% stop reading: healthy latency, then how long and how many bytes until the server cuts them.

    A stalled socket is cut either by the hub (its own buffer past `viewer_buffer_bytes_max`,
    256 KiB by default: close 4008) or by the keepalive (a ping every 20 s, the socket closed
    when nothing came back for a whole interval after one: up to 40 s after the stall). A stalled client reads neither close frame, so the benchmark
    reports when the server released the sockets and how many bytes each had been sent by then
    (what one healthy socket received over the same time) and the kernel's send queue: when the
    bytes sent minus what the kernel holds are under 256 KiB, it was the keepalive.
    """
    every = max(2, round(1 / args.slow_fraction))
    fds_before, rss_before = server.ps.num_fds(), server.rss()
    stalled = sum(clients.ask(("stall", every, args.stall_rcvbuf)))
    stall_started = time.monotonic()
    print(
        f"hub slow consumers: {stalled} sockets stopped reading; RSS {rss_before / 2**20:.0f} MB",
        flush=True,
    )
    windows: list[Window] = []
    summary = run_windows(server, clients, args, "hub stalled", windows)
    healthy = max(1, clients.opened - stalled)
    sent_per_socket = sum(w.bytes for w in windows) / healthy
    rss_after_windows = server.rss()
    # Keep publishing, larger pins as fast as `--overflow-rate`, unmeasured, until the server
    # has released every stalled socket (its open file count drops by as many) or time is up.
    rss_peak, queued_peak, queued_one_peak = rss_after_windows, 0, 0
    cut, cuts = 0, []
    overflow_started = time.monotonic()
    while time.monotonic() - overflow_started < args.overflow_seconds:
        publish_for(server, 1.0, args.overflow_rate, 500)
        sent_per_socket += clients.take()["bytes"] / healthy
        rss_peak = max(rss_peak, server.rss())
        queued, queued_one = kernel_send_queues(server.port)
        queued_peak, queued_one_peak = max(queued_peak, queued), max(queued_one_peak, queued_one)
        now_cut = fds_before - server.ps.num_fds()
        if now_cut > cut:
            cuts.append(
                (round(time.monotonic() - stall_started, 1), now_cut, round(sent_per_socket / 1024))
            )
            cut = now_cut
        if cut >= stalled:
            break
    overflow_s = time.monotonic() - overflow_started
    time.sleep(CLOSE_GRACE_S)
    rss_end = server.rss()
    cut = fds_before - server.ps.num_fds()
    clients.ask(("unstall",))
    time.sleep(1.0)
    clients.take()
    first_cut_s = cuts[0][0] if cuts else float("nan")
    all_cut_s = cuts[-1][0] if cuts and cuts[-1][1] >= stalled else float("nan")
    kb_at_first_cut = cuts[0][2] if cuts else float("nan")
    result = {
        "stalled": stalled,
        "rss_before_mb": rss_before / 2**20,
        "rss_after_windows_mb": rss_after_windows / 2**20,
        "rss_peak_mb": rss_peak / 2**20,
        "rss_end_mb": rss_end / 2**20,
        "kernel_send_queue_peak_mb": queued_peak / 2**20,
        "kernel_send_queue_one_socket_peak_kb": queued_one_peak / 1024,
        "overflow_s": round(overflow_s, 1),
        "server_sockets_cut": cut,
        "cuts": cuts,
        "first_cut_after_s": first_cut_s,
        "all_cut_after_s": all_cut_s,
        "kb_sent_per_stalled_socket_at_first_cut": kb_at_first_cut,
        "cut_by": "not released"
        if not cuts
        else "keepalive: minus the kernel's queue, under 256 KiB was in the hub's buffer"
        if kb_at_first_cut - queued_one_peak / 1024 < 256
        else "hub buffer limit (4008) or keepalive",
        **summary,
    }
    print(
        f"hub slow consumers: RSS {rss_before / 2**20:.0f} MB before, {rss_after_windows / 2**20:.0f} after "
        f"the windows, peak {rss_peak / 2**20:.0f}, {rss_end / 2**20:.0f} at the end; kernel send queues "
        f"peak {queued_peak / 2**20:.1f} MB ({queued_one_peak / 1024:.0f} KB on one socket); "
        f"the server released {cut} of {stalled} stalled sockets, the first {first_cut_s:.0f} s after the "
        f"stall ({kb_at_first_cut} KB sent to each by then), all after {all_cut_s:.0f} s: {result['cut_by']}",
        flush=True,
    )
    return result


def table(results: dict[str, Any], args: argparse.Namespace) -> str:
    lines = [
        "| server | viewers | publishes/s | deliveries/s | server CPU µs/delivery (kernel) | server CPU % "
        "| client CPU % | p50 ms | p99 ms | RSS/idle conn KB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for kind, result in results["servers"].items():
        for step in result["steps"]:
            lines.append(
                f"| {kind} | {step['open']:,} | {step['publishes_per_s']:.1f} "
                f"| {step['deliveries_per_s']:,.0f} "
                f"| {step['cpu_us_per_delivery']:.2f} ({step['system_us_per_delivery']:.2f}) "
                f"| {step['server_cpu_pct']:.0f} "
                f"| {step['client_cpu_pct']:.0f} | {step['p50_ms']:.1f} | {step['p99_ms']:.1f} "
                f"| {step['rss_kb_per_idle_connection']:.1f} |"
            )
    servers = results["servers"]
    hub, naive, floor = servers.get("hub"), servers.get("naive"), servers.get("floor")
    before = servers.get("before")
    if hub and (naive or floor or before):
        lines.append("")
        lines.append(
            "| viewers | naive/hub server CPU per delivery | hub/floor server CPU per delivery "
            "| before/hub server CPU per delivery |"
        )
        lines.append("|---:|---:|---:|---:|")
        for number, hub_step in enumerate(hub["steps"]):
            cells = []
            for numerator, denominator in ((naive, hub), (hub, floor), (before, hub)):
                if numerator is None or denominator is None or number >= len(numerator["steps"]):
                    cells.append("")
                    continue
                top = numerator["steps"][number]["cpu_us_per_delivery"]
                cells.append(f"{top / denominator['steps'][number]['cpu_us_per_delivery']:.2f}x")
            lines.append(f"| {hub_step['open']:,} | {cells[0]} | {cells[1]} | {cells[2]} |")
    if hub and "slow" in hub:
        slow, base = hub["slow"], hub["steps"][-1]
        lines.append("")
        lines.append(
            "| slow-consumer run (hub) | viewers | stalled | healthy p50 ms | healthy p99 ms "
            "| p99 vs no stall | server RSS MB: before → after windows → peak → end "
            "| stalled sockets released by the server |"
        )
        lines.append("|---|---:|---:|---:|---:|---:|---|---|")
        lines.append(
            f"| no stall | {base['open']:,} | 0 | {base['p50_ms']:.1f} | {base['p99_ms']:.1f} | 1.00x | | |"
        )
        lines.append(
            f"| 1% stop reading | {base['open']:,} | {slow['stalled']} | {slow['p50_ms']:.1f} "
            f"| {slow['p99_ms']:.1f} | {slow['p99_ms'] / base['p99_ms']:.2f}x "
            f"| {slow['rss_before_mb']:.0f} → {slow['rss_after_windows_mb']:.0f} → {slow['rss_peak_mb']:.0f} "
            f"→ {slow['rss_end_mb']:.0f} | {slow['server_sockets_cut']} of {slow['stalled']}, "
            f"{slow['first_cut_after_s']:.0f}-{slow['all_cut_after_s']:.0f} s into the stall, "
            f"{slow['kb_sent_per_stalled_socket_at_first_cut']} KB sent to each: {slow['cut_by']} |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--viewers",
        type=lambda text: [int(x) for x in text.split(",")],
        default=None,
        help="viewer counts, ascending steps (default 1000,5000,10000; quick: 1000,3000)",
    )
    parser.add_argument(
        "--rate", type=float, default=10.0, help="publishes per second (default 10)"
    )
    parser.add_argument(
        "--seconds", type=float, default=None, help="seconds per window (default 6; quick 3)"
    )
    parser.add_argument(
        "--windows", type=int, default=None, help="windows per step (default 3; quick 2)"
    )
    parser.add_argument("--clients", type=int, default=4, help="client processes (default 4)")
    parser.add_argument(
        "--sample-every", type=int, default=10, help="latency from every N-th socket"
    )
    parser.add_argument(
        "--pad", type=int, default=0, help="extra bytes in each pin (image field, ≤500)"
    )
    parser.add_argument(
        "--servers",
        default="hub,naive,floor",
        help="which of hub,naive,floor (the bare transport.write floor) and before (the hub "
        "from --before) to run (default hub,naive,floor)",
    )
    parser.add_argument(
        "--before",
        type=Path,
        help="another checkout of this repository (e.g. `git archive` of an older commit): "
        "server kind `before` runs its hub, for a same-run comparison",
    )
    parser.add_argument(
        "--slow-fraction", type=float, default=0.01, help="share of stalled sockets; 0 skips"
    )
    parser.add_argument(
        "--stall-rcvbuf",
        type=int,
        default=4096,
        help="receive buffer of stalled sockets, bytes (0: as is)",
    )
    parser.add_argument(
        "--overflow-seconds",
        type=float,
        default=None,
        help="after the stalled windows, publish padded pins until the stalled sockets are released, "
        "at most this long (default 60; quick 15)",
    )
    parser.add_argument(
        "--keepalive-settle",
        type=float,
        default=None,
        help="seconds to wait after opening a step's sockets, so keepalive pings (every 20 s) "
        "run in every window (default 20; quick 0)",
    )
    parser.add_argument(
        "--overflow-rate",
        type=float,
        default=50.0,
        help="pins per second after the stalled windows",
    )
    parser.add_argument("--quick", action="store_true", help="small and short: about a minute")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    if args.viewers is None:
        args.viewers = [1000, 3000] if args.quick else [1000, 5000, 10000]
    args.seconds = args.seconds or (3.0 if args.quick else 6.0)
    args.windows = args.windows or (2 if args.quick else 3)
    if args.keepalive_settle is None:
        args.keepalive_settle = 0.0 if args.quick else 20.0
    if args.overflow_seconds is None:
        args.overflow_seconds = 15.0 if args.quick else 60.0
    args.servers = [s for s in args.servers.split(",") if s]
    if "before" in args.servers and args.before is None:
        parser.error("server kind `before` needs --before DIR")
    if not 0 <= args.pad <= 500:
        parser.error("--pad must be 0..500")
    if max(args.viewers) > 15000 * args.clients:
        parser.error("at most 15,000 sockets per client process; raise --clients")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    atexit.register(_cleanup)
    signal.signal(signal.SIGTERM, _on_signal)
    started = time.monotonic()
    results: dict[str, Any] = {
        "command": " ".join(["bench/fanout.py", *(sys.argv[1:] if argv is None else argv)]),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "loadavg_start": os.getloadavg(),
        },
        "servers": {},
    }
    try:
        with tempfile.TemporaryDirectory(prefix="fanout-bench-") as data_dir:
            for kind in args.servers:
                results["servers"][kind] = run_server(kind, args, Path(data_dir))
    finally:
        _cleanup()
    results["machine"]["loadavg_end"] = os.getloadavg()
    results["elapsed_s"] = round(time.monotonic() - started, 1)
    print()
    print(
        f"rate {args.rate:g}/s, {args.windows} windows x {args.seconds:g} s per step, medians over windows; "
        f"{args.clients} client processes; load average {results['machine']['loadavg_start'][0]:.2f} → "
        f"{results['machine']['loadavg_end'][0]:.2f}; {results['elapsed_s']} s in all"
    )
    print(table(results, args))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
