#pragma once

// The one place that turns a ProxyError into what the client sees: status, a short plain
// text body that says what happened (never echoing request data), whether the connection
// stays open; the metric and the access-log line follow from the record it fills.

#include <boost/asio/awaitable.hpp>
#include <string>

#include "dataplane/http_proxy/proxy_error.h"
#include "dataplane/http_proxy/request_record.h"

namespace onedomain::dataplane {

struct LocalReplyOptions {
  bool head_request = false;  // answer without a body (Content-Length still says its size)
  bool close = true;          // Connection: close, and the caller closes after writing
};

// Appends the complete response to `out` and fills record.status / record.error. Returns the
// status code.
int RenderLocalReply(const ProxyError& error, const LocalReplyOptions& options,
                     RequestRecord& record, std::string& out);

// Whether a connection may serve another request after a local reply for `kind`, given that
// the request (body included) was read completely.
bool KeepAliveAfterLocalReply(ProxyErrorKind kind, bool request_fully_read);

// Interim "100 Continue" sent when the proxy answers Expect itself.
inline constexpr std::string_view kContinueResponse = "HTTP/1.1 100 Continue\r\n\r\n";

struct Downstream;

// What SendLocalReply needs to know about the request it answers.
struct SendReplyOptions {
  bool head_request = false;        // answer without a body
  bool keep_alive_ok = false;       // the client wants keep-alive and the worker is not draining
  bool request_fully_read = false;  // the request, body included, was read whole
};

// Renders the reply for `error` into `out`, writes it to the client under a write deadline,
// and fills `record`. Returns whether the connection may serve another request:
// `keep_alive_ok`, and the error kind allows it given `request_fully_read`.
boost::asio::awaitable<bool> SendLocalReply(Downstream& down, const ProxyError& error,
                                            RequestRecord& record, SendReplyOptions options,
                                            std::string& out);

}  // namespace onedomain::dataplane
