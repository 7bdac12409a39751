#include "controlplane/console/console.h"

#include <openssl/rand.h>

#include <cstdio>

#include "common/http/admin_server.h"
#include "common/log/log.h"
#include "common/strings/strings.h"
#include "controlplane/auth/tokens.h"
#include "controlplane/rollout/rollout_math.h"
#include "controlplane/server/time_text.h"

namespace onedomain::controlplane {
namespace {

constexpr char kCookie[] = "od_console";
constexpr char kCsp[] =
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

std::string Html(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (const char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

std::string Json(std::string_view s) {
  std::string out = "\"";
  for (const unsigned char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      default:
        if (c < 0x20 || c == '<' || c == '>' || c == '&') {
          char buf[8];
          std::snprintf(buf, sizeof(buf), "\\u%04x", c);
          out += buf;
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  out += '"';
  return out;
}

std::string Num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.6g", v);
  return buf;
}

std::string Fixed(double v, int digits) {
  char buf[48];
  std::snprintf(buf, sizeof(buf), "%.*f", digits, v);
  return buf;
}

std::string GateText(const v1::GateValue& g, double v) {
  return g.gate() == "ws_abnormal_close" ? Fixed(v, 2) + "/min" : Fixed(v * 100, 2) + "%";
}

// The value of cookie `name` in a Cookie header, or empty.
std::string_view CookieValue(std::string_view header, std::string_view name) {
  for (std::string_view part : str::Split(header, ';')) {
    part = str::StripWhitespace(part);
    if (str::ConsumePrefix(part, name) && str::ConsumePrefix(part, "=")) return part;
  }
  return {};
}

http::AdminReply Page(int status, std::string body) {
  http::AdminReply r{status, "text/html; charset=utf-8", std::move(body)};
  r.headers = {{"Content-Security-Policy", kCsp},
               {"X-Content-Type-Options", "nosniff"},
               {"X-Frame-Options", "DENY"},
               {"Referrer-Policy", "no-referrer"}};
  return r;
}

constexpr char kLoginPage[] = R"(<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>onedomain fleet console: sign in</title>
<link rel="stylesheet" href="/console.css"><script src="/console.js" defer></script></head>
<body><h1>onedomain fleet console</h1>
<form id="login"><p>A token with the <code>read</code> role (or above) is required.</p>
<label>Token <input id="token" type="password" autocomplete="off" required></label>
<button id="login-button" type="submit">Sign in</button>
<p id="login-error" role="alert"></p></form></body></html>
)";

constexpr char kCss[] = R"(body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}th,td{border:1px solid #ccc;padding:.25em .6em;
text-align:left;font-size:.9em}th{background:#f3f3f3}.canary{background:#fff6d6}
.failing{color:#b00;font-weight:bold}.ok{color:#070}.waiting{color:#a60}
.down{color:#999}#updated{color:#666;font-size:.8em}code{background:#f3f3f3;padding:0 .2em}
)";

constexpr char kJs[] =
    R"(// The fleet console: polls /console.json and redraws. No framework, no build step.
'use strict';
function el(id) { return document.getElementById(id); }
function td(row, text, cls) {
  const c = row.insertCell(); c.textContent = text; if (cls) c.className = cls; return c;
}
function pct(v) { return (v * 100).toFixed(2) + '%'; }
function gateText(g, v) { return g.gate === 'ws_abnormal_close' ? v.toFixed(2) + '/min' : pct(v); }
function draw(d) {
  const r = d.rollout;
  el('rollout-state').textContent = r.state;
  el('rollout-version').textContent = r.version ? r.version + ' (base ' + r.base_version + ')' : '-';
  el('rollout-wave').textContent = r.waves.length ? (r.wave + 1) + '/' + r.waves.length : '-';
  el('rollout-baked').textContent = r.baked_seconds.toFixed(1) + 's of ' + r.bake_seconds.toFixed(1) + 's';
  el('rollout-detail').textContent = r.detail || '';
  el('rollout-nodes').textContent = r.nodes_on_version + ' on ' + r.version + ', ' +
      r.nodes_on_base + ' on ' + r.base_version + ', ' + r.nodes_other + ' other';
  const waves = el('waves').tBodies[0]; waves.replaceChildren();
  r.waves.forEach((w, i) => { const row = waves.insertRow(); td(row, i + 1); td(row, w.spec);
    td(row, w.nodes); td(row, w.state, w.state === 'failed' ? 'failing' : ''); });
  const gates = el('gates').tBodies[0]; gates.replaceChildren();
  r.gates.forEach(g => { const row = gates.insertRow(); td(row, g.gate);
    td(row, gateText(g, g.canary)); td(row, gateText(g, g.baseline));
    td(row, gateText(g, g.floor) + ' and ' + g.relative + 'x'); td(row, g.verdict, g.verdict); });
  const nodes = el('nodes').tBodies[0]; nodes.replaceChildren();
  d.nodes.forEach(n => { const row = nodes.insertRow(); if (n.canary) row.className = 'canary';
    td(row, n.id); td(row, n.zone); td(row, n.version); td(row, n.connected ? 'yes' : 'no',
    n.connected ? '' : 'down'); td(row, n.last_report_age.toFixed(1) + 's');
    td(row, n.requests_per_second.toFixed(1)); td(row, n.errors_5xx_per_second.toFixed(1));
    td(row, n.websockets); td(row, n.canary ? 'canary' : ''); });
  const hist = el('history').tBodies[0]; hist.replaceChildren();
  d.history.forEach(h => { const row = hist.insertRow(); td(row, h.version); td(row, h.time);
    td(row, h.who); td(row, h.method); td(row, h.delivery); td(row, h.outcome,
    h.outcome === 'rolled_back' ? 'failing' : ''); td(row, h.reason); });
  el('fleet-summary').textContent = 'latest version ' + d.latest_version +
      ', last known good ' + d.last_known_good + ', ' + d.nodes.length + ' nodes';
  el('updated').textContent = 'updated ' + new Date().toISOString();
}
async function poll() {
  try {
    const res = await fetch('/console.json', {credentials: 'same-origin', cache: 'no-store'});
    if (res.status === 401) { location.reload(); return; }
    if (res.ok) draw(await res.json());
  } catch (e) { el('updated').textContent = 'update failed: ' + e; }
  setTimeout(poll, 1000);
}
async function login(ev) {
  ev.preventDefault();
  const res = await fetch('/login', {credentials: 'same-origin',
      headers: {'Authorization': 'Bearer ' + el('token').value}});
  if (res.ok) { location.reload(); return; }
  el('login-error').textContent = res.status === 401 ? 'unknown token, or its role is below read'
                                                     : 'sign-in failed: ' + res.status;
}
document.addEventListener('DOMContentLoaded', () => {
  if (el('login')) { el('login').addEventListener('submit', login); return; }
  poll();
});
)";

}  // namespace

std::string ConsoleJson(const ConsoleView& v) {
  const v1::RolloutStatus& r = v.rollout;
  std::string out = str::Cat("{\"latest_version\":", v.latest_version,
                             ",\"last_known_good\":", v.last_known_good, ",\"rollout\":{");
  str::Append(out, "\"state\":", Json(rollout::StateName(r.state())), ",\"version\":", r.version(),
              ",\"base_version\":", r.base_version(), ",\"wave\":", r.wave(),
              ",\"baked_seconds\":", Num(r.baked_seconds()),
              ",\"bake_seconds\":", Num(r.bake_seconds()), ",\"detail\":", Json(r.detail()),
              ",\"who\":", Json(r.who()), ",\"reason\":", Json(r.reason()),
              ",\"nodes_on_version\":", r.nodes_on_version(),
              ",\"nodes_on_base\":", r.nodes_on_base(), ",\"nodes_other\":", r.nodes_other(),
              ",\"revert_version\":", r.revert_version(), ",\"waves\":[");
  for (int i = 0; i < r.waves_size(); ++i) {
    const v1::WaveStatus& w = r.waves(i);
    str::Append(out, i ? "," : "", "{\"spec\":", Json(w.spec()), ",\"nodes\":", w.nodes(),
                ",\"state\":", Json(w.state()), "}");
  }
  out += "],\"gates\":[";
  for (int i = 0; i < r.gates_size(); ++i) {
    const v1::GateValue& g = r.gates(i);
    str::Append(out, i ? "," : "", "{\"gate\":", Json(g.gate()), ",\"canary\":", Num(g.canary()),
                ",\"baseline\":", Num(g.baseline()), ",\"floor\":", Num(g.floor()),
                ",\"relative\":", Num(g.relative()), ",\"verdict\":", Json(g.verdict()),
                ",\"canary_weight\":", Num(g.canary_weight()), "}");
  }
  out += "],\"canary_nodes\":[";
  for (int i = 0; i < r.canary_nodes_size(); ++i) {
    str::Append(out, i ? "," : "", Json(r.canary_nodes(i)));
  }
  out += "]},\"nodes\":[";
  for (size_t i = 0; i < v.nodes.size(); ++i) {
    const ConsoleNode& n = v.nodes[i];
    str::Append(out, i ? "," : "", "{\"id\":", Json(n.id), ",\"zone\":", Json(n.zone),
                ",\"connected\":", n.connected ? "true" : "false", ",\"version\":", n.version,
                ",\"last_report_age\":", Num(n.last_report_age),
                ",\"requests_per_second\":", Num(n.requests_per_second),
                ",\"errors_5xx_per_second\":", Num(n.errors_5xx_per_second),
                ",\"websockets\":", n.websockets, ",\"canary\":", n.canary ? "true" : "false", "}");
  }
  out += "],\"history\":[";
  for (size_t i = 0; i < v.history.size(); ++i) {
    const v1::AuditRecord& h = v.history[i];
    str::Append(
        out, i ? "," : "", "{\"version\":", h.version(), ",\"time\":", Json(TimeText(h.time())),
        ",\"who\":", Json(h.who()), ",\"method\":", Json(h.method()),
        ",\"delivery\":", Json(h.delivery()), ",\"outcome\":", Json(h.outcome()),
        ",\"outcome_detail\":", Json(h.outcome_detail()), ",\"reason\":", Json(h.reason()), "}");
  }
  out += "]}";
  return out;
}

std::string ConsoleHtml(const ConsoleView& v, const std::string& who) {
  const v1::RolloutStatus& r = v.rollout;
  std::string out = str::Cat(
      R"(<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>onedomain fleet console</title>
<link rel="stylesheet" href="/console.css"><script src="/console.js" defer></script></head>
<body><h1>onedomain fleet console</h1>
<p>signed in as <b>)",
      Html(who), R"(</b> (read-only) &middot; <a href="/logout">sign out</a>
&middot; <span id="fleet-summary">latest version )",
      v.latest_version, ", last known good ", v.last_known_good, ", ", v.nodes.size(),
      R"( nodes</span> &middot; <span id="updated"></span></p>
<h2>Rollout</h2>
<p>state <b id="rollout-state">)",
      rollout::StateName(r.state()), R"(</b>, version <span id="rollout-version">)",
      r.version() ? str::Cat(r.version(), " (base ", r.base_version(), ")") : std::string("-"),
      R"(</span>, wave <span id="rollout-wave">)",
      r.waves_size() ? str::Cat(r.wave() + 1, "/", r.waves_size()) : std::string("-"),
      R"(</span>, baked <span id="rollout-baked">)", Fixed(r.baked_seconds(), 1), "s of ",
      Fixed(r.bake_seconds(), 1), R"(s</span>; nodes: <span id="rollout-nodes">)",
      r.nodes_on_version(), " on ", r.version(), ", ", r.nodes_on_base(), " on ", r.base_version(),
      ", ", r.nodes_other(), R"( other</span></p>
<p id="rollout-detail">)",
      Html(r.detail()), R"(</p>
<table id="waves"><thead><tr><th>wave</th><th>size</th><th>nodes</th><th>state</th></tr></thead><tbody>
)");
  for (int i = 0; i < r.waves_size(); ++i) {
    str::Append(out, "<tr><td>", i + 1, "</td><td>", Html(r.waves(i).spec()), "</td><td>",
                r.waves(i).nodes(), "</td><td>", Html(r.waves(i).state()), "</td></tr>\n");
  }
  out += R"(</tbody></table>
