"""Reading a topology file without trusting it: a regular file of at most 1 MiB, UTF-8, YAML
without anchors or aliases (a 383-byte alias bomb once took 3 GB and a minute), no duplicate
keys (YAML's "last one wins" silently drops the first), nesting at most 32 deep.

Every refusal is a (field, message, fix) problem like the topology's own.
"""

from __future__ import annotations

import os
import stat

import yaml

MAX_BYTES = 1 << 20
MAX_DEPTH = 32


class LoadProblem(Exception):
    def __init__(self, where: str, message: str, fix: str):
        super().__init__(message)
        self.where, self.message, self.fix = where, message, fix


def read_file(path: str) -> str:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        raise LoadProblem("(file)", f"cannot read: {e.strerror}", "check the path given with -f") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise LoadProblem("(file)", "not a regular file", "give the path of a YAML file with -f")
        if st.st_size > MAX_BYTES:
            raise LoadProblem("(file)", f"{st.st_size} bytes; a topology file is at most {MAX_BYTES} bytes",
                              "split it or remove what it does not need")
        data = os.read(fd, MAX_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_BYTES:
        raise LoadProblem("(file)", f"more than {MAX_BYTES} bytes", "split it or remove what it does not need")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise LoadProblem(f"line {line}", f"not UTF-8 (byte 0x{data[e.start]:02x})",
                          "save the file as UTF-8") from None


def _mark(node) -> str:
    m = getattr(node, "start_mark", None)
    return f"line {m.line + 1}, column {m.column + 1}" if m else "(file)"


class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses aliases and duplicate keys and bounds nesting."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            ev = self.peek_event()
            raise LoadProblem(_mark(ev), f"YAML alias *{ev.anchor} is not allowed in a topology",
                              "write the value out instead of using anchors (&) and aliases (*)")
        ev = self.peek_event()
        if getattr(ev, "anchor", None):
            raise LoadProblem(_mark(ev), f"YAML anchor &{ev.anchor} is not allowed in a topology",
                              "write the value out instead of using anchors (&) and aliases (*)")
        self._depth = getattr(self, "_depth", 0) + 1
        try:
            if self._depth > MAX_DEPTH:
                raise LoadProblem(_mark(ev), f"nested more than {MAX_DEPTH} levels deep",
                                  "a topology is a few levels deep; check the brackets and indentation")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                hash(key)
            except TypeError:
                raise LoadProblem(_mark(key_node), "a mapping key must be a plain value", "use a name as the key") \
                    from None
            if key in seen:
                raise LoadProblem(_mark(key_node), f"duplicate key '{key}' (also at {seen[key]})",
                                  "keep one of them: YAML would silently use the last")
            seen[key] = _mark(key_node)
        return super().construct_mapping(node, deep=deep)


def parse_yaml(text: str):
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except LoadProblem:
        raise
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(file)"
        raise LoadProblem(where, f"not valid YAML: {getattr(e, 'problem', None) or e}",
                          "fix the YAML syntax (indentation, colons, quotes)") from None
    except RecursionError:
        raise LoadProblem("(file)", "nested too deeply", "check the brackets and indentation") from None
