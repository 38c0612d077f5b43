"""All settings in one place: defaults, then `LIVECOMMERCE_*` environment variables, then flags."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ledger import LedgerSettings
from livecommerce.commerce.escrow import EscrowRules

ENVIRONMENT_PREFIX = "LIVECOMMERCE_"
PROJECT_ROOT = Path(__file__).resolve().parent.parent


# Settings where 0 has a meaning: any port, or "off".
ZERO_ALLOWED = frozenset(
    {"port", "gc_freeze_interval_ms", "platform_fee_bps", "payout_interval_ms"}
)


class SettingsError(ValueError):
    """A setting has a value it cannot take; the message names the setting."""


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: Path = Path("data")
    demo: bool = False
    # Empty means embedded: in-process broker and stock, no Redis needed.
    redis_url: str = ""
    static_dir: Path = field(default_factory=lambda: PROJECT_ROOT / "static")
    # The public origin printed in URLs; derived from host and port when empty.
    public_url: str = ""

    # The hub's limits. Every queue and history is bounded; units are in the names.
    frame_bytes_max: int = 16 * 1024
    viewer_buffer_bytes_max: int = 256 * 1024
    viewer_buffer_bytes_soft: int = 64 * 1024
    # The kernel's send buffer per WebSocket (Linux doubles it): what a stalled client can
    # hold beyond viewer_buffer_bytes_max.
    viewer_socket_send_buffer_bytes: int = 64 * 1024
    # Every room socket is pinged once per interval and closed (1011) when nothing at all
    # came back for a whole interval after a ping (livecommerce/hub/keepalive.py).
    viewer_ping_interval_ms: int = 20_000
    history_events_max: int = 1000
    snapshot_comments_max: int = 50
    comment_chars_max: int = 300
    comments_per_10s_max: int = 5
    connections_per_address_max: int = 200
    # A connection has this long to send a whole request head (the WebSocket handshake's
    # too), from when it opens or from the first byte of its next request; then 408 and
    # closed (livecommerce/slow_headers.py: uvicorn's h11 protocol has no such limit).
    http_header_timeout_ms: int = 10_000
    connections_per_process_max: int = 30000
    state_flush_interval_ms: int = 100
    # Coalesced state frames (stock, likes, viewers) one process writes a second, all rooms
    # together: past 1,000 viewers a room's state goes out less often than every
    # state_flush_interval_ms (2,000 viewers: 5 a second; 10,000: once a second).
    state_deliveries_per_s_max: int = 10_000
    viewer_count_heartbeat_ms: int = 1000
    rooms_max: int = 10000

    # Orders and the ledger. The ledger lives in data_dir/ledger; its origin names the log
    # in every checkpoint (c2sp.org/tlog-checkpoint), so set it to your host name.
    ledger_origin: str = "localhost/livecommerce"
    ledger_checkpoint_interval_ms: int = 1000
    order_queue_max: int = 20_000
    order_batch_max: int = 256
    ledger_batches_in_flight_max: int = 8
    receipts_pending_max: int = 200_000
    commerce_tick_interval_ms: int = 100
    order_freshness_ms: int = 30_000
    # Embedded: order signatures are checked in a child process (livecommerce/pipeline/
    # verifying.py), each turn's orders as one request, pipelined, so the event loop that
    # reads and writes every socket does not spend 55-70 us per order on Ed25519. A turn
    # with fewer than `order_signatures_child_batch_min` orders (light load) is checked on
    # the loop, saving the round trip; at most `order_signatures_in_flight_max` orders are
    # with the child (the rest wait in the order queue), at most
    # `order_signatures_request_max` in one request, so that after a burst the loop takes
    # the first checked orders on while the child checks the rest. docs/benchmarks.md has
    # the A/Bs.
    order_signatures_in_child: bool = True
    order_signatures_child_batch_min: int = 8
    order_signatures_in_flight_max: int = 4_096
    order_signatures_request_max: int = 32
    # A closed sale's orders leave memory this long after it closed (livecommerce/pipeline/
    # forgetting.py); the ledger keeps them.
    closed_sale_forget_ms: int = 3_600_000
    # The garbage collector collects its youngest generation every this many net new
    # container objects (CPython's default is 700): an order's short-lived objects are
    # freed before a collection sees them, so few reach the oldest generation, whose full
    # collections walk every connection's objects (livecommerce/gc_pauses.py).
    gc_young_threshold_objects: int = 50_000
    # Opt-in, 0 = off, not needed with the threshold above: surviving objects move out of
    # the garbage collector's reach this often, but a cycle frozen while alive is never
    # freed: every connection open across a freeze leaks (livecommerce/gc_pauses.py).
    gc_freeze_interval_ms: int = 0
    # Scaled out: how long a web process waits for the ledger writer to record an order
    # before telling the buyer to retry (the order is kept and recorded later).
    order_confirm_timeout_ms: int = 20_000

    # After the sale (livecommerce/commerce/escrow.py). These rules go on the ledger
    # (rules/v1) when they change, so a replay applies the ones in force at each step.
    # An order is confirmed by the clock this long after shipping (or delivery) if its
    # buyer does not confirm it; a payment's authorization lapses this long after payment
    # if nothing ships; the platform keeps fee_bps (1/100 %) of what settles; arbiters
    # (comma-separated identity ids) may resolve disputes and start payout batches.
    order_confirm_after_ms: int = 7 * 24 * 3600 * 1000
    payment_authorization_valid_ms: int = 7 * 24 * 3600 * 1000
    platform_fee_bps: int = 500
    arbiter_ids: str = ""
    # The payment provider: "test" is the built-in one that moves no money
    # (livecommerce/payments/sandbox.py); its late answers come this long after.
    payment_provider: str = "test"
    payment_late_answer_ms: int = 2_000
    # A payout batch of every merchant's available balance this often (0: only on request).
    payout_interval_ms: int = 24 * 3600 * 1000

    # Live video (streaming/). ICE servers: comma-separated stun:/turn: URLs, empty for host
    # candidates only (a server with a public address, or loopback). Behind NAT see
    # docs/video.md.
    video_peers_per_room_max: int = 201
    video_peers_total_max: int = 1000
    video_ice_urls: str = ""
    video_turn_username: str = ""
    video_turn_credential: str = ""
    # Offer 127.0.0.1 candidates too (aioice skips them by default): one-machine demos, tests.
    video_ice_loopback: bool = True

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise SettingsError(f"port must be 0..65535, got {self.port}")
        if self.redis_url and not self.redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise SettingsError(
                f"redis_url must start with redis://, rediss:// or unix://, got {self.redis_url!r}"
            )
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            if item.type == "int" and item.name not in ZERO_ALLOWED and value <= 0:
                raise SettingsError(f"{item.name} must be positive, got {value}")
            if item.name in ZERO_ALLOWED and value < 0:
                raise SettingsError(f"{item.name} must not be negative, got {value}")
        if self.platform_fee_bps > 10_000:
            raise SettingsError(f"platform_fee_bps is at most 10000, got {self.platform_fee_bps}")
        if self.payment_provider != "test":
            raise SettingsError(
                f"payment_provider: only the built-in 'test' provider exists, got "
                f"{self.payment_provider!r}"
            )
        if self.viewer_buffer_bytes_soft > self.viewer_buffer_bytes_max:
            raise SettingsError("viewer_buffer_bytes_soft must not exceed viewer_buffer_bytes_max")

    @property
    def embedded(self) -> bool:
        return not self.redis_url

    @property
    def base_url(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    @classmethod
    def load(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Defaults, then `LIVECOMMERCE_<NAME>` variables, then non-None `overrides`."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for item in dataclasses.fields(cls):
            raw = environ.get(ENVIRONMENT_PREFIX + item.name.upper())
            if raw is not None:
                values[item.name] = _parse(item.name, str(item.type), raw)
        for name, value in overrides.items():
            if value is not None:
                values[name] = value
        return cls(**values)


def _parse(name: str, type_name: str, raw: str) -> Any:
    if type_name == "int":
        try:
            return int(raw)
        except ValueError:
            raise SettingsError(
                f"{ENVIRONMENT_PREFIX}{name.upper()} must be an integer, got {raw!r}"
            ) from None
    if type_name == "bool":
        lowered = raw.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off", ""):
            return False
        raise SettingsError(
            f"{ENVIRONMENT_PREFIX}{name.upper()} must be true or false, got {raw!r}"
        )
    if type_name == "Path":
        return Path(raw)
    return raw


def ledger_settings(settings: Settings) -> LedgerSettings:
    return LedgerSettings(
        origin=settings.ledger_origin,
        checkpoint_interval_ms=settings.ledger_checkpoint_interval_ms,
    )


def ledger_dir(data_dir: Path) -> Path:
    return data_dir / "ledger"


def escrow_rules(settings: Settings) -> EscrowRules:
    """The rules after the sale, from the settings (they go on the ledger: rules/v1)."""
    return EscrowRules(
        confirm_after_ms=settings.order_confirm_after_ms,
        authorization_valid_ms=settings.payment_authorization_valid_ms,
        fee_bps=settings.platform_fee_bps,
        arbiter_ids=frozenset(a.strip() for a in settings.arbiter_ids.split(",") if a.strip()),
    )
