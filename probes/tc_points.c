/* veth, bridge and uplink: SCHED_CLS programs attached with tcx links (ingress and egress) to
 * every interface the lab owns, in every namespace of the lab. Direct packet access only. */
#include "common.h"
#include <uapi/linux/pkt_cls.h>

struct tc_key {
    u64 cookie;
    u32 ifindex;
    u8 dir, proto, _pad[2];
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

static __always_inline int parse(struct __sk_buff *skb, struct tuple *t) {
    void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > end || eth->h_proto != htons(ETH_P_IP)) return 0;
    struct iphdr *ip = (void *)(eth + 1);
    if ((void *)(ip + 1) > end) return 0;
    t->saddr = ip->saddr; t->daddr = ip->daddr; t->proto = ip->protocol; t->ipid = ntohs(ip->id); t->tot_len = ntohs(ip->tot_len);
    void *l4 = (void *)ip + ip->ihl * 4;
    if (ip->protocol == IPPROTO_TCP) {
        struct tcphdr *th = l4;
        if ((void *)(th + 1) > end) return 1;
        t->sport = ntohs(th->source); t->dport = ntohs(th->dest);
        t->flags = ((u8 *)th)[13];
    } else if (ip->protocol == IPPROTO_UDP) {
        struct udphdr *uh = l4;
        if ((void *)(uh + 1) > end) return 1;
        t->sport = ntohs(uh->source); t->dport = ntohs(uh->dest);
    } else if (ip->protocol == IPPROTO_ICMP) {
        struct icmphdr *ih = l4;
        if ((void *)(ih + 1) > end) return 1;
        t->flags = ih->type;
        t->sport = ntohs(ih->un.echo.id); t->dport = ntohs(ih->un.echo.sequence);
    }
    return 1;
}

/* The namespace this copy of the program is attached in. bpf_get_netns_cookie() cannot say: for
 * an skb without a socket it answers with the initial namespace's cookie. The loader loads one
 * copy per namespace with this placeholder patched to that namespace's cookie. */
#define NS_COOKIE 0x626c6e73636f6f6bULL

static __always_inline int point(struct __sk_buff *skb, u8 dir) {
    struct tuple t = {};
    int ip = parse(skb, &t);
    u64 cookie;
    asm volatile("%0 = " "0x626c6e73636f6f6b" " ll" : "=r"(cookie));
    struct tc_key k = {.cookie = cookie, .ifindex = skb->ifindex, .dir = dir,
                       .proto = ip ? t.proto : 0};
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
#ifdef TRACE
    if (!ip) return TC_ACT_UNSPEC;
    u32 hash = 0;
    struct tuple key = t;
    key.flags = 0; key.ipid = 0; key.tot_len = 0;
    if (key.proto == IPPROTO_ICMP) key.dport = 0;          /* the echo id is the flow */
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
    __builtin_memset(&rev, 0, sizeof(rev));
    rev.saddr = key.daddr; rev.daddr = key.saddr; rev.sport = key.dport; rev.dport = key.sport;
    rev.proto = key.proto;
    if (rev.proto == IPPROTO_ICMP) { rev.sport = key.sport; rev.dport = 0; }
    want.update(&rev, &one);
    want.update(&key, &one);
    struct event *e = tc_events.ringbuf_reserve(sizeof(struct event));
    if (!e) { { u32 z0 = 0; u64 *l0 = tc_lost.lookup(&z0); if (l0) (*l0)++; }; return TC_ACT_UNSPEC; }
    __builtin_memset(e, 0, sizeof(*e));
    e->ts = bpf_ktime_get_ns(); e->cookie = k.cookie; e->hash = hash; e->ifindex = skb->ifindex;
    e->len = skb->len; e->kind = K_TC; e->point = dir; e->has_tuple = 1; e->t = t;
    tc_events.ringbuf_submit(e, 0);
#endif
    return TC_ACT_UNSPEC;   /* observe only: the next program or the stack decides */
}

int tc_ingress(struct __sk_buff *skb) { return point(skb, 0); }
int tc_egress(struct __sk_buff *skb) { return point(skb, 1); }
