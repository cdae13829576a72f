"""The netlink request window (issue #11: a 1000-container `up` hung forever once replies were
lost): requests in flight are bounded, a silent or failed socket is retried on a fresh one with
half the window, and a request never answered at all fails with a clear error, never a hang.
Pure asyncio with a stand-in for the socket; no kernel."""

import asyncio
import errno

import pytest

from orchestrator.adapters import rtnl


class FakeRtnl(rtnl.Rtnl):
    def __init__(self):
        super().__init__()
        self.opened = 0

    def handle(self, ns):
        h = self._handles.get(ns)
        if h is None:
            self.opened += 1
            h = self._handles[ns] = type("H", (), {"close": lambda self: None})()
        return h


def test_at_most_the_window_is_in_flight():
    r = FakeRtnl()
    state = {"now": 0, "max": 0}

    async def req(h, attempt):
        state["now"] += 1
        state["max"] = max(state["max"], state["now"])
        await asyncio.sleep(0.001)
        state["now"] -= 1
        return 1

    async def go():
        return await asyncio.gather(*(r.call("ns", "x", req) for _ in range(500)))
    assert sum(asyncio.run(go())) == 500
    assert state["max"] == rtnl.WINDOW


def test_a_lost_reply_is_retried_on_a_fresh_socket_with_half_the_window(monkeypatch):
    monkeypatch.setattr(rtnl, "TIMEOUT", 0.05)
    r = FakeRtnl()
    tries = []

    async def req(h, attempt):
        tries.append(attempt)
        if attempt == 0:
            await asyncio.sleep(1)  # the reply never comes
        if attempt == 1:
            raise OSError(errno.ENOBUFS, "No buffer space available")  # the socket overran
        return "ok"
    assert asyncio.run(r.call("ns", "x", req)) == "ok"
    assert tries == [0, 1, 2] and r.lost == 2 and r.opened == 3
    assert r._sizes["ns"] == rtnl.WINDOW // 4


def test_a_request_never_answered_fails_clearly(monkeypatch):
    monkeypatch.setattr(rtnl, "TIMEOUT", 0.01)
    r = FakeRtnl()

    async def req(h, attempt):
        await asyncio.sleep(1)
    with pytest.raises(rtnl.NetlinkLost, match="no reply after 5 tries"):
        asyncio.run(r.call("bl-x-c1", "create veth1", req))


def test_the_kernels_answer_is_not_retried():
    from pyroute2.netlink.exceptions import NetlinkError
    r = FakeRtnl()
    tries = []

    async def req(h, attempt):
        tries.append(attempt)
        raise NetlinkError(17, "File exists")
    with pytest.raises(NetlinkError):
        asyncio.run(r.call("ns", "x", req))
    assert tries == [0]
