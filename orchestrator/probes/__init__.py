"""eBPF probes: capability detection, compilation with bcc, attachment and reading."""
