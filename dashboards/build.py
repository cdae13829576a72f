"""Writes the Grafana dashboards in this directory (run it after editing; the JSON is committed).

Each dashboard: a ${DS_PROMETHEUS} datasource (an import input, and a datasource variable of the
same name so file provisioning works too), an `instance` variable (several lab hosts on one
dashboard), queries in the sum(rate(x[$__rate_interval])) by (...) style, units on every panel.

    .venv/bin/python dashboards/build.py
"""
import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))
DS = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
I = 'instance=~"$instance"'


def rate(metric: str, by: str, sel: str = "", fn: str = "rate", window: str = "$__rate_interval") -> str:
    s = f"{I},{sel}" if sel else I
    return f"sum({fn}({metric}{{{s}}}[{window}])) by ({by})"


def panel(title, expr, unit, kind="timeseries", legend="", desc="", w=12, h=8, extra=None):
    p = {"type": kind, "title": title, "description": desc, "datasource": DS,
         "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
         "targets": [{"datasource": DS, "expr": e, "legendFormat": lg, "refId": chr(65 + i)}
                     for i, (e, lg) in enumerate(expr if isinstance(expr, list) else [(expr, legend)])],
         "gridPos": {"w": w, "h": h}}
    if kind == "table":
        p["targets"][0]["format"] = "table"
        p["targets"][0]["instant"] = True
    p.update(extra or {})
    return p


def dashboard(uid, title, panels, node_var=False):
    x = y = 0
    for i, p in enumerate(panels):
        g = p["gridPos"]
        if x + g["w"] > 24:
            x, y = 0, y + 8
        g.update({"x": x, "y": y})
        x += g["w"]
        p["id"] = i + 1
    variables = [
        {"name": "DS_PROMETHEUS", "label": "Prometheus", "type": "datasource", "query": "prometheus",
         "current": {}, "hide": 0},
        {"name": "instance", "label": "lab host", "type": "query", "datasource": DS,
         "query": {"query": "label_values(bridgelab_build_info, instance)", "refId": "instance"},
         "definition": "label_values(bridgelab_build_info, instance)", "multi": True, "includeAll": True,
         "allValue": ".*", "current": {"text": "All", "value": "$__all"}, "refresh": 2},
    ]
    if node_var:
        variables.append({"name": "node", "label": "node", "type": "query", "datasource": DS,
                          "query": {"query": f"label_values(bridgelab_datapath_packets_total{{{I}}}, node)", "refId": "node"},
                          "definition": f"label_values(bridgelab_datapath_packets_total{{{I}}}, node)",
                          "multi": True, "includeAll": True, "allValue": ".*",
                          "current": {"text": "All", "value": "$__all"}, "refresh": 2})
    return {
        "__inputs": [{"name": "DS_PROMETHEUS", "label": "Prometheus", "type": "datasource", "pluginId": "prometheus",
                      "pluginName": "Prometheus"}],
        "__requires": [{"type": "datasource", "id": "prometheus", "name": "Prometheus", "version": "1.0.0"}],
        "uid": uid, "title": title, "tags": ["bridgelab"], "timezone": "browser", "schemaVersion": 39,
        "version": 1, "refresh": "10s", "time": {"from": "now-1h", "to": "now"},
        "templating": {"list": variables}, "panels": panels,
        "links": [{"type": "dashboards", "tags": ["bridgelab"], "asDropdown": True, "title": "bridgelab"}],
    }


OVERVIEW = dashboard("bridgelab-overview", "bridgelab / Overview", [
    panel("Lab ready", f"max by (instance, lab) (bridgelab_ready{{{I}}} * on (instance) group_left (lab) bridgelab_build_info{{{I}}})",
          "bool_yes_no", "stat", "{{instance}} {{lab}}", "1 once the daemon has adopted or built the lab", w=6),
    panel("Flapping resources", f"sum by (instance) (bridgelab_flapping_resources{{{I}}})", "short", "stat",
          "{{instance}}", "Resources someone keeps undoing; healed with exponential backoff", w=6),
    panel("Resources by state", f"sum by (kind, state) (bridgelab_resources{{{I}}})", "short", "bargauge",
          "{{kind}} {{state}}", "What the lab manages; state=drift only with --no-heal", w=12),
    panel("Heals", rate("bridgelab_heal_actions_total", "kind, outcome"), "ops", legend="{{kind}} {{outcome}}",
          desc="Repair actions per second by resource kind and outcome"),
    panel("Heal duration (p50, p95)", [
        (f"histogram_quantile(0.5, sum(rate(bridgelab_heal_duration_seconds_bucket{{{I}}}[$__rate_interval])) by (le))", "p50"),
        (f"histogram_quantile(0.95, sum(rate(bridgelab_heal_duration_seconds_bucket{{{I}}}[$__rate_interval])) by (le))", "p95")],
          "s", desc="From the first sign of drift to the lab whole again"),
    panel("Drops by reason", rate("bridgelab_drops_total", "reason"), "pps", legend="{{reason}}",
          desc="Lab packets the kernel dropped; open the Drops dashboard for where"),
    panel("Throughput per node", rate("bridgelab_datapath_bytes_total", "node", 'hook=~"tc_egress"') + " * 8", "bps",
          legend="{{node}}", desc="Bits per second sent out of each node's lab interfaces (tc egress)"),
    panel("Drift detected", rate("bridgelab_drift_detected_total", "kind"), "ops", legend="{{kind}}",
          desc="Differences from the topology noticed, per second"),
    panel("Event-stream resyncs", rate("bridgelab_event_stream_resyncs_total", "reason", fn="increase"), "short",
          legend="{{reason}}", desc="Full re-observations: periodic, after lost netlink events, after resubscribing"),
])

