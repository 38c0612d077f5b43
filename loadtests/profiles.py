"""The two profiles: how many users, how the spike is timed, how Locust runs."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Profile:
    name: str
    viewers: int
    buyers: int
    units: int  # units offered in the sale
    per_buyer_limit: int
    # The timeline, in seconds. Locust gets `startup_s` to start its processes; viewers
    # ramp up over `viewer_ramp_s`, then buyers arrive over `buyer_ramp_s`; everyone is in
    # `settle_s` before the sale opens (T0); the sale lasts `sale_s`; Locust stops
    # `grace_s` after it ends (receipts come about a second after "accepted").
    startup_s: float
    viewer_ramp_s: float
    buyer_ramp_s: float
    settle_s: float
    sale_s: float
    grace_s: float
    # Each viewer likes every `like_every_s` and comments every `comment_every_s` seconds
    # on average. Every comment goes to every socket in the room, so the room's comment
    # rate is viewers / comment_every_s, and the deliveries that costs are that times the
    # sockets: keep it modest on a small machine.
    like_every_s: float
    comment_every_s: float
    processes: int  # 0: one Locust process; N: `--processes N` (a master and N workers)
    html_report: bool
    print_stats: bool

    @property
    def sale_opens_in_s(self) -> float:
        """From the sale's creation to T0."""
        return self.startup_s + self.viewer_ramp_s + self.buyer_ramp_s + self.settle_s


PROFILES: dict[str, Profile] = {
    # About 30 s in one process: what CI runs (tests/loadtests/test_locust_ci.py).
    "ci": Profile(
        name="ci",
        viewers=50,
        buyers=30,
        units=20,
        per_buyer_limit=2,
        startup_s=3,
        viewer_ramp_s=6,
        buyer_ramp_s=5,
        settle_s=3,
        sale_s=7,
        grace_s=3,
        like_every_s=5,
        comment_every_s=30,
        processes=0,
        html_report=False,
        print_stats=False,
    ),
    # Several processes, CSV and HTML reports. At most about 2,000 receiving viewers per
    # Locust process (README); 1,000 per process leaves room for the buyers' bursts. The
    # figures in docs/benchmarks.md are from this profile on 2 shared cores.
    "full": Profile(
        name="full",
        viewers=2000,
        buyers=500,
        units=300,
        per_buyer_limit=2,
        startup_s=8,
        viewer_ramp_s=60,
        buyer_ramp_s=20,
        settle_s=5,
        sale_s=30,
        grace_s=10,
        like_every_s=30,
        comment_every_s=1200,  # 2,000 viewers: 1.7 comments a second, each to 2,500 sockets
        processes=2,
        html_report=True,
        print_stats=True,
    ),
}
