"""Protocol decoding and framing, checked against the websockets library's own parser."""

from __future__ import annotations

import pytest
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader

from livecommerce import protocol as m
from livecommerce.hub.fanout import text_frame


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("{", "malformed_json"),
        # Not JSON, though the decoder meets a wrong type before it meets the junk.
        ("0:", "malformed_json"),
        ('"text" junk', "malformed_json"),
        ("[1, 2", "malformed_json"),
        ('{"type":"like/v1","count":1.5', "malformed_json"),
        # Nested deeper than the decoder recurses, ahead of the type it dispatches on.
        ('{"x":' + "[" * 3000 + "]" * 3000 + ',"type":"like/v1"}', "invalid_message"),
        ('{"x":' + '{"a":' * 3000 + "1" + "}" * 3001 + ',"type":"like/v1"}', "invalid_message"),
        ("[" * 3000, "invalid_message"),
        ("[]", "invalid_message"),
        ('{"type":"nope/v1"}', "unknown_type"),
        ('{"text":"no type"}', "unknown_type"),
        ('{"type":"comment/v2","text":"x","name":"a"}', "unknown_type"),
        ('{"type":"like/v1","count":0}', "invalid_message"),
        ('{"type":"like/v1","count":1000000}', "invalid_message"),
        ('{"type":"like/v1","count":1.5}', "invalid_message"),
        ('{"type":"comment/v1","text":"x"}', "invalid_message"),
        ('{"type":"like/v1","extra":1}', "invalid_message"),
        ('{"type":"host.slow_mode/v1","interval_ms":-1}', "invalid_message"),
        ('{"type":"host.mute/v1","viewer_id":"<script>"}', "invalid_message"),
    ],
)
def test_bad_frames_get_stable_codes(frame: str, code: str) -> None:
    with pytest.raises(m.ProtocolError) as caught:
        m.decode_client(frame)
    assert caught.value.code == code
    assert caught.value.message


def test_host_commands_over_http_nested_too_deeply_are_invalid() -> None:
    with pytest.raises(m.ProtocolError) as caught:
        m.decode_host_command(b'{"x":' + b"[" * 3000 + b"]" * 3000 + b',"type":"host.end/v1"}')
    assert caught.value.code == "invalid_message"
    assert m.decode_host_command(b'{"type":"host.end/v1"}') == m.HostEnd()


def test_good_frames_decode() -> None:
    assert m.decode_client('{"type":"like/v1","count":3}') == m.Like(count=3)
    assert m.decode_client('{"type":"share/v1"}') == m.Share()


def test_sequenced_event_wire_form() -> None:
    event = m.CommentPosted(id="c", viewer_id="v", name="n", text="t", ts_ms=5)
    wire = m.with_sequence(42, m.encode_event(event))
    assert wire.startswith(b'{"seq":42,"type":"comment/v1",')
    assert m.decode_event(m.encode_event(event)) == event


@pytest.mark.parametrize("length", [0, 1, 125, 126, 65535, 65536, 70000])
def test_text_frame_parses_with_websockets(length: int) -> None:
    payload = b"x" * length
    reader = StreamReader()
    reader.feed_data(text_frame(payload))
    parser = Frame.parse(reader.read_exact, mask=False)
    try:
        next(parser)
    except StopIteration as done:
        frame = done.value
    else:
        pytest.fail("the parser wanted more bytes than the frame has")
    assert frame.opcode is Opcode.TEXT
    assert frame.fin
    assert frame.data == payload
