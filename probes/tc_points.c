/* veth, bridge and uplink: SCHED_CLS programs attached with tcx links (ingress and egress) to
 * every interface the lab owns, in every namespace of the lab. Direct packet access only. */
#include "common.h"
#include <uapi/linux/pkt_cls.h>

struct tc_key {
    u64 cookie;
    u32 ifindex;
    u8 dir, proto, family, ndp;   /* family 4, 6; 0 not IP. ndp: ICMPv6 neighbour discovery
                                   * (types 133-137), counted apart from ping and errors */
};

BPF_PERCPU_HASH(tc_counts, struct tc_key, struct counter, 16384);
struct tc_fast { u64 k0, k1; struct counter c; };    /* k0, k1: the tc_key's two words */
BPF_PERCPU_ARRAY(tc_fast, struct tc_fast, FAST_SLOTS);

#ifdef TRACE
/* shared with the netfilter probes when compiled together (one compile unit, see loader.py) */
BPF_TABLE("lru_hash", u32, u8, flows, 65536);            /* flow hashes of matching packets */
BPF_TABLE("lru_hash", struct tuple, u8, want, 65536);    /* tuples of flows we follow, both ways */
BPF_RINGBUF_OUTPUT(tc_events, RING_PAGES);
BPF_PERCPU_ARRAY(tc_lost, u64, 1);
#endif

/* IPv6's transport protocol and where its header starts: past the extension headers, a few
 * at most (IPV6_EXT_MAX), each read where the packet is (direct access) */
static __always_inline void *ipv6_l4(struct ipv6hdr *ip6, void *end, u8 *proto) {
    u8 nh = ip6->nexthdr;
    void *p = (void *)(ip6 + 1);
#pragma unroll
    for (int i = 0; i < IPV6_EXT_MAX; i++) {
        if (!ipv6_ext(nh)) break;
        u8 *h = p;
        if ((void *)(h + 2) > end) { *proto = nh; return 0; }
        p += nh == IPPROTO_FRAGMENT ? 8 : (h[1] + 1) * 8;
        nh = h[0];
    }
    *proto = nh;
    return p;
}

#ifndef TRACE
/* the metrics need the protocol only: no addresses, no ports */
static __always_inline int is_ndp(void *l4, void *end, u8 proto) {
    if (proto != IPPROTO_ICMPV6 || !l4 || l4 + 1 > end) return 0;
    u8 type = *(u8 *)l4;
    return type >= 133 && type <= 137;
}

static __always_inline int classify(struct __sk_buff *skb, u8 *proto, u8 *ndp) {
    void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > end) return 0;
    if (eth->h_proto == htons(ETH_P_IP)) {
        struct iphdr *ip = (void *)(eth + 1);
        if ((void *)(ip + 1) > end) return 0;
        *proto = ip->protocol;
        return 4;
    }
    if (eth->h_proto == htons(ETH_P_IPV6)) {
        struct ipv6hdr *ip6 = (void *)(eth + 1);
        if ((void *)(ip6 + 1) > end) return 0;
        void *l4 = ipv6_l4(ip6, end, proto);
        *ndp = is_ndp(l4, end, *proto);
        return 6;
    }
    return 0;
}
#endif

static __always_inline void ports(void *l4, void *end, u8 proto, struct tuple *t) {
    if (!l4) return;
    if (proto == IPPROTO_TCP) {
        struct tcphdr *th = l4;
        if ((void *)(th + 1) > end) return;
        t->sport = ntohs(th->source); t->dport = ntohs(th->dest);
        t->flags = ((u8 *)th)[13];
        if (t->family == 6) t->ipid = ntohl(th->seq) & 0xffff;
    } else if (proto == IPPROTO_UDP) {
        struct udphdr *uh = l4;
        if ((void *)(uh + 1) > end) return;
        t->sport = ntohs(uh->source); t->dport = ntohs(uh->dest);
        u8 *pl = (void *)(uh + 1);
        if (t->family == 6 && (void *)(pl + 2) <= end) t->ipid = (pl[0] << 8) | pl[1];
    } else if (proto == IPPROTO_ICMP || proto == IPPROTO_ICMPV6) {
        struct icmphdr *ih = l4;   /* the same first 8 bytes in ICMPv6: type, code, csum, id, seq */
        if ((void *)(ih + 1) > end) return;
        t->flags = ih->type;
        t->sport = ntohs(ih->un.echo.id); t->dport = ntohs(ih->un.echo.sequence);
        if (t->family == 6) t->ipid = t->dport;
    }
}

