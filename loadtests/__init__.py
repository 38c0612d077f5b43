"""Locust flash-sale load tests: viewers on WebSockets, buyers with signed orders, a spike
load shape around the sale's opening, and an invariant check afterwards.

    python -m loadtests run --profile ci --host http://127.0.0.1:8000

`flashsale.py` is the locustfile (it runs under gevent: import it only in Locust
processes); `prepare.py` sets up a room, merchant, product and sale through the host API;
`check.py` proves afterwards that nothing went wrong. README "Load-testing a flash sale".
"""
