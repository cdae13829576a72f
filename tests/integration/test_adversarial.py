"""What a new user and an attacker tried (issue #11), each aimed only at scratch paths and
namespaces the test itself creates."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT, sh, unique_lab, wait_for

pytestmark = pytest.mark.kernel


def cli(*args, env=None, prefix=(), timeout=60):
    return subprocess.run([*prefix, sys.executable, "-m", "orchestrator", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env={**os.environ, **(env or {})})


@pytest.mark.parametrize("name", ["../victim", "../../victim", "..", ".", "", "a/b", "victim/..", "UPPER", "x" * 13])
def test_down_lab_name_never_leaves_the_run_dir(tmp_path, name):
    """The critical one: `down --lab ../../X` removed /X (a machine's /etc, in testing)."""
    run = tmp_path / "run"
    (run / "ok").mkdir(parents=True)
    victim = tmp_path / "victim"
    (victim / "keep").mkdir(parents=True)
    (victim / "keep" / "file").write_text("precious")
    r = cli("down", "--lab", name, env={"BRIDGELAB_RUN_DIR": str(run / "ok")})
    assert r.returncode == 2, r.stdout + r.stderr
    assert "not a lab name" in r.stderr and "Traceback" not in r.stderr
    assert (victim / "keep" / "file").read_text() == "precious"
    assert (run / "ok").is_dir()


def test_state_file_naming_another_lab_is_refused(tmp_path):
    run = tmp_path / "run"
    lab = unique_lab()
    (run / lab).mkdir(parents=True)
    (tmp_path / "victim").mkdir()
    (run / lab / "state.json").write_text('{"lab": "../victim", "mode": "sandbox"}')
    r = cli("down", "--lab", lab, env={"BRIDGELAB_RUN_DIR": str(run)})
    assert r.returncode == 2, r.stdout + r.stderr
    assert (tmp_path / "victim").is_dir()


@pytest.fixture
def playhost():
    """A namespace playing an admin's host with links and a table marked as lab LAB's, but no
    state file: `down` must not take them for its own host-mode lab."""
    lab = unique_lab()
    ns = f"blt{lab}"
    sh(["ip", "netns", "add", ns])
    try:
        sh(["ip", "-n", ns, "link", "add", "br9", "type", "bridge"])
        sh(["ip", "-n", ns, "link", "set", "br9", "alias", f"bridgelab:{lab}:bridge"])
        sh(["ip", "netns", "exec", ns, "nft", f"add table ip bridgelab_{lab}"])
        yield lab, ns
    finally:
        sh(["ip", "netns", "del", ns], check=False)


def test_down_without_state_leaves_the_current_namespace_alone(playhost, tmp_path):
    lab, ns = playhost
    r = cli("down", "--lab", lab, env={"BRIDGELAB_RUN_DIR": str(tmp_path)},
            prefix=("nsenter", f"--net=/run/netns/{ns}"))
    assert r.returncode == 0, r.stderr
    assert "br9" in sh(["ip", "-n", ns, "link", "show"]).stdout
    assert f"bridgelab_{lab}" in sh(["ip", "netns", "exec", ns, "nft", "list", "tables"]).stdout


# ---------------------------------------------------------------- helpers

def tagged(lab: str) -> dict[str, list[int]]:
    """The lab's service processes as the kernel sees them (their environment's tag), by name."""
    out: dict[str, list[int]] = {}
    for pid in [p for p in os.listdir("/proc") if p.isdigit()]:
        try:
            env = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
        except OSError:
            continue
        for v in env:
            if v.startswith(f"BRIDGELAB_SERVICE={lab}/".encode()):
                out.setdefault(v.split(b"/", 1)[1].decode(), []).append(int(pid))
    return out


def addrs(lab, node, dev):
    return sorted(a["local"] + "/" + str(a["prefixlen"]) for a in
                  json.loads(lab.x(node, f"ip -j addr show dev {dev}").stdout)[0]["addr_info"] if a["family"] == "inet")


def status(lab):
    r = lab.cli("status", "--json", check=False)
    return r.returncode, json.loads(r.stdout)


# ---------------------------------------------------------------- drift nobody declared

def test_foreign_addresses_and_routes_are_drift_and_healing_removes_them(make_lab, start_daemon):
    lab = make_lab()
    lab.x("container1", "ip addr add 172.168.1.21/24 dev eth1")            # an address nobody declared
    lab.x("container1", "ip addr add 172.168.1.12/32 dev lo")              # container2's, hijacked
    lab.x("container1", "ip route add 128.0.0.0/1 via 172.168.1.12")       # a route hijacking traffic
    code, st = status(lab)
    verbs = sorted((a["verb"], a["target"]) for a in st["drift"])
    assert ("delete-address", "eth1") in verbs and ("delete-address", "lo") in verbs
    assert ("delete-route", "128.0.0.0/1") in verbs, verbs
    lab.up()
    assert addrs(lab, "container1", "eth1") == ["172.168.1.11/24"]
    assert "128.0.0.0/1" not in lab.x("container1", "ip route").stdout
    assert lab.ping("container1", "172.168.1.12")
    start_daemon(lab, "--no-probes")
    lab.x("container1", "ip route add 128.0.0.0/1 via 172.168.1.12 && ip addr add 172.168.1.22/24 dev eth1")
    assert wait_for(lambda: "128.0.0.0/1" not in lab.x("container1", "ip route").stdout
                    and addrs(lab, "container1", "eth1") == ["172.168.1.11/24"], timeout=10)


def test_a_changed_address_replaces_the_old_one(make_lab):
    lab = make_lab()
    lab.spec["containers"][0]["address"] = "172.168.1.21"
    lab.save()
    lab.up()
    assert addrs(lab, "container1", "eth1") == ["172.168.1.21/24"]     # .11 is gone, not kept beside


# ---------------------------------------------------------------- one manager per lab

def test_one_daemon_per_lab_and_up_down_refuse_under_it(make_lab, start_daemon):
    lab = make_lab(up=False)
    d = start_daemon(lab, "--no-probes")
    before = tagged(lab.name)
    second = lab.cli("run", "--no-probes", "--metrics-addr", "127.0.0.1:0", check=False, timeout=20)
    assert second.returncode == 5 and f"pid {d.proc.pid}" in second.stderr and "Traceback" not in second.stderr
    for cmd in (["up"], ["down", "--lab", lab.name]):
        r = lab.cli(*cmd, check=False)
        assert r.returncode == 5 and "kill -HUP" in r.stderr, r.stderr
    assert os.path.exists(f"/run/bridgelab/{lab.name}/daemon.json")
    time.sleep(3)
    assert tagged(lab.name) == before, "nobody restarted the services"
    assert d.proc.poll() is None
    assert len([n for n in sh("ip netns list").stdout.split() if n.startswith(f"bl-{lab.name}-")]) == 7


def test_the_lock_goes_with_a_killed_daemon(make_lab, start_daemon):
    lab = make_lab(up=False)
    d = start_daemon(lab, "--no-probes")
    d.stop(signal.SIGKILL)
    assert lab.cli("up", check=False).returncode == 0  # the kernel released the lock


# ---------------------------------------------------------------- kill -9 mid-pass

def _services_spec(spec):
    spec["containers"][0]["services"].append({"kind": "command", "argv": ["sleep", "3600"]})


@pytest.mark.parametrize("delay", [0.15, 0.35, 0.6])
def test_kill_9_of_up_mid_pass_leaves_nothing_untracked(make_lab, delay):
    lab = make_lab(_services_spec, up=False)
    p = subprocess.Popen([sys.executable, "-m", "orchestrator", "up", "-f", lab.path], cwd=ROOT,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(delay)
    p.kill()
    p.wait()
    lab.up()   # idempotent after any kill
    assert lab.up()["actions"] == []
    procs = tagged(lab.name)
    assert sorted(procs) == ["container1/http:80", "container1/sleep", "container2/http:80"], procs
    assert all(len(v) == 1 for v in procs.values()), procs
    lab.cli("down", "--lab", lab.name)
    assert tagged(lab.name) == {}, "down ends every process of the lab, tracked or found"


def test_kill_9_of_the_daemon_mid_pass_with_services(make_lab, start_daemon):
    lab = make_lab(_services_spec, up=False)
    d = start_daemon(lab, "--no-probes")
    sh(["ip", "netns", "del", lab.ns("container1")])   # its services must start again in the new one
    time.sleep(0.05)
    d.stop(signal.SIGKILL)
    d2 = start_daemon(lab, "--no-probes")
    assert wait_for(lambda: d2.ready(), timeout=10)
    time.sleep(1)
    procs = tagged(lab.name)
    assert all(len(v) == 1 for v in procs.values()) and len(procs) == 3, procs
    ino = os.stat(f"/run/netns/{lab.ns('container1')}").st_ino
    for pid in procs["container1/sleep"] + procs["container1/http:80"]:
        assert os.stat(f"/proc/{pid}/ns/net").st_ino == ino, "no service left in a deleted namespace"
    restarts = [e for e in d2.events() if e.get("action") == "start-service"]
    time.sleep(2)
    assert len([e for e in d2.events() if e.get("action") == "start-service"]) == len(restarts), "no restart loop"


# ---------------------------------------------------------------- host mode

@pytest.fixture
def shared_host():
    """A namespace playing an admin's host: ip_forward off, an uplink of its own."""
    ns = f"blt{unique_lab()}"
    sh(["ip", "netns", "add", ns])
    try:
        sh(["ip", "-n", ns, "link", "add", "ens33", "type", "veth", "peer", "name", "ens33p"])
        sh(["ip", "-n", ns, "addr", "add", "192.168.0.10/24", "dev", "ens33"])
        sh(["ip", "-n", ns, "link", "set", "ens33", "up"])
        sh(["ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv4.ip_forward=0"])
        yield ns
    finally:
        sh(["ip", "netns", "del", ns], check=False)


def _second_lab(spec):
    spec["bridge"] = {"name": "br1", "subnet": "172.30.0.0/24"}
    for i, c in enumerate(spec["containers"]):
        c["address"] = f"172.30.0.{11 + i}"
        c["host_interface"] = f"vethb{i + 1}"
    spec["ports"] = [{"host_port": 18888, "to": "container1:80"}]


def test_shared_sysctls_are_restored_only_by_the_last_lab(make_lab, shared_host, tmp_path):
    enter = ("nsenter", f"--net=/run/netns/{shared_host}")
    a = make_lab(up=False)
    b = make_lab(_second_lab, up=False)
    fwd = lambda: sh(["ip", "netns", "exec", shared_host, "sysctl", "-n", "net.ipv4.ip_forward"]).stdout.strip()  # noqa: E731
    try:
        a.up("--host", prefix=enter)
        b.up("--host", prefix=enter)
        assert fwd() == "1"
        a.cli("down", "--lab", a.name, prefix=enter)
        assert fwd() == "1", "lab b still needs ip_forward"
        b.cli("down", "--lab", b.name, prefix=enter)
        assert fwd() == "0", "the last lab restores what it found"
    finally:
        for lab in (a, b):
            lab.cli("down", "--lab", lab.name, prefix=enter, check=False)


def test_a_host_mode_lab_refuses_another_namespace(make_lab, shared_host):
    enter = ("nsenter", f"--net=/run/netns/{shared_host}")
    lab = make_lab(up=False)
    try:
        lab.up("--host", prefix=enter)
        r = lab.cli("status", "--host", check=False)        # from the machine's own namespace
        assert r.returncode == 5 and "another network namespace" in r.stderr, r.stderr
        assert lab.cli("status", "--host", check=False, prefix=enter).returncode == 0
    finally:
        lab.cli("down", "--lab", lab.name, prefix=enter, check=False)


def test_up_host_under_ip_netns_exec_refuses_once_and_applies_nothing(make_lab, shared_host):
    lab = make_lab(up=False)
    r = lab.cli("up", "--host", check=False, prefix=("ip", "netns", "exec", shared_host))
    assert r.returncode == 2 and "private mount namespace" in r.stderr, r.stderr
    errors = [x for x in r.stderr.splitlines() if not x.startswith("warning:")]
    assert "change" not in r.stdout and len(errors) == 1, (r.stdout, r.stderr)
    links = {x["ifname"] for x in json.loads(sh(["ip", "-n", shared_host, "-j", "link"]).stdout)}
    assert links == {"lo", "ens33", "ens33p"}


# ---------------------------------------------------------------- flap detection

def test_consequences_of_other_repairs_do_not_flap_a_port(make_lab, start_daemon):
    lab = make_lab(up=False)
    d = start_daemon(lab, "--no-probes", "--flap-heals", "3")
    for fault in ("ip link del veth1", "ip link del br0", "ip link del veth1"):
        lab.x("host", fault)
        assert wait_for(lambda: lab.ping("container1", "172.168.1.12"), timeout=10)
    time.sleep(0.5)
    flaps = [e for e in d.events() if e.get("event") == "flapping"]
    assert not flaps, flaps


# ---------------------------------------------------------------- services

def test_command_services_start_first_time_with_distinct_names_and_private_logs(make_lab):
    def cmds(spec):
        spec["containers"][1]["services"] = [{"kind": "command", "argv": ["sleep", "3600"]},
                                             {"kind": "command", "argv": ["sleep", "3601"]}]
    lab = make_lab(cmds)
    procs = tagged(lab.name)
    assert len(procs["container2/sleep"]) == 1 and len(procs["container2/sleep#2"]) == 1
    logs = f"/run/bridgelab/{lab.name}/logs"
    assert oct(os.stat(logs).st_mode & 0o777) == "0o700"
    for f in os.listdir(logs):
        assert oct(os.stat(os.path.join(logs, f)).st_mode & 0o777) == "0o600", f
    assert oct(os.stat(f"/run/bridgelab/{lab.name}").st_mode & 0o777) == "0o700"


def test_a_service_that_exits_at_once_is_a_failure(make_lab):
    def failing(spec):
        spec["containers"][1]["services"] = [{"kind": "command", "argv": ["sh", "-c", "echo no config; exit 3"]}]
    lab = make_lab(failing, up=False)
    r = lab.cli("up", check=False)
    assert r.returncode == 1 and "exited at once" in r.stderr and "no config" in r.stderr, r.stderr


def test_service_logs_are_capped(make_lab, start_daemon):
    def chatty(spec):
        spec["containers"][1]["services"] = [{"kind": "command", "argv": [
            "sh", "-c", "while :; do head -c 200000 /dev/zero | tr '\\0' x; echo; sleep 0.2; done"]}]
    lab = make_lab(chatty, up=False)
    start_daemon(lab, "--no-probes")
    time.sleep(8)   # about 8 MB written
    size = os.path.getsize(f"/run/bridgelab/{lab.name}/logs/container2_sh.log")
    assert size < 2_500_000, size


# ---------------------------------------------------------------- drops that are not drops

def _udp_echo(spec):
    spec["containers"][1]["services"].append({"kind": "command", "port": 5353, "protocol": "udp", "argv": [
        "python3", "-c", "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
        "s.bind(('0.0.0.0',5353))\nwhile True:\n d,a=s.recvfrom(2048)\n s.sendto(d,a)"]})


def test_healthy_traffic_counts_no_drops(make_lab, start_daemon):
    lab = make_lab(_udp_echo, up=False)
    d = start_daemon(lab)
    assert wait_for(lambda: any(e.get("event") == "probes ready" for e in d.events()), timeout=30)
    drops = lambda: sum(v for k, v in d.metrics().items() if k.startswith("bridgelab_drops_total"))  # noqa: E731
    time.sleep(1)
    before = drops()
    for _ in range(5):
        assert lab.ping("container1", "172.168.1.12", 3) and lab.ping("container1", "203.0.113.10", 2)
        assert lab.ping("client", "192.168.0.10", 2)
        assert lab.http("client", "http://192.168.0.10:8888/") == "container1"
        assert lab.http("container1", "http://172.168.1.12/") == "container2"
        assert lab.http("host", "http://127.0.0.1:9999/") == "container2"
        r = lab.x("container1", "python3 -c \"import socket;s=socket.socket(2,2);s.settimeout(2);"
                                "s.sendto(b'hi',('172.168.1.12',5353));print(s.recv(9))\"")
        assert "hi" in r.stdout
    time.sleep(2.5)
    assert drops() == before, {k: v for k, v in d.metrics().items() if k.startswith("bridgelab_drops_total")}
    frees = sum(v for k, v in d.metrics().items() if k.startswith("bridgelab_delivered_frees_total"))
    assert frees > 0, "freed after delivery: counted apart"


def test_explain_udp_works_when_answered_and_not_when_nothing_listens(make_lab):
    lab = make_lab(_udp_echo)
    r = subprocess.run([sys.executable, "-m", "orchestrator", "explain", "-f", lab.path, "--json", "container1",
                        "container2:5353", "--proto", "udp"], capture_output=True, text=True, cwd=ROOT, timeout=90)
    out = json.loads(r.stdout)
    assert r.returncode == 0 and out["works"] and out["live"]["result"] == "replied", out["verdict"]
    r = subprocess.run([sys.executable, "-m", "orchestrator", "explain", "-f", lab.path, "--json", "container1",
                        "container2:5454", "--proto", "udp"], capture_output=True, text=True, cwd=ROOT, timeout=90)
    out = json.loads(r.stdout)
    assert r.returncode == 1 and out["cause"] == "not_listening" and "ICMP port unreachable" in out["verdict"]


# ---------------------------------------------------------------- bad input through the CLI

BAD_FILES = {
    "not-utf8": b"lab: \xff\xfe\n",
    "alias-bomb": b'a: &a ["x","x","x","x","x","x","x","x","x"]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n'
                  b'c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\n',
    "deep": b"a: " + b"[" * 3000 + b"]" * 3000,
    "duplicate-keys": b"lab: a\nlab: b\n",
}


@pytest.mark.parametrize("name", sorted(BAD_FILES) + ["dev-zero"])
def test_bad_files_exit_2_without_a_traceback_and_touch_nothing(tmp_path, name):
    path = "/dev/zero" if name == "dev-zero" else str(tmp_path / "bad.yaml")
    if name != "dev-zero":
        open(path, "wb").write(BAD_FILES[name])
    t0 = time.monotonic()
    r = cli("up", "-f", path, env={"BRIDGELAB_RUN_DIR": str(tmp_path / "run")}, timeout=30)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "fix:" in r.stderr, r.stderr
    assert time.monotonic() - t0 < 10
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("addr,words", [("9477", "HOST:PORT"), ("127.0.0.1:99999", "HOST:PORT"),
                                        ("localhost:9", "not an IP address"), ("in-use", "cannot listen")])
def test_bad_metrics_addr_exits_2_before_the_lab_is_touched(make_lab, addr, words):
    lab = make_lab(up=False)
    s = None
    if addr == "in-use":
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen()
        addr = f"127.0.0.1:{s.getsockname()[1]}"
    try:
        r = lab.cli("run", "--no-probes", "--metrics-addr", addr, check=False, timeout=20)
    finally:
        if s:
            s.close()
    assert r.returncode == 2 and words in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not [n for n in sh("ip netns list").stdout.split() if n.startswith(f"bl-{lab.name}-")]


def test_exec_options_after_the_node_are_an_error(lab):
    r = lab.cli("exec", "container1", "-f", lab.path, "--", "true", check=False)
    assert r.returncode == 2 and "options go before the node" in r.stderr


def test_exec_without_a_command_opens_a_shell_in_the_node(lab):
    r = subprocess.run([sys.executable, "-m", "orchestrator", "exec", "-f", lab.path, "container1"], input="ip -br a\nexit\n",
                       capture_output=True, text=True, cwd=ROOT, timeout=20, env={**os.environ, "SHELL": "/bin/sh"})
    assert r.returncode == 0 and "172.168.1.11/24" in r.stdout, r.stderr


def test_ctrl_c_during_up_says_what_was_applied(make_lab):
    def big(spec):
        spec["bridge"]["subnet"] = "10.77.0.0/16"
        spec["bridge"]["gateway"] = "10.77.0.1"
        spec["containers"] = [{"name": f"c{i}", "address": f"10.77.{i // 200}.{i % 200 + 2}", "host_interface": f"vc{i}"}
                              for i in range(300)]
        spec["ports"] = []
    lab = make_lab(big, up=False)
    p = subprocess.Popen([sys.executable, "-m", "orchestrator", "up", "-f", lab.path], cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1.0)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=30)
    assert p.returncode == 130 and "interrupted" in err and "Traceback" not in err, (out, err)
    assert "run 'bridgelab up -f" in err
    assert lab.cli("up").returncode == 0  # and it finishes afterwards


def test_a_closed_pipe_ends_quietly(lab):
    r = subprocess.run(f"{sys.executable} -m orchestrator status -f {lab.path} | head -1", shell=True,
                       capture_output=True, text=True, cwd=ROOT, timeout=30)
    assert r.stdout.startswith(f"lab {lab.name}") and "Traceback" not in r.stderr and "BrokenPipe" not in r.stderr


# ---------------------------------------------------------------- the daemon's reload

def test_sighup_applies_a_valid_topology_and_keeps_the_old_one_on_a_bad_one(make_lab, start_daemon):
    lab = make_lab(up=False)
    d = start_daemon(lab, "--no-probes")
    lab.spec["containers"].append({"name": "container3", "address": "172.168.1.13", "host_interface": "veth3"})
    lab.save()
    d.proc.send_signal(signal.SIGHUP)
    assert wait_for(lambda: lab.ping("container1", "172.168.1.13"), timeout=10), d.text()[-2000:]
    assert any(e.get("event") == "reloaded" for e in d.events())
    open(lab.path, "a").write("ports: [{host_port: 0, to: nowhere}]\n")
    d.proc.send_signal(signal.SIGHUP)
    assert wait_for(lambda: any(e.get("event") == "reload refused" for e in d.events()), timeout=5)
    assert d.proc.poll() is None and lab.ping("container1", "172.168.1.13")


# ---------------------------------------------------------------- small things

def test_routes_show_as_proto_bridgelab(lab):
    assert "proto bridgelab" in lab.x("container1", "ip route show default").stdout


def test_ls_logs_version_help_and_no_color(lab):
    r = lab.cli("ls", "--json")
    row = next(x for x in json.loads(r.stdout) if x["lab"] == lab.name)
    assert row["mode"] == "sandbox" and row["namespaces"] == 7 and row["daemon"] is None
    assert lab.name in lab.cli("ls").stdout
    r = lab.cli("logs", "container1", "-n", "5")
    assert r.returncode == 0 and "Serving HTTP" in r.stdout
    assert lab.cli("logs", "container1/nope", check=False).returncode == 2
    assert re.match(r"bridgelab \d+\.\d+", cli("--version").stdout)
    for sub in ("up", "explain", "exec"):
        h = cli(sub, "--help").stdout
        assert "examples:" in h and len(h.splitlines()) > 8, sub
    r = subprocess.run([sys.executable, "-m", "orchestrator", "status", "-f", lab.path], capture_output=True, text=True,
                       cwd=ROOT, env={**os.environ, "NO_COLOR": "1"})
    assert "\033[" not in r.stdout


def test_shell_completion_offers_commands_and_nodes(lab, tmp_path):
    def complete(line: str) -> list[str]:
        out = tmp_path / "completions"
        env = {**os.environ, "_ARGCOMPLETE": "1", "_ARGCOMPLETE_IFS": "\n", "COMP_LINE": line,
               "COMP_POINT": str(len(line)), "_ARGCOMPLETE_STDOUT_FILENAME": str(out)}
        subprocess.run([sys.executable, "-m", "orchestrator"], env=env, capture_output=True, cwd=ROOT, timeout=20)
        return out.read_text().split("\n")
    assert {"up", "explain", "exec"} <= set(x.strip() for x in complete("bridgelab "))
    assert "container1" in [x.strip() for x in complete(f"bridgelab exec -f {lab.path} con")]


def test_idle_connections_do_not_take_a_thread_each(make_lab, start_daemon):
    lab = make_lab(up=False)
    d = start_daemon(lab, "--no-probes")
    threads = lambda: len(os.listdir(f"/proc/{d.proc.pid}/task"))  # noqa: E731
    base = threads()
    idle = [socket.create_connection(("127.0.0.1", d.port)) for _ in range(30)]
    try:
        time.sleep(0.5)
        assert threads() <= base + 8
        def served() -> bool:   # while all are taken a new connection is closed at once (refused, counted)
            try:
                return d.metrics() is not None
            except OSError:
                return False
        assert wait_for(served, timeout=10)   # served again once idle ones time out
    finally:
        for s in idle:
            s.close()
