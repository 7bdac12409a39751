// The coroutine half of local_reply: writing a rendered reply to the client. Kept apart from
// the pure rendering so the fuzzer and unit tests link no coroutine code.

#include "dataplane/http_proxy/local_reply.h"
#include "dataplane/http_proxy/session_context.h"
#include "dataplane/worker/compiled_snapshot.h"
#include "dataplane/worker/worker.h"

namespace onedomain::dataplane {

boost::asio::awaitable<bool> SendLocalReply(Downstream& down, const ProxyError& error,
                                            RequestRecord& record, SendReplyOptions options,
                                            std::string& out) {
  const bool keep =
      options.keep_alive_ok && KeepAliveAfterLocalReply(error.kind, options.request_fully_read);
  out.clear();
  RenderLocalReply(error, LocalReplyOptions{options.head_request, !keep}, record, out);
  // Re-arming clears a deadline that fired for the read which led here (408).
  down.deadline.Arm(down.listener.limits.idle_timeout);
  const IoResult r = co_await down.stream.Write(net::buffer(out));
  down.deadline.Disarm();
  down.worker.counters().bytes_sent.Add(r.n);
  co_return keep && !r.ec;
}

}  // namespace onedomain::dataplane
