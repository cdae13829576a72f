"""Prometheus metrics of the daemon (healing and topology; the datapath families join with the
probes). One registry per daemon; every label set is bounded by the lists below."""

from __future__ import annotations

import socket
from functools import lru_cache
import threading
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import (CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector,
                               disable_created_metrics, make_wsgi_app)
from prometheus_client.exposition import ThreadingWSGIServer

from prometheus_client.openmetrics import exposition as _openmetrics

from .. import __version__
from ..errors import InputError
from ..reconcile.kinds import METRIC_KINDS

# the only values the `kind` label takes: one per resource kind (reconcile/kinds)
KINDS = METRIC_KINDS
OUTCOMES = ("applied", "failed", "backoff", "observed")  # observed: --no-heal
RESYNC_REASONS = ("lost_events", "periodic", "resubscribe")


# prometheus-client (0.26) validates and escapes every label name of every sample at every
# scrape, in both text formats: 7 regex matches per datapath sample, 26 % of a scrape of a
# 200-container lab (cProfile of generate_latest: 0.137 of 0.527 s). The names are a handful of
# constants, so the same pure function is memoized (tests/unit: exposition byte-identical), and
# so is the escaping of label values, which take the lab's own names (bounded: node, interface,
# hook, ...): one scrape of 200 containers' probe families 19.2 -> 14.2 ms (label names alone).
if not hasattr(_openmetrics.escape_label_name, "cache_info"):
    _openmetrics.escape_label_name = lru_cache(maxsize=512)(_openmetrics.escape_label_name)
    _openmetrics._escape = lru_cache(maxsize=8192)(_openmetrics._escape)

MAX_CONNECTIONS = 8   # served at once: prometheus-client's own server spawned a thread per connection,
IDLE_SECONDS = 2.0    # idle ones included, without bound


class _Handler(WSGIRequestHandler):
    timeout = IDLE_SECONDS  # an idle keep-alive or a silent client gives its slot back

    def log_message(self, *args) -> None:
        pass


class _BoundedServer(ThreadingWSGIServer):
    """A thread per connection, at most MAX_CONNECTIONS at once; beyond, connections are closed
    at once and counted."""

    daemon_threads = True
    slots: threading.BoundedSemaphore
    refused: Counter

    def process_request(self, request, client_address):
        if not self.slots.acquire(blocking=False):
            self.refused.inc()
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()


def _server(host: str, port: int, registry, refused: Counter, sock: socket.socket | None = None) -> _BoundedServer:
    cls = type("_Server", (_BoundedServer,), {"address_family": socket.AF_INET6 if ":" in host else socket.AF_INET})
    if sock is None:
        httpd = make_server(host, port, make_wsgi_app(registry), cls, handler_class=_Handler)
    else:   # listening already (bound in another network namespace than ours now)
        httpd = cls(sock.getsockname()[:2], _Handler, bind_and_activate=False)
        httpd.socket.close()
        httpd.socket = sock
        httpd.server_name, httpd.server_port = host, sock.getsockname()[1]
        httpd.setup_environ()
        httpd.set_app(make_wsgi_app(registry))
    httpd.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
    httpd.refused = refused
    return httpd


class HostLabelled:
    """A registry's exposition with host="HOST" on every sample: the daemons of a lab across
    hosts are told apart by it in one Prometheus (or a federation of them), whatever their
    scrape configs say."""

    def __init__(self, registry, host: str):
        self.registry, self.host = registry, host

    def collect(self):
        for m in self.registry.collect():
            m.samples = [s._replace(labels={**s.labels, "host": self.host}) for s in m.samples]
            yield m

    def restricted_registry(self, names):
        return HostLabelled(self.registry.restricted_registry(names), self.host)


def check_bindable(host: str, port: int) -> None:
    """Refuse a metrics address we cannot listen on before anything else happens."""
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, port))
    except OSError as e:
        raise InputError(f"--metrics-addr {host}:{port}: cannot listen there: {e.strerror}") from None
    finally:
        s.close()


disable_created_metrics()  # *_created series double the exposition and no dashboard uses them


class Metrics:
    def __init__(self, lab: str, mode: str, host: str = ""):
        r = self.registry = CollectorRegistry()
        self.host = host   # a lab host of a multi-host lab: every series carries host="..."
        Gauge("bridgelab_build_info", "bridgelab version and the lab it runs", ["version", "lab", "mode"],
              registry=r).labels(__version__, lab.split(".")[0], mode).set(1)
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
        self.reloads = Counter("bridgelab_topology_reloads_total", "SIGHUP reloads of the topology file: "
                               "applied, or refused (a bad file; the previous topology stays)", ["result"], registry=r)
        for res in ("applied", "refused"):
            self.reloads.labels(res)
        for k in KINDS:
            self.drift.labels(k)
            for o in OUTCOMES:
                self.heal_actions.labels(k, o)
        for reason in RESYNC_REASONS:
            self.resyncs.labels(reason)
        for res in ("clean", "healed", "failed", "drift"):
            self.passes.labels(res)
        # expectations (issue #17): one series per declared expectation, bounded by the topology
        self.expect_ok = Gauge("bridgelab_expectation_ok", "1 while the expectation holds, 0 while it fails",
                               ["expectation"], registry=r)
        self.expect_checks = Counter("bridgelab_expectation_checks_total", "Checks of each expectation by result: "
                                     "ok, failed, healing (failed while the daemon repairs the lab), skipped",
                                     ["expectation", "result"], registry=r)
        self.expect_seconds = Histogram("bridgelab_expectation_probe_seconds", "How long one expectation's probe took",
                                        buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2),
                                        registry=r)
        self.expect_failing = Gauge("bridgelab_expectation_failing_info", "1 for each failing expectation, with "
                                    "explain's cause, verdict and fix", ["expectation", "cause", "verdict", "fix"],
                                    registry=r)
        self.expect_packets = Counter("bridgelab_expectation_probe_packets_total",
                                      "Packets the checks' probes sent (they are in the datapath counters too)",
                                      registry=r)
        self.peer_up = Gauge("bridgelab_vxlan_peer_up", "A lab across hosts: 1 while the other host's VXLAN "
                             "endpoint answers over the underlay", ["peer"], registry=r)
        self.refused = Counter("bridgelab_metrics_connections_refused_total",
                               f"Scrape connections turned away: {MAX_CONNECTIONS} were being served", registry=r)
        self.server = None

    def serve(self, addr: str, sock: socket.socket | None = None) -> tuple[str, int]:
        host, _, port = addr.rpartition(":")
        host = host.strip("[]") or "127.0.0.1"
        try:
            self.server = _server(host, int(port), HostLabelled(self.registry, self.host) if self.host
                                  else self.registry, self.refused, sock)
        except OSError as e:
            raise InputError(f"--metrics-addr {addr}: cannot listen there: {e.strerror}") from None
        threading.Thread(target=self.server.serve_forever, name="bridgelab-metrics", daemon=True).start()
        return host, self.server.server_port

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
