"""The netlink adapter against the real kernel, in a throwaway namespace of the test's own."""

import asyncio
import secrets
import time

import pytest

from orchestrator.adapters.rtnl import Rtnl
from tests.conftest import sh

pytestmark = pytest.mark.kernel


@pytest.fixture
def ns():
    name = "blt-rt-" + secrets.token_hex(4)
    sh(["ip", "netns", "add", name])
    yield name
    sh(["ip", "netns", "del", name], check=False)


async def until(pred, timeout=3.0):
    deadline = time.monotonic() + timeout
    while True:
        got = await pred()
        if got or time.monotonic() > deadline:
            return got
        await asyncio.sleep(0.01)


async def test_not_yet_transmitting_names_links_whose_carrier_linkwatch_has_not_processed(ns):
    """A link that is up with carrier but not operationally up has queues that drop (the noop
    qdisc): the window after a veth's peer comes up. A dormant link holds that state for as long
    as the test needs it."""
    ip = ["ip", "-n", ns]
    sh([*ip, "link", "add", "qa", "type", "veth", "peer", "name", "qb"])
    sh([*ip, "link", "set", "qa", "mode", "dormant"])
    sh([*ip, "link", "set", "qa", "up"])
    r = Rtnl()
    try:
        async def pending():
            return await r.not_yet_transmitting(ns, {"qa", "qb"})
        assert await pending() == set()    # up, but no carrier: its peer is down, nothing to wait for
        sh([*ip, "link", "set", "qb", "up"])
        assert await until(lambda: _is(pending, {"qa"}))     # carrier, operstate DORMANT
        sh([*ip, "link", "set", "qa", "mode", "default"])   # applied at the next carrier event
        sh([*ip, "link", "set", "qb", "down"])
        sh([*ip, "link", "set", "qb", "up"])
        assert await until(lambda: _is(pending, set()))      # operstate UP: transmitting
    finally:
        r.close()


async def _is(f, want) -> bool:
    return await f() == want