<table id="gates"><thead><tr><th>gate</th><th>canary</th><th>baseline</th><th>fails above</th><th>verdict</th></tr></thead><tbody>
)";
  for (const v1::GateValue& g : r.gates()) {
    str::Append(out, "<tr><td>", Html(g.gate()), "</td><td>", GateText(g, g.canary()), "</td><td>",
                GateText(g, g.baseline()), "</td><td>", GateText(g, g.floor()), " and ",
                Num(g.relative()), "x</td><td class=\"", Html(g.verdict()), "\">",
                Html(g.verdict()), "</td></tr>\n");
  }
  out += R"(</tbody></table>
<h2>Nodes</h2>
<table id="nodes"><thead><tr><th>node</th><th>zone</th><th>version</th><th>connected</th><th>last report</th><th>requests/s</th><th>5xx/s</th><th>open WebSockets</th><th>rollout</th></tr></thead><tbody>
)";
  for (const ConsoleNode& n : v.nodes) {
    str::Append(out, n.canary ? "<tr class=\"canary\">" : "<tr>", "<td>", Html(n.id), "</td><td>",
                Html(n.zone), "</td><td>", n.version, "</td><td>", n.connected ? "yes" : "no",
                "</td><td>", Fixed(n.last_report_age, 1), "s</td><td>",
                Fixed(n.requests_per_second, 1), "</td><td>", Fixed(n.errors_5xx_per_second, 1),
                "</td><td>", n.websockets, "</td><td>", n.canary ? "canary" : "", "</td></tr>\n");
  }
  out += R"(</tbody></table>
