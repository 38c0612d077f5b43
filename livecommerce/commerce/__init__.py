"""The sans-I/O commerce core: identities, catalog, flash sales, orders, privacy.

Nothing in this package imports asyncio, starlette, redis, or touches files or sockets;
`tests/livecommerce/commerce/test_sans_io.py` enforces that by walking the imports.
"""
