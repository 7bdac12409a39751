"""Issue 9: a real browser proves the seed's promises, end to end (issue 17: over HTTP/2).

The fleet as in production, on 127.0.0.1: a control plane; two managed data planes that both
bind https://amir.hirecj.ai:<port> (one port, SO_REUSEPORT, so the kernel spreads browser
connections over them as a load balancer would) with a certificate from a test CA made here
with openssl; demo backend A (API + the frontend page) and demo backend B (API only).
Routes: /api/v1/* and /ws/* -> cluster agents (A, later B), / -> cluster frontend (A's page).
The backends set `sess_<hex>` with Domain=agents-service, not Secure; the snapshot's cookie
policy rewrites it to Domain=.hirecj.ai; Secure; HttpOnly; SameSite=Lax. The site's origin
https://amir.hirecj.ai:<port> is the only origin allowed to open WebSockets.

Debian's Chromium runs headless through playwright-core (driver.js), with a fresh
--user-data-dir, amir.hirecj.ai and evil.example mapped to 127.0.0.1, and the test CA's and
leaf's SPKI hashes in --ignore-certificate-errors-spki-list (only this test's key is exempt
from verification; every other certificate error would still stop the page).

The tests run in file order and share the module's fleet and browser: each acceptance item of
issue 9 is its own test function. Artifacts (final screenshot, console, WebSocket event log,
process logs) go to $ONEDOMAIN_BROWSER_ARTIFACTS (ctest: <build>/tests/browser/artifacts).
"""

import json
import os
import re
import shutil
import signal
import tempfile
import textwrap
import time
import uuid

import pytest

import browser_support as bs
import cp_support
import support

MODULE_START = time.monotonic()
TIME_BUDGET_S = 120.0

ARTIFACTS = os.environ.get("ONEDOMAIN_BROWSER_ARTIFACTS",
                           os.path.join(support.BUILD_DIR, "tests", "browser", "artifacts"))
SCREENSHOT = os.path.join(ARTIFACTS, "final-page.png")


# ---- the fleet -------------------------------------------------------------------------------

class Fleet:
    pass


def _seed(port, certs, agents, frontend):
    """The snapshot, indented to sit under `seed:` in the control plane's config."""
    origin = f"https://{bs.SITE_HOST}:{port}"
    return textwrap.indent(textwrap.dedent(f"""
        site:
          origins: ["{origin}"]
          cookie_domain: .hirecj.ai
        listeners:
          - name: main
            address: 127.0.0.1
            port: {port}
            tls:
              cert_file: {certs['chain']}
              key_file: {certs['key']}
        clusters:
          - name: agents
            endpoints: ["{agents}"]
          - name: frontend
            endpoints: ["{frontend}"]
        routes:
          - name: api
            match: {{prefix: /api/v1/}}
            cluster: agents
          - name: ws
            match: {{prefix: /ws/}}
            cluster: agents
            websocket: true
          - name: frontend
            match: {{prefix: /}}
            cluster: frontend
        cookie_policy:
          domain_rewrites:
            - {{from: agents-service, to: .hirecj.ai}}
          attribute_rules:
            - {{name: "sess_*", secure: true, http_only: true, same_site: lax}}
        websocket_policy:
          allowed_origins: ["{origin}"]
          drain_grace: 3s
          drain_spread: 0s
        """), "  ")


def _managed_dataplane(start, state_dir, cp_address, node_id):
    os.makedirs(state_dir, exist_ok=True)
    node_token_file = support.write_file(state_dir, "node.token", cp_support.NODE_TOKEN + "\n")
    config = support.write_file(state_dir, "dataplane.yaml", textwrap.dedent(f"""
        node:
          id: {node_id}
          zone: browser-test
        admin:
          address: 127.0.0.1
          port: 0
        controlplane:
          address: {cp_address}
          token_file: {node_token_file}
          cache_path: {state_dir}/snapshot.pb
          backoff_initial: 50ms
          backoff_max: 500ms
          report_interval: 200ms
        drain:
          delay: 0s
          timeout: 10s
        # Both nodes bind the same port on purpose (a load balancer in front of a fleet).
        share_listen_ports: true
        """))
    return start([support.binary("dataplane"), "--config", config, "--workers", "1"],
                 name=f"dataplane-{node_id}")


def _wait_listener(proc, port, timeout=20.0):
    def bound():
        if proc.proc.poll() is not None:
            raise RuntimeError(f"{proc.name} exited:\n{proc.output()}")
        try:
            with open(proc.port_file) as f:
                proc.ports = json.load(f)
        except (FileNotFoundError, ValueError):
            return None
        return proc.ports.get("listener.main")
    got = support.wait_for(bound, timeout, what=f"{proc.name} listener main")
    assert got == port, f"{proc.name} bound {got}, expected {port}"


