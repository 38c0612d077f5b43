"""schemathesis against a real server: every operation of /openapi.json, positive and
negative data, and nothing it sends changes what the server holds.

Why "nothing" can be asserted exactly: a request that changes the server's state is either
signed by a registered key (registration, a listing, a restock, an order), carries a host
credential or a session token (host commands, sales, the room link, payments, WHIP), or
is an SDP offer a WebRTC peer could answer. schemathesis can make none of these: it cannot
forge an Ed25519 signature, guess a 32-byte credential or an HMAC'd token, and the offers
it sends are junk (schemathesis_hooks.py). Two unsigned requests do change the server, and
are left out of the comparison: POST /api/rooms makes a new room (never touching another),
and POST /api/sessions/challenge issues a challenge (in memory, expiring in 60 s). Every
other thing a request could reach is compared before and after (world.observe): the
ledger's size, the product's stock, the sale, the held order, orders, identities, the room
links, and both rooms' state and moderation lists.

Half the path parameters are the real ids (room, sale, order, product, merchant, buyer),
so bodies and credentials are fuzzed against the objects that hold state, not only against
ids that are not found.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

from tests.faults.world import World, differences, observe, populated
from tests.livecommerce.server import running_server
from tests.support import ROOT

# Per operation, in the fuzzing phase; the coverage phase adds its own boundary cases.
EXAMPLES_PER_OPERATION = 25
RUN_TIMEOUT_S = 120


def schemathesis_config(world: World) -> str:
    dictionaries = {
        "rooms": [world.room_id, world.other_room_id],
        "sales": [world.sale.sale_id],
        "orders": [world.order_id],
        "products": [world.sale.product_id],
        "identities": [world.sale.merchant.identity_id, world.buyer.identity_id],
    }
    bindings = {
        "path.room_id": "rooms",
        "path.sale_id": "sales",
        "path.order_id": "orders",
        "path.product_id": "products",
        "path.merchant_id": "identities",
        "query.buyer_id": "identities",
    }
    lines = []
    for name, values in dictionaries.items():
        lines += [f"[dictionaries.{name}]", f"values = {json.dumps(values)}", ""]
    lines.append("[parameters]")
    for key, name in bindings.items():
        lines.append(f'"{key}" = {{ dictionary = "{name}", probability = 0.5 }}')
    lines += [
        "",
        # No 5xx but the documented push-back: 503 passes this check, and
        # status_code_conformance fails it where the operation does not document it.
        "[checks.not_a_server_error]",
        'expected-statuses = ["2XX", "3XX", "4XX", "503"]',
        "",
        # 413 (a body over 16 KiB) is a refusal like 400.
        "[checks.negative_data_rejection]",
        'expected-statuses = ["400", "401", "403", "404", "405", "406", "409", "413", "415",'
        ' "422"]',
    ]
    return "\n".join(lines) + "\n"


async def test_every_operation_answers_as_documented_and_changes_nothing(tmp_path: Path) -> None:
    async with running_server(tmp_path / "data") as server:
        world = await populated(server)
        before = observe(world)
        config = tmp_path / "schemathesis.toml"
        config.write_text(schemathesis_config(world))
        command = [
            sys.executable,
            "-c",
            "from schemathesis.cli import schemathesis; schemathesis()",
            "--config-file",
            str(config),
            "--no-color",
            "run",
            f"{server.http}/openapi.json",
            "--max-examples",
            str(EXAMPLES_PER_OPERATION),
            "--phases",
            "examples,coverage,fuzzing",
            "--checks",
            "all",
            # Schema-valid data is still refused, by design: no signature verifies, no
            # credential matches.
            "--exclude-checks",
            "positive_data_acceptance",
            "--workers",
            "1",
            "--generation-database",
            "none",
            "--request-timeout",
            "10",
        ]
        environment = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "SCHEMATHESIS_HOOKS": "tests.faults.schemathesis_hooks",
        }
        process = await asyncio.create_subprocess_exec(
            *command,
            cwd=tmp_path,
            env=environment,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await asyncio.wait_for(process.communicate(), RUN_TIMEOUT_S)
        report = output.decode(errors="replace")
        summary = report[report.rfind("SUMMARY") :]
        assert process.returncode == 0, report[-30_000:]
        assert "Tested: " in summary, summary
        after = observe(world)
        assert after == before, differences(before, after)
