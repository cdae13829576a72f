"""Assembling probe events into packet paths: pure, no kernel."""

import socket
import struct

from orchestrator.probes import btf, events
from orchestrator.probes.points import nf_hook
from orchestrator.probes.events import K_DROP, K_NF, K_TC, Assembler, Event


def a(s: str) -> list[int]:
    if ":" in s:
        return list(struct.unpack("<4I", socket.inet_pton(socket.AF_INET6, s)))
    return [struct.unpack("<I", socket.inet_aton(s))[0], 0, 0, 0]


NAMES = {(1, 2): ("container1", "eth1"), (2, 4): ("host", "veth1"), (2, 3): ("host", "br0"),
         (2, 5): ("host", "ens33"), (3, 2): ("gateway", "eth0")}


def names(cookie, ifindex):
    return NAMES.get((cookie, ifindex), ("?", f"if{ifindex}"))


def ev(ts, kind, cookie, ifindex, point, src=None, dst=None, ipid=7, hash_=0xABC, skb=0, ifindex2=0, reason=0):
    e = Event(ts=ts, kind=kind, cookie=cookie, ifindex=ifindex, ifindex2=ifindex2, point=point, hash=hash_, skb=skb,
              reason=reason)
    if src:
        e.has_tuple = 1
        v6 = ":" in src
        e.t.saddr[:], e.t.daddr[:] = a(src), a(dst)
        e.t.ipid, e.t.tot_len = ipid, 84
        e.t.proto, e.t.flags = (58, 128) if v6 else (1, 8)   # echo requests
        e.t.family = 6 if v6 else 4
        e.t.sport = 99
    return e


def masqueraded_request(with_nf_tuples: bool):
    c1, gw = ("172.168.1.11", "192.168.0.2"), ("192.168.0.10", "192.168.0.2")
    t = (lambda *x: x) if with_nf_tuples else (lambda *x: ())
    return [
        ev(1000, K_TC, 1, 2, 1, *c1),
        ev(2000, K_TC, 2, 4, 0, *c1),
        ev(3000, K_NF, 2, 3, 1, *t(*c1), skb=0x10),          # prerouting in=br0
        ev(4000, K_NF, 2, 3, 0, *t(*c1), skb=0x10, ifindex2=5),  # forward br0 -> ens33
        ev(5000, K_NF, 2, 5, 7, *t(*c1), skb=0x10),          # postrouting
        ev(6000, K_NF, 2, 5, 8, *t(*gw), skb=0x10),          # snat
        ev(7000, K_TC, 2, 5, 1, *gw),
        ev(9000, K_TC, 3, 2, 0, *gw),
    ]


def test_masquerade_rewrite_is_shown_at_the_snat_hop_with_or_without_nf_tuples():
    for with_tuples in (True, False):
        asm = Assembler(names, ports={"veth1"})
        for e in masqueraded_request(with_tuples):
            asm.feed(e)
        (pk,) = asm.finished(None, everything=True)
        d = pk.as_dict()
        hooks = [(h["node"], h["hook"]) for h in d["hops"]]
        assert hooks == [("container1", "tc_egress"), ("host", "tc_ingress"), ("host", "prerouting"),
                         ("host", "forward"), ("host", "postrouting"), ("host", "snat"), ("host", "tc_egress"),
                         ("gateway", "tc_ingress")]
        snat = d["hops"][5]
        assert snat["rewrite"] == "source 172.168.1.11 → 192.168.0.10"
        assert snat.get("tuple_inferred", False) is (not with_tuples)
        assert d["hops"][3]["out_interface"] == "ens33"
        assert d["path"] == "forwarded" and d["hops"][1]["delta_us"] == 1.0


def test_nat66_rewrite_and_ipv6_rendering():
    c1, gw = ("fd00:172:168:1::11", "2001:db8::2"), ("fd00:192:168::10", "2001:db8::2")
    asm = Assembler(names, ports={"veth1"})
    for e in (ev(1000, K_TC, 1, 2, 1, *c1), ev(2000, K_TC, 2, 4, 0, *c1),
              ev(5000, K_NF, 2, 5, 7, *c1, skb=0x10),            # postrouting, before SNAT
              ev(5500, K_NF, 2, 5, 8, skb=0x10),                 # snat, no tuple: inferred
              ev(6000, K_TC, 2, 5, 1, *gw), ev(7000, K_TC, 3, 2, 0, *gw)):
        asm.feed(e)
    (pk,) = asm.finished(None, everything=True)
    d = pk.as_dict()
    assert d["tuple"]["family"] == "ipv6" and "ip_id" not in d["tuple"]
    assert d["tuple"]["icmp"] == "echo-request" and d["tuple"]["src"] == "fd00:172:168:1::11"
    snat = next(h for h in d["hops"] if h["hook"] == "snat")
    assert snat["rewrite"] == "source fd00:172:168:1::11 → fd00:192:168::10"
    assert events.render(pk, 1).startswith("#1 icmpv6 fd00:172:168:1::11 → 2001:db8::2 echo-request")
    t = events.Tuple()
    t.saddr[:], t.daddr[:] = a("fd00::1"), a("fd00::2")
    t.proto, t.sport, t.dport, t.family = 6, 40000, 80, 6
    assert events._ep(events.tuple_dict(t), "dst", "dport") == "[fd00::2]:80"