@pytest.fixture(scope="module")
def fleet():
    os.makedirs(ARTIFACTS, exist_ok=True)
    started = []

    def start(args, **kwargs):
        p = support.Process(args, **kwargs)
        started.append(p)
        return p

    f = Fleet()
    f.workdir = tempfile.mkdtemp(prefix="onedomain-browser-")
    try:
        f.certs = bs.make_ca_and_server_cert(f.workdir, bs.SITE_HOST)
        f.port = bs.free_port()
        f.origin = f"https://{bs.SITE_HOST}:{f.port}"
        backend = support.binary("demo_backend")
        cookie_flags = ["--cookie-domain", "agents-service", "--cookie-samesite", "Lax"]
        f.backend_a = start([backend, "--port", "0", "--frontend-port", "0", "--instance", "A",
                             *cookie_flags], name="backend-A")
        f.backend_b = start([backend, "--port", "0", "--instance", "B", *cookie_flags],
                            name="backend-B")
        f.backend_a.wait_ports()
        f.backend_b.wait_ports()
        f.cp = cp_support.ControlPlane(
            start, os.path.join(f.workdir, "cp"),
            seed=_seed(f.port, f.certs, f"127.0.0.1:{f.backend_a.ports['api']}",
                       f"127.0.0.1:{f.backend_a.ports['frontend']}")).start()
        f.dataplanes = [_managed_dataplane(start, os.path.join(f.workdir, node), f.cp.address, node)
                        for node in ("dp-1", "dp-2")]
        for dp in f.dataplanes:
            _wait_listener(dp, f.port)
        yield f
    finally:
        for p in reversed(started):
            p.stop()
            try:
                shutil.copyfile(p.log_path, os.path.join(ARTIFACTS, f"{p.name}.log"))
            except OSError:
                pass


def dp_metrics(dp):
    status, _, body = support.http_get(f"http://127.0.0.1:{dp.ports['admin']}/metrics")
    assert status == 200, f"{dp.name} /metrics: {status}"
    return body.decode()


def live_dataplanes(fleet):
    return [dp for dp in fleet.dataplanes if dp.proc.poll() is None]


def backend_stats(proc):
    status, _, body = support.http_get(f"http://127.0.0.1:{proc.ports['api']}/api/v1/stats")
    assert status == 200
    return json.loads(body)


def config_versions(fleet):
    return [bs.metric_sum(dp_metrics(dp), "onedomain_config_version")
            for dp in live_dataplanes(fleet)]


# ---- the browser -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def browser(fleet):
    user_data_dir = tempfile.mkdtemp(prefix="chromium-profile-", dir=fleet.workdir)
    b = bs.Browser(user_data_dir, bs.chromium_args([fleet.certs["spki"], fleet.certs["ca_spki"]]),
                   os.path.join(ARTIFACTS, "driver.log"))
    try:
        yield b
    finally:
        try:
            if not os.path.exists(SCREENSHOT):
                b.call("screenshot", page="main", path=SCREENSHOT)
            for what in ("console", "issues", "responses"):
                with open(os.path.join(ARTIFACTS, f"main-{what}.json"), "w") as out:
                    json.dump(b.call(what, page="main"), out, indent=1)
            with open(os.path.join(ARTIFACTS, "main-websocket-log.json"), "w") as out:
                json.dump(b.ws_log("main"), out, indent=1)
        except Exception as e:  # artifacts are best effort; the tests have already spoken
            print(f"artifacts: {e}")
        b.close()


def page_state(browser, page="main"):
    """What the page shows and its WebSocket events, for failure messages."""
    state = browser.eval(page, """(() => {
        const t = (id) => { const e = document.getElementById(id); return e && e.textContent; };
        return {url: location.href, login: t('login-status'), me: t('me-session'),
                status: t('ws-status'), session: t('ws-session'), instance: t('ws-instance'),
                reconnects: t('ws-reconnects'), echo: t('ws-echo')};
    })()""")
    log = browser.ws_log(page)
    errors = [c["text"] for c in browser.call("console", page=page)
              if c["type"] in ("error", "warning", "pageerror")]
    return f"page: {state}\nwebsocket events (last 12): {log[-12:]}\nconsole: {errors[-6:]}"


def wait_page(browser, expr, timeout_s, what, page="main"):
    try:
        return browser.wait_for(page, expr, timeout_s, what)
    except TimeoutError as e:
        raise AssertionError(f"{e}\n{page_state(browser, page)}") from None


