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

/* a load through a BTF pointer the verifier tracks (PTR_TO_BTF_ID): no probe_read needed,
 * so it works under lockdown=confidentiality */
#define LD(T, p, off) (*(T *)((char *)(p) + (off)))

enum kind { K_TC = 1, K_NF = 2, K_DROP = 3 };

struct tuple {
    u32 saddr, daddr;
    u16 sport, dport;   /* icmp: echo id, seq */
    u8 proto, flags;    /* tcp flags or icmp type */
    u16 ipid, tot_len;  /* with the protocol, what tells one packet from another along its path */
    u16 _pad;           /* explicit: the struct is a hash key, no uninitialised padding */
};

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
#if F_PROTO
    if (t->proto != F_PROTO) return 0;
#endif
#if F_NET_MASK
    if ((t->saddr & F_NET_MASK) != F_NET && (t->daddr & F_NET_MASK) != F_NET) return 0;
#endif
#if F_PORT
    if (t->proto != IPPROTO_ICMP && t->sport != F_PORT && t->dport != F_PORT) return 0;
#endif
    return 1;
}
#endif
#endif /* BRIDGELAB_COMMON_H */
