"""`python -m livecommerce audit SOURCE --vkey KEY`: replay a ledger and check the money.

SOURCE is a running server's ledger URL (`http://host:port/ledger`) or a data directory's
`ledger/` folder. The audit first checks the log itself as `python -m ledger verify` does
(every signature, block link, root and consistency proof), and meanwhile replays every
entry into a fresh commerce core with every signature checked again
(livecommerce/commerce/replay.py: each money step is taken again and must make exactly
the entries that follow it). Then it checks that each currency's accounts sum to zero,
that no account is below its floor, and that every order that has ended has an empty
escrow. It prints the balances (totals by kind of account; `--accounts` lists each) and
every broken invariant with the entry index where it broke.

Exit 0: every check holds. 1: something is broken (each on a `FAIL:` line). 2: the audit
could not run (no such source, bad key).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ledger import decode_entry
from ledger.note import NoteError, Verifier
from ledger.verify import VerifyError, verify_directory, verify_url
from livecommerce.commerce.core import CommerceCore
from livecommerce.commerce.escrow import FINAL
from livecommerce.commerce.funds import account_kind
from livecommerce.commerce.replay import apply_entry, finish


@dataclass
class Audit:
    """The replay beside the log's own checks: the first entry replay refuses ends the
    replay (the state after it would mean nothing), not the log's checks."""

    core: CommerceCore = field(default_factory=CommerceCore)
    entries: int = 0
    broken: list[str] = field(default_factory=list)
    stopped_at: int | None = None

    def entry(self, index: int, data: bytes) -> None:
        self.entries = index + 1
        if self.stopped_at is not None:
            return
        try:
            apply_entry(self.core, decode_entry(data))
        except (KeyError, TypeError, ValueError, AssertionError) as error:
            self.broken.append(f"entry {index}: {error}")
            self.stopped_at = index

    def finish(self) -> None:
        if self.stopped_at is None:
            try:
                finish(self.core)
            except ValueError as error:
                self.broken.append(f"entry {self.entries}: {error}")
        self.broken.extend(f"balances: {problem}" for problem in self.core.funds.problems())
        for life in self.core.escrow.lives():
            if life.stage in FINAL:
                held = self.core.funds.balance(life.currency, life.escrow)
                if held.posted or held.credits_pending or held.debits_pending:
                    self.broken.append(f"order {life.ref} is {life.stage} but its escrow holds"
                                       f" {held}")  # fmt: skip

    def totals(self) -> dict[tuple[str, str], list[int]]:
        """(currency, kind) -> [accounts, posted balance, pending credits, pending debits]."""
        found: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0, 0])
        for currency, name, balance in self.core.funds.accounts():
            kind = account_kind(name)
            sums = found[(currency, str(kind))]
            sums[0] += 1
            sums[1] += balance.posted
            sums[2] += balance.credits_pending
            sums[3] += balance.debits_pending
        return dict(found)


def run(source: str, verifier: Verifier, list_accounts: bool) -> int:
    audit = Audit()
    started_s = time.perf_counter()
    try:
        if source.startswith(("http://", "https://")):
            report = verify_url(source, verifier, on_entry=audit.entry)
        else:
            report = verify_directory(Path(source), verifier, on_entry=audit.entry)
    except VerifyError as error:
        print(f"FAIL: the log: {error}")
        return 1
    audit.finish()
    elapsed_s = time.perf_counter() - started_s
    print(f"log: {report.entries} entries, {report.blocks} blocks verified")
    print(f"{'currency':8} {'kind':10} {'accounts':>8} {'posted':>14} {'pending in':>12} "
          f"{'pending out':>12}")  # fmt: skip
    for (currency, kind), (count, posted, credits, debits) in sorted(audit.totals().items()):
        print(f"{currency:8} {kind:10} {count:8} {posted:14} {credits:12} {debits:12}")
    if list_accounts:
        for currency, name, balance in audit.core.funds.accounts():
            print(f"  {currency} {name} posted {balance.posted} pending in "
                  f"{balance.credits_pending} pending out {balance.debits_pending}")  # fmt: skip
    lives = audit.core.escrow.lives()
    stages: dict[str, int] = defaultdict(int)
    for life in lives:
        stages[str(life.stage)] += 1
    print(f"orders paid: {len(lives)} ({', '.join(f'{k} {v}' for k, v in sorted(stages.items()))})")
    for problem in audit.broken:
        print(f"FAIL: {problem}")
    verdict = "OK" if not audit.broken else "BROKEN"
    print(f"{verdict}: audited {audit.entries} entries in {elapsed_s:.2f} s")
    return 0 if not audit.broken else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m livecommerce audit", description=__doc__)
    parser.add_argument("source", help="a ledger URL (…/ledger) or a ledger directory")
    parser.add_argument("--vkey", required=True, help="the ledger's verifier key, or a file")
    parser.add_argument("--accounts", action="store_true", help="list every account")
    arguments = parser.parse_args(argv)
    text = arguments.vkey
    try:
        if "+" not in text or Path(text).is_file():
            text = Path(text).read_text()
        verifier = Verifier.parse(text.strip())
    except (NoteError, OSError) as error:
        print(f"bad verifier key: {error}", file=sys.stderr)
        return 2
    if (
        not arguments.source.startswith(("http://", "https://"))
        and not Path(arguments.source).is_dir()
    ):
        print(f"no such ledger directory: {arguments.source}", file=sys.stderr)
        return 2
    return run(arguments.source, verifier, arguments.accounts)
