"""What a new user and an attacker tried (issue #11), each aimed only at scratch paths and
namespaces the test itself creates."""

import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT, sh, unique_lab

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
