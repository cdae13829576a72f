"""eBPF probes: one descriptor per family (families/), what the kernel allows (kernel.py, btf.py),
compilation (build.py), attachment (attach.py, links.py), the lab's probes as one object
(loader.py), reading their counters for Prometheus (collector.py), and tracing: events and their
assembly into packet paths (events.py), a trace session (session.py). Where they sit: points.py."""
