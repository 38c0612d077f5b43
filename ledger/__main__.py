"""`python -m ledger verify SOURCE --vkey KEY`, `verify-proof FILE --vkey KEY`, `tiles DIR OUT`."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ledger.note import NoteError, Verifier
from ledger.receipt import ReceiptError, verify_receipt
from ledger.verify import VerifyError, verify_directory, verify_url


def _verifier(text: str) -> Verifier:
    candidate = Path(text)
    if "+" not in text or candidate.is_file():
        text = candidate.read_text()
    return Verifier.parse(text.strip())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ledger")
    commands = parser.add_subparsers(dest="command", required=True)
    verify = commands.add_parser("verify", help="check a whole log")
    verify.add_argument("source", help="URL of a running log (…/ledger) or a data directory")
    verify.add_argument("--vkey", required=True, help="verifier key, or a file holding it")
    verify.add_argument(
        "--canonical", action="store_true", help="also check every entry is canonical JSON"
    )
    proof = commands.add_parser("verify-proof", help="check a c2sp.org/tlog-proof receipt")
    proof.add_argument("file", type=Path)
    proof.add_argument("--vkey", required=True, help="verifier key, or a file holding it")
    proof.add_argument("--entry", type=Path, help="the entry the receipt should prove")
    tiles = commands.add_parser("tiles", help="write the log as static files (tlog-tiles)")
    tiles.add_argument("data_dir", type=Path)
    tiles.add_argument("out_dir", type=Path)
    arguments = parser.parse_args(argv)
    try:
        verifier = _verifier(arguments.vkey) if hasattr(arguments, "vkey") else None
    except (NoteError, OSError) as error:
        print(f"bad verifier key: {error}", file=sys.stderr)
        return 2
    if arguments.command == "verify":
        assert verifier is not None
        started = time.perf_counter()
        try:
            source = arguments.source
            if source.startswith(("http://", "https://")):
                report = verify_url(source, verifier, arguments.canonical)
            else:
                report = verify_directory(Path(source), verifier, arguments.canonical)
        except VerifyError as error:
            print(f"FAIL: {error}")
            return 1
        elapsed = time.perf_counter() - started
        print(
            f"OK: {report.entries} entries, {report.blocks} blocks, latest checkpoint "
            f"size {report.checkpoint_size}, {report.tiles_checked} tiles checked "
            f"in {elapsed:.2f} s"
        )
        return 0
    if arguments.command == "verify-proof":
        assert verifier is not None
        try:
            entry = arguments.entry.read_bytes() if arguments.entry else None
            receipt = verify_receipt(arguments.file.read_bytes(), verifier, entry)
        except (ReceiptError, OSError) as error:
            print(f"FAIL: {error}")
            return 1
        print(f"OK: entry {receipt.index} is in the log")
        return 0
    from ledger.static import write_static

    try:
        written = write_static(arguments.data_dir, arguments.out_dir)
    except VerifyError as error:
        print(f"FAIL: {error}")
        return 1
    print(f"wrote {written} files to {arguments.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
