#pragma once

// A small HTTP/1.1 server for a process's own endpoints (/healthz, /readyz, /metrics,
// /config_dump). Runs on its own thread and io_context, apart from the data path, so a
// scrape never competes with proxied traffic for a worker. Handlers run on that thread and
// must be thread-safe with respect to the rest of the process.

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"

namespace onedomain::http {

struct AdminReply {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
  // Extra response headers (Set-Cookie, Content-Security-Policy, ...).
  std::vector<std::pair<std::string, std::string>> headers = {};
};

// What a request handler registered with HandleRequest sees. Views into the request, valid
// during the call.
struct AdminRequest {
  std::string_view method;
  std::string_view target;
  std::string_view authorization;  // the Authorization header, empty when absent
  std::string_view cookie;         // the Cookie header, empty when absent
};

class AdminServer {
 public:
  // Called with the request's method and target (path plus query).
  using Handler = std::function<AdminReply(std::string_view method, std::string_view target)>;

  AdminServer();
  ~AdminServer();  // Stops the server if running.

  // Registers a handler for an exact path (the query is ignored for matching). Call before
  // Start. Unknown paths get 404.
  void Handle(std::string path, Handler handler);

  // Like Handle, for handlers that read request headers (GET and HEAD only, as every path).
  using RequestHandler = std::function<AdminReply(const AdminRequest& request)>;
  void HandleRequest(std::string path, RequestHandler handler);

  // Binds address:port (port 0 picks an ephemeral one) and starts serving.
  absl::Status Start(const std::string& address, uint16_t port);

  // The bound port, after a successful Start.
  uint16_t port() const;

  // Closes the listener and open connections, joins the thread. Idempotent.
  void Stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace onedomain::http
