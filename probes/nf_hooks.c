/* forward and NAT: BPF_PROG_TYPE_NETFILTER programs attached with netfilter links at chosen
 * hooks and priorities (just before and just after DNAT at -100 and SNAT at 100, FORWARD before
 * the filter table). Everything is read through the context's BTF pointers at offsets from the
 * running kernel's BTF; the packet itself only with READ_PACKET (lockdown below
 * confidentiality), otherwise hops are matched by the skb's flow hash the tc probes set. */
#include "common.h"

struct nf_ctx { void *state; void *skb; };   /* struct bpf_nf_ctx: two pointers, uapi-stable */

struct nf_key {
    u64 cookie;
    u32 iif, oif;     /* bridged frames seen by br_netfilter come in and go out the bridge */
    u8 point, family, _pad[6];   /* family: the hook's, 4 or 6 */
};

BPF_PERCPU_HASH(nf_counts, struct nf_key, struct counter, 16384);
struct nf_fast { u64 k0, k1, k2; struct counter c; };   /* the nf_key's three words */
BPF_PERCPU_ARRAY(nf_fast, struct nf_fast, FAST_SLOTS);
BPF_ARRAY(last_seen, struct seen, SLOTS);
BPF_PERCPU_ARRAY(scratch, u64, 1);   /* read by drops.c (same compile unit) */

#ifdef READ_PACKET
struct nat_key { u64 cookie; u8 kind, family, _pad[6]; };   /* kind 1 DNAT, 2 SNAT */
BPF_PERCPU_HASH(nat_counts, struct nat_key, u64, 1024);
#ifdef TRACE   /* a trace shows the tuple before and after NAT: the one before, per skb */
struct nat_slot { u64 addr; struct tuple t; };
BPF_ARRAY(before_nat, struct nat_slot, SLOTS);    /* direct-mapped like last_seen */
#endif

static __always_inline void l4_bytes(u8 *b, u8 proto, struct tuple *t) {
    if (proto == IPPROTO_TCP || proto == IPPROTO_UDP) {
        t->sport = (b[0] << 8) | b[1]; t->dport = (b[2] << 8) | b[3];
        if (proto == IPPROTO_TCP) t->flags = b[13];
        if (t->family == 6) t->ipid = proto == IPPROTO_TCP ? (b[6] << 8) | b[7] : (b[8] << 8) | b[9];
    } else if (proto == IPPROTO_ICMP || proto == IPPROTO_ICMPV6) {
        t->flags = b[0]; t->sport = (b[4] << 8) | b[5]; t->dport = (b[6] << 8) | b[7];
        if (t->family == 6) t->ipid = t->dport;
    }
}

static __always_inline int read_tuple(void *skb, struct tuple *t) {
    unsigned char *head = LD(unsigned char *, skb, SKB_HEAD);
    u16 nh = LD(u16, skb, SKB_NETWORK_HEADER);
    /* one read for the usual header and the first bytes of L4 (a helper call is most of this
     * program's cost); more only for IPv4 options or IPv6 extension headers */
    union { struct { struct iphdr ip; u8 l4[36]; } v4; struct { struct ipv6hdr ip; u8 l4[16]; } v6; } h;
    if (bpf_probe_read_kernel(&h, sizeof(h), head + nh)) {
        if (bpf_probe_read_kernel(&h.v4.ip, sizeof(h.v4.ip), head + nh)) return 0;
        __builtin_memset(h.v4.l4, 0, sizeof(h.v4.l4));
    }
    if (h.v4.ip.version == 4) {
        t->family = 4; t->saddr[0] = h.v4.ip.saddr; t->daddr[0] = h.v4.ip.daddr; t->proto = h.v4.ip.protocol;
        t->ipid = ntohs(h.v4.ip.id); t->tot_len = ntohs(h.v4.ip.tot_len);
        if (h.v4.ip.ihl != 5 && bpf_probe_read_kernel(h.v4.l4, 14, head + nh + h.v4.ip.ihl * 4)) return 1;
        l4_bytes(h.v4.l4, t->proto, t);
        return 1;
    }
    if (h.v4.ip.version != 6) return 0;
    t->family = 6;
    __builtin_memcpy(t->saddr, &h.v6.ip.saddr, 16); __builtin_memcpy(t->daddr, &h.v6.ip.daddr, 16);
    t->tot_len = ntohs(h.v6.ip.payload_len);
    u8 proto = h.v6.ip.nexthdr;
    u32 off = nh + sizeof(struct ipv6hdr);
#pragma unroll
    for (int i = 0; i < 2; i++) {   /* extension headers, rare in a lab: a read each */
        if (!ipv6_ext(proto)) break;
        u8 eh[2];
        if (bpf_probe_read_kernel(eh, 2, head + off)) return 1;
        off += proto == IPPROTO_FRAGMENT ? 8 : (eh[1] + 1) * 8;
        proto = eh[0];
    }
    t->proto = proto;
    if (off != nh + sizeof(struct ipv6hdr) && bpf_probe_read_kernel(h.v6.l4, 16, head + off)) return 1;
    l4_bytes(h.v6.l4, proto, t);
    return 1;
}

