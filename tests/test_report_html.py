"""report.html in headless Chromium (Debian's ``chromium``, driven over the DevTools protocol on a pipe):
one chart per profile with one mark per descendant, the budget line, hover facts, sortable tables, no
request leaving the page; and report.csv."""

from __future__ import annotations

import base64
import contextlib
import csv
import io
import json
import os
import select
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from lgp_edge.cli import main

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


class DevTools:
    """Chromium with ``--remote-debugging-pipe``: commands on fd 3, replies and events on fd 4, NUL-separated."""

    def __init__(self, profile_dir: Path) -> None:
        to_child_r, self._w = os.pipe()
        self._r, from_child_w = os.pipe()

        def fds() -> None:
            os.dup2(to_child_r, 3)
            os.dup2(from_child_w, 4)

        args = [CHROMIUM, "--headless", "--remote-debugging-pipe", "--disable-gpu", "--no-first-run",
                "--no-default-browser-check", "--disable-extensions", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--hide-scrollbars", f"--user-data-dir={profile_dir}"]
        if os.geteuid() == 0:
            args.append("--no-sandbox")
        self.proc = subprocess.Popen([*args, "about:blank"], preexec_fn=fds, pass_fds=(3, 4),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_child_r)
        os.close(from_child_w)
        self._buf = b""
        self._id = 0
        self.events: list[dict[str, Any]] = []

    def _read_one(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._r], [], [], left)[0]:
                raise TimeoutError("no answer from chromium")
            chunk = os.read(self._r, 1 << 20)
            if not chunk:
                raise RuntimeError("chromium closed the pipe")
            self._buf += chunk
        msg, self._buf = self._buf.split(b"\0", 1)
        return json.loads(msg)

    def call(self, method: str, params: dict[str, Any] | None = None, session: str | None = None,
             timeout: float = 60.0) -> dict[str, Any]:
        self._id += 1
        msg: dict[str, Any] = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            m = self._read_one(deadline)
            if m.get("id") == self._id:
                if "error" in m:
                    raise RuntimeError(f"{method}: {m['error']}")
                return m.get("result", {})
            self.events.append(m)

    def wait_event(self, method: str, timeout: float = 60.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        for m in self.events:
            if m.get("method") == method:
                return m
        while True:
            m = self._read_one(deadline)
            self.events.append(m)
            if m.get("method") == method:
                return m

    def close(self) -> None:
        try:
            self.call("Browser.close", timeout=10)
        except Exception:  # noqa: BLE001 - the process is ended below either way
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._w)
        os.close(self._r)


