"""Video relay benchmark: server CPU per viewer and per packet, latency, time to first frame.

    /work/venv/bin/python bench/video.py                  # relay and re-encode, 10/20/40
    /work/venv/bin/python bench/video.py --viewers 10 --modes relay --window-s 5
    /work/venv/bin/python bench/video.py --modes relay,relay-task,reencode --repeat 3

For each mode and viewer count it starts a server process (`serve` below) on a free
loopback port, publishes a generated 320x240 30 fps VP8 stream over WHIP from this
process, connects the viewers over WHEP, and measures over a window:

- server CPU (user + system time of the server process, from psutil) with the host
  alone, then with the viewers; per viewer = the difference / viewers, in % of a core;
  per packet = the difference / RTP packets the viewers received;
- latency: frames carry their index in 16 luma blocks; a few "probe" viewers decode
  each frame as soon as it is complete and look up when the host captured it (same
  process, same clock). The host's encoder time is inside the figure; a direct
  host-to-viewer connection (no server) measured in the same run gives the baseline,
  so "server-added" is relay median - direct median;
- time to first frame: from the WHEP POST to the viewer's first complete frame.

Modes: `relay` is streaming/ (forwards encoded frames, each viewer's RTP sent from the
fan-out); `relay-task` is the same relay with `viewer_direct_send=False` (aiortc's own
sender task per viewer packs and sends, as before the direct sender), for the ratio;
`reencode` is aiortc's default (decode the host's track once, one encoder per viewer via
MediaRelay), for the ratio.
Viewers other than the probes never decode (they count packets) and live in a child
process (`crowd`): the probes share their process only with the host, so a probe's figure
does not include the time its process takes to receive every other viewer's copy of the
frame first (a real viewer has its own machine). Figures print; nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import av  # noqa: E402
import psutil  # noqa: E402
from aiortc import (  # noqa: E402
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamTrack, VideoStreamTrack  # noqa: E402

from streaming import StreamingService, StreamingSettings, client  # noqa: E402
from streaming.aiortc_internals import (  # noqa: E402
    EncodedFrame,
    enable_loopback_candidates,
    tap_encoded_frames,
)

WIDTH, HEIGHT = 320, 240
INDEX_BITS = 16
BLOCK_WIDTH = WIDTH // INDEX_BITS
BLOCK_HEIGHT = 16
HOST_TOKEN = "bench-token"
ROOM = "bench"
PROBES = 3


# --- the server process -----------------------------------------------------------------


def serve(mode: str, port: int) -> None:
    import logging

    import uvicorn

    # The relay's own notes (a peer that failed or never connected) show in the output.
    logging.basicConfig(level=logging.WARNING, format="server %(name)s: %(message)s")
    logging.getLogger("streaming").setLevel(logging.INFO)
    from starlette.applications import Starlette

    if mode in ("relay", "relay-task"):

        async def authorize(room_id: str, token: str) -> bool:
            return token == HOST_TOKEN

        async def exists(room_id: str) -> bool:
            return True

        settings = StreamingSettings(
            peers_per_room_max=200,
            peers_total_max=400,
            ice_loopback=True,
            viewer_direct_send=mode == "relay",
        )
        service = StreamingService(settings, authorize, exists)
        routes = [*service.routes, diagnosis_route(service)]
    else:
        routes = reencoding_routes()
    from starlette.routing import Mount
    from starlette.staticfiles import StaticFiles

    app = Starlette(routes=[*routes, Mount("/static", StaticFiles(directory=ROOT / "static"))])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")


def diagnosis_route(service: StreamingService) -> Any:
    """`GET /bench/status`: the relay's view of the room, printed when a row stalls."""
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def status(request: Request) -> JSONResponse:
        body: dict[str, Any] = dict(service.room_status(ROOM))
        room = service._rooms.get(ROOM)  # the benchmark may look inside
        if room is not None:
            broadcast = room.broadcast
            body["frames_out"] = broadcast.frames_out
            body["since_last_frame_s"] = (
                None
                if broadcast.last_frame_at_s is None
                else round(time.monotonic() - broadcast.last_frame_at_s, 3)
            )
            host = room.host
            if host is not None:
                pc = host.peer_connection
                body["host_connection"] = pc.connectionState
                body["host_ice"] = pc.iceConnectionState
                body["host_assemblers"] = {
                    kind: {
                        "emitted": a.frames_emitted,
                        "dropped": a.frames_dropped,
                        "pli": a.picture_loss_indications,
                    }
                    for kind, a in host.assemblers.items()
                }
            tracks = [t for s in room.viewers.values() for t in s.viewer_tracks]
            body["viewer_tracks"] = len(tracks)
            body["viewers_waiting_for_keyframe"] = sum(t.waiting_for_keyframe for t in tracks)
            body["viewer_frames_sent"] = sum(t.frames_sent for t in tracks)
        return JSONResponse(body)

    return Route("/bench/status", status)


