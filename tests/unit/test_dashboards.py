"""The dashboards as built: committed JSON current, every variable a query uses defined, units."""

import json
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "dashboards"))
import build  # noqa: E402

BUILTIN = {"__rate_interval", "__range", "__interval", "DS_PROMETHEUS"}


def test_committed_json_is_what_build_writes():
    for name, dash in build.DASHBOARDS.items():
        on_disk = json.load(open(os.path.join(ROOT, "dashboards", name)))
        assert on_disk == json.loads(json.dumps(dash)), f"{name} is stale: run dashboards/build.py"


def test_every_variable_used_is_defined_and_every_panel_has_a_unit():
    for name, dash in build.DASHBOARDS.items():
        defined = {v["name"] for v in dash["templating"]["list"]} | BUILTIN
        ids = [p["id"] for p in dash["panels"]]
        assert len(ids) == len(set(ids)), name
        for p in dash["panels"]:
            assert p["fieldConfig"]["defaults"]["unit"], (name, p["title"])
            for t in p["targets"]:
                used = set(re.findall(r"\$(\w+)", t["expr"]))
                assert used <= defined, (name, p["title"], used - defined)


def test_datapath_splits_by_network_and_family():
    dp = build.DASHBOARDS["datapath.json"]
    assert {"node", "network", "family"} <= {v["name"] for v in dp["templating"]["list"]}
    assert any("by (family)" in t["expr"] for p in dp["panels"] for t in p["targets"])
    assert any("by (network)" in t["expr"] for p in dp["panels"] for t in p["targets"])
