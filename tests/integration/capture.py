"""tcpdump as an independent oracle: started in a namespace, stopped by its own pid."""

import os
import signal
import subprocess
import time


class Capture:
    def __init__(self, ns: str, iface: str, bpf: str, count: int | None = None):
        cmd = ["ip", "netns", "exec", ns, "tcpdump", "-i", iface, "-nn", "-l", "-U"]
        if count:
            cmd += ["-c", str(count)]
        cmd += bpf.split()
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 5
        # tcpdump says "listening on" once its socket is attached
        os.set_blocking(self.proc.stderr.fileno(), False)
        buf = ""
        while time.monotonic() < deadline and "listening on" not in buf:
            try:
                buf += os.read(self.proc.stderr.fileno(), 4096).decode()
            except BlockingIOError:
                pass
            time.sleep(0.02)
        assert "listening on" in buf, f"tcpdump did not start: {buf}"

    def lines(self, timeout: float = 3.0) -> list[str]:
        try:
            out, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGINT)
            out, _ = self.proc.communicate(timeout=5)
        return [line for line in out.splitlines() if line.strip()]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