#if !defined(TRACE) && defined(SKB_NFCT)
#define IPS_SRC_NAT 0x10    /* include/uapi/linux/netfilter/nf_conntrack_common.h */
#define IPS_DST_NAT 0x20
/* A NAT translation, counted from conntrack's own record of the binding, just after the NAT
 * hook: at PREROUTING/OUTPUT NAT rewrites destinations, at POSTROUTING/INPUT sources; on a
 * reply the roles swap (a masqueraded reply gets its destination back). The kernel sets
 * IPS_SRC_NAT/IPS_DST_NAT only for a binding that changes the tuple, and rewrites a packet
 * exactly when its direction's bit is set (nf_nat_packet): the same count as comparing the
 * tuples before and after, without a probe before NAT. */
static __always_inline void nat_count(void *skb, u8 hook, u64 cookie, u8 family) {
    unsigned long nfct = LD(unsigned long, skb, SKB_NFCT);
    u32 ctinfo = nfct & 7;                       /* NFCT_INFOMASK */
    void *ct = (void *)(nfct & ~7UL);
    if (!ct || ctinfo == 7) return;              /* no conntrack entry, or IP_CT_UNTRACKED */
    unsigned long status = 0;
    if (bpf_probe_read_kernel(&status, sizeof(status), ct + CT_STATUS)) return;
    int dst_hook = hook == 0 || hook == 3;       /* NF_INET_PRE_ROUTING, NF_INET_LOCAL_OUT */
    int reply = ctinfo >= 3;                     /* IP_CT_IS_REPLY and after */
    if (!(status & ((dst_hook ^ reply) ? IPS_DST_NAT : IPS_SRC_NAT))) return;
    struct nat_key nk = {.cookie = cookie, .kind = dst_hook ? 1 : 2, .family = family};
    u64 z = 0, *n = nat_counts.lookup_or_try_init(&nk, &z);
    if (n) (*n)++;
}
#endif

#ifdef TRACE
static __always_inline int same_ends(struct tuple *a, struct tuple *b, int dst) {
    u32 *x = dst ? a->daddr : a->saddr, *y = dst ? b->daddr : b->saddr;
    return x[0] == y[0] && x[1] == y[1] && x[2] == y[2] && x[3] == y[3]
        && (dst ? a->dport == b->dport : a->sport == b->sport);
}
#endif
#endif

#ifdef TRACE
#ifndef HAVE_TC   /* compiled alone: match on tuples read here, if we may read */
BPF_TABLE("lru_hash", u32, u8, flows, 65536);
BPF_TABLE("lru_hash", struct tuple, u8, want, 65536);
#endif
BPF_RINGBUF_OUTPUT(nf_events, RING_PAGES);
BPF_PERCPU_ARRAY(nf_lost, u64, 1);
#endif