@pytest.fixture(scope="module")
def report_dir(tiny_pool: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The report of the tiny pool; what ``report --json`` printed is kept beside it, in summary.json."""
    out = tmp_path_factory.mktemp("html") / "rep"
    os.environ["LGP_EDGE_STORE"] = str(out.parent / "store.sqlite")
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf):
            assert main(["report", "--pool", str(tiny_pool), "--out", str(out), "--json", "--quiet"]) == 0
    finally:
        del os.environ["LGP_EDGE_STORE"]
    (out.parent / "summary.json").write_text(buf.getvalue())
    return out


def test_report_csv_one_row_per_profile_and_descendant(report_dir: Path, tiny_pool: Path) -> None:
    rows = list(csv.DictReader((report_dir / "report.csv").open()))
    n_desc = len(json.loads((tiny_pool / "pool.json").read_text())["descendants"])
    profiles = {r["profile"] for r in rows}
    assert len(profiles) >= 6 and len(rows) == n_desc * len(profiles)
    for name in profiles:
        mine = [r for r in rows if r["profile"] == name]
        assert len({r["descendant"] for r in mine}) == n_desc
        assert sum(int(r["chosen"]) for r in mine) <= 1 and any(int(r["pareto"]) for r in mine)
        assert all(r["latency_source"] in ("measured", "predicted") and float(r["p90_ms"]) > 0 for r in mine)
    # pareto = 1 exactly on the rows no other row of the profile dominates (top-1 >= and p90 <=, better in one;
    # over every descendant, fitting or not); chosen = 1 on exactly the descendant `report --json` names, which
    # is the most accurate fitting one (the fastest of equals), and on none where nothing fits.
    summary = {p["profile"]: p for p in json.loads((report_dir.parent / "summary.json").read_text())["profiles"]}
    assert set(summary) == {r["profile"] for r in rows}
    fronts, named = [], 0
    for name, entry in summary.items():
        mine = [r for r in rows if r["profile"] == name]
        pts = {r["descendant"]: (float(r["top1"]), float(r["p90_ms"])) for r in mine}
        assert len(set(pts.values())) == len(pts)  # no exact ties here, so the front is unambiguous
        front = {k for k, (t, lat) in pts.items()
                 if not any(t2 >= t and l2 <= lat and (t2 > t or l2 < lat) for t2, l2 in pts.values())}
        assert {r["descendant"] for r in mine if int(r["pareto"])} == front, name
        fronts.append(len(front) / len(mine))
        chosen = [r["descendant"] for r in mine if int(r["chosen"])]
        fitting = [r for r in mine if int(r["fits_latency"]) and int(r["fits_memory"])]
        if entry["chosen"] is None:
            assert chosen == [] and fitting == [], name
            continue
        named += 1
        best = max(fitting, key=lambda r: (float(r["top1"]), -float(r["p90_ms"])))["descendant"]
        assert chosen == [entry["chosen"]["key"]] == [best], name
    assert named >= 1 and min(fronts) < 1  # some profile chooses, some front leaves descendants out


def test_report_html_is_self_contained(report_dir: Path) -> None:
    text = (report_dir / "report.html").read_text()
    for needle in ("http://", "https://", "<link", " src=", "@import", "url("):
        assert needle not in text


@pytest.mark.skipif(CHROMIUM is None and not os.environ.get("CI"),
                    reason="chromium is not installed (scripts/install.sh installs it)")
def test_report_html_in_headless_chromium(report_dir: Path, tiny_pool: Path, tmp_path: Path) -> None:
    assert CHROMIUM is not None, "chromium missing: scripts/install.sh installs it"
    rows = list(csv.DictReader((report_dir / "report.csv").open()))
    page = (report_dir / "report.html").resolve().as_uri()
    dt = DevTools(tmp_path / "chromium-profile")
    try:
        target = dt.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        s = dt.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Network", "Page", "Runtime"):
            dt.call(f"{domain}.enable", session=s)
        dt.call("Emulation.setDeviceMetricsOverride",
                {"width": 1200, "height": 1400, "deviceScaleFactor": 1, "mobile": False}, session=s)
        dt.call("Page.navigate", {"url": page}, session=s)
        dt.wait_event("Page.loadEventFired")

        def js(expr: str) -> Any:
            r = dt.call("Runtime.evaluate", {"expression": expr, "returnByValue": True}, session=s)
            assert "exceptionDetails" not in r, r
            return r["result"]["value"]

        charts = js("""Array.from(document.querySelectorAll('section.profile')).map(s => ({
            id: s.id, marks: Array.from(s.querySelectorAll('svg.chart circle.pt')).map(c => c.dataset.key),
            budget: s.querySelectorAll('svg.chart line.budget').length,
            width: s.querySelector('svg.chart').getBoundingClientRect().width}))""")
        by_profile: dict[str, list[str]] = {}
        for r in rows:
            by_profile.setdefault(r["profile"], []).append(r["descendant"])
        assert {c["id"] for c in charts} == set(by_profile)
        for c in charts:  # one mark per descendant, the budget line, drawn at a real size
            assert sorted(c["marks"]) == sorted(by_profile[c["id"]]) and c["budget"] == 1 and c["width"] > 300

        # hover a mark: the tooltip names the descendant, its top-1, latency and source
        box = js("""(() => { const c = document.querySelector('section.profile circle.pt');
            c.scrollIntoView({block: 'center'}); const b = c.getBoundingClientRect();
            return {x: b.x + b.width / 2, y: b.y + b.height / 2, key: c.dataset.key}; })()""")
        dt.call("Input.dispatchMouseEvent", {"type": "mouseMoved", "x": box["x"], "y": box["y"]}, session=s)
        tip = js("document.getElementById('tip').style.display + '|' + document.getElementById('tip').textContent")
        shown, facts = tip.split("|", 1)
        assert shown == "block" and box["key"] in facts and "top-1" in facts and " ms" in facts
        assert any(src in facts for src in ("measured", "predicted", "noisy"))

        # click the p90 header twice: ascending, then descending
        order = js("""(() => { const t = document.querySelector('section.profile table.sortable');
            const th = Array.from(t.querySelectorAll('th')).find(h => h.textContent.startsWith('p90'));
            const col = th.cellIndex, vals = () => Array.from(t.tBodies[0].rows).map(r => +r.cells[col].dataset.v);
            th.click(); const up = vals(); th.click(); return [up, vals()]; })()""")
        assert order[0] == sorted(order[0]) and order[1] == sorted(order[1], reverse=True)

        js("window.scrollTo(0, 0)")
        dt.call("Input.dispatchMouseEvent", {"type": "mouseMoved", "x": 5, "y": 5}, session=s)
        shot = base64.b64decode(dt.call("Page.captureScreenshot", {"format": "png"}, session=s)["data"])
        assert shot[:8] == b"\x89PNG\r\n\x1a\n" and len(shot) > 20_000
        (tmp_path / "report.png").write_bytes(shot)
        if os.environ.get("LGP_EDGE_SCREENSHOT"):
            Path(os.environ["LGP_EDGE_SCREENSHOT"]).write_bytes(shot)

        urls = [e["params"]["request"]["url"] for e in dt.events if e.get("method") == "Network.requestWillBeSent"]
        assert urls and all(u == page for u in urls), urls  # the page itself, nothing else
        errors = [e for e in dt.events if e.get("method") == "Runtime.exceptionThrown"]
        assert not errors, errors
    finally:
        dt.close()
