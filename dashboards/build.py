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
# every query: the lab hosts picked (instance: a daemon's endpoint; host: a lab host of a lab
# across hosts, "" for a one-host lab, which .* matches)
I = 'instance=~"$instance",host=~"$host"'


def rate(metric: str, by: str, sel: str = "", fn: str = "rate", window: str = "$__rate_interval") -> str:
    s = f"{I},{sel}" if sel else I
    return f"sum({fn}({metric}{{{s}}}[{window}])) by ({by})"


def quantiles(histogram: str, *qs: float) -> list[tuple[str, str]]:
    """One target per quantile of HISTOGRAM (its _bucket series), legend p50, p95, ..."""
    return [(f"histogram_quantile({q}, {rate(histogram + '_bucket', 'le')})", f"p{round(q * 100)}") for q in qs]


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


def variable(name: str, label: str, metric: str = "bridgelab_datapath_packets_total") -> dict:
    """A multi-value query variable over one label of METRIC (All by default)."""
    q = f"label_values({metric}{{{I}}}, {name})"
    return {"name": name, "label": label, "type": "query", "datasource": DS, "query": {"query": q, "refId": name},
            "definition": q, "multi": True, "includeAll": True, "allValue": ".*",
            "current": {"text": "All", "value": "$__all"}, "refresh": 2}


def dashboard(uid, title, panels, variables_extra=()):
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
        {"name": "host", "label": "lab host (across hosts)", "type": "query", "datasource": DS,
         "query": {"query": 'label_values(bridgelab_build_info{instance=~"$instance"}, host)', "refId": "host"},
         "definition": 'label_values(bridgelab_build_info{instance=~"$instance"}, host)', "multi": True,
         "includeAll": True, "allValue": ".*", "current": {"text": "All", "value": "$__all"}, "refresh": 2},
    ]
    variables += list(variables_extra)
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
    panel("Heal duration (p50, p95)", quantiles("bridgelab_heal_duration_seconds", 0.5, 0.95), "s", desc="From the first sign of drift to the lab whole again"),
    panel("Drops by reason", rate("bridgelab_drops_total", "reason"), "pps", legend="{{reason}}",
          desc="Lab packets the kernel dropped; open the Drops dashboard for where"),
    panel("Throughput per node", rate("bridgelab_datapath_bytes_total", "node", 'hook=~"tc_egress"') + " * 8", "bps",
          legend="{{node}}", desc="Bits per second sent out of each node's lab interfaces (tc egress)"),
    panel("Throughput per network", rate("bridgelab_datapath_bytes_total", "network, family",
                                         'hook="tc_egress",network!=""') + " * 8", "bps",
          legend="{{network}} {{family}}", desc="Bits per second on each topology network, by address family"),
    panel("Drift detected", rate("bridgelab_drift_detected_total", "kind"), "ops", legend="{{kind}}",
          desc="Differences from the topology noticed, per second"),
    panel("Event-stream resyncs", rate("bridgelab_event_stream_resyncs_total", "reason", fn="increase"), "short",
          legend="{{reason}}", desc="Full re-observations: periodic, after lost netlink events, after resubscribing"),
])

# the datapath's selection: node, the topology network an interface is on (empty: the uplink and
# the host's other devices), the address family
SEL = 'node=~"$node",network=~"$network",family=~"$family"'

EXPECT = dashboard("bridgelab-expectations", "bridgelab / Expectations", [
    panel("Expectations failing", f"count by (instance) (bridgelab_expectation_ok{{{I}}} == 0) or "
          f"sum by (instance) (bridgelab_expectation_ok{{{I}}}) * 0", "short", "stat", "{{instance}}",
          "Declared flows (expect:) that do not behave as the topology says, now", w=6),
    panel("Expectations holding", f"sum by (instance) (bridgelab_expectation_ok{{{I}}})", "short", "stat",
          "{{instance}}", w=6),
    panel("Checks by result", rate("bridgelab_expectation_checks_total", "result"), "ops", legend="{{result}}",
          desc="healing: failed while the daemon was repairing the lab (checked again after)", w=12),
    panel("Expectations, failing first",
          f"sort(max by (instance, expectation) (bridgelab_expectation_ok{{{I}}}))", "bool_yes_no", "table",
          desc="1 holds, 0 fails; the cause and fix of each failing one are in the next table and in the log "
               "event `expectation violated`", w=12),
    panel("Why they fail (explain)", f"max by (instance, expectation, cause, verdict, fix) "
          f"(bridgelab_expectation_failing_info{{{I}}}) or max by (instance) (bridgelab_build_info{{{I}}}) * 0",
          "short", "table", desc="explain's verdict and fix for each failing expectation (empty: all hold)", w=12),
    panel("Probe time (p50, p99)", quantiles("bridgelab_expectation_probe_seconds", 0.5, 0.99), "s", desc="One expectation's probe (an echo, a connect, a request)"),
    panel("Check traffic", rate("bridgelab_expectation_probe_packets_total", "instance"), "pps", legend="{{instance}}",
          desc="Packets the checks send (counted in the datapath panels too)"),
])

