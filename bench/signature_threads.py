"""Why order signatures are not checked on a thread pool: Ed25519 checks on a thread while
the event loop is busy.

    python bench/signature_threads.py [--checks 300]

PyNaCl (cffi) releases the GIL inside libsodium, so a thread could check signatures on
another core while the event loop runs. This measures it: first `--checks` checks alone,
then the same checks on a thread (`loop.run_in_executor`) while the uvloop event loop runs
Python callbacks of 20 us and 100 us back to back (as a loaded server does), printing the
wall time per check and the share of the time the loop still got. Figures only.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import uvloop
from nacl.signing import SigningKey, VerifyKey

Check = tuple[bytes, bytes, bytes]


def make_checks(count: int) -> list[Check]:
    keys = [SigningKey.generate() for _ in range(16)]
    checks = []
    for n in range(count):
        key = keys[n % len(keys)]
        message = b"livecommerce/order/v1\n" + b"%d" % n
        checks.append((bytes(key.verify_key), key.sign(message).signature, message))
    return checks


def check_all(checks: list[Check]) -> int:
    for public_key, signature, message in checks:
        VerifyKey(public_key).verify(message, signature)
    return len(checks)


async def beside_a_busy_loop(checks: list[Check], callback_us: int) -> tuple[float, float]:
    """(wall us per check on a thread, share of the time the loop's callbacks ran)."""
    loop = asyncio.get_running_loop()
    running = True
    busy_s = [0.0]

    def callback() -> None:
        started = time.perf_counter()
        while time.perf_counter() - started < callback_us / 1e6:
            pass
        busy_s[0] += time.perf_counter() - started
        if running:
            loop.call_soon(callback)

    loop.call_soon(callback)
    await asyncio.sleep(0.05)
    busy_s[0] = 0.0
    started = time.perf_counter()
    await loop.run_in_executor(None, check_all, checks)
    wall_s = time.perf_counter() - started
    running = False
    return wall_s * 1e6 / len(checks), busy_s[0] / wall_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checks", type=int, default=300)
    arguments = parser.parse_args()
    checks = make_checks(arguments.checks)
    started = time.perf_counter()
    check_all(checks)
    alone_us = (time.perf_counter() - started) * 1e6 / len(checks)
    print(f"{len(checks)} checks alone: {alone_us:.1f} us each")
    for callback_us in (20, 100):
        per_check_us, loop_share = uvloop.run(beside_a_busy_loop(checks, callback_us))
        print(
            f"on a thread beside a loop running {callback_us} us callbacks: "
            f"{per_check_us:,.0f} us per check (wall); the loop ran {loop_share:.0%} of the time"
        )


if __name__ == "__main__":
    main()