def test_set_filter_takes_either_family():
    from orchestrator.probes.loader import TraceFilter
    flt = TraceFilter()
    events.set_filter(flt, "172.168.1.11")
    events.set_filter(flt, "fd00:172:168:1::/64")
    assert flt.mask == 0xFFFFFFFF and str(flt.net6) == "fd00:172:168:1::/64"
    words, masks = events.parse_net6("fd00:172:168:1::/64")
    assert masks == [0xFFFFFFFF, 0xFFFFFFFF, 0, 0] and words[0] == struct.unpack("<I", bytes.fromhex("fd000172"))[0]


def test_drop_joins_the_packet_it_belongs_to():
    asm = Assembler(names, ports=set(), reason_names={5: "NETFILTER_DROP"}, symbolize=lambda x: "nft_do_chain+0x1")
    for e in masqueraded_request(True)[:4]:
        asm.feed(e)
    asm.feed(ev(4500, K_DROP, 2, 3, 0, skb=0x10, reason=5))
    (pk,) = asm.finished(None, everything=True)
    assert pk.hops[-1].reason == "NETFILTER_DROP"
    assert pk.verdict() == "dropped at host forward: NETFILTER_DROP in nft_do_chain+0x1"


def test_a_quiet_packet_is_finished_and_a_busy_one_is_not():
    asm = Assembler(names, ports=set())
    asm.feed(ev(1000, K_TC, 1, 2, 1, "172.168.1.11", "192.168.0.2"))
    assert asm.finished(1000 + Assembler.QUIET_NS - 1) == []
    assert len(asm.finished(1000 + Assembler.QUIET_NS + 1)) == 1


def test_bridged_frames_are_told_from_routed_ones():
    ports = {"veth1", "veth2"}
    assert nf_hook(0, "br0", "br0", ports)[0] == "bridge_forward"   # br_netfilter: in == out == bridge
    assert nf_hook(0, "br0", "ens33", ports)[0] == "forward"
    assert nf_hook(1, "veth1", "", ports) == ("bridge_prerouting", "veth1", "in")
    assert nf_hook(8, "br0", "ens33", ports) == ("snat", "ens33", "out")


def test_btf_offsets_of_the_running_kernel():
    b = btf.kernel()
    off, size = b.member("sk_buff", "len")
    assert size == 4 and 0 < off < 512
    assert b.member("nf_hook_state", "hook") == (0, 1)
    assert "SKB_DROP_REASON_NETFILTER_DROP" in b.enum("skb_drop_reason")


def test_neighbour_discovery_is_never_a_drop():
    from orchestrator.probes.reasons import is_loss
    assert not is_loss("IPV6_NDISC_NS_OTHERHOST") and not is_loss("IPV6_NDISC_HOP_LIMIT")
    assert is_loss("IPV6DISABLED") and is_loss("NETFILTER_DROP") and not is_loss("NO_SOCKET")


def test_a_protocol_without_a_decoder_is_named_from_the_systems_table(tmp_path):
    # a drop sample of IGMP (2) once took the drop report down: Python has no getprotobynumber
    table = tmp_path / "protocols"
    table.write_text("# comment\nigmp\t2\tIGMP\t# internet group management\ngre 47 GRE\n")
    assert events.proto_name(2, str(table)) == "igmp"
    assert events.proto_name(47, str(table)) == "gre"
    assert events.proto_name(6, str(table)) == "tcp"
    assert events.proto_name(200, str(table)) == "protocol 200"
    assert events.proto_name(2, str(tmp_path / "missing")) == "protocol 2"
    t = events.Tuple(proto=2, family=4)
    assert events.tuple_dict(t)["proto"] in ("igmp", "protocol 2")