DATAPATH = dashboard("bridgelab-datapath", "bridgelab / Datapath", [
    panel("Packets per hook along the path", rate("bridgelab_datapath_packets_total", "hook", SEL), "pps",
          legend="{{hook}}", desc="tc ingress/egress at devices; prerouting → dnat → forward → postrouting → snat "
                                  "at netfilter hooks", w=24),
    panel("Traffic per network", rate("bridgelab_datapath_bytes_total", "network", SEL + ',hook="tc_egress"') + " * 8",
          "bps", legend="{{network}}", desc="Bits per second sent out of interfaces on each topology network "
                                          "(network=\"\": the uplink and devices on no network)"),
    panel("Packets by family", rate("bridgelab_datapath_packets_total", "family", SEL + ',hook=~"tc_.*"'), "pps",
          legend="{{family}}", desc="IPv4 beside IPv6 (a dual-stack lab); non-IP frames (ARP) have family=\"\""),
    panel("Packets per interface and direction", rate("bridgelab_datapath_packets_total", "node, interface, direction",
                                                      SEL + ',hook=~"tc_.*"'), "pps",
          legend="{{node}} {{interface}} {{direction}}"),
    panel("Bytes per interface and direction", rate("bridgelab_datapath_bytes_total", "node, interface, direction",
                                                    SEL + ',hook=~"tc_.*"') + " * 8", "bps",
          legend="{{node}} {{interface}} {{direction}}"),
    panel("Bridged vs forwarded", rate("bridgelab_datapath_packets_total", "hook, family",
                                       SEL + ',hook=~"forward|bridge_forward"'),
          "pps", legend="{{hook}} {{family}}", desc="forward: routed by a node (the host, a router); bridge_forward: "
                                                    "switched between containers (br_netfilter)"),
    panel("NAT translations", rate("bridgelab_nat_translations_total", "node, rewrite, family", 'node=~"$node",family=~"$family"'),
          "pps", legend="{{node}} {{rewrite}} {{family}}",
          desc="Packets whose source (SNAT/MASQUERADE, NAT66; replies to DNAT) or destination (DNAT, replies to "
               "MASQUERADE) was rewritten. Empty when the nf probe is degraded (lockdown=confidentiality)."),
    panel("Packets by protocol", rate("bridgelab_datapath_packets_total", "protocol", SEL + ',hook=~"tc_.*"'),
          "pps", legend="{{protocol}}", desc="ndp: IPv6 neighbour discovery (ICMPv6 133-137), apart from icmpv6"),
], variables_extra=(variable("node", "node"), variable("network", "network"), variable("family", "family")))

DROPS = dashboard("bridgelab-drops", "bridgelab / Drops", [
    panel("Drops by reason", rate("bridgelab_drops_total", "reason"), "pps", legend="{{reason}}",
          desc="The kernel's own drop reason (skb:kfree_skb), for packets the probes saw in the lab", w=24),
    panel("Drops by node and hook", rate("bridgelab_drops_total", "node, hook"), "pps", legend="{{node}} {{hook}}",
          desc="Where the packet was last seen before the kernel dropped it"),
    panel("Drops by family", rate("bridgelab_drops_total", "family"), "pps", legend="{{family}}",
          desc="IPv4 and IPv6 drops apart"),
    panel("Freed after delivery", rate("bridgelab_delivered_frees_total", "node, reason"), "pps",
          legend="{{node}} {{reason}}", desc="Not drops: packets a node took in, then let go (NO_SOCKET after a ping "
                                             "reply, OTHERHOST and MCAST_NOT_JOINED for copies a bridge flooded)"),
    panel("Drops outside the lab", f"sum(rate(bridgelab_drops_outside_lab_total{{{I}}}[$__rate_interval])) by (instance)",
          "pps", legend="{{instance}}", desc="Drops on the host of packets the probes never saw"),
    panel("Top drops in range", f"topk(10, sum(increase(bridgelab_drops_total{{{I}}}[$__range])) by (node, hook, reason, family))",
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

DASHBOARDS = {"overview.json": OVERVIEW, "expectations.json": EXPECT, "datapath.json": DATAPATH, "drops.json": DROPS, "probes.json": PROBES}

if __name__ == "__main__":
    for name, d in DASHBOARDS.items():
        with open(os.path.join(HERE, name), "w") as f:
            json.dump(d, f, indent=1)
            f.write("\n")
    print("wrote", ", ".join(DASHBOARDS))