#ifdef TRACE
#define VXLAN_PORT 4789
struct encap { u32 vni, outer_src, outer_dst; };

/* A lab across hosts (issue #15): an IPv4 VXLAN packet on the underlay is the packet it carries,
 * one hop of its path, with the encapsulation said (VNI, the hosts' addresses). */
static __always_inline int vxlan_inner(void *l4, void *end, struct tuple *t, struct encap *x) {
    u8 *vx = l4 + sizeof(struct udphdr);
    if ((void *)(vx + 8) > end || !(vx[0] & 0x08)) return 0;   /* the I flag: a VNI follows */
    struct ethhdr *ie = (void *)(vx + 8);
    if ((void *)(ie + 1) > end || ie->h_proto != htons(ETH_P_IP)) return 0;
    struct iphdr *ii = (void *)(ie + 1);
    if ((void *)(ii + 1) > end) return 0;
    x->vni = (vx[4] << 16) | (vx[5] << 8) | vx[6];
    x->outer_src = t->saddr[0]; x->outer_dst = t->daddr[0];
    __builtin_memset(t, 0, sizeof(*t));
    t->family = 4; t->saddr[0] = ii->saddr; t->daddr[0] = ii->daddr; t->proto = ii->protocol;
    t->ipid = ntohs(ii->id); t->tot_len = ntohs(ii->tot_len);
    ports((void *)ii + ii->ihl * 4, end, ii->protocol, t);
    return 1;
}
#endif

static __always_inline int parse(struct __sk_buff *skb, struct tuple *t, void *encap) {
    void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > end) return 0;
    if (eth->h_proto == htons(ETH_P_IP)) {
        struct iphdr *ip = (void *)(eth + 1);
        if ((void *)(ip + 1) > end) return 0;
        t->family = 4; t->saddr[0] = ip->saddr; t->daddr[0] = ip->daddr; t->proto = ip->protocol;
        t->ipid = ntohs(ip->id); t->tot_len = ntohs(ip->tot_len);
        void *l4 = (void *)ip + ip->ihl * 4;
        ports(l4, end, ip->protocol, t);
#ifdef TRACE
        if (encap && t->proto == IPPROTO_UDP && t->dport == VXLAN_PORT)
            return vxlan_inner(l4, end, t, encap) ? 2 : 1;
#endif
        return 1;
    }
    if (eth->h_proto == htons(ETH_P_IPV6)) {
        struct ipv6hdr *ip6 = (void *)(eth + 1);
        if ((void *)(ip6 + 1) > end) return 0;
        t->family = 6;
        __builtin_memcpy(t->saddr, &ip6->saddr, 16); __builtin_memcpy(t->daddr, &ip6->daddr, 16);
        t->tot_len = ntohs(ip6->payload_len);
        u8 proto = 0;
        void *l4 = ipv6_l4(ip6, end, &proto);
        t->proto = proto;
        ports(l4, end, proto, t);
        return 1;
    }
    return 0;
}

/* The namespace this copy of the program is attached in. bpf_get_netns_cookie() cannot say: for
 * an skb without a socket it answers with the initial namespace's cookie. The loader loads one
 * copy per namespace with this placeholder patched to that namespace's cookie. */
#define NS_COOKIE 0x626c6e73636f6f6bULL