def open_main_socket(browser):
    """The page's current socket: the last one created, if it opened and has not closed."""
    log = browser.ws_log("main")
    created = [e for e in log if e["ev"] == "create" and "/ws/chat/demo" in e["url"]]
    if not created:
        return None
    sid = created[-1]["id"]
    events = [e["ev"] for e in log if e["id"] == sid]
    if "open" in events and "close" not in events:
        return sid
    return None


def hello_of(browser, sid):
    for e in browser.ws_log("main"):
        if e["id"] == sid and e["ev"] == "message":
            try:
                msg = json.loads(e["data"])
            except ValueError:
                continue
            if msg.get("type") == "hello":
                return msg
    return None


@pytest.fixture(scope="module")
def logged_in(fleet, browser):
    """Opens https://amir.hirecj.ai:<port>/?auto=1: the page sees no session, goes through
    /api/v1/auth/login -> /api/v1/auth/callback (Set-Cookie) -> / and shows /api/v1/me."""
    browser.call("goto", page="main", url=f"{fleet.origin}/?auto=1", wait=30)
    me = wait_page(browser, """(() => { const t = document.getElementById('me-session')
                                         .textContent; return t !== '-' && t; })()""",
                   15, "#me-session to show the session from /api/v1/me")
    return {"session": me}


# ---- the tests, in the order of the seed's checklist -----------------------------------------

def test_login_flow_over_tls_through_the_fleet(fleet, browser, logged_in):
    """Not an acceptance item by itself: the page is served over TLS by the fleet and the login
    redirect chain runs through the backend's auth callback."""
    url = browser.eval("main", "location.href")
    assert url == f"{fleet.origin}/", url
    assert browser.eval("main", "window.isSecureContext") is True
    responses = browser.call("responses", page="main")
    seen = [(r["status"], r["url"].split("?")[0]) for r in responses]
    for status, path in ((401, "/api/v1/me"), (302, "/api/v1/auth/login"),
                         (302, "/api/v1/auth/callback"), (200, "/"), (200, "/api/v1/me")):
        assert (status, fleet.origin + path) in seen, f"{status} {path} not in {seen}"
    # Both data planes took the snapshot from the control plane (the fleet is whole).
    listed = json.loads(fleet.cp.admin("nodes", "-o", "json", token="read", check=True).stdout)
    acked = [n for n in listed.get("nodes", [])
             if n.get("connected") and int(n.get("version_acked", 0)) >= 1]
    assert len(acked) == 2, listed
    assert browser.call("text", page="main", selector="#login-status") == "logged in"


def test_cookie_is_stored_for_hirecj_ai_secure_httponly(fleet, browser, logged_in):
    cookies = browser.call("cookies", urls=[fleet.origin])
    sess = [c for c in cookies if c["name"].startswith("sess_")]
    assert len(sess) == 1, f"expected one sess_* cookie, got {cookies}"
    c = sess[0]
    assert re.fullmatch(r"sess_[0-9a-f]{16}", c["name"]), c
    assert c["domain"] == ".hirecj.ai", c
    assert c["secure"] is True, c
    assert c["httpOnly"] is True, c
    assert c["value"] == logged_in["session"], (c, logged_in)
    # HttpOnly as the page sees it: not readable from script.
    assert "sess_" not in browser.eval("main", "document.cookie")


def test_websocket_is_same_origin_and_shows_the_authenticated_session(fleet, browser,
                                                                       logged_in):
    wait_page(browser, """(() => document.getElementById('ws-session').textContent !== '-')()""",
              10, "#ws-session to show the session sent by the backend over the WebSocket")
    log = browser.ws_log("main")
    urls = [e["url"] for e in log if e["ev"] == "create"]
    assert urls and all(u == f"wss://{bs.SITE_HOST}:{fleet.port}/ws/chat/demo" for u in urls), \
        urls
    page_host = browser.eval("main", "location.host")
    assert urls[0].split("/")[2] == page_host
    sid = open_main_socket(browser)
    assert sid is not None, page_state(browser)
    hello = hello_of(browser, sid)
    assert hello and hello["session"] == logged_in["session"], hello
    assert hello["origin"] == fleet.origin, hello
    assert browser.call("text", page="main", selector="#ws-session") == logged_in["session"]
    assert browser.call("text", page="main", selector="#ws-instance") == "A"
    assert browser.call("text", page="main", selector="#ws-status") == "open"


