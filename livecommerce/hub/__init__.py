"""The real-time hub: rooms, comments, likes, shares, viewer counts and state pushes.

`messages`, `text`, `ratelimit`, `room` and `keepalive` are the sans-I/O core; `broker`,
`redis_broker`, `fanout`, `hub`, `endpoints` and `uvicorn_fanout` (room sockets served by the
uvicorn protocol itself, no task per viewer) are the adapters around it.
"""
