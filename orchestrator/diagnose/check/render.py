"""What `bridgelab check` prints: a table (rich), JSON, JUnit XML for a CI job to gate on."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from . import Result

MARK = {"ok": "✓", "failed": "✗", "skipped": "-"}


def table(lab: str, results: list[Result], color: bool) -> str:
    from rich.console import Console
    from rich.table import Table
    t = Table(title=f"lab {lab}: {len(results)} expectations", title_justify="left", show_lines=False)
    for col in ("", "expectation", "flow", "expected", "seen", "ms", "why it fails, and the fix"):
        t.add_column(col, overflow="fold")
    style = {"ok": "green", "failed": "bold red", "skipped": "dim"}
    for r in sorted(results, key=lambda r: (r.status != "failed", r.name)):   # failing ones first
        why = r.skipped or (f"{r.verdict}\nfix: {r.fix}" if r.status == "failed" and r.verdict else "")
        t.add_row(MARK[r.status], r.name, f"{r.src} → {r.to} ({r.proto})", r.expected, r.state,
                  f"{r.seconds * 1000:.1f}" if r.state else "", why, style=style[r.status])
    c = Console(record=True, width=160, color_system="standard" if color else None, force_terminal=color,
                file=open("/dev/null", "w"))
    c.print(t)
    failed = sum(r.status == "failed" for r in results)
    skipped = sum(r.status == "skipped" for r in results)
    text = "\n".join(x.rstrip() for x in c.export_text(styles=color).rstrip("\n").splitlines())
    return text + "\n" + (f"{failed} of {len(results)} failed" if failed else f"all {len(results) - skipped} hold") + \
        (f", {skipped} skipped" if skipped else "")


def junit(lab: str, results: list[Result], seconds: float) -> bytes:
    """One testsuite, one testcase per expectation: a failure carries the verdict as its message
    and the fix in its text; a skipped one its reason (the JUnit XML schema's shape)."""
    suites = ET.Element("testsuites", name="bridgelab check", tests=str(len(results)),
                        failures=str(sum(r.status == "failed" for r in results)), time=f"{seconds:.3f}")
    suite = ET.SubElement(suites, "testsuite", name=f"lab {lab}", tests=str(len(results)),
                          failures=str(sum(r.status == "failed" for r in results)), errors="0",
                          skipped=str(sum(r.status == "skipped" for r in results)), time=f"{seconds:.3f}")
    for r in results:
        case = ET.SubElement(suite, "testcase", classname=f"bridgelab.{lab}", name=r.name, time=f"{r.seconds:.3f}")
        if r.status == "failed":
            f = ET.SubElement(case, "failure", message=r.verdict or f"{r.state}, expected {r.expected}",
                              type=r.cause or "expectation")
            f.text = (f"{r.src} → {r.to} ({r.proto}): expected {r.expected}, seen {r.state}\n"
                      + (f"fix: {r.fix}\n" if r.fix else ""))
        elif r.status == "skipped":
            ET.SubElement(case, "skipped", message=r.skipped)
        out = ET.SubElement(case, "system-out")
        out.text = f"{r.src} → {r.to} ({r.proto}) expected {r.expected}: {r.state}"
    ET.indent(suites)
    return ET.tostring(suites, encoding="utf-8", xml_declaration=True)