static __always_inline int nf_point(struct nf_ctx *ctx, u8 pt, u8 nat_edge) {
    void *skb = ctx->skb, *state = ctx->state;
    void *net = LD(void *, state, ST_NET);
    void *in = LD(void *, state, ST_IN), *out = LD(void *, state, ST_OUT);
    u8 hook = LD(u8, state, ST_HOOK);
    u8 family = LD(u8, state, ST_PF) == 10 ? 6 : 4;   /* NFPROTO_IPV6 : NFPROTO_IPV4 */
    u64 cookie = net ? LD(u64, net, NET_COOKIE) : 0;
    u32 iif = in ? LD(u32, in, DEV_IFINDEX) : 0, oif = out ? LD(u32, out, DEV_IFINDEX) : 0;
    u32 len = LD(u32, skb, SKB_LEN), hash = LD(u32, skb, SKB_HASH);
    /* the interface a reader expects: where it came in before routing, where it goes after */
    struct nf_key k = {.cookie = cookie, .iif = iif, .oif = oif, .point = pt, .family = family};
    u64 k0 = cookie, k1 = *(u64 *)&k.iif, k2 = pt | ((u64)family << 8);
    u32 fs = fast_slot(k0 ^ k2, k1);
    struct nf_fast *f = nf_fast.lookup(&fs);
    if (f && f->k0 == 0) { f->k0 = k0; f->k1 = k1; f->k2 = k2; }
    if (f && f->k0 == k0 && f->k1 == k1 && f->k2 == k2) {
        f->c.packets++; f->c.bytes += len;
    } else {
        struct counter zero = {}, *c = nf_counts.lookup_or_try_init(&k, &zero);
        if (c) { c->packets++; c->bytes += len; }
    }
    /* the verifier forbids arithmetic on the skb pointer; a round trip through a map value turns
     * it into the plain number the drop tracepoint also sees (skbaddr) */
    u32 z0 = 0;
    u64 *scr = scratch.lookup(&z0);
    if (!scr) return 1;
    *scr = (u64)skb;
    u64 addr = *(volatile u64 *)scr;
    u32 slot = SLOT(addr);
    struct seen s = {.addr = addr, .ts = NOW(), .cookie = cookie, .ifindex = (hook == 0 || hook == 1) ? iif : oif, .hash = hash, .point = pt};
#ifdef TRACE
    s.traced = hash && flows.lookup(&hash);
#endif
#if defined(READ_PACKET) && !defined(TRACE)
    /* the metrics probes sit after NAT only (points.py METRICS_NF): the tuple for drop samples
     * is read there, and NAT is counted from conntrack. After SNAT the tuple stays the one read
     * after DNAT for the same skb: what a drop sample names is the container, not the uplink. */
    struct tuple t = {};
    int has = 0;
    struct seen *sp = last_seen.lookup(&slot);
    if (nat_edge == 2) {
        if (pt == 8 && sp && sp->addr == addr && sp->cookie == cookie && sp->has_tuple) {
            t = sp->t; has = 1;
        } else {
            has = read_tuple(skb, &t);
        }
#ifdef SKB_NFCT
        nat_count(skb, hook, cookie, family);
#endif
    }
#elif defined(READ_PACKET)
    struct tuple t = {};
    int has = 0;
    struct seen *sp = last_seen.lookup(&slot);
    if (pt == 7 && sp && sp->addr == addr && sp->cookie == cookie && sp->has_tuple) {
        /* before SNAT the tuple is the one read a hop earlier in this namespace (after DNAT, or
         * at OUTPUT): routing and the filter table do not rewrite it */
        t = sp->t; has = 1;
    } else {
        has = read_tuple(skb, &t);
    }
    struct nat_slot *ns = has && nat_edge ? before_nat.lookup(&slot) : 0;
    if (ns && nat_edge == 1) {
        ns->addr = addr; ns->t = t;
    } else if (ns && nat_edge == 2 && ns->addr == addr) {
        struct tuple *b = &ns->t;
        int src_same = same_ends(b, &t, 0), dst_same = same_ends(b, &t, 1);
        if (!src_same || !dst_same) {
            struct nat_key nk = {.cookie = cookie, .kind = !dst_same ? 1 : 2, .family = family};
            u64 z = 0, *n = nat_counts.lookup_or_try_init(&nk, &z);
            if (n) (*n)++;
        }
        ns->addr = 0;
    }
#ifdef TRACE
    if (!s.traced && has) {
        struct tuple key = t;
        key.flags = 0; key.ipid = 0; key.tot_len = 0;
        if (key.proto == IPPROTO_ICMP || key.proto == IPPROTO_ICMPV6) key.dport = 0;
        s.traced = want.lookup(&key) != 0 || filter_match(&t);
    }
#endif
#else
    struct seen *sp = last_seen.lookup(&slot);
#endif
    if (sp) {
#if defined(READ_PACKET)
        if (has) { s.t = t; s.has_tuple = 1; }
        else
#endif
        if (sp->addr == addr) { s.t = sp->t; s.has_tuple = sp->has_tuple; }
        *sp = s;
    }
#ifdef TRACE
    if (!s.traced) return 1;
    struct event *e = nf_events.ringbuf_reserve(sizeof(struct event));
    if (!e) { { u32 z0 = 0; u64 *l0 = nf_lost.lookup(&z0); if (l0) (*l0)++; }; return 1; }
    __builtin_memset(e, 0, sizeof(*e));
    e->ts = s.ts; e->cookie = cookie; e->skb = addr; e->hash = hash; e->ifindex = iif; e->ifindex2 = oif;
    e->len = len; e->kind = K_NF; e->point = pt;
#ifdef READ_PACKET
    e->has_tuple = has; e->t = t;
#endif
    nf_events.ringbuf_submit(e, 0);
#endif
    return 1;   /* NF_ACCEPT: observe only */
}

/* one function per attachment point (the context does not say the priority); the table of
 * points is orchestrator/probes/points.py */
#define POINT(n, edge) int nf_p##n(struct nf_ctx *ctx) { return nf_point(ctx, n, edge); }
POINT(0, 0) POINT(1, 1) POINT(2, 2) POINT(3, 0) POINT(5, 1) POINT(6, 2) POINT(7, 1) POINT(8, 2)
/* a container's namespace has no NAT of ours: the same points without reading the packet */
int nf_c1(struct nf_ctx *ctx) { return nf_point(ctx, 1, 0); }
int nf_c5(struct nf_ctx *ctx) { return nf_point(ctx, 5, 0); }
