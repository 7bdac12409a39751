// Reading a PROXY protocol header at accept (client_limits_phase.h: DecideClientAtAccept).

#include <algorithm>
#include <array>
#include <string_view>

#include "common/log/log.h"
#include "common/strings/strings.h"
#include "dataplane/http_proxy/client_limits_phase.h"
#include "dataplane/limits/proxy_protocol.h"
#include "dataplane/net/any_stream.h"
#include "dataplane/stats/dataplane_stats.h"
#include "dataplane/worker/compiled_snapshot.h"
#include "dataplane/worker/worker.h"
#include "dataplane/worker/worker_config.h"

namespace onedomain::dataplane {
namespace {

// Shortest header of either version ("PROXY UNKNOWN\r\n" is 15 bytes, v2's fixed part 16):
// reading that much first never takes a byte past the header.
constexpr size_t kShortestHeader = 15;

// How many more bytes belong to the header for sure, given the `have` bytes read so far
// (which parse as an incomplete header). For v1, peeks for the line's end.
size_t BytesToRead(AnyStream& stream, const char* buf, size_t have) {
  if (have < kShortestHeader) return kShortestHeader - have;
  if (std::string_view(buf, have).substr(0, 6) == "PROXY ") {
    std::array<char, kMaxProxyV1Bytes> peek{};
    error_code ec;
    const size_t room = kMaxProxyV1Bytes - have;
    const size_t n = stream.TryPeek(net::buffer(peek.data(), room), ec);
    if (ec || n == 0) return room;  // the read below reports what is wrong
    if (buf[have - 1] == '\r' && peek[0] == '\n') return 1;
    const size_t crlf = std::string_view(peek.data(), n).find("\r\n");
    return crlf == std::string_view::npos ? n : crlf + 2;
  }
  if (have < 16) return 16 - have;  // v2's fixed part
  const auto* b = reinterpret_cast<const uint8_t*>(buf);
  const size_t total = 16 + ((static_cast<size_t>(b[14]) << 8) | b[15]);
  return total > have ? total - have : 0;
}

// Reads the header; false when it is missing, malformed, late or the client left.
net::awaitable<bool> ReadProxyHeader(AnyStream& stream, Worker& worker,
                                     const CompiledListener& listener, Clock::time_point accepted,
                                     ClientState& client) {
  std::array<char, kMaxProxyHeaderBytes> buf{};
  size_t have = 0;
  Timer deadline(worker.dispatcher(), [&stream] { stream.Cancel(); });
  deadline.ArmAt(accepted + listener.proxy_header_timeout);
  for (;;) {
    const ProxyHeader h =
        ParseProxyHeader(std::string_view(buf.data(), have), listener.proxy_protocol);
    if (h.state == ProxyHeader::State::kDone) {
      if (h.has_source) {
        client.address = h.source;
        client.text = h.source.ToString();
      }
      co_return true;
    }
    if (h.state == ProxyHeader::State::kMalformed) {
      log::Debug("http", str::Cat("PROXY header from ", client.text, " refused: ", h.error));
      co_return false;
    }
    const size_t want = std::min(BytesToRead(stream, buf.data(), have), buf.size() - have);
    if (want == 0) co_return false;  // cannot happen: the parser caps the length
    error_code ec;
    const size_t n = stream.TryRead(net::buffer(buf.data() + have, want), ec);
    if (ec == net::error::would_block || ec == net::error::try_again) {
      const error_code wec = co_await stream.WaitReadable();
      if (wec || deadline.fired()) {
        log::Debug("http", str::Cat("no PROXY header in time from ", client.text));
        co_return false;
      }
      continue;
    }
    if (ec) co_return false;  // the client left before its header ended
    have += n;
  }
}

}  // namespace

net::awaitable<bool> DecideClientAtAccept(AnyStream& stream, Worker& worker, uint32_t slot,
                                          Clock::time_point accepted, ClientState& client) {
  const Ref<WorkerConfig> cfg = worker.config();
  const CompiledListener* listener = cfg ? cfg->listener(slot) : nullptr;
  if (listener == nullptr) co_return false;  // removed between accept and now
  const NodeClientLimits& limits = cfg->compiled->client_limits;
  const bool proxy = listener->proxy_protocol != ProxyProtocolMode::kOff;
  if (proxy && !co_await ReadProxyHeader(stream, worker, *listener, accepted, client)) {
    worker.no_route_counters()
        .limit_rejections[static_cast<size_t>(stats::LimitReason::kProxyHeader)]
        .Add();
    co_return false;
  }
  client.replace_forwarded_for = proxy || !limits.trusted_proxies.empty();
  // A trusted proxy's first request names the client; until then nothing is counted.
  client.decided = !IsTrusted(limits.trusted_proxies, client.address);
  if (!client.decided) co_return true;
  co_return AdmitConnection(client, limits, worker);
}

}  // namespace onedomain::dataplane
