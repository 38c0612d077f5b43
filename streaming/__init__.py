"""Live video over WebRTC: WHIP ingest, WHEP egress and the relay between them."""

from streaming.service import StreamingService
from streaming.settings import IceServer, StreamingSettings

__all__ = ["IceServer", "StreamingService", "StreamingSettings"]
