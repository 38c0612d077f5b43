"""The relay's rules without any network: keyframe waits, bounded queues, retries."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
from aiortc.mediastreams import MediaStreamError

from streaming.aiortc_internals import EncodedFrame, packetize
from streaming.relay import VIDEO_TIMESTAMP_GAP, Broadcast, ViewerTrack


def frame(timestamp: int, keyframe: bool = False, kind: str = "video") -> EncodedFrame:
    return EncodedFrame(kind, f"{timestamp}".encode(), timestamp, keyframe)


def track(queue_frames_max: int = 4) -> tuple[ViewerTrack, list[int]]:
    waits: list[int] = []
    return ViewerTrack("video", queue_frames_max, lambda: waits.append(1)), waits


async def test_a_new_viewer_starts_at_a_keyframe() -> None:
    viewer, waits = track()
    viewer.offer(frame(0), generation=1)
    viewer.offer(frame(3000), generation=1)
    assert viewer.queued_frames == 0
    assert waits == [1]
    viewer.offer(frame(6000, keyframe=True), generation=1)
    viewer.offer(frame(9000), generation=1)
    packet = await viewer.recv()
    assert bytes(packet) == b"6000"
    assert packet.pts == 6000
    assert packet.time_base.denominator == 90000
    assert bytes(await viewer.recv()) == b"9000"


async def test_overflow_drops_to_the_next_keyframe() -> None:
    viewer, waits = track(queue_frames_max=3)
    viewer.offer(frame(0, keyframe=True), generation=1)
    for index in range(1, 3):
        viewer.offer(frame(index * 3000), generation=1)
    assert viewer.queued_frames == 3
    viewer.offer(frame(9000), generation=1)  # overflow: the queue empties, waits again
    assert viewer.queued_frames == 0
    assert viewer.overflows == 1
    assert len(waits) == 2
    viewer.offer(frame(12000), generation=1)
    assert viewer.queued_frames == 0
    viewer.offer(frame(15000, keyframe=True), generation=1)
    assert bytes(await viewer.recv()) == b"15000"


async def test_a_new_host_session_keeps_timestamps_growing() -> None:
    viewer, _ = track()
    viewer.offer(frame(90000, keyframe=True), generation=1)
    first = await viewer.recv()
    viewer.offer(frame(0), generation=2)  # the new host's stream starts over...
    assert viewer.waiting_for_keyframe  # ...and must start with a keyframe
    viewer.offer(frame(3000, keyframe=True), generation=2)
    second = await viewer.recv()
    # The new session is placed one frame after the old one; its own spacing is kept.
    assert second.pts == first.pts + VIDEO_TIMESTAMP_GAP + 3000


async def test_audio_never_waits_and_drops_oldest_on_overflow() -> None:
    viewer = ViewerTrack("audio", 2, lambda: None)
    for index in range(3):
        viewer.offer(frame(index * 960, kind="audio"), generation=1)
    assert viewer.queued_frames == 1  # the full queue was dropped, the newest kept
    assert bytes(await viewer.recv()) == b"1920"


async def test_end_wakes_a_waiting_recv() -> None:
    viewer, _ = track()
    receiving = asyncio.ensure_future(viewer.recv())
    await asyncio.sleep(0)
    viewer.end()
    with pytest.raises(MediaStreamError):
        await receiving
    with pytest.raises(MediaStreamError):
        await viewer.recv()


async def test_broadcast_fans_out_and_repeats_keyframe_requests_while_a_viewer_waits() -> None:
    broadcast = Broadcast(keyframe_request_interval_ms=20, keyframe_request_spacing_ms_min=5)
    requests: list[int] = []
    generation = broadcast.attach_host(lambda: requests.append(1))
    viewers = [ViewerTrack("video", 8, broadcast.viewer_wants_keyframe) for _ in range(3)]
    for viewer in viewers:
        broadcast.add_viewer_track(viewer)
    broadcast.push(frame(0), generation)  # a delta: every viewer waits; one request serves all
    assert len(requests) == 1
    await asyncio.sleep(0.1)
    assert len(requests) >= 3, "the request repeats while viewers wait"
    broadcast.push(frame(3000, keyframe=True), generation)
    count = len(requests)
    await asyncio.sleep(0.1)
    assert len(requests) <= count + 1, "no more requests once nobody waits"
    assert [viewer.queued_frames for viewer in viewers] == [1, 1, 1]
    # Frames from a replaced host session are ignored.
    broadcast.push(frame(6000), generation - 1)
    assert [viewer.queued_frames for viewer in viewers] == [1, 1, 1]
    broadcast.close()
    with pytest.raises(MediaStreamError):
        await viewers[0].recv()


class FakeSender:
    """A FrameSender that records what it is given."""

    def __init__(self) -> None:
        self.ready = False
        self.closed = False
        self.sent: list[tuple[list[bytes], int]] = []

    def send_frame(self, payloads: Sequence[bytes], timestamp: int) -> bool:
        self.sent.append((list(payloads), timestamp))
        return True

    def close(self) -> None:
        self.closed = True


async def test_frames_queue_until_the_sender_starts_then_go_out_at_once() -> None:
    viewer, _ = track(queue_frames_max=4)
    sender = FakeSender()
    viewer.attach_sender(sender)
    viewer.offer(frame(0, keyframe=True), generation=1, payloads=[b"k1", b"k2"])
    viewer.offer(frame(3000), generation=1)  # no payloads given: the track cuts them
    assert viewer.queued_frames == 2
    assert sender.sent == []
    sender.ready = True
    viewer.sender_started(True)  # the queue is flushed in order
    assert viewer.queued_frames == 0
    assert [timestamp for _, timestamp in sender.sent] == [0, 3000]
    assert sender.sent[0][0] == [b"k1", b"k2"], "the broadcast's payloads are sent as given"
    assert sender.sent[1][0] == packetize("video", b"3000", 0)
    viewer.offer(frame(6000), generation=1, payloads=[b"d"])  # straight out, no queue
    assert sender.sent[-1] == ([b"d"], 6000)
    assert viewer.frames_sent == 3
    # aiortc's own sender task must not get these frames too.
    receiving = asyncio.ensure_future(viewer.recv())
    await asyncio.sleep(0)
    assert not receiving.done()
    viewer.end()
    with pytest.raises(MediaStreamError):
        await receiving


async def test_a_closed_sender_drops_frames_without_asking_for_keyframes() -> None:
    viewer, waits = track(queue_frames_max=2)
    sender = FakeSender()
    viewer.attach_sender(sender)
    sender.closed = True
    for index in range(5):
        viewer.offer(frame(index * 3000, keyframe=True), generation=1)
    assert viewer.queued_frames == 0
    assert viewer.frames_dropped == 5
    assert waits == []


async def test_an_unusable_sender_hands_the_queue_to_aiortcs_path() -> None:
    viewer, _ = track()
    viewer.attach_sender(FakeSender())
    viewer.offer(frame(0, keyframe=True), generation=1)
    viewer.sender_started(False)
    packet = await viewer.recv()
    assert bytes(packet) == b"0"


def sending_viewer(broadcast: Broadcast, sender: FakeSender) -> ViewerTrack:
    """A video viewer of `broadcast` whose sender is up, so frames go out at once."""
    viewer = ViewerTrack("video", 8, broadcast.viewer_wants_keyframe)
    viewer.attach_sender(sender)
    sender.ready = True
    viewer.sender_started(True)
    broadcast.add_viewer_track(viewer)
    return viewer


async def test_broadcast_cuts_payloads_once_with_one_picture_id_sequence() -> None:
    broadcast = Broadcast(keyframe_request_interval_ms=500)
    generation = broadcast.attach_host(lambda: None)
    senders = [FakeSender() for _ in range(2)]
    for sender in senders:
        sending_viewer(broadcast, sender)
    broadcast.push(frame(0, keyframe=True), generation)
    broadcast.push(frame(3000), generation)
    first, second = (sender.sent for sender in senders)
    assert first == second
    assert first[0][0] == packetize("video", b"0", 0)
    assert first[1][0] == packetize("video", b"3000", 1)
    assert first[0][0][0] is second[0][0][0], "one copy of the bytes for every viewer"
    broadcast.close()


async def test_keyframe_retries_due_at_once_are_rescheduled_on_every_loop() -> None:
    # With a 1 ms retry interval about half the retries fall due in under half a
    # millisecond, which uvloop schedules as a plain Handle: rescheduling must not need
    # the handle's due time.
    broadcast = Broadcast(keyframe_request_interval_ms=1, keyframe_request_spacing_ms_min=0)
    requests: list[int] = []
    generation = broadcast.attach_host(lambda: requests.append(1))
    viewer = ViewerTrack("video", 8, broadcast.viewer_wants_keyframe)
    broadcast.add_viewer_track(viewer)
    loop = asyncio.get_running_loop()
    until_s = loop.time() + 0.1
    while loop.time() < until_s:
        broadcast.viewer_wants_keyframe()
        await asyncio.sleep(0)
    assert len(requests) >= 10, "requests went out while the viewer waited"
    broadcast.push(frame(0, keyframe=True), generation)
    assert viewer.queued_frames == 1
    broadcast.close()


class FailingSender(FakeSender):
    def send_frame(self, payloads: Sequence[bytes], timestamp: int) -> bool:
        raise RuntimeError("this viewer's sender is broken")


async def test_a_viewer_that_fails_on_a_frame_is_dropped_and_the_others_go_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    failed: list[ViewerTrack] = []
    broadcast = Broadcast(keyframe_request_interval_ms=500, on_viewer_failed=failed.append)
    generation = broadcast.attach_host(lambda: None)
    senders = [FakeSender(), FailingSender(), FakeSender()]
    viewers = [sending_viewer(broadcast, sender) for sender in senders]
    broadcast.push(frame(0, keyframe=True), generation)  # must not raise to the host path
    broadcast.push(frame(3000), generation)
    assert failed == [viewers[1]], "the failing viewer is reported once"
    assert [len(senders[0].sent), len(senders[2].sent)] == [2, 2]
    assert "the viewer is dropped" in caplog.text
    broadcast.close()
