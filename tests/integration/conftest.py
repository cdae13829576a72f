"""Fixtures of the real-kernel tests: a real `bridgelab run` in a subprocess, stopped by its pid in a
finalizer."""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.conftest import ROOT, wait_for


class DaemonProc:
    stop_timeout = 10

    def __init__(self, lab, *extra, env=None, host=None, ready_timeout=20):
        """HOST: one lab host's daemon of a lab across hosts (`run --as HOST`)."""
        self.lab, self.host = lab, host
        self.log_path = os.path.join(os.path.dirname(lab.path),
                                     f"{lab.name}-{host or 'daemon'}-{time.monotonic_ns()}.log")
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "orchestrator", "run", "-f", lab.path, *(("--as", host) if host else ()),
             "--metrics-addr", "127.0.0.1:0", *extra],
            stdout=self.log, stderr=subprocess.STDOUT, cwd=ROOT,
            env={**os.environ, "BRIDGELAB_LOG_LEVEL": "info", **(env or {})})
        info = f"/run/bridgelab/{lab.name}{'.' + host if host else ''}/daemon.json"
        ok = wait_for(lambda: self.proc.poll() is not None or (os.path.exists(info) and self.ready()),
                      timeout=ready_timeout)
        assert ok and self.proc.poll() is None, f"daemon did not become ready:\n{self.text()[-3000:]}"
        self.port = json.load(open(info))["metrics_port"]

    def ready(self) -> bool:
        return any(e.get("event") == "ready" for e in self.events())

    def events(self) -> list[dict]:
        out = []
        for line in open(self.log_path):
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
        return out

    def text(self) -> str:
        return open(self.log_path).read()

    def metrics(self) -> dict[str, float]:
        body = urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5).read().decode()
        out = {}
        for line in body.splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                out[key] = float(value)
        return out

    def applied(self) -> float:
        return sum(v for k, v in self.metrics().items()
                   if k.startswith("bridgelab_heal_actions_total") and 'outcome="applied"' in k)

    def stop(self, sig=signal.SIGTERM, timeout=None) -> int | None:
        timeout = timeout or self.stop_timeout
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode


@pytest.fixture
def start_daemon():
    started = []

    def start(lab, *extra, env=None):
        d = DaemonProc(lab, *extra, env=env)
        started.append(d)
        return d

    yield start
    for d in started:
        d.stop()
