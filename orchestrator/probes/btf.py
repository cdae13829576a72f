"""Field offsets of the running kernel, read from its BTF (/sys/kernel/btf/vmlinux).

The probes must never use struct layouts from a headers tree: the only headers here are
Debian's 6.1 ones, and the running kernel is not 6.1. What a probe needs of a kernel struct
(an sk_buff field, an nf_hook_state member) is passed to it as a -D macro computed here.
"""
from __future__ import annotations

import struct
from functools import lru_cache

VMLINUX = "/sys/kernel/btf/vmlinux"

_INT, _PTR, _ARRAY, _STRUCT, _UNION, _ENUM, _FWD, _TYPEDEF, _VOLATILE, _CONST, _RESTRICT = range(1, 12)
_FUNC, _FUNC_PROTO, _VAR, _DATASEC, _FLOAT, _DECL_TAG, _TYPE_TAG, _ENUM64 = range(12, 20)
_EXTRA = {_INT: lambda v: 4, _ARRAY: lambda v: 12, _STRUCT: lambda v: 12 * v, _UNION: lambda v: 12 * v,
          _ENUM: lambda v: 8 * v, _FUNC_PROTO: lambda v: 8 * v, _VAR: lambda v: 4,
          _DATASEC: lambda v: 12 * v, _DECL_TAG: lambda v: 4, _ENUM64: lambda v: 12 * v}


class BTFError(LookupError):
    pass


class BTF:
    def __init__(self, data: bytes):
        magic, _ver, _flags, hdr_len, type_off, type_len, str_off, str_len = struct.unpack_from("<HBBIIIII", data)
        if magic != 0xEB9F:
            raise BTFError("not BTF (bad magic)")
        self._types = data[hdr_len + type_off: hdr_len + type_off + type_len]
        self._strs = data[hdr_len + str_off: hdr_len + str_off + str_len]
        self.kinds: list[tuple[int, int, int, int, int, int]] = [(0, 0, 0, 0, 0, 0)]  # id 0 is void
        self.by_name: dict[tuple[int, str], int] = {}
        pos, t = 0, self._types
        while pos < len(t):
            name_off, info, size = struct.unpack_from("<III", t, pos)
            kind, vlen, kflag = (info >> 24) & 0x1F, info & 0xFFFF, info >> 31
            self.kinds.append((kind, vlen, kflag, size, name_off, pos + 12))
            if kind in (_STRUCT, _UNION, _ENUM, _TYPEDEF) and name_off:
                self.by_name.setdefault((kind, self._str(name_off)), len(self.kinds) - 1)
            pos += 12 + _EXTRA.get(kind, lambda v: 0)(vlen)

    def _str(self, off: int) -> str:
        end = self._strs.index(b"\0", off)
        return self._strs[off:end].decode()

    def _members(self, tid: int):
        kind, vlen, kflag, _size, _name, pos = self.kinds[tid]
        for i in range(vlen):
            name_off, mtype, moff = struct.unpack_from("<III", self._types, pos + 12 * i)
            bit = moff & 0xFFFFFF if kflag else moff
            yield (self._str(name_off) if name_off else ""), mtype, bit

    def _resolve(self, tid: int) -> int:
        while self.kinds[tid][0] in (_TYPEDEF, _VOLATILE, _CONST, _RESTRICT, _TYPE_TAG):
            tid = self.kinds[tid][3]
        return tid

    def struct_id(self, name: str) -> int:
        tid = self.by_name.get((_STRUCT, name))
        if tid is None:
            raise BTFError(f"struct {name} not in the kernel's BTF")
        return tid

    def member(self, struct_name: str, path: str) -> tuple[int, int]:
        """(byte offset, byte size) of PATH ('a.b' through named members; anonymous unions and
        structs are searched through) inside STRUCT_NAME."""
        tid, total = self.struct_id(struct_name), 0
        for part in path.split("."):
            found = self._find(tid, part)
            if found is None:
                raise BTFError(f"struct {struct_name} has no member {path}")
            bit, tid = found
            if bit % 8:
                raise BTFError(f"{struct_name}.{path} is a bitfield")
            total += bit // 8
            tid = self._resolve(tid)
        return total, self.size(tid)

    def _find(self, tid: int, name: str):
        for mname, mtype, bit in self._members(self._resolve(tid)):
            if mname == name:
                return bit, mtype
            r = self._resolve(mtype)
            if not mname and self.kinds[r][0] in (_STRUCT, _UNION):
                inner = self._find(r, name)
                if inner is not None:
                    return bit + inner[0], inner[1]
        return None

    def size(self, tid: int) -> int:
        kind, _vlen, _kflag, size, _n, pos = self.kinds[tid]
        if kind == _PTR:
            return 8
        if kind == _ARRAY:
            elem, _idx, nelems = struct.unpack_from("<III", self._types, pos)
            return self.size(self._resolve(elem)) * nelems
        return size

    def enum(self, name: str) -> dict[str, int]:
        tid = self.by_name.get((_ENUM, name))
        if tid is None:
            raise BTFError(f"enum {name} not in the kernel's BTF")
        kind, vlen, _k, _s, _n, pos = self.kinds[tid]
        out = {}
        for i in range(vlen):
            name_off, val = struct.unpack_from("<Ii", self._types, pos + 8 * i)
            out[self._str(name_off)] = val
        return out


@lru_cache(maxsize=1)
def kernel() -> BTF:
    with open(VMLINUX, "rb") as f:
        return BTF(f.read())
