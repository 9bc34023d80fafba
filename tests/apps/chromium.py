"""Headless Chromium driven over the DevTools protocol, with the standard library only.

``--remote-debugging-pipe`` makes Chromium read protocol commands from file descriptor 3 and write
replies and events to descriptor 4, each message JSON ended by a NUL byte: no websocket needed.
:func:`load` opens a page from disk and reports what a test wants to know: console errors, thrown
exceptions, every request the page made, timings, values of JavaScript expressions, a screenshot.

Also a tool: ``python tests/apps/chromium.py PAGE.html SHOT.png [JS]`` loads the page (running the
optional JS first, e.g. to pick a unit), writes the screenshot and prints the load times.
``--record RESULTS.json`` loads it ``--loads`` times (3) and adds the median timings, the page's
size and the machine to that file's ``browser`` entry (for the tutorial's drift markers).
"""

from __future__ import annotations

import argparse
import base64
import fcntl
import json
import os
import platform
import queue
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

from scratchrnn.core import accel

TIMEOUT_S = 60.0


def find_chromium() -> str | None:
    """The Chromium (or Chrome) executable on PATH, or None."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


@dataclass
class PageReport:
    """What loading a page showed. ``values`` holds the result of each expression asked for."""

    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    values: dict[str, object] = field(default_factory=dict)
    screenshot: bytes = b""


class _Pipe:
    """One Chromium process and its protocol pipe: send a command, wait for its reply."""

    def __init__(self, executable: str, profile: str, width: int, height: int) -> None:
        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()

        def wire_fds() -> None:  # in the child, before exec: fd 3 reads commands, fd 4 writes replies
            # Copied above 10 first: a pipe may already be fd 3 or 4, and dup2 onto itself would
            # leave it close-on-exec.
            high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (to_child_r, from_child_w)]
            os.dup2(high[0], 3)
            os.dup2(high[1], 4)

        self.proc = subprocess.Popen(
            [executable, "--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe",
             "--no-first-run", "--no-default-browser-check", "--disable-extensions",
             f"--user-data-dir={profile}", f"--window-size={width},{height}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            close_fds=False, preexec_fn=wire_fds,
        )
        os.close(to_child_r)
        os.close(from_child_w)
        self._next_id = 0
        self._replies: dict[int, queue.Queue] = {}
        self.events: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        buffer = b""
        with os.fdopen(self._from_child, "rb", buffering=0) as stream:
            while chunk := stream.read(1 << 16):
                buffer += chunk
                *messages, buffer = buffer.split(b"\0")
                for raw in messages:
                    message = json.loads(raw)
                    if "id" in message:
                        self._replies.pop(message["id"]).put(message)
                    else:
                        self.events.put(message)

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        self._next_id += 1
        reply: queue.Queue = queue.Queue()
        self._replies[self._next_id] = reply
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_child, json.dumps(message).encode() + b"\0")
        answer = reply.get(timeout=TIMEOUT_S)
        if "error" in answer:
            raise RuntimeError(f"{method}: {answer['error']}")
        return answer["result"]

    def close(self) -> None:
        try:
            self.send("Browser.close")
        finally:
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            os.close(self._to_child)


def _note(event: dict, report: PageReport) -> bool:
    """Record an event in ``report``; True when it is the page's load event."""
    method, params = event.get("method"), event.get("params", {})
    if method == "Runtime.exceptionThrown":
        details = params["exceptionDetails"]
        report.errors.append(details.get("exception", {}).get("description", details.get("text", "")))
    elif method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
        report.errors.append(" ".join(str(a.get("value", a.get("description"))) for a in params["args"]))
    elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
        report.errors.append(params["entry"]["text"])
    elif method == "Network.requestWillBeSent":
        report.requests.append(params["request"]["url"])
    return method == "Page.loadEventFired"


