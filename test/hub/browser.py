"""Screenshots of hub pages with Debian's headless ``chromium``, as a logged-in user.

The user's session cookies (from a ``requests`` login) are handed to the browser through
the DevTools protocol (``python3-websocket``, which ``python3-kubernetes`` pulls in), then
the page is loaded, its scripts run, and a PNG of the full page is saved.

    apt-get install chromium
"""

import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request


def chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    raise RuntimeError("no chromium on PATH (apt-get install chromium)")


class DevTools:
    def __init__(self, url):
        import websocket

        self.ws = websocket.create_connection(url, timeout=30, suppress_origin=True)
        self.next_id = 0

    def call(self, method, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    def wait_event(self, name, timeout=20):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = json.loads(self.ws.recv())
            if message.get("method") == name:
                return message
        raise TimeoutError(name)


def screenshot(url, cookies, out, width=1100, height=800, settle=1.0):
    """Save a PNG of ``url`` seen with ``cookies`` (a requests cookie jar) to ``out``."""
    profile = tempfile.mkdtemp(prefix="hubcredits-chromium-")
    proc = subprocess.Popen(
        [chromium(), "--headless=new", "--no-sandbox", "--disable-gpu",
         "--disable-dev-shm-usage", "--no-first-run", "--hide-scrollbars",
         f"--user-data-dir={profile}", "--remote-debugging-port=0",
         f"--window-size={width},{height}", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        port_file = os.path.join(profile, "DevToolsActivePort")
        deadline = time.monotonic() + 30
        while not os.path.exists(port_file) or not open(port_file).read().strip():
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("chromium did not start")
            time.sleep(0.1)
        port = open(port_file).read().split()[0]
        targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json", timeout=10))
        page = next(t for t in targets if t.get("type") == "page")
        tools = DevTools(page["webSocketDebuggerUrl"])
        tools.call("Network.enable")
        tools.call("Page.enable")
        host = urllib.parse.urlsplit(url).hostname
        for cookie in cookies:
            tools.call("Network.setCookie", name=cookie.name, value=cookie.value,
                       domain=host, path=cookie.path or "/")
        tools.call("Page.navigate", url=url)
        tools.wait_event("Page.loadEventFired")
        time.sleep(settle)  # the page's own scripts (progress bar, theme)
        metrics = tools.call("Page.getLayoutMetrics")
        size = metrics.get("cssContentSize") or metrics.get("contentSize")
        full = min(int(size["height"]), 3000)
        tools.call("Emulation.setDeviceMetricsOverride", width=width,
                   height=max(height, full), deviceScaleFactor=1, mobile=False)
        shot = tools.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        with open(out, "wb") as f:
            f.write(base64.b64decode(shot["data"]))
        return out
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(profile, ignore_errors=True)