def test_page_api_and_websocket_go_over_http2(fleet, browser, logged_in):
    """Issue 17: the page and its API calls load over h2, and the session WebSocket opens
    over h2 (RFC 8441: the node advertises SETTINGS_ENABLE_CONNECT_PROTOCOL), the cookie
    reaching the backend on the extended CONNECT."""
    entries = json.loads(browser.eval("main", """JSON.stringify(
        performance.getEntries().filter((e) => e.nextHopProtocol)
                                .map((e) => [e.name, e.nextHopProtocol]))"""))
    assert any(name == f"{fleet.origin}/" for name, _ in entries), entries
    assert any("/api/v1/me" in name for name, _ in entries), entries
    assert all(proto == "h2" for _, proto in entries), entries
    sid = open_main_socket(browser)
    assert sid is not None, page_state(browser)
    hello = hello_of(browser, sid)
    assert hello and hello["session"] == logged_in["session"], hello
    h2_upgrades = sum(bs.metric_sum(dp_metrics(dp), "onedomain_websocket_upgrades_total",
                                    route="ws", result="accepted", protocol="http2")
                      for dp in live_dataplanes(fleet))
    assert h2_upgrades >= 1, "\n".join(bs.metric_lines(dp_metrics(dp),
                                                      "onedomain_websocket_upgrades_total")
                                       for dp in live_dataplanes(fleet))


def test_foreign_origin_websocket_is_refused(fleet, browser, logged_in):
    dps = live_dataplanes(fleet)
    refused_before = sum(bs.metric_sum(dp_metrics(dp), "onedomain_http_requests_total",
                                       route="ws", code="403") for dp in dps)
    ws_before = {p.name: backend_stats(p)["websockets_total"]
                 for p in (fleet.backend_a, fleet.backend_b)}
    foreign = bs.ForeignSite(f"wss://{bs.SITE_HOST}:{fleet.port}/ws/chat/demo")
    try:
        browser.call("goto", page="foreign", url=foreign.url)
        closed = wait_page(browser, """(() => (window.__wsLog || [])
                                             .find((e) => e.ev === 'close'))()""",
                           10, "the foreign page's WebSocket to finish", page="foreign")
        events = [e["ev"] for e in browser.ws_log("foreign")]
        console = [c["text"] for c in browser.call("console", page="foreign")]
    finally:
        browser.call("closePage", page="foreign")
        foreign.close()
    assert "open" not in events, events
    assert closed["code"] == 1006, closed
    # The browser saw the handshake answered 403 ...
    assert any("403" in t for t in console), console

    # ... the data plane counted it as a 403 ...
    def refused():
        return sum(bs.metric_sum(dp_metrics(dp), "onedomain_http_requests_total",
                                 route="ws", code="403") for dp in dps) == refused_before + 1
    try:
        bs.deadline_wait(refused, 5, "a 403 on route ws in the data planes' metrics")
    except TimeoutError as e:
        raise AssertionError(f"{e}\n" + "\n".join(
            f"{dp.name}:\n" + bs.metric_lines(dp_metrics(dp), "onedomain_http_requests_total") +
            "\n" + bs.metric_lines(dp_metrics(dp), "onedomain_websocket_upgrades_total")
            for dp in dps)) from None
    # ... and no backend ever saw the upgrade.
    ws_after = {p.name: backend_stats(p)["websockets_total"]
                for p in (fleet.backend_a, fleet.backend_b)}
    assert ws_after == ws_before


def test_set_upstream_mid_session_keeps_the_open_socket_new_socket_reaches_new_backend(
        fleet, browser, logged_in):
    sid = open_main_socket(browser)
    assert sid is not None, f"no open WebSocket on the page\n{page_state(browser)}"
    assert hello_of(browser, sid)["instance"] == "A"
    before = config_versions(fleet)
    fleet.cp.admin("set-upstream", "agents", f"127.0.0.1:{fleet.backend_b.ports['api']}",
                   check=True)
    bs.deadline_wait(lambda: all(a > b for a, b in zip(config_versions(fleet), before)), 10,
                     "both data planes to apply the new upstream")

    # The socket opened before the change still carries messages both ways.
    text = f"still-open-{uuid.uuid4().hex[:8]}"
    browser.call("fill", page="main", selector="#message", value=text)
    browser.call("click", page="main", selector="#send")
    wait_page(browser, f"document.getElementById('ws-echo').textContent === {json.dumps(text)}",
              5, "the echo on the socket opened before set-upstream")
    assert open_main_socket(browser) == sid, page_state(browser)

    # A new socket from the same page reaches backend B, with the same session.
    hello = browser.eval("main", """new Promise((resolve, reject) => {
        const ws = new WebSocket('wss://' + location.host + '/ws/chat/second');
        const timer = setTimeout(() => reject(new Error('no hello in 5s')), 5000);
        ws.onmessage = (e) => { clearTimeout(timer); ws.close(1000); resolve(JSON.parse(e.data)); };
        ws.onclose = (e) => { clearTimeout(timer); reject(new Error('closed ' + e.code)); };
    })""")
    assert hello["type"] == "hello" and hello["instance"] == "B", hello
    assert hello["session"] == logged_in["session"], hello
    wait_page(browser, """(window.__wsLog || []).some((e) => e.ev === 'close' &&
               window.__wsSockets[e.id].url.endsWith('/ws/chat/second'))""",
              5, "the second socket to close")


