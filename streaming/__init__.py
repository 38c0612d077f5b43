"""Live video over WebRTC: WHIP ingest, WHEP egress and the relay between them."""
