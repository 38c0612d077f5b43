"""The one CLI.

python -m livecommerce serve [--host H] [--port P] [--data DIR] [--demo] [--redis URL]
python -m livecommerce ledger-writer --redis URL [--data DIR] [--host H --port P]
python -m livecommerce buy [--url URL] [--room ID] [--quantity N]
python -m livecommerce audit SOURCE --vkey KEY [--accounts]
python -m livecommerce arbiter key|resolve|payouts --key-file FILE [--url URL] ...
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from livecommerce.settings import Settings, SettingsError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m livecommerce", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the server (embedded unless --redis is given)")
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default 8000)")
    serve.add_argument("--data", dest="data_dir", type=Path, help="data directory (default ./data)")
    serve.add_argument(
        "--demo", action="store_true", default=None, help="create a demo room, host and products"
    )
    serve.add_argument(
        "--redis", dest="redis_url", help="redis://host:port/db to scale out over Redis"
    )
    writer = commands.add_parser(
        "ledger-writer", help="scaled out: the one process that appends to the ledger"
    )
    writer.add_argument("--redis", dest="redis_url", required=True, help="redis://host:port/db")
    writer.add_argument("--data", dest="data_dir", type=Path, help="data directory (./data)")
    writer.add_argument("--host", help="with --port: address to serve the ledger on")
    writer.add_argument("--port", type=int, help="serve the ledger at http://host:port/ledger/")
    buy = commands.add_parser("buy", help="buy in a room's flash sale from the terminal")
    buy.add_argument("--url", default="http://127.0.0.1:8000", help="the server's base URL")
    buy.add_argument("--room", default="demo", help="room id")
    buy.add_argument("--quantity", type=int, default=1)
    buy.add_argument("--name", default="Terminal buyer", help="display name to register")
    audit = commands.add_parser(
        "audit", help="replay a ledger: balances, and every broken money invariant"
    )
    audit.add_argument("source", help="a ledger URL (…/ledger) or a ledger directory")
    audit.add_argument("--vkey", required=True, help="the ledger's verifier key, or a file")
    audit.add_argument("--accounts", action="store_true", help="list every account")
    arbiter = commands.add_parser("arbiter", help="the platform's arbiter: disputes, payouts")
    arbiter.add_argument("action", choices=["key", "resolve", "payouts"])
    arbiter.add_argument("--url", default="http://127.0.0.1:8000", help="the server's base URL")
    arbiter.add_argument("--key-file", type=Path, required=True, help="the arbiter's key")
    arbiter.add_argument("--buyer", help="resolve: the order's buyer id")
    arbiter.add_argument("--order", help="resolve: the order id")
    arbiter.add_argument("--refund-cents", type=int, default=0, help="resolve: back to the buyer")
    arbiter.add_argument("--batch", help="payouts: the batch id (default: a new one)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = vars(build_parser().parse_args(argv))
    command = arguments.pop("command")
    serve_ledger = command == "ledger-writer" and arguments.get("port") is not None
    if command == "audit":
        from livecommerce.audit import main as audit_main

        extra = ["--accounts"] if arguments["accounts"] else []
        return audit_main([arguments["source"], "--vkey", arguments["vkey"], *extra])
    if command == "arbiter":
        from livecommerce.clients.arbiter import main as arbiter_main

        if arguments["action"] == "resolve" and not (arguments["buyer"] and arguments["order"]):
            print("livecommerce: resolve needs --buyer and --order", file=sys.stderr)
            return 2
        return arbiter_main(
            arguments.pop("action"), arguments.pop("url"), arguments.pop("key_file"), **arguments
        )
    if command == "buy":
        from livecommerce.clients.buy import main as buy_main

        return buy_main(
            arguments["url"], arguments["room"], arguments["quantity"], arguments["name"]
        )
    try:
        settings = Settings.load(**arguments)
    except SettingsError as error:
        print(f"livecommerce: {error}", file=sys.stderr)
        return 2
    if command == "ledger-writer":
        from livecommerce.writer.writer import main as writer_main

        return writer_main(settings, serve_http=serve_ledger)
    if command == "serve":
        from livecommerce.server import serve

        return serve(settings)
    return 2


if __name__ == "__main__":
    sys.exit(main())