def test_sigterm_on_the_holding_dataplane_closes_1001_and_reconnects_through_the_other(
        fleet, browser, logged_in):
    sid = open_main_socket(browser)
    assert sid is not None, f"no open WebSocket on the page\n{page_state(browser)}"

    def holder():
        active = [bs.metric_sum(dp_metrics(dp), "onedomain_websocket_connections_active")
                  for dp in fleet.dataplanes]
        return (active.index(1.0) + 1) if sorted(active) == [0.0, 1.0] else None
    which = bs.deadline_wait(holder, 5, "exactly one data plane holding the page's socket")
    holding, other = fleet.dataplanes[which - 1], fleet.dataplanes[2 - which]
    reconnects = int(browser.call("text", page="main", selector="#ws-reconnects"))

    holding.signal(signal.SIGTERM)
    closed = wait_page(browser, f"""(window.__wsLog || []).find((e) => e.id === {sid} &&
                                                               e.ev === 'close')""",
                       10, f"the page's socket to close after SIGTERM to {holding.name}")
    assert closed["code"] == 1001, closed

    # The page reconnects 500 ms later; its first attempt must succeed, through the other node.
    new_sid = wait_page(browser, f"""(() => {{
        const log = window.__wsLog || [];
        const next = log.find((e) => e.ev === 'create' && e.id > {sid} &&
                                     e.url.endsWith('/ws/chat/demo'));
        return next && log.some((e) => e.id === next.id &&
                                       (e.ev === 'message' || e.ev === 'close')) && next.id;
    }})()""", 10, "the page's first reconnect attempt to get an answer")
    assert open_main_socket(browser) == new_sid, \
        f"the first reconnect attempt failed\n{page_state(browser)}"
    hello = hello_of(browser, new_sid)
    assert hello["session"] == logged_in["session"], hello
    assert hello["instance"] == "B", hello
    assert int(browser.call("text", page="main", selector="#ws-reconnects")) == reconnects + 1
    assert browser.call("text", page="main", selector="#ws-status") == "open"
    assert bs.metric_sum(dp_metrics(other), "onedomain_websocket_connections_active") == 1
    assert holding.wait_exit(timeout=15) == 0, holding.output()[-2000:]


# ---- checked last, over everything the page did -----------------------------------------------

CORS_OR_COOKIE = re.compile(r"cors|cross-origin|access-control|cookie", re.I)
WEBSOCKET = re.compile(r"websocket|wss?://", re.I)


def _complaints(browser, pattern):
    """Distinct console errors/warnings (and uncaught page errors) matching pattern."""
    console = browser.call("console", page="main")
    return sorted({c["text"] for c in console
                   if c["type"] in ("error", "warning", "pageerror") and pattern.search(c["text"])})


def test_no_console_error_or_warning_mentions_cors_or_cookies(browser, logged_in):
    found = _complaints(browser, CORS_OR_COOKIE)
    assert not found, "console:\n" + "\n".join(found)
    # What DevTools' Issues panel would list (blocked or rejected cookies, CORS, mixed content).
    issues = [i for i in browser.call("issues", page="main")
              if re.search(r"cookie|cors|mixedcontent", i.get("code", ""), re.I)]
    assert not issues, json.dumps(issues, indent=1)


def test_no_console_error_or_warning_mentions_websocket(browser, logged_in):
    found = _complaints(browser, WEBSOCKET)
    assert not found, "console:\n" + "\n".join(found)


def test_screenshot_is_kept_and_the_whole_run_is_under_two_minutes(browser, logged_in):
    browser.call("screenshot", page="main", path=SCREENSHOT)
    with open(SCREENSHOT, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert os.path.getsize(SCREENSHOT) > 1000
    elapsed = time.monotonic() - MODULE_START
    assert elapsed < TIME_BUDGET_S, f"{elapsed:.1f}s"
