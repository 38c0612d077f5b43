"""The one CLI.

python -m livecommerce serve [--host H] [--port P] [--data DIR] [--demo] [--redis URL]
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = vars(build_parser().parse_args(argv))
    command = arguments.pop("command")
    try:
        settings = Settings.load(**arguments)
    except SettingsError as error:
        print(f"livecommerce: {error}", file=sys.stderr)
        return 2
    if command == "serve":
        from livecommerce.server import serve

        return serve(settings)
    return 2


if __name__ == "__main__":
    sys.exit(main())
