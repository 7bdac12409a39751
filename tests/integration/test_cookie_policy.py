"""Cookie policy end to end over TLS: the backend sets its session cookie for its own host
name; the browser-facing answer carries Domain=.hirecj.ai; Secure; HttpOnly; SameSite=Lax;
the same cookie reaches the backend on /api/v1/me and on a wss:// upgrade; a policy pushed
from the control plane applies to the next response without a restart; rewrites are counted
by rule."""

import asyncio
import http.client
import json
import re
import ssl

import cp_support
import fleet_support
import support
from test_controlplane_tls import make_ca_and_server_cert

POLICY = """
  cookie_policy:
    domain_rewrites:
      - {from: agents-service, to: .hirecj.ai}
    attribute_rules:
      - {name: "sess_*", secure: true, http_only: true, same_site: lax}
"""


def https(port, ctx, path, cookie=None):
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10)
    try:
        conn.request("GET", path, headers={"Cookie": cookie} if cookie else {})
        resp = conn.getresponse()
        return resp.status, resp.getheaders(), resp.read()
    finally:
        conn.close()


def set_cookies(headers):
    return [v for k, v in headers if k.lower() == "set-cookie"]


def test_cookie_policy_over_tls(procs, tmp_path):
    ca, cert, key = make_ca_and_server_cert(str(tmp_path))
    backend = procs([support.binary("demo_backend"), "--port", "0", "--instance", "A",
                     "--cookie-domain", "agents-service"], name="backend")
    backend.wait_ports()
    seed = cp_support.seed_yaml(agents_endpoints=(f"127.0.0.1:{backend.ports['api']}",),
                                extra_listeners=f"""
      tls: {{cert_file: {cert}, key_file: {key}}}""") + POLICY
    cp = cp_support.ControlPlane(procs, str(tmp_path / "cp"), seed=seed).start()
    dp = fleet_support.start_managed_dataplane(procs, str(tmp_path / "dp"), cp.address, "n1")
    port = fleet_support.wait_listener(dp)
    ctx = ssl.create_default_context(cafile=ca)

    status, headers, _ = https(port, ctx, "/api/v1/auth/login")
    assert status == 302
    callback = dict((k.lower(), v) for k, v in headers)["location"]
    status, headers, _ = https(port, ctx, callback)
    assert status == 302
    cookies = [c for c in set_cookies(headers) if c.startswith("sess_")]
    assert len(cookies) == 1, set_cookies(headers)
    cookie = cookies[0]
    assert "Domain=.hirecj.ai" in cookie and "agents-service" not in cookie
    for attribute in ("Secure", "HttpOnly", "SameSite=Lax"):
        assert re.search(rf"(^|; ){attribute}(;|$)", cookie), cookie
    pair = cookie.split(";")[0]
    name, value = pair.split("=", 1)

    status, _, body = https(port, ctx, "/api/v1/me", cookie=pair)
    assert status == 200 and json.loads(body)["session"] == value

    async def upgrade():
        import websockets
        async with websockets.connect(f"wss://127.0.0.1:{port}/ws/chat/1", ssl=ctx,
                                      origin="http://127.0.0.1",
                                      extra_headers={"Cookie": pair}, open_timeout=10) as ws:
            return json.loads(await asyncio.wait_for(ws.recv(), 10))
    hello = asyncio.run(upgrade())
    assert hello["session"] == value

    # A new policy pushed from the control plane applies to the next response.
    policy = support.write_file(str(tmp_path), "policy.yaml",
                                "domain_rewrites:\n  - {from: agents-service, to: hirecj.ai}\n"
                                "attribute_rules:\n"
                                "  - {name: \"sess_*\", secure: true, http_only: true, "
                                "same_site: strict}\n")
    cp.admin("set-cookie-policy", "-f", policy, "--reason", "strict", check=True)
    support.wait_for(lambda: int(fleet_support.nodes(cp)["last_known_good_version"]) == 2, 15,
                     what="node on version 2")
    status, headers, _ = https(port, ctx, callback.replace("code=", "code=x"))
    cookie = [c for c in set_cookies(headers) if c.startswith("sess_")][0]
    assert "SameSite=Strict" in cookie and "Domain=hirecj.ai" in cookie, cookie

    metrics = support.http_get(f"http://127.0.0.1:{dp.ports['admin']}/metrics")[2].decode()
    assert re.search(r'onedomain_cookie_rewrites_total\{[^}]*route="api"[^}]*rule="domain_rewrites\[0\]"[^}]*\} 2', metrics) or \
        re.search(r'onedomain_cookie_rewrites_total\{[^}]*rule="domain_rewrites\[0\]"[^}]*route="api"[^}]*\} 2', metrics), \
        [l for l in metrics.splitlines() if "cookie" in l]
    dump = support.http_get(f"http://127.0.0.1:{dp.ports['admin']}/config_dump")[2].decode()
    assert "SAME_SITE_STRICT" in dump
