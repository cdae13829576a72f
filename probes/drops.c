/* drops: skb:kfree_skb, with the kernel's own reason code; attributed to the lab node and hook
 * where the netfilter probes saw the skb last (no entry: not lab traffic, not counted by node).
 * The tracepoint's fields come from its tracefs format at compile time. */
#include "common.h"

/* the tracepoint's format names this enum; its values come from the running kernel (BTF and the
 * format's print fmt), so a complete placeholder of the right size is all the compiler needs */
enum skb_drop_reason { BRIDGELAB_REASON_PLACEHOLDER = 0 };

struct drop_key {
    u64 cookie;
    u32 reason;
    u8 point, family, _pad[2];
};

BPF_PERCPU_HASH(drop_counts, struct drop_key, u64, 4096);
BPF_PERCPU_ARRAY(drop_unattributed, u64, 1);
BPF_HASH(drop_samples, struct drop_key, struct tuple, 1024);   /* the last dropped packet's tuple, per key */
#ifdef TRACE
BPF_RINGBUF_OUTPUT(drop_events, RING_PAGES);
BPF_PERCPU_ARRAY(drop_lost, u64, 1);
#endif

TRACEPOINT_PROBE(skb, kfree_skb) {
    u32 reason = args->reason;
    if (reason <= SKB_CONSUMED_MAX) return 0;    /* not a drop */
    /* the netfilter probes see IP only: anything else at a reused skb address is not ours */
    u16 proto = args->protocol;                 /* the tracepoint stores it in host order */
    if (proto != ETH_P_IP && proto != ETH_P_IPV6) return 0;
    u64 addr = (u64)args->skbaddr;
#ifdef MC_INPUT_START   /* reasons.py MCAST_NOT_JOINED: a flooded multicast this node never joined */
    u64 loc = (u64)args->location;
    if (proto == ETH_P_IPV6 && reason == REASON_NOT_SPECIFIED && loc >= MC_INPUT_START && loc < MC_INPUT_END)
        reason = R_MCAST_NOT_JOINED;
#if defined(RCV4_START) && defined(READ_PACKET)
    /* IPv4's: routing refused a multicast destination (reasons.py); that function frees other
     * packets too, so only for a multicast destination (224.0.0.0/4), read from the IP header */
    if (proto == ETH_P_IP && reason == REASON_NOT_SPECIFIED && loc >= RCV4_START && loc < RCV4_END) {
        unsigned char *head = 0;
        u16 nh = 0;
        u32 daddr = 0;
        bpf_probe_read_kernel(&head, sizeof(head), (void *)addr + SKB_HEAD);
        bpf_probe_read_kernel(&nh, sizeof(nh), (void *)addr + SKB_NETWORK_HEADER);
        if (head && !bpf_probe_read_kernel(&daddr, 4, head + nh + 16) && (daddr & 0xf0) == 0xe0)
            reason = R_MCAST_NOT_JOINED;
    }
#endif
#endif
#ifdef HAVE_NF
    u32 slot = SLOT(addr);
    struct seen *s = last_seen.lookup(&slot);
    u64 now = NOW();
    if (!s || s->addr != addr || now - s->ts > ATTRIBUTION) {
        u32 z = 0; u64 *u = drop_unattributed.lookup(&z);
        if (u) (*u)++;
        return 0;
    }
    struct drop_key k = {.cookie = s->cookie, .reason = reason, .point = s->point,
                         .family = proto == ETH_P_IPV6 ? 6 : 4};
    u64 z = 0, *n = drop_counts.lookup_or_try_init(&k, &z);
    if (n) (*n)++;
    if (s->has_tuple) drop_samples.update(&k, &s->t);
#ifdef TRACE
    if (s->traced) {
        struct event *e = drop_events.ringbuf_reserve(sizeof(struct event));
        if (!e) { { u32 z0 = 0; u64 *l0 = drop_lost.lookup(&z0); if (l0) (*l0)++; }; }
        else {
            __builtin_memset(e, 0, sizeof(*e));
            e->ts = now; e->cookie = s->cookie; e->skb = addr; e->hash = s->hash; e->ifindex = s->ifindex;
            e->kind = K_DROP; e->point = s->point; e->reason = reason; e->location = (u64)args->location;
            drop_events.ringbuf_submit(e, 0);
        }
    }
#endif
    s->addr = 0;
#else
    u32 z = 0; u64 *u = drop_unattributed.lookup(&z);
    if (u) (*u)++;
#endif
    return 0;
}
