"""Prometheus metrics of the daemon (healing and topology; the datapath families join with the
probes). One registry per daemon; every label set is bounded by the lists below."""

from __future__ import annotations

from prometheus_client import (CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector,
                               disable_created_metrics, start_http_server)

from .. import __version__
from ..reconcile.kinds import METRIC_KINDS

# the only values the `kind` label takes: one per resource kind (reconcile/kinds)
KINDS = METRIC_KINDS
OUTCOMES = ("applied", "failed", "backoff", "observed")  # observed: --no-heal
RESYNC_REASONS = ("lost_events", "periodic", "resubscribe")


disable_created_metrics()  # *_created series double the exposition and no dashboard uses them


class Metrics:
    def __init__(self, lab: str, mode: str):
        r = self.registry = CollectorRegistry()
        Gauge("bridgelab_build_info", "bridgelab version and the lab it runs", ["version", "lab", "mode"],
              registry=r).labels(__version__, lab, mode).set(1)
        self.ready = Gauge("bridgelab_ready", "1 once the lab has been adopted or built", registry=r)
        self.drift = Counter("bridgelab_drift_detected_total",
                             "Resources found differing from the topology, by kind", ["kind"], registry=r)
        self.heal_actions = Counter("bridgelab_heal_actions_total",
                                    "Repair actions by resource kind and outcome", ["kind", "outcome"], registry=r)
        self.heal_seconds = Histogram(
            "bridgelab_heal_duration_seconds", "From the first sign of drift to the lab whole again",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10), registry=r)
        self.resources = Gauge("bridgelab_resources", "Resources the lab manages, by kind and state",
                               ["kind", "state"], registry=r)
        self.flapping = Gauge("bridgelab_flapping_resources",
                              "Resources being undone repeatedly, healed with exponential backoff", registry=r)
        self.resyncs = Counter("bridgelab_event_stream_resyncs_total",
                               "Full re-observations not caused by a specific event", ["reason"], registry=r)
        ProcessCollector(registry=r)  # process_resident_memory_bytes, process_open_fds, ...
        self.tasks = Gauge("bridgelab_daemon_tasks", "asyncio tasks alive in the daemon", registry=r)
        self.sockets = Gauge("bridgelab_daemon_netlink_sockets", "netlink sockets the daemon holds open",
                             registry=r)
        self.unsolicited = Counter("bridgelab_netlink_unsolicited_messages_total",
                                   "Netlink replies no request claimed, dropped (should stay 0)", registry=r)
        self.loop_lag = Histogram(
            "bridgelab_event_loop_lag_seconds", "How late the daemon's event loop ran a 100 ms timer "
            "(a blocked loop delays healing)", buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
            registry=r)
        self.queue_depth = Gauge("bridgelab_reconcile_queue_depth",
                                 "Doorbell rings waiting for the next reconcile pass", registry=r)
        self.passes = Counter("bridgelab_reconcile_passes_total", "Reconcile passes by result",
                              ["result"], registry=r)
        for k in KINDS:
            self.drift.labels(k)
            for o in OUTCOMES:
                self.heal_actions.labels(k, o)
        for reason in RESYNC_REASONS:
            self.resyncs.labels(reason)
        for res in ("clean", "healed", "failed", "drift"):
            self.passes.labels(res)
        self.server = None

    def serve(self, addr: str) -> tuple[str, int]:
        host, _, port = addr.rpartition(":")
        self.server, _thread = start_http_server(int(port), addr=host.strip("[]") or "127.0.0.1",
                                                 registry=self.registry)
        return host, self.server.server_port

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
