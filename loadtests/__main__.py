"""`python -m loadtests run|setup|check`: a whole flash-sale load test, or its parts.

    python -m loadtests run --profile ci --host http://127.0.0.1:8000 [--out DIR]
    python -m loadtests setup --profile full --host URL --out DIR    # then locust, then:
    python -m loadtests check DIR

`run` = setup (room, merchant, product, sale through the host API; writes DIR/run.json),
Locust headless with the profile's processes and reports (DIR/locust_*.csv, and
DIR/report.html for full), then the invariant check. Its exit code is the check's: 0 all
invariants hold, 1 a violation, 2 it could not run.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import subprocess
import sys
import time
from pathlib import Path

from loadtests import check
from loadtests.api import ApiError
from loadtests.prepare import prepare
from loadtests.profiles import PROFILES, Profile
from loadtests.runfile import RUN_FILE_NAME, RunInfo

ROOT = Path(__file__).resolve().parent.parent
LOCUSTFILE = Path(__file__).resolve().parent / "flashsale.py"


def locust_command(run: RunInfo, profile: Profile, out_dir: Path) -> list[str]:
    command = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless"]
    command += ["--host", run.base_url, "--run-file", str(out_dir / RUN_FILE_NAME)]
    command += ["--csv", str(out_dir / "locust"), "--loglevel", "WARNING"]
    if profile.processes:
        command += ["--processes", str(profile.processes)]
    if profile.html_report:
        command += ["--html", str(out_dir / "report.html")]
    if not profile.print_stats:
        command += ["--only-summary"]
    return command


def locust_environment() -> dict[str, str]:
    """The locustfile imports `loadtests`, `livecommerce` and `ledger` from this tree."""
    path = os.environ.get("PYTHONPATH", "")
    return {**os.environ, "PYTHONPATH": str(ROOT) + (os.pathsep + path if path else "")}


def profile_from(arguments: argparse.Namespace) -> Profile:
    profile = PROFILES[arguments.profile]
    changes = {
        name: getattr(arguments, name)
        for name in ("viewers", "buyers", "units", "processes")
        if getattr(arguments, name) is not None
    }
    return dataclasses.replace(profile, **changes)


def default_out(profile: Profile) -> Path:
    return Path("loadtest-runs") / f"{profile.name}-{time.strftime('%Y%m%d-%H%M%S')}"


def command_run(arguments: argparse.Namespace) -> int:
    profile = profile_from(arguments)
    out_dir: Path = (arguments.out or default_out(profile)).resolve()
    print(
        f"loadtests: profile {profile.name}: {profile.viewers} viewers, {profile.buyers} "
        f"buyers, {profile.units} units ({profile.per_buyer_limit} per buyer) -> {out_dir}"
    )
    run = prepare(arguments.host, profile, out_dir, arguments.vkey)
    print(
        f"loadtests: room {run.room_id}, sale {run.sale_id} opens in "
        f"{profile.sale_opens_in_s:.0f} s, lasts {profile.sale_s:.0f} s"
    )
    command = locust_command(run, profile, out_dir)
    print("loadtests: " + " ".join(command), flush=True)
    budget_s = (run.stop_local_ms / 1000 - time.time()) + 120
    try:
        locust = subprocess.run(command, env=locust_environment(), timeout=budget_s)
    except subprocess.TimeoutExpired:
        print("loadtests: Locust did not stop on its own; checking what it recorded")
    else:
        # 1 means Locust saw failures; the check says which and decides.
        if locust.returncode not in (0, 1):
            print(f"loadtests: Locust exited with {locust.returncode}", file=sys.stderr)
            return 2
    options = ["--vkey", arguments.vkey] if arguments.vkey else []
    options += ["--ledger", arguments.ledger] if arguments.ledger else []
    return check.main([str(out_dir), *options])


def command_setup(arguments: argparse.Namespace) -> int:
    profile = profile_from(arguments)
    out_dir: Path = (arguments.out or default_out(profile)).resolve()
    run = prepare(arguments.host, profile, out_dir, arguments.vkey)
    print(f"room {run.room_id}, sale {run.sale_id} opens in {profile.sale_opens_in_s:.0f} s")
    print(f"within {profile.startup_s:.0f} s run (PYTHONPATH={ROOT}):")
    print(" ".join(locust_command(run, profile, out_dir)))
    print(f"then: python -m loadtests check {out_dir}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtests", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("run", "setup"):
        sub = commands.add_parser(name)
        sub.add_argument("--profile", choices=sorted(PROFILES), default="ci")
        sub.add_argument("--host", required=True, help="the server's URL, http(s)://host:port")
        sub.add_argument("--out", type=Path, help="run directory (default loadtest-runs/...)")
        sub.add_argument("--vkey", default="", help="the ledger's key (default: /ledger/vkey)")
        sub.add_argument(
            "--ledger", default="", help="the log's URL for the check (default: HOST/ledger)"
        )
        for number in ("viewers", "buyers", "units", "processes"):
            sub.add_argument(f"--{number}", type=int, help=f"override the profile's {number}")
    sub = commands.add_parser("check", help="the invariant check (python -m loadtests.check)")
    sub.add_argument("rest", nargs=argparse.REMAINDER)
    arguments = parser.parse_args(argv)
    if arguments.command == "check":
        return check.main(arguments.rest)
    try:
        if arguments.command == "run":
            return command_run(arguments)
        return command_setup(arguments)
    except ApiError as error:
        print(f"loadtests: set-up failed: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
