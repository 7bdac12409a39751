#pragma once

// The fleet console on the control plane's HTTP port: `/` shows the nodes, the running
// rollout (waves, canaries, gate values) and the history, server-rendered; `/console.js`
// polls `/console.json` every second and redraws. Read-only. Every page but the script needs
// a token of role read or above: `Authorization: Bearer TOKEN`, or the HttpOnly,
// SameSite=Strict session cookie `/login` sets (the login form's script sends the token once
// as a Bearer header; the cookie holds a random session id, never the token). Without one:
// 401 and the login form. Nothing secret is shown: no tokens, no snapshot contents.
//
// Threads: handlers run on the HTTP server's thread; the view is fetched through `view`
// (thread-safe by contract). Sessions are behind a mutex, at most kMaxSessions, 8 h each.

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "onedomain/v1/admin.pb.h"

namespace onedomain::http {
class AdminServer;
struct AdminRequest;
struct AdminReply;
}  // namespace onedomain::http

namespace onedomain::controlplane {

class TokenSet;

struct ConsoleNode {
  std::string id;
  std::string zone;
  bool connected = false;
  uint64_t version = 0;  // acknowledged
  double last_report_age = 0;
  double requests_per_second = 0;
  double errors_5xx_per_second = 0;
  uint64_t websockets = 0;
  bool canary = false;
};

struct ConsoleView {
  uint64_t latest_version = 0;
  uint64_t last_known_good = 0;
  std::vector<ConsoleNode> nodes;
  v1::RolloutStatus rollout;
  std::vector<v1::AuditRecord> history;  // newest first
};

// The JSON `/console.json` answers and the HTML `/` renders (exposed for tests).
std::string ConsoleJson(const ConsoleView& view);
std::string ConsoleHtml(const ConsoleView& view, const std::string& who);

class Console {
 public:
  static constexpr size_t kMaxSessions = 256;
  static constexpr std::chrono::hours kSessionLife{8};

  Console(const TokenSet& tokens, std::function<ConsoleView()> view);

  // Registers /, /console.js, /console.css, /console.json, /login, /logout, /favicon.ico.
  void Register(http::AdminServer& server);

 private:
  // The name of the reader, or empty when the request carries no valid read credential.
  std::string Reader(const http::AdminRequest& request);
  http::AdminReply Login(const http::AdminRequest& request);
  http::AdminReply Logout(const http::AdminRequest& request);

  const TokenSet& tokens_;
  std::function<ConsoleView()> view_;
  struct Session {
    std::string name;
    std::chrono::steady_clock::time_point expires;
  };
  std::mutex mu_;
  std::map<std::string, Session> sessions_;  // by session id
};

}  // namespace onedomain::controlplane