<h2>History</h2>
<table id="history"><thead><tr><th>version</th><th>time</th><th>who</th><th>method</th><th>delivery</th><th>outcome</th><th>why</th></tr></thead><tbody>
)";
  for (const v1::AuditRecord& h : v.history) {
    str::Append(out, "<tr><td>", h.version(), "</td><td>", TimeText(h.time()), "</td><td>",
                Html(h.who()), "</td><td>", Html(h.method()), "</td><td>", Html(h.delivery()),
                "</td><td>", Html(h.outcome()), "</td><td>", Html(h.reason()), "</td></tr>\n");
  }
  out += "</tbody></table>\n</body></html>\n";
  return out;
}

Console::Console(const TokenSet& tokens, std::function<ConsoleView()> view)
    : tokens_(tokens), view_(std::move(view)) {}

std::string Console::Reader(const http::AdminRequest& request) {
  if (!request.authorization.empty()) {
    const auto p = tokens_.AuthenticateHeader(request.authorization);
    return p && p->role >= Role::kRead ? p->name : std::string();
  }
  const std::string_view id = CookieValue(request.cookie, kCookie);
  if (id.empty()) return {};
  std::lock_guard lock(mu_);
  const auto it = sessions_.find(std::string(id));
  if (it == sessions_.end()) return {};
  if (it->second.expires < std::chrono::steady_clock::now()) {
    sessions_.erase(it);
    return {};
  }
  return it->second.name;
}

