"""Chaos: process crashes during flash sales, round after round, and what was lost.

    python bench/chaos.py [--seconds 600] [--seed N] [--mode embedded|scaled|both]
        [--buyers 40] [--viewers 4] [--units 1500] [--redis none|aof|rdb]
        [--faults "kill -9 web,kill -9 writer,restart redis"] [--hold-max 5]

The long version of tests/faults/ (same code: tests/faults/scenarios.py). Each round
schedules a fresh sale, runs buyers (signed orders over room sockets and HTTP, each
retried with the same order id until it has a final answer) and viewers against it,
injects one fault at a random moment, holds it a random while (up to --hold-max
seconds), recovers, lets the traffic run on, stops the buyers and checks the deployment.

- embedded: `serve --demo` killed with SIGKILL and restarted on the same port and data
  directory, every round; its ledger is read from the data directory at each kill.
- scaled: two web processes, the ledger writer and a private redis-server (with
  --redis persistence); each round's fault is drawn from --faults: SIGKILL of a web
  process (restarted after the hold), of the writer (restarted after the hold, at least
  the web processes' 3 s wait for it), or a restart of redis-server (killed, started
  after the hold). The writer's ledger is read at each kill of the writer and at the end.

Per round it prints what the buyers were told (orders, sends, accepted orders and units,
final refusals by reason) and what the ledger held when read, the fault's moment and
length, and the checks' figures; the problems, if any. At the end, per round, what the
ledger holds against what was told, then one line of totals: acknowledged orders lost
(told "accepted" but not in the ledger at that index) and units oversold (accepted in
the ledger beyond the offer) must both be 0; "problems" counts every other broken
promise (tests/faults/scenarios.py lists them). The exit status is 1 if any is not 0.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import RedisServer  # noqa: E402
from tests.faults.scenarios import (  # noqa: E402
    SCALED_FAULTS,
    Round,
    Shape,
    embedded_rounds,
    scaled_rounds,
    totals,
)
from tests.faults.traffic import Settings  # noqa: E402
from tests.support import require_binary  # noqa: E402

PERSISTENCE = {
    "none": (),
    "aof": ("--appendonly", "yes", "--appendfsync", "always"),
    "rdb": ("--save", "1 1"),
}
ROUNDS_MAX = 10_000


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=600, help="run this long (rounds end)")
    parser.add_argument("--seed", type=int, default=None, help="default: a random one, printed")
    parser.add_argument("--mode", choices=("embedded", "scaled", "both"), default="both")
    parser.add_argument("--buyers", type=int, default=40)
    parser.add_argument("--viewers", type=int, default=4)
    parser.add_argument("--units", type=int, default=1500, help="offered per round's sale")
    parser.add_argument("--redis", choices=tuple(PERSISTENCE), default="aof")
    parser.add_argument("--faults", default=",".join(SCALED_FAULTS))
    parser.add_argument("--hold-max", type=float, default=5.0, help="longest fault, seconds")
    return parser.parse_args()


def shape_of(arguments: argparse.Namespace) -> Shape:
    return Shape(
        buyers=arguments.buyers,
        viewers=max(2, arguments.viewers),
        units_offered=arguments.units,
        per_buyer_limit=100,
        before_s=(0.3, 5.0),
        hold_s=(0.3, arguments.hold_max),
        after_s=3.0,
        settings=Settings(),
    )


def report(line: str) -> None:
    print(line, flush=True)


async def run(arguments: argparse.Namespace, seed: int) -> list[Round]:
    started = time.monotonic()
    modes = ["embedded", "scaled"] if arguments.mode == "both" else [arguments.mode]
    share_s = arguments.seconds / len(modes)
    done: list[Round] = []
    base = Path(tempfile.mkdtemp(prefix="chaos-"))
    try:
        for number, mode in enumerate(modes):
            deadline_s = started + share_s * (number + 1)
            print(f"-- {mode}, until {deadline_s - started:.0f} s", flush=True)
            if mode == "embedded":
                done += await embedded_rounds(
                    base / "embedded", ROUNDS_MAX, seed, shape_of(arguments), report, deadline_s
                )
                continue
            menu = [fault.strip() for fault in arguments.faults.split(",") if fault.strip()]
            chooser = random.Random(seed)
            faults = [chooser.choice(menu) for _ in range(ROUNDS_MAX)]
            (base / "redis").mkdir()
            redis_server = RedisServer(
                require_binary("redis-server"), base / "redis", PERSISTENCE[arguments.redis]
            )
            redis_server.start()
            try:
                done += await scaled_rounds(
                    base / "scaled", redis_server, faults, seed, shape_of(arguments), report,
                    deadline_s,
                )  # fmt: skip
            finally:
                redis_server.stop()
    finally:
        # The processes' logs and data directories stay for a look when anything broke.
        if totals(done)["problems"]:
            print(f"logs and data directories kept in {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)
    return done


def main() -> int:
    arguments = parse()
    seed = arguments.seed if arguments.seed is not None else random.randrange(2**31)
    print(
        f"chaos: seed {seed}, {arguments.seconds:.0f} s, mode {arguments.mode}, "
        f"{arguments.buyers} buyers, {arguments.viewers} viewers, {arguments.units} units a "
        f"sale, redis persistence {arguments.redis}",
        flush=True,
    )
    started = time.monotonic()
    rounds = asyncio.run(run(arguments, seed))
    print("-- the ledgers, read after a clean stop, against what the buyers were told:")
    for each in rounds:
        told = each.told
        accepted = len(told.accepted) if told else 0
        units = told.accepted_units() if told else 0
        print(
            f"round {each.number} {each.fault}: told accepted {accepted} orders ({units} "
            f"units); ledger {each.ledger_units} units of {each.units_offered}; "
            f"{len(each.problems)} problems"
        )
        for problem in each.problems[:10]:
            print(f"    {problem}")
    result = totals(rounds)
    print(
        f"totals: {result['rounds']} rounds in {time.monotonic() - started:.0f} s, seed "
        f"{seed}; told accepted {result['told_accepted']} orders; lost acknowledged orders: "
        f"{result['lost_acknowledged']}; oversold units: {result['oversold_units']}; "
        f"problems: {result['problems']}"
    )
    bad = result["lost_acknowledged"] or result["oversold_units"] or result["problems"]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
