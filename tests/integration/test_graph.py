"""`bridgelab graph`: SVG through Graphviz, one offline HTML page checked in a real headless
browser (Debian's Chromium): it loads without errors and shows every node, link and impairment."""

import re
import shutil
import subprocess

import pytest

from tests.conftest import example

pytestmark = pytest.mark.kernel

CHROMIUM = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--enable-logging=stderr", "--v=0"]


def test_svg_shows_networks_as_clusters_and_links_with_their_impairments(make_lab):
    lab = make_lab(base=example("routers.yaml"))
    svg = lab.cli("graph", "--format", "svg").stdout
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg
    assert "network front" in svg and "both ways: delay 20ms ±2ms, loss 0.5%, rate 100mbit" in svg
    for node in ("r1", "r2", "r3", "host", "gateway"):
        assert f">{node}</text>" in svg


@pytest.mark.skipif(not shutil.which("chromium"), reason="Debian's chromium is installed by make setup")
def test_html_page_loads_in_a_real_browser_and_shows_every_node(make_lab, tmp_path):
    lab = make_lab(base=example("multi-network.yaml"))
    page = tmp_path / "lab.html"
    page.write_text(lab.cli("graph", "--format", "html").stdout)
    text = page.read_text()
    assert "<script" not in text and "http://" not in text and "https://" not in text  # works offline
    r = subprocess.run([*CHROMIUM, f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", f"file://{page}"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    dom = r.stdout
    errors = [x for x in r.stderr.splitlines() if re.search(r"Uncaught|Failed to load|ERR_FILE", x)]
    assert not errors, errors
    for node in ("host", "web", "db", "other", "gateway", "client", "internet"):
        assert re.search(rf"<td>{node}</td>", dom), node
        assert f">{node}</text>" in dom, f"{node} is not in the picture"
    assert dom.count('class="up"') >= 8  # every node up (the lab is)
    assert "side -&gt; other:eth0: delay 10ms, loss 1%" in dom
