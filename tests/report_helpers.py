"""Helpers for the report and compare tests: real runs, synthetic results, and a headless browser.

* :func:`smtpbench_run` runs ``python -m smtpbench run`` as a user does and returns the result.
* :func:`synthetic_result` feeds a real :class:`~smtpbench.load.recorder.Recorder` with made-up
  transactions and builds the result document with the real ``build_result``: schema-true, exact,
  and instant, for the checks that need known numbers (errors, thresholds, verdicts).
* :func:`inspect_page` opens a file in Debian's ``chromium`` (headless) over the DevTools protocol
  on a pipe (``--remote-debugging-pipe``: no port, no selenium, no driver) and reports each image's
  natural size, console errors, exceptions, log errors and every URL the page requested.
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from html.parser import HTMLParser
from pathlib import Path

import numpy as np

from smtpbench.load.recorder import INTERVAL_US, Recorder, merge_exports
from smtpbench.results import build_result
from smtpbench.scenario import load, override


def smtpbench_run(out: Path, target: str, *args: str, timeout: float = 90.0) -> dict:
    """Run the generator against ``target``; the run may be valid or not, but must write its result."""
    cmd = [sys.executable, "-m", "smtpbench", "run", "--target", target, *args, "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    path = out / "result.json"
    assert proc.returncode in (0, 1, 3) and path.exists(), f"run failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return json.loads(path.read_text())


def synthetic_result(rates: list[int], latency_ms: float = 1.0, *, seed: int = 1, warmup: float = 0.0,
                     failures: dict[int, list[tuple[str, int, str]]] | None = None, open_rate: float | None = None,
                     thresholds: dict | None = None, run_id: str = "synthetic", spread: float = 0.3,
                     **flags) -> dict:
    """A result of ``len(rates)`` seconds: ``rates[k]`` OK messages in second k, lognormal latencies.

    ``failures[k]`` lists ``(phase, code, kind)`` failures in second k. ``open_rate`` makes it an
    open-loop run offering that rate. Extra ``flags`` are scenario overrides (``message__size=...``).
    """
    rng = np.random.default_rng(seed)
    duration = len(rates)
    scenario = load(None)
    model = {"load__model": "open", "load__rate": open_rate} if open_rate else {"load__model": "closed"}
    scenario = override(scenario, "<test>", load__duration=duration, load__warmup=warmup, **model, **flags)
    if thresholds:
        scenario = scenario.model_copy(update={"thresholds": thresholds})
    rec = Recorder(warmup_us=int(warmup * 1e6))
    size = scenario.message.size if isinstance(scenario.message.size, int) else 1024
    for k, n in enumerate(rates):
        lat = (rng.lognormal(np.log(latency_ms * 1000), spread, n)).astype(np.int64)
        for i in range(n):
            intended = k * INTERVAL_US + i * INTERVAL_US // max(n, 1)
            if open_rate:
                rec.scheduled(intended, intended)
            rec.started(intended)
            rec.ok(intended, intended, min(intended + int(lat[i]), (k + 1) * INTERVAL_US - 1), size)
            rec.phase("mail", int(lat[i]) // 3)
            rec.phase("end_of_data", int(lat[i]) // 2)
        for j, (phase, code, kind) in enumerate((failures or {}).get(k, [])):
            at = k * INTERVAL_US + 1000 * (j + 1)
            rec.started(at)
            rec.failed(at, at, phase, code, kind, f"{code} 4.7.1 try again later" if code else kind)
        at = k * INTERVAL_US
        rec.probe_lag(at, 50 + k)
        for name, value in (("cpu", 0.25), ("in_flight", 4), ("connections", 2), ("loop_lag_us", 120)):
            rec.gauge(at, name, value)
    rec.totals["issued"] = sum(rates) + sum(len(f) for f in (failures or {}).values())  # the runner counts these
    merged = merge_exports([rec.export()])
    merged["processes"] = [{"cpu": [[k, 0.25] for k in range(duration)], "totals": merged["totals"]}]
    return build_result(scenario, merged, run_id=run_id, kind="run", command="smtpbench run (synthetic)",
                        target="127.0.0.1:2525", started_at=time.time(), processes=1, loop="uvloop")


def write_result(folder: Path, result: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "result.json").write_text(json.dumps(result))
    return folder


# -- headless chromium over the DevTools protocol on a pipe --------------------------------------


class _Pipe:
    """DevTools messages: JSON documents terminated by NUL, on fds 3 (to chromium) and 4 (from it)."""

    def __init__(self, write_fd: int, read_fd: int):
        self.write_fd, self.read_fd = write_fd, read_fd
        self.buffer = b""
        self.events: list[dict] = []
        self.next_id = 0

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> int:
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self.write_fd, json.dumps(msg).encode() + b"\0")
        return self.next_id

    def receive(self, deadline: float) -> dict:
        while b"\0" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.read_fd], [], [], left)[0]:
                raise TimeoutError("chromium did not answer in time")
            chunk = os.read(self.read_fd, 65536)
            if not chunk:
                raise EOFError("chromium closed the DevTools pipe")
            self.buffer += chunk
        raw, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(raw)

    def call(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 30.0) -> dict:
        wanted = self.send(method, params, session)
        deadline = time.monotonic() + timeout
        while True:
            msg = self.receive(deadline)
            if msg.get("id") == wanted:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self.events.append(msg)

    def wait_event(self, method: str, timeout: float = 30.0) -> dict:
        deadline = time.monotonic() + timeout
        for i, msg in enumerate(self.events):
            if msg.get("method") == method:
                return self.events.pop(i)
        while True:
            msg = self.receive(deadline)
            if msg.get("method") == method:
                return msg
            self.events.append(msg)


IMAGES_JS = ("JSON.stringify(Array.from(document.images).map(i => ({alt: i.alt, complete: i.complete, "
             "width: i.naturalWidth, height: i.naturalHeight})))")


def inspect_page(chromium: str, page: Path, timeout: float = 60.0) -> dict:
    """Load ``page`` in headless chromium; return images, console errors and requested URLs."""
    to_chrome_r, to_chrome_w = os.pipe()
    from_chrome_r, from_chrome_w = os.pipe()
    # Chromium reads commands on fd 3 and writes replies on fd 4. bash moves the pipe ends there (dash takes
    # no fd above 9); they are first moved above 9 so the redirections cannot clobber each other.
    child_r, child_w = fcntl.fcntl(to_chrome_r, fcntl.F_DUPFD, 10), fcntl.fcntl(from_chrome_w, fcntl.F_DUPFD, 10)
    for fd in (to_chrome_r, from_chrome_w):
        os.close(fd)
    profile = tempfile.mkdtemp(prefix="smtpbench-chromium-")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", "--no-default-browser-check",
             "--disable-extensions", f"--user-data-dir={profile}", "--remote-debugging-pipe", "about:blank"]
    script = f'exec "$@" 3<&{child_r} 4>&{child_w} {child_r}<&- {child_w}>&-'
    proc = subprocess.Popen(["bash", "-c", script, "bash", chromium, *flags], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, pass_fds=(child_r, child_w))
    os.close(child_r)
    os.close(child_w)
    pipe = _Pipe(to_chrome_w, from_chrome_r)
    try:
        target = pipe.call("Target.createTarget", {"url": "about:blank"}, timeout=timeout)["targetId"]
        session = pipe.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            pipe.call(f"{domain}.enable", session=session)
        pipe.events.clear()
        pipe.call("Page.navigate", {"url": page.resolve().as_uri()}, session=session)
        pipe.wait_event("Page.loadEventFired", timeout=timeout)
        value = pipe.call("Runtime.evaluate", {"expression": IMAGES_JS, "returnByValue": True}, session=session)
        images = json.loads(value["result"]["value"])
        title = pipe.call("Runtime.evaluate", {"expression": "document.title", "returnByValue": True},
                          session=session)["result"]["value"]
        errors, requests = [], []
        for msg in pipe.events:
            method, params = msg.get("method"), msg.get("params", {})
            if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                errors.append(f"console: {params.get('args')}")
            elif method == "Runtime.exceptionThrown":
                errors.append(f"exception: {params.get('exceptionDetails')}")
            elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
                errors.append(f"log: {params['entry'].get('text')} {params['entry'].get('url', '')}")
            elif method == "Network.requestWillBeSent":
                requests.append(params["request"]["url"])
            elif method == "Network.loadingFailed":
                errors.append(f"network: {params.get('errorText')}")
        try:
            pipe.call("Browser.close", timeout=10)
        except (EOFError, TimeoutError, RuntimeError):
            pass
        return {"images": images, "errors": errors, "requests": requests, "title": title}
    finally:
        os.close(to_chrome_w)
        os.close(from_chrome_r)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(profile, ignore_errors=True)


# -- reading a report page back --------------------------------------------------------------------


class PageReader(HTMLParser):
    """What a report page holds: rows of each ``<section id>``'s table, figure ids, image sources, links."""

    def __init__(self, text: str):
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.figures: list[str] = []
        self.images: list[str] = []
        self.links: list[str] = []
        self.tags: set[str] = set()
        self.text_parts: list[str] = []
        self._section: str | None = None
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.add(tag)
        if tag == "section" and a.get("id"):
            self._section = a["id"]
            self.tables.setdefault(self._section, [])
        elif tag == "table" and a.get("id"):
            self._section = a["id"]
            self.tables.setdefault(self._section, [])
        elif tag == "figure":
            self.figures.append(a.get("id", ""))
        elif tag == "img":
            self.images.append(a.get("src", ""))
        elif tag == "a":
            self.links.append(a.get("href", ""))
        elif tag == "tr" and self._section:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.tables[self._section].append(self._row)
            self._row = None
        elif tag in ("section", "table") and self._row is None:
            self._section = None if tag == "section" else self._section

    def handle_data(self, data):
        self.text_parts.append(data)
        if self._cell is not None:
            self._cell.append(data)

    @property
    def text(self) -> str:
        return " ".join(self.text_parts)

    def rows(self, section: str) -> dict[str, list[str]]:
        """A section's table rows keyed by their first cell."""
        return {row[0]: row[1:] for row in self.tables[section] if row}
