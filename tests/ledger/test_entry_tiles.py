"""Canonical entries, tile paths and entry bundles."""

from __future__ import annotations

import pytest

from ledger.entry import ENTRY_BYTES_MAX, decode_entry, encode_entry
from ledger.tiles import Tile, TilePathError, decode_bundle, encode_bundle, parse_tile_path


def test_entry_is_canonical() -> None:
    entry = encode_entry("order/v1", {"sale": "s1", "b": [1, {"z": 1, "a": None}], "a": True})
    assert entry == b'{"type":"order/v1","a":true,"b":[1,{"a":null,"z":1}],"sale":"s1"}'
    assert encode_entry("stock/v1", {}) == b'{"type":"stock/v1"}'
    assert encode_entry("trace/v1", {"t": "é\n"}) == '{"type":"trace/v1","t":"é\\n"}'.encode()
    assert decode_entry(entry) == (
        "order/v1",
        {"a": True, "b": [1, {"a": None, "z": 1}], "sale": "s1"},
    )


@pytest.mark.parametrize(
    ("entry_type", "fields", "message"),
    [
        ("order", {}, "kind/vN"),
        ("Order/v1", {}, "kind/vN"),
        ("order/v1", {"price": 1.5}, "floats"),
        ("order/v1", {"n": 2**60}, "2\\*\\*53"),
        ("order/v1", {"type": "x"}, "type"),
        ("order/v1", {1: "x"}, "keys must be strings"),
        ("order/v1", {"buyer": {"email": "a@b"}}, "personal data"),
        ("order/v1", {"x": object()}, "not a JSON value"),
        ("order/v1", {"x": "\ud800"}, "Unicode"),
        ("order/v1", {"x": "a" * ENTRY_BYTES_MAX}, "65535"),
    ],
)
def test_entry_rejects(entry_type: str, fields: dict[object, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        encode_entry(entry_type, fields)  # type: ignore[arg-type]


def test_decode_rejects_non_canonical() -> None:
    for data in (
        b'{"a":1,"type":"order/v1"}',
        b'{"type":"order/v1", "a":1}',
        b'{"type":"order/v1","b":1,"a":2}',
        b"[1]",
        b"not json",
    ):
        with pytest.raises(ValueError, match="entry"):
            decode_entry(data)


@pytest.mark.parametrize(
    ("tile", "path"),
    [
        (Tile(0, 0, 256), "tile/0/000"),
        (Tile(0, 1234067, 256), "tile/0/x001/x234/067"),
        (Tile(3, 1234067, 1), "tile/3/x001/x234/067.p/1"),
        (Tile(-1, 5, 17), "tile/entries/005.p/17"),
        (Tile(1, 1000, 256), "tile/1/x001/000"),
    ],
)
def test_tile_paths(tile: Tile, path: str) -> None:
    assert tile.path() == path
    assert parse_tile_path(path) == tile


@pytest.mark.parametrize(
    "path",
    [
        "tile/0/1",
        "tile/0/x000/001",
        "tile/00/000",
        "tile/0/000.p/0",
        "tile/0/000.p/256",
        "tile/data/000",
        "tile/0/x1/000",
        "tiles/0/000",
    ],
)
def test_bad_tile_paths(path: str) -> None:
    with pytest.raises(TilePathError):
        parse_tile_path(path)


def test_bundles() -> None:
    entries = [b"", b"a", b"x" * 300]
    assert encode_bundle(entries)[:3] == b"\x00\x00\x00"
    assert decode_bundle(encode_bundle(entries)) == entries
    with pytest.raises(ValueError, match="ends inside"):
        decode_bundle(encode_bundle(entries)[:-1])
