/* bridge: FDB learning (bridge:br_fdb_update fires when a bridge learns a new source MAC or sees
 * it move to another port). Keyed by MAC and VLAN: the lab's MACs are deterministic, so user
 * space names the node and interface that was learned; anything else is one bucket. */
#include "common.h"

struct fdb_key { u8 addr[6]; u16 vid; };
BPF_HASH(fdb_learned, struct fdb_key, u64, 4096);

TRACEPOINT_PROBE(bridge, br_fdb_update) {
    struct fdb_key k = {.vid = args->vid};
#pragma unroll
    for (int i = 0; i < 6; i++)
        k.addr[i] = args->addr[i];
    u64 one = 1, *n = fdb_learned.lookup(&k);
    if (n) __sync_fetch_and_add(n, 1);
    else fdb_learned.update(&k, &one);
    return 0;
}