DATAPATH = dashboard("bridgelab-datapath", "bridgelab / Datapath", [
    panel("Packets per hook along the path", rate("bridgelab_datapath_packets_total", "hook", 'node=~"$node"'), "pps",
          legend="{{hook}}", desc="tc ingress/egress at devices; prerouting → dnat → forward → postrouting → snat "
                                  "at netfilter hooks", w=24),
    panel("Packets per interface and direction", rate("bridgelab_datapath_packets_total", "node, interface, direction",
                                                      'node=~"$node",hook=~"tc_.*"'), "pps",
          legend="{{node}} {{interface}} {{direction}}"),
    panel("Bytes per interface and direction", rate("bridgelab_datapath_bytes_total", "node, interface, direction",
                                                    'node=~"$node",hook=~"tc_.*"') + " * 8", "bps",
          legend="{{node}} {{interface}} {{direction}}"),
    panel("Bridged vs forwarded", rate("bridgelab_datapath_packets_total", "hook", 'node=~"$node",hook=~"forward|bridge_forward"'),
          "pps", legend="{{hook}}", desc="forward: routed by the host (to or from the uplink); bridge_forward: switched "
                                         "between containers (br_netfilter)"),
    panel("NAT translations", rate("bridgelab_nat_translations_total", "node, rewrite"), "pps",
          legend="{{node}} {{rewrite}}", desc="Packets whose source (SNAT/MASQUERADE, replies to DNAT) or destination "
                                              "(DNAT, replies to MASQUERADE) was rewritten. Empty when the nf probe is "
                                              "degraded (lockdown=confidentiality)."),
    panel("Packets by protocol", rate("bridgelab_datapath_packets_total", "protocol", 'node=~"$node",hook=~"tc_.*"'),
          "pps", legend="{{protocol}}"),
], node_var=True)

DROPS = dashboard("bridgelab-drops", "bridgelab / Drops", [
    panel("Drops by reason", rate("bridgelab_drops_total", "reason"), "pps", legend="{{reason}}",
          desc="The kernel's own drop reason (skb:kfree_skb), for packets the probes saw in the lab", w=24),
    panel("Drops by node and hook", rate("bridgelab_drops_total", "node, hook"), "pps", legend="{{node}} {{hook}}",
          desc="Where the packet was last seen before the kernel dropped it"),
    panel("Drops outside the lab", f"sum(rate(bridgelab_drops_outside_lab_total{{{I}}}[$__rate_interval])) by (instance)",
          "pps", legend="{{instance}}", desc="Drops on the host of packets the probes never saw"),
    panel("Top drops in range", f"topk(10, sum(increase(bridgelab_drops_total{{{I}}}[$__range])) by (node, hook, reason))",
          "short", "table", desc="Then: bridgelab trace --node NODE to see the path, hop by hop", w=24),
])

PROBES = dashboard("bridgelab-probes", "bridgelab / Probe health", [
    panel("Probes attached", f"min by (probe) (bridgelab_probe_attached{{{I}}})", "bool_yes_no", "stat", "{{probe}}",
          "0: the probe could not load or attach; the reason is in the logs and bridgelab doctor", w=8),
    panel("Probes degraded", f"max by (probe) (bridgelab_probe_degraded{{{I}}})", "bool_yes_no", "stat", "{{probe}}",
          "1: running with less than designed (e.g. no packet reads under lockdown)", w=8),
    panel("BPF links", f"sum by (probe) (bridgelab_probe_links{{{I}}})", "short", "stat", "{{probe}}", w=8),
    panel("Lost trace events", rate("bridgelab_probe_events_lost_total", "probe"), "ops", legend="{{probe}}",
          desc="Events a ring buffer had no room for (trace mode); never silent"),
    panel("Cost per program run",
          f"sum(rate(bridgelab_probe_run_seconds_total{{{I}}}[$__rate_interval])) by (probe) / "
          f"sum(rate(bridgelab_probe_runs_total{{{I}}}[$__rate_interval])) by (probe)", "s", legend="{{probe}}",
          desc="Kernel-measured time per run (daemon started with --bpf-stats)"),
    panel("Probe CPU", rate("bridgelab_probe_run_seconds_total", "probe"), "percentunit", legend="{{probe}}",
          desc="Share of one CPU spent in the probes"),
    panel("Event loop lag (p99)", f"histogram_quantile(0.99, sum(rate(bridgelab_event_loop_lag_seconds_bucket{{{I}}}[$__rate_interval])) by (le, instance))",
          "s", legend="{{instance}}", desc="How late the daemon's loop runs: a blocked loop delays healing"),
    panel("Reconcile queue depth", f"max by (instance) (bridgelab_reconcile_queue_depth{{{I}}})", "short",
          legend="{{instance}}"),
    panel("Daemon memory", f"max by (instance) (process_resident_memory_bytes{{{I}}})", "bytes", legend="{{instance}}"),
    panel("Scrape duration", f"max by (instance) (scrape_duration_seconds{{{I}}})", "s", legend="{{instance}}",
          desc="How long Prometheus takes to scrape the daemon"),
])

DASHBOARDS = {"overview.json": OVERVIEW, "datapath.json": DATAPATH, "drops.json": DROPS, "probes.json": PROBES}

if __name__ == "__main__":
    for name, d in DASHBOARDS.items():
        with open(os.path.join(HERE, name), "w") as f:
            json.dump(d, f, indent=1)
            f.write("\n")
    print("wrote", ", ".join(DASHBOARDS))
