"""Loaded by the schemathesis run in test_http_fuzz.py (SCHEMATHESIS_HOOKS): how to make
bodies of the one media type it does not know, the WebRTC offers of WHIP and WHEP."""

from __future__ import annotations

import schemathesis
from hypothesis import strategies as st

# Junk, junk behind the "v=0" an offer must start with, broken UTF-8, and offers over the
# 32 KiB the server reads (sdp_bytes_max): never an offer a peer could answer.
SDP_OFFERS = st.one_of(
    st.binary(max_size=200),
    st.text(max_size=400).map(lambda text: ("v=0\r\n" + text).encode()),
    st.binary(min_size=1, max_size=50).map(lambda junk: b"v=0\r\no=- \xff\xfe " + junk),
    st.integers(min_value=7_000, max_value=20_000).map(lambda lines: b"v=0\r\n" * lines),
)

schemathesis.openapi.media_type("application/sdp", SDP_OFFERS)
