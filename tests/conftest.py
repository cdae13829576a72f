"""Fixtures shared by all tests. Integration tests build labs in namespaces of their own, with a
unique lab name per test, and tear them down in finalizers even when the test fails."""

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time

import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEED = yaml.safe_load(open(os.path.join(ROOT, "examples/seed.yaml")))


def example(name: str) -> dict:
    return yaml.safe_load(open(os.path.join(ROOT, "examples", name)))


def sh(cmd, check=True, timeout=30, **kw):
    return subprocess.run(cmd, shell=isinstance(cmd, str), capture_output=True, text=True,
                          check=check, timeout=timeout, **kw)


def root_snapshot() -> dict:
    """The machine's own namespace as independent tools see it."""
    snap = {}
    for what in ("link", "addr", "route", "rule"):
        out = json.loads(sh(["ip", "-j", what, "show"]).stdout or "[]")
        for item in out:  # counters and timers move on their own
            for k in ("stats64", "stats", "valid_life_time", "preferred_life_time", "operstate"):
                item.pop(k, None)
            for ai in item.get("addr_info", []):
                ai.pop("valid_life_time", None)
                ai.pop("preferred_life_time", None)
        snap[what] = out
    snap["nft"] = sh(["nft", "-j", "list", "ruleset"]).stdout
    snap["qdisc"] = sh(["tc", "-j", "qdisc", "show"]).stdout
    keys = ["net/ipv4/ip_forward", "net/ipv4/conf/all/route_localnet", "net/ipv4/conf/all/rp_filter",
            "net/ipv4/conf/default/rp_filter", "net/bridge/bridge-nf-call-iptables"]
    snap["sysctl"] = {k: open(f"/proc/sys/{k}").read().strip() for k in keys if os.path.exists(f"/proc/sys/{k}")}
    return snap


TEST_NS_PREFIXES = ("bl-t", "blt")


def suite_namespaces() -> set[str]:
    """Namespaces named the way this suite names its labs."""
    if not os.path.isdir("/run/netns"):
        return set()
    return {n for n in os.listdir("/run/netns") if n.startswith(TEST_NS_PREFIXES)}


def pytest_sessionstart(session):
    # the compiled probes are cached by the suite's daemons in a directory of its own, never in
    # the machine's /var/cache (the first probe test compiles, the rest load the object)
    if not os.environ.get("BRIDGELAB_CACHE_DIR"):
        session.config._cache_dir = tempfile.mkdtemp(prefix="bridgelab-test-cache-")
        os.environ["BRIDGELAB_CACHE_DIR"] = session.config._cache_dir
    if os.geteuid() == 0:
        session.config._root_before = root_snapshot()
        # A run killed mid-test (power loss, SIGKILL) leaves its lab behind. This run did not make
        # it and must not be blamed for it, nor remove it: it may belong to a run still going.
        session.config._stale_test_ns = suite_namespaces()


def machine_changes(config) -> list[str]:
    """How the machine's own namespace differs from before the suite, and which namespaces the
    suite left behind (only those this run made: a stale lab from an interrupted run is named
    apart, never blamed on this run nor removed)."""
    before = getattr(config, "_root_before", None)
    if before is None:
        return []
    after = root_snapshot()
    out = [f"the machine's own namespace changed: {key}" for key in before if after[key] != before[key]]
    mine = tuple(f"bl-{lab}-" for lab in MADE) + tuple(f"blt{lab}" for lab in MADE)
    leftovers = sorted(n for n in suite_namespaces() - config._stale_test_ns if n.startswith(mine))
    if leftovers:
        out.append(f"tests left namespaces behind: {leftovers}")
    return out