static __always_inline void count(struct __sk_buff *skb, u64 cookie, u8 dir, u8 proto, u8 family, u8 ndp) {
    struct tc_key k = {.cookie = cookie, .ifindex = skb->ifindex, .dir = dir, .proto = proto, .family = family,
                       .ndp = ndp};
    u64 k0 = k.cookie, k1 = *(u64 *)&k.ifindex;
    u32 slot = fast_slot(k0, k1);
    struct tc_fast *f = tc_fast.lookup(&slot);
    if (f && f->k0 == 0) { f->k0 = k0; f->k1 = k1; }
    if (f && f->k0 == k0 && f->k1 == k1) {
        f->c.packets++; f->c.bytes += skb->len;
    } else {
        struct counter zero = {}, *c = tc_counts.lookup_or_try_init(&k, &zero);
        if (c) { c->packets++; c->bytes += skb->len; }
    }
}

#ifdef TRACE
static __always_inline void reverse(struct tuple *key, struct tuple *rev) {
    __builtin_memset(rev, 0, sizeof(*rev));
    __builtin_memcpy(rev->saddr, key->daddr, 16); __builtin_memcpy(rev->daddr, key->saddr, 16);
    rev->sport = key->dport; rev->dport = key->sport;
    rev->proto = key->proto; rev->family = key->family;
    if (rev->proto == IPPROTO_ICMP || rev->proto == IPPROTO_ICMPV6) { rev->sport = key->sport; rev->dport = 0; }
}
#endif

static __always_inline int point(struct __sk_buff *skb, u8 dir) {
    u64 cookie;   /* the one load the loader patches (exactly one per program) */
    asm volatile("%0 = " "0x626c6e73636f6f6b" " ll" : "=r"(cookie));
#ifndef TRACE
    u8 proto = 0, ndp = 0;
    u8 family = classify(skb, &proto, &ndp);
    count(skb, cookie, dir, family ? proto : 0, family, ndp);
    return TC_ACT_UNSPEC;
#else
    struct tuple t = {};
    struct encap x = {};
    int ip = parse(skb, &t, &x);
    count(skb, cookie, dir, ip ? t.proto : 0, ip ? t.family : 0,
          ip && t.proto == IPPROTO_ICMPV6 && t.flags >= 133 && t.flags <= 137);
    if (!ip) return TC_ACT_UNSPEC;
    u32 hash = 0;
    struct tuple key = t;
    key.flags = 0; key.ipid = 0; key.tot_len = 0;
    if (key.proto == IPPROTO_ICMP || key.proto == IPPROTO_ICMPV6) key.dport = 0;   /* the echo id is the flow */
    int hit = want.lookup(&key) != 0;
    if (!hit) {
        hash = skb->hash;                                   /* set: a flow we may already follow */
        hit = hash && flows.lookup(&hash);
    }
    if (!hit && !filter_match(&t)) return TC_ACT_UNSPEC;
    /* the same hash is read by the netfilter probes through the skb's BTF pointer: that is how
     * hooks that cannot read the packet (lockdown) still recognise it */
    hash = bpf_get_hash_recalc(skb);
    u8 one = 1;
    flows.update(&hash, &one);
    struct tuple rev;
    reverse(&key, &rev);
    want.update(&rev, &one);
    want.update(&key, &one);
    struct event *e = tc_events.ringbuf_reserve(sizeof(struct event));
    if (!e) { { u32 z0 = 0; u64 *l0 = tc_lost.lookup(&z0); if (l0) (*l0)++; }; return TC_ACT_UNSPEC; }
    __builtin_memset(e, 0, sizeof(*e));
    e->ts = bpf_ktime_get_ns(); e->cookie = cookie; e->hash = hash; e->ifindex = skb->ifindex;
    e->len = skb->len; e->kind = K_TC; e->point = dir; e->has_tuple = 1; e->t = t;
    if (ip == 2) {   /* the VXLAN hop: VNI and the outer addresses where a tc event has room */
        e->_pad = 1; e->reason = x.vni; e->location = ((u64)x.outer_src << 32) | x.outer_dst;
    }
    tc_events.ringbuf_submit(e, 0);
    return TC_ACT_UNSPEC;   /* observe only: the next program or the stack decides */
#endif
}

int tc_ingress(struct __sk_buff *skb) { return point(skb, 0); }
int tc_egress(struct __sk_buff *skb) { return point(skb, 1); }
