"""Clients of the server written in Python: request signing (what tests, load tests and
the terminal buyer send) and the terminal buyer (`python -m livecommerce buy`)."""
