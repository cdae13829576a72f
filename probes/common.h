/* Shared by every probe family. Kernel struct layouts never come from a headers tree: the
 * offsets used with LD() are -D macros computed from the running kernel's BTF
 * (orchestrator/probes/btf.py). Only uapi headers are included. */
#ifndef BRIDGELAB_COMMON_H
#define BRIDGELAB_COMMON_H
#include <uapi/linux/bpf.h>
#include <uapi/linux/if_ether.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/in.h>
#include <uapi/linux/tcp.h>
#include <uapi/linux/udp.h>
#include <uapi/linux/icmp.h>
#include <uapi/linux/ipv6.h>
#include <uapi/linux/icmpv6.h>

/* a load through a BTF pointer the verifier tracks (PTR_TO_BTF_ID): no probe_read needed,
 * so it works under lockdown=confidentiality */
#define LD(T, p, off) (*(T *)((char *)(p) + (off)))

enum kind { K_TC = 1, K_NF = 2, K_DROP = 3 };

/* addresses in network order; IPv4 in saddr[0]/daddr[0], the rest zero */
struct tuple {
    u32 saddr[4], daddr[4];
    u16 sport, dport;   /* icmp: echo id, seq */
    u8 proto, flags;    /* tcp flags or icmp type */
    u16 ipid, tot_len;  /* with the protocol, what tells one packet from another along its path:
                         * IPv4's id and total length; IPv6 has no id: its payload length and
                         * what NAT leaves alone (TCP's sequence, ICMPv6's echo sequence, UDP's
                         * first payload bytes), low 16 bits */
    u8 family;          /* 4, 6 */
    u8 _pad[3];         /* explicit: the struct is a hash key, no uninitialised padding */
};

#define IPV6_EXT_MAX 4   /* extension headers walked to the transport header (hop-by-hop, routing,
                          * destination options, fragment): more than this in a lab is not ours */
static __always_inline int ipv6_ext(u8 nh) {
    return nh == IPPROTO_HOPOPTS || nh == IPPROTO_ROUTING || nh == IPPROTO_DSTOPTS || nh == IPPROTO_FRAGMENT;
}

struct event {
    u64 ts, cookie, skb, location;
    u32 hash, ifindex, ifindex2, len, reason;
    u8 kind, point, has_tuple, _pad;
    struct tuple t;
};

struct counter { u64 packets, bytes; };

/* what the drop probe needs to attribute a freed skb: where we saw it last. Kept in a
 * direct-mapped array indexed by the skb's address (the address is the tag): a plain store per
 * hop, where an LRU hash update would cost several times more on every packet. A collision only
 * costs the attribution of one drop, which is then counted as unattributed. */
struct seen {
    u64 addr, ts, cookie;
    u32 ifindex, hash;
    u8 point, traced, has_tuple, _pad[5];
    struct tuple t;     /* the last tuple read for this skb (a sample for `bridgelab drops`) */
};
/* One clock for both sides of the drop attribution's comparison, and tracepoint programs may not
 * use the coarse one. A trace needs nanoseconds for its deltas; the metrics probes only need to
 * know "seen in the last 200 ms", and jiffies (a load the JIT inlines) cost ~20 ns less per run
 * than bpf_ktime_get_ns. ATTRIBUTION is in the same unit (loader.py). */
#ifdef TRACE
#define NOW() bpf_ktime_get_ns()
#else
#define NOW() bpf_jiffies64()
#endif
/* Counters: a per-CPU direct-mapped array in front of the per-CPU hash. A packet whose key owns
 * its slot on this CPU (or finds it free and claims it) is counted there with two adds; only a
 * key whose slot another key holds pays the hash lookup (~40 ns of a ~100 ns budget). A count
 * lives in exactly one place and never moves, so a reader summing both sees it rise, never fall;
 * slots of vanished devices are freed by the collector's fold. */
#ifndef FAST_BITS
#define FAST_BITS 11
#endif
#define FAST_SLOTS (1 << FAST_BITS)
static __always_inline u32 fast_slot(u64 a, u64 b) {
    u64 h = (a ^ (b * 0x9E3779B97F4A7C15ULL)) * 0xBF58476D1CE4E5B9ULL;
    return (u32)(h >> (64 - FAST_BITS));
}
#define SLOTS 65536
#define SLOT(a) ((u32)(((a) >> 8) ^ ((a) >> 24)) & (SLOTS - 1))


#ifdef TRACE
/* the trace's filter, compiled in (-D F_*): protocol, one host or net, one port */
static __always_inline int filter_match(struct tuple *t) {
#ifndef F_NDP   /* neighbour discovery is IPv6's ARP: left out unless asked for (--ndp) */
    if (t->proto == IPPROTO_ICMPV6 && t->flags >= 133 && t->flags <= 137) return 0;
#endif
#if F_PROTO   /* icmp means either family's */
    if (t->proto != F_PROTO && !(F_PROTO == IPPROTO_ICMP && t->proto == IPPROTO_ICMPV6)) return 0;
#endif
#if F_NET_MASK || defined(F6_MASK0)
    /* a host or net of either family (a dual-stack node is both): the packet's ends in one */
    int in = 0;
#if F_NET_MASK
    if (t->family == 4 && ((t->saddr[0] & F_NET_MASK) == F_NET || (t->daddr[0] & F_NET_MASK) == F_NET)) in = 1;
#endif
#ifdef F6_MASK0
    if (t->family == 6) {
        int s_in = (t->saddr[0] & F6_MASK0) == F6_NET0 && (t->saddr[1] & F6_MASK1) == F6_NET1
            && (t->saddr[2] & F6_MASK2) == F6_NET2 && (t->saddr[3] & F6_MASK3) == F6_NET3;
        int d_in = (t->daddr[0] & F6_MASK0) == F6_NET0 && (t->daddr[1] & F6_MASK1) == F6_NET1
            && (t->daddr[2] & F6_MASK2) == F6_NET2 && (t->daddr[3] & F6_MASK3) == F6_NET3;
        if (s_in || d_in) in = 1;
    }
#endif
    if (!in) return 0;
#endif
#if F_PORT
    if (t->proto != IPPROTO_ICMP && t->proto != IPPROTO_ICMPV6 && t->sport != F_PORT && t->dport != F_PORT) return 0;
#endif
    return 1;
}
#endif
#endif /* BRIDGELAB_COMMON_H */