http::AdminReply Console::Login(const http::AdminRequest& request) {
  const auto p = request.authorization.empty() ? std::nullopt
                                               : tokens_.AuthenticateHeader(request.authorization);
  if (!p || p->role < Role::kRead) {
    return {401, "text/plain; charset=utf-8",
            "authorization: a `Bearer TOKEN` of role read or above is required\n"};
  }
  unsigned char raw[32];
  if (RAND_bytes(raw, sizeof(raw)) != 1) {
    return {500, "text/plain; charset=utf-8", "no randomness for a session id\n"};
  }
  std::string id;
  for (const unsigned char c : raw) {
    char buf[3];
    std::snprintf(buf, sizeof(buf), "%02x", c);
    id += buf;
  }
  {
    std::lock_guard lock(mu_);
    const auto now = std::chrono::steady_clock::now();
    for (auto it = sessions_.begin(); it != sessions_.end();) {
      it = it->second.expires < now ? sessions_.erase(it) : std::next(it);
    }
    if (sessions_.size() >= kMaxSessions) {
      // Forget the session closest to expiry (the oldest): bounded memory.
      auto oldest = sessions_.begin();
      for (auto it = sessions_.begin(); it != sessions_.end(); ++it) {
        if (it->second.expires < oldest->second.expires) oldest = it;
      }
      sessions_.erase(oldest);
    }
    sessions_[id] = {p->name, now + kSessionLife};
  }
  log::Info("console", str::Cat("console session for ", p->name));
  http::AdminReply r{204, "text/plain; charset=utf-8", ""};
  r.headers = {
      {"Set-Cookie", str::Cat(kCookie, "=", id, "; Path=/; HttpOnly; SameSite=Strict; Max-Age=",
                              std::chrono::seconds(kSessionLife).count())}};
  return r;
}

http::AdminReply Console::Logout(const http::AdminRequest& request) {
  const std::string_view id = CookieValue(request.cookie, kCookie);
  if (!id.empty()) {
    std::lock_guard lock(mu_);
    sessions_.erase(std::string(id));
  }
  http::AdminReply r = Page(200, std::string(kLoginPage));
  r.headers.emplace_back("Set-Cookie",
                         str::Cat(kCookie, "=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"));
  return r;
}

void Console::Register(http::AdminServer& server) {
  server.HandleRequest("/", [this](const http::AdminRequest& request) {
    const std::string who = Reader(request);
    if (who.empty()) return Page(401, std::string(kLoginPage));
    return Page(200, ConsoleHtml(view_(), who));
  });
  server.HandleRequest("/console.json", [this](const http::AdminRequest& request) {
    if (Reader(request).empty()) {
      return http::AdminReply{401, "application/json",
                              "{\"error\":\"a token of role read or above is required\"}"};
    }
    http::AdminReply r{200, "application/json", ConsoleJson(view_())};
    r.headers = {{"X-Content-Type-Options", "nosniff"}};
    return r;
  });
  server.HandleRequest("/console.js", [](const http::AdminRequest&) {
    return http::AdminReply{200, "text/javascript; charset=utf-8", kJs};
  });
  server.HandleRequest("/console.css", [](const http::AdminRequest&) {
    return http::AdminReply{200, "text/css; charset=utf-8", kCss};
  });
  // Browsers ask for it on every page; an empty answer keeps their consoles quiet.
  server.HandleRequest("/favicon.ico", [](const http::AdminRequest&) {
    return http::AdminReply{204, "image/x-icon", ""};
  });
  server.HandleRequest("/login",
                       [this](const http::AdminRequest& request) { return Login(request); });
  server.HandleRequest("/logout",
                       [this](const http::AdminRequest& request) { return Logout(request); });
}

}  // namespace onedomain::controlplane