def load(page: str | Path, expressions: dict[str, str] | None = None, before: str = "",
         width: int = 1400, height: int = 900) -> PageReport:
    """Open ``page`` (a file) in headless Chromium, wait for its load event, run ``before`` (JS),
    evaluate each of ``expressions`` (name → JS expression, JSON-able value) and take a screenshot."""
    executable = find_chromium()
    if executable is None:
        raise FileNotFoundError("no chromium on PATH")
    report = PageReport()
    with tempfile.TemporaryDirectory(prefix="scratchrnn-chromium-") as profile:
        pipe = _Pipe(executable, profile, width, height)
        try:
            target = pipe.send("Target.createTarget", {"url": "about:blank"})["targetId"]
            session = pipe.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            for domain in ("Runtime", "Log", "Network", "Page"):
                pipe.send(f"{domain}.enable", session=session)
            pipe.send("Emulation.setDeviceMetricsOverride", {"width": width, "height": height,
                      "deviceScaleFactor": 1, "mobile": False}, session=session)
            pipe.send("Page.navigate", {"url": Path(page).resolve().as_uri()}, session=session)
            while not _note(pipe.events.get(timeout=TIMEOUT_S), report):
                pass
            if before:  # a mistake in it is an error of the load, not silence
                done = pipe.send("Runtime.evaluate", {"expression": before}, session=session)
                if "exceptionDetails" in done:
                    report.errors.append(done["result"].get("description", done["exceptionDetails"]["text"]))
            for name, expression in (expressions or {}).items():
                result = pipe.send("Runtime.evaluate", {"expression": expression, "returnByValue": True},
                                   session=session)
                report.values[name] = result["result"].get("value")
            shot = pipe.send("Page.captureScreenshot", {"format": "png"}, session=session)
            report.screenshot = base64.b64decode(shot["data"])
            while not pipe.events.empty():  # what arrived while we evaluated
                _note(pipe.events.get(), report)
        finally:
            pipe.close()
    return report


TIMINGS = {
    "timing": "(() => { const n = performance.getEntriesByType('navigation')[0];"
    " return {domContentLoadedMs: n.domContentLoadedEventEnd, loadMs: n.loadEventEnd}; })()",
    "rendered": "window.inspectRendered",
}
# Switching to the next unit: the recolouring of every character and the layout it forces (ms).
SWITCH = ("(() => { const t0 = performance.now(); setUnit(unit + 1); document.body.offsetHeight;"
          " return performance.now() - t0; })()")


def record(page: str | Path, results: str | Path, loads: int) -> dict:
    """Load ``page`` ``loads`` times; add the median timings (ms), its size and the machine to the
    ``browser`` entry of the JSON file ``results``; return that entry."""
    reports = [load(page, {**TIMINGS, "switch": SWITCH}) for _ in range(loads)]
    errors = [e for r in reports for e in r.errors]
    if errors:
        raise RuntimeError(f"the page logged errors: {errors}")

    def median(key: str, field: str) -> float:
        return statistics.median(r.values[key][field] for r in reports)

    cpu = accel.cpu_info()
    version = subprocess.run([find_chromium(), "--version"], capture_output=True, text=True).stdout.strip()
    entry = {
        "page_bytes": Path(page).stat().st_size,
        "loads": loads,
        "load_ms": median("timing", "loadMs"),
        "dom_content_loaded_ms": median("timing", "domContentLoadedMs"),
        "script_ms": median("rendered", "scriptMs"),
        "switch_ms": statistics.median(r.values["switch"] for r in reports),
        "chromium": version,
        "cpu": cpu.get("model name", platform.processor()),
        "cpu_family": int(cpu["cpu family"]) if cpu.get("cpu family", "").isdigit() else None,
        "cpu_model": int(cpu["model"]) if cpu.get("model", "").isdigit() else None,
        "logical_cpus": os.cpu_count(),
        "load_average_1min": os.getloadavg()[0],  # how busy the machine was (other work)
    }
    path = Path(results)
    data = json.loads(path.read_text(encoding="utf-8"))
    data["browser"] = entry
    path.write_text(json.dumps(data, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    return entry


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Load a page in headless Chromium, screenshot it.")
    parser.add_argument("page")
    parser.add_argument("shot", help="the PNG to write")
    parser.add_argument("before", nargs="?", default="", help="JavaScript to run after the load event")
    parser.add_argument("--record", default=None, help="results.json to add the median load timings to")
    parser.add_argument("--loads", type=int, default=3, help="loads to take the median of (with --record)")
    args = parser.parse_args()
    result = load(args.page, TIMINGS, before=args.before)
    print(json.dumps({"errors": result.errors, "requests": result.requests, **result.values}, indent=1))
    if result.errors:
        sys.exit(f"{args.page}: the page logged errors, no screenshot written")
    Path(args.shot).write_bytes(result.screenshot)
    if args.record:
        print(json.dumps(record(args.page, args.record, args.loads), indent=1))