def pytest_sessionfinish(session, exitstatus):
    """After the last test: the machine's own namespace (links, addresses, routes, rules, nft
    ruleset, qdiscs, sysctls) is identical to before the suite. A difference fails the run."""
    if getattr(session.config, "_cache_dir", None):
        shutil.rmtree(session.config._cache_dir, ignore_errors=True)
    if session.config.option.collectonly or os.geteuid() != 0:
        return
    problems = machine_changes(session.config)
    session.config._machine_problems = problems
    if problems and session.exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, config):
    for p in getattr(config, "_machine_problems", []):
        terminalreporter.write_line(f"FAILED (end of suite): {p}", red=True)
    stale = getattr(config, "_stale_test_ns", set()) & suite_namespaces()
    if stale:
        labs = sorted({n.split("-")[1] for n in stale if n.count("-") >= 2})
        terminalreporter.write_line(
            f"note: namespaces from an earlier, interrupted run were there before this one and are "
            f"still there: {sorted(stale)}; remove them with `bridgelab down --lab NAME` for "
            f"{labs}", yellow=True)


class Lab:
    """A sandbox lab made by the real CLI, in a subprocess, as a user would."""

    def __init__(self, spec: dict, path: str):
        self.spec = spec
        self.name = spec["lab"]
        self.path = path
        with open(path, "w") as f:
            yaml.safe_dump(spec, f)

    def ns(self, node: str) -> str:
        return f"bl-{self.name}-{node}"

    def cli(self, *args, check=True, timeout=60, prefix=()):
        args = list(args)
        if args and args[0] != "down" and "-f" not in args:
            args[1:1] = ["-f", self.path]
        cmd = [*prefix, sys.executable, "-m", "orchestrator", *args]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
        if check and r.returncode != 0:
            raise AssertionError(f"{cmd} -> {r.returncode}\n{r.stdout}\n{r.stderr}")
        return r

    def up(self, *extra, prefix=()):
        return json.loads(self.cli("up", "--json", *extra, prefix=prefix).stdout)

    def save(self) -> None:
        """Write the (changed) spec back to the lab's file."""
        with open(self.path, "w") as f:
            yaml.safe_dump(self.spec, f)

    def rtt(self, node: str, addr: str, count: int = 10) -> tuple[float, float]:
        """(average RTT in ms, loss fraction) of COUNT pings."""
        out = self.x(node, f"ping -n -q -c {count} -i 0.02 -W 1 {addr}", check=False, timeout=60).stdout
        loss = float(re.search(r"([\d.]+)% packet loss", out).group(1)) / 100
        m = re.search(r"= [\d.]+/([\d.]+)/", out)
        return (float(m.group(1)) if m else float("nan")), loss

    def x(self, node: str, cmd: str, check=True, timeout=20):
        """Run a shell command in a node's namespace (ip netns exec: an independent tool)."""
        return sh(["ip", "netns", "exec", self.ns(node), "sh", "-c", cmd], check=check, timeout=timeout)

    def http(self, node: str, url: str) -> str:
        r = self.x(node, f"curl -s -m 3 {url}", check=False)
        return r.stdout.strip() if r.returncode == 0 else f"curl exit {r.returncode}"

    def ping(self, node: str, addr: str, count=1) -> bool:
        return self.x(node, f"ping -n -c {count} -i 0.2 -W 1 {addr}", check=False).returncode == 0


MADE: set[str] = set()  # lab names this run made: only their namespaces can be this run's leftovers


def unique_lab() -> str:
    name = "t" + secrets.token_hex(4)
    MADE.add(name)
    return name


@pytest.fixture
def make_lab(tmp_path):
    made = []

    def make(mutate=None, up=True, name=None, base=None):
        spec = json.loads(json.dumps(base or SEED))
        spec["lab"] = name or unique_lab()
        MADE.add(spec["lab"])
        if mutate:
            before = json.dumps(spec.get("expect"))
            mutate(spec)
            if json.dumps(spec.get("expect")) == before:
                spec.pop("expect", None)   # the seed's expectations name its nodes; a changed lab may not have them
        lab = Lab(spec, str(tmp_path / f"{spec['lab']}.yaml"))
        made.append(lab)
        if up:
            lab.up()
        return lab

    yield make
    for lab in made:
        lab.cli("down", "--lab", lab.name, check=False)
        leftovers = [n for n in os.listdir("/run/netns") if n.startswith(f"bl-{lab.name}-")] \
            if os.path.isdir("/run/netns") else []
        assert not leftovers, f"down left namespaces behind: {leftovers}"


@pytest.fixture
def lab(make_lab):
    return make_lab()


def wait_for(pred, timeout=5.0, every=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(every)
    return pred()
