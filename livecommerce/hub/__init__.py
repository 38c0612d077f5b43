"""The real-time hub: rooms, comments, likes, shares, viewer counts and state pushes.

`messages`, `text`, `ratelimit` and `room` are the sans-I/O core; `broker`, `redis_broker`,
`fanout`, `hub` and `endpoints` are the adapters around it.
"""