def reencoding_routes() -> list[Any]:
    """aiortc's usual server: decode the host once, encode again for every viewer."""
    from aiortc.contrib.media import MediaRelay
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    enable_loopback_candidates()
    state: dict[str, Any] = {"relay": MediaRelay(), "track": None, "peers": set()}

    def vp8_only(transceiver: Any) -> None:
        codecs = RTCRtpSender.getCapabilities("video").codecs
        transceiver.setCodecPreferences([c for c in codecs if c.mimeType == "video/VP8"])

    async def whip(request: Request) -> Response:
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        state["peers"].add(pc)
        vp8_only(pc.addTransceiver("video", direction="recvonly"))

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            state["track"] = track

        offer = (await request.body()).decode()
        await pc.setRemoteDescription(RTCSessionDescription(offer, "offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        headers = {"Location": "/whip/x/host"}
        return Response(pc.localDescription.sdp, 201, headers, "application/sdp")

    async def whep(request: Request) -> Response:
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        state["peers"].add(pc)
        track = state["relay"].subscribe(state["track"])
        vp8_only(pc.addTransceiver(track, direction="sendonly"))
        offer = (await request.body()).decode()
        await pc.setRemoteDescription(RTCSessionDescription(offer, "offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        headers = {"Location": f"/whep/x/{id(pc)}"}
        return Response(pc.localDescription.sdp, 201, headers, "application/sdp")

    return [
        Route("/whip/{room_id}", whip, methods=["POST"]),
        Route("/whep/{room_id}", whep, methods=["POST"]),
    ]


# --- the client side --------------------------------------------------------------------


NOISE_FRAMES = 8


class IndexedVideo(VideoStreamTrack):
    """320x240 frames at 30 fps whose top row of blocks spells the frame index.

    With `texture`, the rest of the picture is noise (cycled from a few precomputed
    images) so the encoder spends its whole bitrate and frames span several packets,
    like a camera; without it, flat frames fit in one packet each.
    """

    def __init__(self, texture: bool = True) -> None:
        super().__init__()
        self.index = 0
        self.captured_at_s: dict[int, float] = {}
        # Noise in the bottom quarter: about 1 Mbit/s from aiortc's VP8 encoder.
        flat = bytes([128]) * (WIDTH * HEIGHT * 3 // 4)
        noisy = WIDTH * HEIGHT // 4
        self.backgrounds = [
            flat + (os.urandom(noisy) if texture else bytes([128]) * noisy)
            for _ in range(NOISE_FRAMES)
        ]

    async def recv(self) -> av.VideoFrame:
        pts, time_base = await self.next_timestamp()
        index = self.index % (1 << INDEX_BITS)
        self.index += 1
        frame = av.VideoFrame(WIDTH, HEIGHT, "yuv420p")
        luma = bytearray(self.backgrounds[self.index % NOISE_FRAMES])
        for bit in range(INDEX_BITS):
            value = 235 if index >> bit & 1 else 16
            for row in range(BLOCK_HEIGHT):
                start = row * WIDTH + bit * BLOCK_WIDTH
                luma[start : start + BLOCK_WIDTH] = bytes([value]) * BLOCK_WIDTH
        frame.planes[0].update(bytes(luma))
        for plane in frame.planes[1:]:
            plane.update(bytes([128]) * plane.buffer_size)
        frame.pts = pts
        frame.time_base = time_base
        self.captured_at_s[index] = time.perf_counter()
        return frame


def read_index(frame: av.VideoFrame) -> int:
    plane = frame.planes[0]
    data = bytes(plane)
    index = 0
    for bit in range(INDEX_BITS):
        offset = (BLOCK_HEIGHT // 2) * plane.line_size + bit * BLOCK_WIDTH + BLOCK_WIDTH // 2
        if data[offset] > 128:
            index |= 1 << bit
    return index


@dataclass
class Viewer:
    """One viewer: counts frames; a probe also decodes them to measure latency."""

    host: IndexedVideo | None  # the probes look up capture times in it
    probe: bool
    started_at_s: float = 0.0
    first_frame_s: float | None = None
    frames: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    recording: bool = False
    decoder: Any = None
    peer_connection: Any = None
    got_frame: asyncio.Event = field(default_factory=asyncio.Event)

    def on_frame(self, frame: EncodedFrame) -> None:
        now_s = time.perf_counter()
        if self.first_frame_s is None:
            self.first_frame_s = now_s - self.started_at_s
            self.got_frame.set()
        self.frames += 1
        if not self.probe or self.host is None:
            return
        if self.decoder is None:
            self.decoder = av.CodecContext.create("libvpx", "r")
        for decoded in self.decoder.decode(av.Packet(frame.data)):
            captured = self.host.captured_at_s.get(read_index(decoded))
            if self.recording and captured is not None:
                self.latencies_ms.append((time.perf_counter() - captured) * 1000)

    async def received(self) -> tuple[int, int]:
        """RTP packets and transport bytes received so far (one `getStats()`)."""
        report = (await self.peer_connection.getStats()).values()
        packets = sum(s.packetsReceived for s in report if s.type == "inbound-rtp")
        return packets, sum(s.bytesReceived for s in report if s.type == "transport")


async def received(viewers: list[Viewer]) -> tuple[int, int]:
    """RTP packets and bytes received so far by all of `viewers`."""
    counts = [await viewer.received() for viewer in viewers]
    return sum(c[0] for c in counts), sum(c[1] for c in counts)


async def connect_viewer(base_url: str, host: IndexedVideo | None, probe: bool) -> Viewer:
    viewer = Viewer(host, probe, started_at_s=time.perf_counter())
    session = await client.play(f"{base_url}/whep/{ROOM}", kinds=("video",))
    viewer.peer_connection = session.peer_connection
    tap_encoded_frames(session.peer_connection.getReceivers()[0], viewer.on_frame)
    return viewer


async def print_stall(base_url: str, host: Any, missing: int, viewers_count: int) -> None:
    """Some viewer has no frame: print what the host peer and the server each see."""
    import urllib.request

    def server_status() -> Any:
        with urllib.request.urlopen(f"{base_url}/bench/status", timeout=5) as response:
            return json.load(response)

    pc = host.peer_connection

    async def packets_sent() -> int:
        report = await pc.getStats()
        return sum(s.packetsSent for s in report.values() if s.type == "outbound-rtp")

    sent_before = await packets_sent()
    status_before = await asyncio.to_thread(server_status)
    await asyncio.sleep(2)
    sent_after = await packets_sent()
    status_after = await asyncio.to_thread(server_status)
    senders = []
    for sender in pc.getSenders():
        task = getattr(sender, "_RTCRtpSender__rtp_task", None)
        senders.append("no task" if task is None else ("done" if task.done() else "running"))
    print(
        f"STALL: {missing}/{viewers_count} viewers "
        f"without a frame; host peer {pc.connectionState}/{pc.iceConnectionState}, "
        f"sender tasks {senders}, host sent {sent_after - sent_before} RTP packets in 2 s",
        flush=True,
    )
    print(f"STALL server before: {status_before}", flush=True)
    print(f"STALL server after:  {status_after}", flush=True)


class Crowd:
    """The viewers that only count packets, held by a child process (`crowd` below)."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self._process = process
        self.pid = process.pid

    @classmethod
    async def start(cls, base_url: str, count: int) -> Crowd:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            "crowd",
            "--url",
            base_url,
            "--count",
            str(count),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            cwd=ROOT,
        )
        crowd = cls(process)
        await crowd._read()  # "ready": every viewer connected and waited for (up to 15 s)
        return crowd

    async def _read(self) -> dict[str, Any]:
        assert self._process.stdout is not None
        line = await asyncio.wait_for(self._process.stdout.readline(), 120)
        if not line:
            raise RuntimeError("the crowd process ended early")
        result: dict[str, Any] = json.loads(line)
        return result

    async def stats(self) -> dict[str, Any]:
        assert self._process.stdin is not None
        self._process.stdin.write(b"stats\n")
        await self._process.stdin.drain()
        return await self._read()

    async def close(self) -> None:
        if self._process.returncode is None and self._process.stdin is not None:
            self._process.stdin.close()
        try:
            await asyncio.wait_for(self._process.wait(), 10)
        except TimeoutError:
            self._process.kill()
            await self._process.wait()


async def crowd_main(base_url: str, count: int) -> None:
    """Child process: `count` counting viewers; answers "stats" lines on stdin with JSON."""
    enable_loopback_candidates()
    viewers = [await connect_viewer(base_url, None, probe=False) for _ in range(count)]
    await wait_for_frames(viewers, 15)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    async def report() -> None:
        packets, octets = await received(viewers)
        stats = {
            "packets": packets,
            "octets": octets,
            "first_frames_ms": [
                v.first_frame_s * 1000 for v in viewers if v.first_frame_s is not None
            ],
            "missing": sum(v.first_frame_s is None for v in viewers),
        }
        sys.stdout.write(json.dumps(stats) + "\n")
        sys.stdout.flush()

    await report()
    while (await reader.readline()).strip() == b"stats":
        await report()
    for viewer in viewers:
        await viewer.peer_connection.close()


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def wait_for_frames(viewers: list[Viewer], timeout_s: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*(v.got_frame.wait() for v in viewers)), timeout_s)


async def run_mode(mode: str, viewers_count: int, window_s: float) -> dict[str, Any]:
    from tests.support import free_port, wait_for_port

    port = free_port()
    server = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "serve", "--mode", mode, "--port", str(port), cwd=ROOT
    )
    try:
        await asyncio.to_thread(wait_for_port, "127.0.0.1", port, 20)
        process = psutil.Process(server.pid)
        base_url = f"http://127.0.0.1:{port}"
        host_track = IndexedVideo()
        host = await client.publish(f"{base_url}/whip/{ROOM}", HOST_TOKEN, [host_track])
        await asyncio.sleep(2)
        idle_start = cpu_seconds(process)
        await asyncio.sleep(window_s / 2)
        host_only_core = (cpu_seconds(process) - idle_start) / (window_s / 2)

        # The probes share this process with the host; the other viewers only count
        # packets, in their own process, so that the probes' latency is not the time this
        # process takes to receive every other viewer's copy of a frame first.
        probes = [
            await connect_viewer(base_url, host_track, probe=True)
            for _ in range(min(PROBES, viewers_count))
        ]
        crowd = await Crowd.start(base_url, viewers_count - len(probes))
        try:
            await wait_for_frames(probes, 15)
            crowd_ready = await crowd.stats()
            missing = sum(v.first_frame_s is None for v in probes) + crowd_ready["missing"]
            if missing:
                await print_stall(base_url, host, missing, viewers_count)
            await asyncio.sleep(2)
            client_processes = [psutil.Process(os.getpid()), psutil.Process(crowd.pid)]
            client_start = sum(cpu_seconds(p) for p in client_processes)
            crowd_start = await crowd.stats()
            packets_start, octets_start = await received(probes)
            packets_start += crowd_start["packets"]
            octets_start += crowd_start["octets"]
            cpu_start = cpu_seconds(process)
            wall_start = time.perf_counter()
            for viewer in probes:
                viewer.recording = True
            await asyncio.sleep(window_s)
            for viewer in probes:
                viewer.recording = False
            wall_s = time.perf_counter() - wall_start
            server_core = (cpu_seconds(process) - cpu_start) / wall_s
            client_core = (sum(cpu_seconds(p) for p in client_processes) - client_start) / wall_s
            crowd_end = await crowd.stats()
            packets, octets = await received(probes)
            packets += crowd_end["packets"] - packets_start
            octets += crowd_end["octets"] - octets_start
        finally:
            await crowd.close()
        latencies = [ms for v in probes for ms in v.latencies_ms]
        first_frames = [v.first_frame_s * 1000 for v in probes if v.first_frame_s is not None]
        first_frames += crowd_end["first_frames_ms"]
        added_core = server_core - host_only_core
        for viewer in probes:
            await viewer.peer_connection.close()
        await host.peer_connection.close()
        return {
            "mode": mode,
            "viewers": viewers_count,
            "server_core_pct": 100 * server_core,
            "host_only_core_pct": 100 * host_only_core,
            "per_viewer_core_pct": 100 * added_core / viewers_count,
            "packets_per_s": packets / wall_s,
            "kbit_per_s_per_viewer": 8 * octets / wall_s / viewers_count / 1000,
            "per_packet_us": 1e6 * added_core * wall_s / packets if packets else float("nan"),
            "latency_median_ms": statistics.median(latencies) if latencies else float("nan"),
            "latency_p95_ms": percentile(latencies, 0.95) if latencies else float("nan"),
            "first_frame_median_ms": statistics.median(first_frames) if first_frames else -1,
            "first_frame_max_ms": max(first_frames) if first_frames else -1,
            "viewers_with_frames": len(first_frames),
            "client_core_pct": 100 * client_core,
        }
    finally:
        server.terminate()
        try:
            await asyncio.wait_for(server.wait(), 5)
        except TimeoutError:
            server.kill()
            await server.wait()


async def run_direct(window_s: float) -> dict[str, Any]:
    """The host straight to one probe viewer, no server: the latency baseline."""
    host_track = IndexedVideo()
    sender_pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    receiver_pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    sender_pc.addTransceiver(host_track, direction="sendonly")
    transceiver = receiver_pc.addTransceiver("video", direction="recvonly")
    viewer = Viewer(host_track, probe=True, started_at_s=time.perf_counter())
    tap_encoded_frames(transceiver.receiver, viewer.on_frame)
    await sender_pc.setLocalDescription(await sender_pc.createOffer())
    await receiver_pc.setRemoteDescription(sender_pc.localDescription)
    await receiver_pc.setLocalDescription(await receiver_pc.createAnswer())
    await sender_pc.setRemoteDescription(receiver_pc.localDescription)
    await wait_for_frames([viewer], 15)
    await asyncio.sleep(1)
    viewer.recording = True
    await asyncio.sleep(window_s)
    viewer.recording = False
    await receiver_pc.close()
    await sender_pc.close()
    latencies = viewer.latencies_ms
    return {
        "latency_median_ms": statistics.median(latencies) if latencies else float("nan"),
        "latency_p95_ms": percentile(latencies, 0.95) if latencies else float("nan"),
    }


async def run_browser(mode: str, window_s: float) -> dict[str, Any]:
    """Chromium page -> server -> Chromium page: canvas drawn to frame presented."""
    from playwright.async_api import async_playwright

    from tests.browser import CHROMIUM, CHROMIUM_ARGS
    from tests.support import free_port, wait_for_port

    port = free_port()
    server = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "serve", "--mode", mode, "--port", str(port), cwd=ROOT
    )
    try:
        await asyncio.to_thread(wait_for_port, "127.0.0.1", port, 20)
        base = f"http://127.0.0.1:{port}/static/dev"
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(
                executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
            )
            try:
                host = await browser.new_page()
                await host.goto(f"{base}/latency-publish.html?room={ROOM}&token={HOST_TOKEN}")
                await host.wait_for_function("window.publishState", timeout=20_000)
                await asyncio.sleep(2)
                viewer = await (await browser.new_context()).new_page()
                await viewer.goto(f"{base}/latency-play.html?room={ROOM}")
                await viewer.wait_for_function("window.presented.length > 0", timeout=20_000)
                await asyncio.sleep(2)
                start = await viewer.evaluate("window.presented.length")
                await asyncio.sleep(window_s)
                presented = await viewer.evaluate("window.presented")
                play_started = await viewer.evaluate("window.playStartedAt")
                drawn = await host.evaluate("window.drawnAt")
            finally:
                await browser.close()
    finally:
        server.terminate()
        await server.wait()
    first_frame_ms = presented[0][1] - play_started
    latencies = [at - drawn[str(index)] for index, at in presented[start:] if str(index) in drawn]
    return {
        "mode": mode,
        "frames": len(latencies),
        "latency_median_ms": statistics.median(latencies) if latencies else float("nan"),
        "latency_p95_ms": percentile(latencies, 0.95) if latencies else float("nan"),
        "first_frame_ms": first_frame_ms,
    }


async def main(arguments: argparse.Namespace) -> None:
    enable_loopback_candidates()
    print(f"machine: {os.cpu_count()} cores, {sys.platform}, python {sys.version.split()[0]}")
    if arguments.browser:
        for mode in arguments.modes:
            row = await run_browser(mode, arguments.window_s)
            print(
                f"browser->{mode}->browser: drawn-to-presented latency median "
                f"{row['latency_median_ms']:.1f} ms, p95 {row['latency_p95_ms']:.1f} ms "
                f"over {row['frames']} frames; first frame {row['first_frame_ms']:.0f} ms "
                "after the play page started",
                flush=True,
            )
        return
    direct = await run_direct(arguments.window_s)
    print(
        f"direct host->viewer (no server): latency median {direct['latency_median_ms']:.1f} ms"
        f", p95 {direct['latency_p95_ms']:.1f} ms"
    )
    header = (
        f"{'mode':10} {'viewers':>7} {'server%':>8} {'host-only%':>10} {'%/viewer':>9} "
        f"{'pkt/s':>7} {'kbit/s/v':>8} {'us/pkt':>7} {'lat med':>8} {'lat p95':>8} {'added':>6} "
        f"{'ttff med':>9} {'ttff max':>9} {'client%':>8}"
    )
    print(header)
    results = []
    for round_number in range(arguments.repeat):
        for viewers in arguments.viewers:
            for mode in arguments.modes:
                row = await run_mode(mode, viewers, arguments.window_s)
                row["round"] = round_number
                row["added_ms"] = row["latency_median_ms"] - direct["latency_median_ms"]
                results.append(row)
                print_row(row)
    summarize(results, arguments)


def print_row(row: dict[str, Any]) -> None:
    viewers = row["viewers"]
    print(
        f"{row['mode']:10} {row['viewers']:>7} {row['server_core_pct']:>8.1f} "
        f"{row['host_only_core_pct']:>10.1f} {row['per_viewer_core_pct']:>9.2f} "
        f"{row['packets_per_s']:>7.0f} {row['kbit_per_s_per_viewer']:>8.0f} "
        f"{row['per_packet_us']:>7.1f} "
        f"{row['latency_median_ms']:>8.1f} {row['latency_p95_ms']:>8.1f} "
        f"{row['added_ms']:>6.1f} {row['first_frame_median_ms']:>9.0f} "
        f"{row['first_frame_max_ms']:>9.0f} {row['client_core_pct']:>8.1f}"
        + (
            f"  ({row['viewers_with_frames']}/{viewers} viewers got frames)"
            if row["viewers_with_frames"] != viewers
            else ""
        ),
        flush=True,
    )


def summarize(results: list[dict[str, Any]], arguments: argparse.Namespace) -> None:
    """Medians over the rounds; ratios to `relay` taken within each round, then medians.

    A row in which some viewer got no frame (the host's stream stalled under load) is
    left out, and the count of rows kept is printed.
    """
    valid = [r for r in results if r["viewers_with_frames"] == r["viewers"] and r["packets_per_s"]]
    by_key = {(r["mode"], r["viewers"], r["round"]): r for r in valid}
    if arguments.repeat > 1:
        print(f"medians over {arguments.repeat} rounds (rows kept):")
        print(f"{'mode':10} {'viewers':>7} {'%/viewer':>9} {'us/pkt':>7} {'added ms':>9} kept")
        for viewers in arguments.viewers:
            for mode in arguments.modes:
                rows = [r for r in valid if r["mode"] == mode and r["viewers"] == viewers]
                if not rows:
                    continue
                print(
                    f"{mode:10} {viewers:>7} "
                    f"{statistics.median(r['per_viewer_core_pct'] for r in rows):>9.2f} "
                    f"{statistics.median(r['per_packet_us'] for r in rows):>7.1f} "
                    f"{statistics.median(r['added_ms'] for r in rows):>9.1f} {len(rows)}"
                )
    for viewers in arguments.viewers:
        for other in arguments.modes:
            if other == "relay":
                continue
            ratios = []
            for round_number in range(arguments.repeat):
                relay = by_key.get(("relay", viewers, round_number))
                row = by_key.get((other, viewers, round_number))
                if relay and row and relay["per_viewer_core_pct"] > 0:
                    ratios.append(row["per_viewer_core_pct"] / relay["per_viewer_core_pct"])
            if ratios:
                listed = ", ".join(f"{r:.1f}" for r in ratios)
                print(
                    f"{viewers} viewers: {other} costs {statistics.median(ratios):.1f}x the "
                    f"relay's CPU per viewer (median of same-round ratios: {listed})"
                )


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command")
    serve_parser = sub.add_parser("serve", help="run one server (used by the benchmark)")
    serve_parser.add_argument("--mode", choices=["relay", "relay-task", "reencode"], required=True)
    serve_parser.add_argument("--port", type=int, required=True)
    crowd_parser = sub.add_parser("crowd", help="hold counting viewers (used by the benchmark)")
    crowd_parser.add_argument("--url", required=True)
    crowd_parser.add_argument("--count", type=int, required=True)
    parser.add_argument(
        "--viewers", type=lambda s: [int(x) for x in s.split(",")], default=[10, 20, 40]
    )
    parser.add_argument("--modes", type=lambda s: s.split(","), default=["relay", "reencode"])
    parser.add_argument("--window-s", type=float, default=8.0)
    parser.add_argument("--repeat", type=int, default=1, help="rounds over every mode and count")
    parser.add_argument(
        "--browser", action="store_true", help="Chromium to Chromium latency instead"
    )
    return parser.parse_args()


if __name__ == "__main__":
    parsed = parse_arguments()
    if parsed.command == "serve" and os.environ.get("BENCH_PROFILE"):
        import cProfile
        import signal

        profiler = cProfile.Profile()
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        profiler.enable()
        try:
            serve(parsed.mode, parsed.port)
        finally:
            profiler.disable()
            profiler.dump_stats(os.environ["BENCH_PROFILE"])
    elif parsed.command == "serve":
        serve(parsed.mode, parsed.port)
    elif parsed.command == "crowd":
        asyncio.run(crowd_main(parsed.url, parsed.count))
    else:
        asyncio.run(main(parsed))
