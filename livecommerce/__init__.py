"""Live-stream commerce server: the hub, the commerce core and the HTTP/WebSocket adapters."""

__version__ = "0.1.0"
