"""The HTML audit report in a real browser: Debian's chromium, headless.

The page has no JavaScript at all (and a CSP that forbids it), so "no console errors" means
chromium logged no console message whatsoever -- a control page with a script error proves the
check would see one.  Names in the report come from the network, so hostile ones are rendered
and must come out as text.  CI needs the Debian package ``chromium``.
"""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import zlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from monitor.alerts.report import build_report
from monitor.alerts.report_html import esc, render_html
from tests.test_report_audit import (
    HOSTILE,
    TRUTH,
    TruthSession,
    check_html_counts,
    parse_html,
    raw_events,
    through_engine,
    vendor_event,
)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None,
    reason="Debian's chromium is not installed (apt-get install -y chromium)",
)

HOSTILE_NAMES = [
    HOSTILE,
    '"><img src=x onerror="document.title=1">',
    "</title><script>document.title='pwned'</script>",
    "<svg onload=alert(1)>",
    "evil\u202egnp.exe",
    "esc\x1b[31mred",
    "&amp;lt;already-escaped",
]


def chromium(tmp: Path, url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    profile = tmp / f"profile-{len(list(tmp.glob('profile-*')))}"
    return subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            "--enable-logging=stderr",
            "--v=0",
            *extra,
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def console_messages(stderr: str) -> list[str]:
    """Chromium logs every page console message (errors, CSP violations) as ``CONSOLE``."""
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


def hostile_report_html() -> str:
    t0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
    events: list[dict[str, Any]] = []
    for i, name in enumerate(HOSTILE_NAMES):
        s = TruthSession(name, f"{name}.pd.example", "clearview-ai", [t0], False)
        event = vendor_event(s, t0 + timedelta(hours=i), f"h{i}")
        event["match"]["vendor_name"] = "<em>Clearview</em> & co"
        events.append(event)
    return render_html(build_report(through_engine(events), title="<u>audit</u>"))


def test_hostile_names_are_escaped_in_the_markup() -> None:
    text = hostile_report_html()
    page = parse_html(text)
    assert page.tags["script"] == 0
    assert page.tags["img"] == 0
    assert page.tags["u"] == 0 and page.tags["em"] == 0  # title and vendor name are text
    shown = set(page.names.get(("subjects", r), "") for (_, r) in page.names)
    assert HOSTILE in shown
    assert "evil\\u202egnp.exe" in shown  # the bidi override is made visible
    assert "esc\\u001b[31mred" in shown
    assert "&amp;lt;already-escaped" in shown  # escaped once more, shown as typed
    assert esc('"') == "&quot;" and esc("'") == "&#x27;"


def png_pixels(data: bytes) -> tuple[int, int, list[bytes]]:
    """Decode an 8-bit RGB/RGBA PNG into rows of raw pixels (stdlib only)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat = 8, b""
    width = height = channels = 0
    while pos < len(data):
        length, ctype = struct.unpack_from(">I4s", data, pos)
        body = data[pos + 8 : pos + 8 + length]
        if ctype == b"IHDR":
            width, height, depth, color = struct.unpack_from(">IIBB", body)
            assert depth == 8 and color in (2, 6)
            channels = 3 if color == 2 else 4
        elif ctype == b"IDAT":
            idat += body
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = width * channels
    rows: list[bytes] = []
    prev = bytearray(stride)
    for y in range(height):
        ftype = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for x in range(stride):
            a = line[x - channels] if x >= channels else 0
            b = prev[x]
            c = prev[x - channels] if x >= channels else 0
            if ftype == 1:
                line[x] = (line[x] + a) & 0xFF
            elif ftype == 2:
                line[x] = (line[x] + b) & 0xFF
            elif ftype == 3:
                line[x] = (line[x] + (a + b) // 2) & 0xFF
            elif ftype == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                line[x] = (line[x] + pred) & 0xFF
        rows.append(
            bytes(line) if channels == 3 else bytes(line[i] for i in range(stride) if i % 4 != 3)
        )
        prev = line
    return width, height, rows


@needs_chromium
def test_console_check_sees_a_script_error(tmp_path: Path) -> None:
    """Control: the detector below is not blind."""
    page = tmp_path / "control.html"
    page.write_text("<!DOCTYPE html><p>x</p><script>undefinedFn()</script>", "utf-8")
    result = chromium(tmp_path, page.as_uri(), "--dump-dom")
    assert any("undefinedFn" in m for m in console_messages(result.stderr))


@needs_chromium
def test_audit_report_renders_in_chromium_with_the_expected_numbers(tmp_path: Path) -> None:
    page = tmp_path / "audit.html"
    report = build_report(through_engine(raw_events(TRUTH)))
    page.write_text(render_html(report), "utf-8")
    result = chromium(tmp_path, page.as_uri(), "--dump-dom")
    assert result.returncode == 0, result.stderr[-2000:]
    assert console_messages(result.stderr) == []
    dom = parse_html(result.stdout)
    check_html_counts(dom)
    assert dom.tags["script"] == 0
    assert dom.tags["svg"] == 1
    assert len(re.findall(r'<g class="day"', result.stdout)) > 100


@needs_chromium
def test_hostile_names_stay_text_in_chromium(tmp_path: Path) -> None:
    page = tmp_path / "hostile.html"
    page.write_text(hostile_report_html(), "utf-8")
    result = chromium(tmp_path, page.as_uri(), "--dump-dom")
    assert result.returncode == 0, result.stderr[-2000:]
    # A script that got through would either run (title changes) or be blocked by the CSP,
    # which chromium reports on the console; neither happened.
    assert console_messages(result.stderr) == []
    dom = parse_html(result.stdout)
    assert dom.tags["script"] == 0 and dom.tags["img"] == 0
    assert re.search(r"<title>&lt;u&gt;audit&lt;/u&gt;</title>", result.stdout)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in result.stdout


@needs_chromium
def test_screenshot_shows_the_report_and_the_timeline_colours(tmp_path: Path) -> None:
    page = tmp_path / "audit.html"
    page.write_text(render_html(build_report(through_engine(raw_events(TRUTH)))), "utf-8")
    shot = tmp_path / "audit.png"
    result = chromium(
        tmp_path,
        page.as_uri(),
        f"--screenshot={shot}",
        "--window-size=1400,1400",
        "--hide-scrollbars",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert console_messages(result.stderr) == []
    width, height, rows = png_pixels(shot.read_bytes())
    assert (width, height) == (1400, 1400)
    pixels = [row[i : i + 3] for row in rows for i in range(0, len(row), 3)]
    white = sum(1 for p in pixels if min(p) > 245)
    assert white < 0.97 * len(pixels)  # not blank

    def near(rgb: tuple[int, int, int]) -> int:
        return sum(1 for p in pixels if all(abs(p[i] - rgb[i]) <= 8 for i in range(3)))

    assert near((0xC6, 0x28, 0x28)) > 50  # unsanctioned bars
    assert near((0x2E, 0x7D, 0x32)) > 50  # sanctioned bars
    # Keep a copy for humans next to the test's temp files.
    shutil.copy(shot, tmp_path / "last-audit-screenshot.png")


@needs_chromium
def test_report_prints_to_pdf(tmp_path: Path) -> None:
    page = tmp_path / "audit.html"
    page.write_text(render_html(build_report(through_engine(raw_events(TRUTH)))), "utf-8")
    pdf = tmp_path / "audit.pdf"
    result = chromium(tmp_path, page.as_uri(), f"--print-to-pdf={pdf}", "--no-pdf-header-footer")
    assert result.returncode == 0, result.stderr[-2000:]
    data = pdf.read_bytes()
    assert data.startswith(b"%PDF")
    assert len(re.findall(rb"/Type\s*/Page\b", data)) >= 2
