"""`bridgelab run`: the lifecycle and its root tasks (run.py), the passes (healer.py), the
pending-pass record (pending.py), flap backoff (backoff.py), doorbells (doorbells.py), the poller
(poller.py), the probes (probe_supervisor.py), the drop reporter (drop_reporter.py), metrics
(metrics.py) and systemd's notify protocol (sdnotify.py)."""
