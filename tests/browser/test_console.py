"""The fleet console (issue 19) in Debian's Chromium: without a token the control plane's HTTP
port answers 401 with a sign-in form; with a read token the form sets an HttpOnly,
SameSite=Strict session cookie and the console shows a rollout progressing, live. The
screenshot is kept in $ONEDOMAIN_BROWSER_ARTIFACTS (ctest: <build>/tests/browser/artifacts)."""

import json
import os
import tempfile

import browser_support as bs
import cp_support
import fleet_support
import rollout_support as rs
import pytest
import support

ARTIFACTS = os.environ.get("ONEDOMAIN_BROWSER_ARTIFACTS",
                           os.path.join(support.BUILD_DIR, "tests", "browser", "artifacts"))


@pytest.fixture
def procs():
    """Processes started by the test, stopped (by PID) after it."""
    started = []

    def start(args, **kwargs):
        p = support.Process(args, **kwargs)
        started.append(p)
        return p

    yield start
    for p in reversed(started):
        p.stop()


def wait_in_page(browser, expr, timeout, what):
    """Polls a JS expression from here: the console's Content-Security-Policy forbids the
    string evaluation playwright's waitForFunction does inside the page."""
    def check():
        try:
            return browser.eval("console", expr)
        except bs.BrowserError as e:  # the page is navigating (sign-in reloads it)
            if "context was destroyed" in str(e) or "navigat" in str(e):
                return None
            raise
    return support.wait_for(check, timeout, interval=0.1, what=what)


def test_console_shows_a_rollout_live_and_needs_a_read_token(procs, tmp_path):
    os.makedirs(ARTIFACTS, exist_ok=True)
    fleet = rs.start_fleet(procs, tmp_path, count=3, extra=rs.rollout_config(
        bake="3s", min_requests=10, waves=("1", "50%", "100%")))
    cp, ports = fleet["cp"], fleet["ports"]
    base = f"http://127.0.0.1:{cp.http_port}"

    # No token: 401 for the page and the JSON; a bad token too; a read token as Bearer: 200.
    status, headers, body = support.http_get(base + "/")
    assert status == 401 and b'id="login"' in body
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    assert support.http_get(base + "/console.json")[0] == 401
    assert support.http_get(base + "/console.json",
                            {"Authorization": "Bearer not-a-token"})[0] == 401
    status, _, body = support.http_get(base + "/console.json",
                                       {"Authorization": f"Bearer {cp_support.READ_TOKEN}"})
    assert status == 200 and len(json.loads(body)["nodes"]) == 3
    # A node token is not a reader.
    assert support.http_get(base + "/", {"Authorization":
                                         f"Bearer {cp_support.NODE_TOKEN}"})[0] == 401

    load = rs.Load(ports, rate=60).start()
    browser = bs.Browser(tempfile.mkdtemp(prefix="chromium-profile-", dir=str(tmp_path)),
                         bs.chromium_args([]), os.path.join(ARTIFACTS, "console-driver.log"))
    try:
        page = browser.call("goto", page="console", url=base + "/")
        assert page["status"] == 401
        browser.call("fill", page="console", selector="#token", value="wrong-token")
        browser.call("click", page="console", selector="#login-button")
        wait_in_page(browser, "document.getElementById('login-error').textContent !== ''",
                     10, "the sign-in error")
        browser.call("fill", page="console", selector="#token", value=cp_support.READ_TOKEN)
        browser.call("click", page="console", selector="#login-button")
        wait_in_page(browser, "document.getElementById('rollout-state') !== null", 15,
                     "the console after sign-in")
        cookies = [c for c in browser.call("cookies", urls=[base]) if c["name"] == "od_console"]
        assert len(cookies) == 1, cookies
        assert cookies[0]["httpOnly"] and cookies[0]["sameSite"] == "Strict", cookies
        assert cookies[0]["value"] != cp_support.READ_TOKEN  # a session id, not the token
        # Live: the node rows fill from /console.json.
        wait_in_page(browser, "document.querySelectorAll('#nodes tbody tr').length === 3",
                     10, "three node rows")

        support.wait_for(lambda: all(load.count(p, 200) >= 3 for p in ports), 20,
                         what="traffic through every node")
        cp.admin("set-upstream", "agents", f"127.0.0.1:{fleet['b'].ports['api']}", "--rollout",
                 "--reason", "console demo", token="operate", check=True)
        wait_in_page(browser,
                     "document.getElementById('rollout-state').textContent === 'running'",
                     10, "the rollout showing as running")
        wait_in_page(browser, "document.querySelectorAll('#gates tbody tr').length === 3",
                     10, "the gate rows")
        # It updates without a reload: wave 2 appears while the page stays open.
        wait_in_page(browser, "document.getElementById('rollout-wave').textContent === '2/3'",
                     20, "wave 2 shown live")
        wait_in_page(browser,
                     "document.querySelectorAll('#nodes tbody tr.canary').length === 2",
                     10, "two canary rows in wave 2")
        browser.call("screenshot", page="console",
                     path=os.path.join(ARTIFACTS, "console-rollout.png"))
        wait_in_page(browser,
                     "document.getElementById('rollout-state').textContent === 'succeeded'",
                     30, "the rollout succeeding")
        history = browser.eval("console", "document.getElementById('history').textContent")
        assert "console demo" in history and "deployer" in history
        browser.call("screenshot", page="console",
                     path=os.path.join(ARTIFACTS, "console-final.png"))
        errors = [m for m in browser.call("console", page="console")
                  if m["type"] in ("error", "pageerror")
                  and "401" not in m["text"]]  # the first load and the wrong token answer 401
        assert errors == [], errors
        # Signing out ends the session: the page answers 401 again.
        page = browser.call("goto", page="console", url=base + "/logout")
        page = browser.call("goto", page="console", url=base + "/")
        assert page["status"] == 401
    finally:
        browser.close()
        load.stop()
