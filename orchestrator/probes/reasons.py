"""Drop reason names and dropping functions, as the running kernel names them."""
from __future__ import annotations

import bisect
from functools import lru_cache

from . import btf


@lru_cache(maxsize=1)
def reason_names() -> dict[int, str]:
    """SKB_DROP_REASON_NOT_SPECIFIED -> NOT_SPECIFIED, from the kernel's BTF enum (the same
    names kfree_skb's tracefs print fmt uses)."""
    try:
        enum = btf.kernel().enum("skb_drop_reason")
    except (OSError, btf.BTFError):
        return {}
    out = {}
    for name, val in enum.items():
        out.setdefault(val, name.removeprefix("SKB_DROP_REASON_").removeprefix("SKB_"))
    return out


class Symbols:
    """/proc/kallsyms, for naming the function that freed a dropped skb."""

    def __init__(self, path: str = "/proc/kallsyms"):
        addrs, names = [], []
        with open(path) as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3 and parts[1] in "tTwW":
                    addrs.append(int(parts[0], 16))
                    names.append(parts[2])
        order = sorted(range(len(addrs)), key=addrs.__getitem__)
        self.addrs = [addrs[i] for i in order]
        self.names = [names[i] for i in order]

    def name(self, addr: int) -> str:
        i = bisect.bisect_right(self.addrs, addr) - 1
        if i < 0 or not self.addrs[i]:
            return hex(addr)
        return f"{self.names[i]}+{addr - self.addrs[i]:#x}"
