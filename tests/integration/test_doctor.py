"""`bridgelab doctor` tells the truth about this machine, checked against the files themselves."""

import json
import os
import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.kernel


def doctor() -> dict:
    out = subprocess.run([sys.executable, "-m", "orchestrator", "doctor", "--json"], capture_output=True,
                         text=True, check=True, cwd=ROOT).stdout
    return {c["name"]: c for c in json.loads(out)["checks"]} | {"_reasons": json.loads(out)["drop_reasons"]}


def test_doctor_matches_the_machine():
    d = doctor()
    assert d["kernel"]["detail"] == os.uname().release
    assert d["kprobes"]["ok"] == os.path.exists("/sys/kernel/tracing/kprobe_events")
    assert d["btf"]["ok"] == os.path.exists("/sys/kernel/btf/vmlinux")
    if os.path.exists("/sys/kernel/security/lockdown"):
        mode = re.search(r"\[(\w+)\]", open("/sys/kernel/security/lockdown").read()).group(1)
        assert d["lockdown"]["detail"] == f"lockdown={mode}"
        assert d["lockdown"]["ok"] == (mode != "confidentiality")
    fmt = open("/sys/kernel/tracing/events/skb/kfree_skb/format").read()
    assert "NETFILTER_DROP" in d["_reasons"] and all(f'"{r}"' in fmt for r in d["_reasons"])
    assert d["tracepoint skb/kfree_skb"]["ok"] is True
    assert d["bcc"]["ok"] is True and d["headers"]["ok"] is True
