#pragma once

// Internal to the HTTP/2 codec (h2_session.h is its interface): a client connection
// (h2_session.cc: nghttp2, the socket, flow control, defences), its request streams as the
// exchange sees them (h2_stream.cc) and the RFC 8441 tunnel on a stream (h2_tunnel.cc).
//
// Thread: the accepting worker.

#include <nghttp2/nghttp2.h>

#include <boost/beast/core/flat_buffer.hpp>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "dataplane/http2/h2_headers.h"
#include "dataplane/http_proxy/chunked_scanner.h"
#include "dataplane/http_proxy/client_limits_phase.h"
#include "dataplane/http_proxy/phases.h"
#include "dataplane/http_proxy/session_context.h"
#include "dataplane/runtime/parked.h"
#include "dataplane/worker/worker.h"
#include "dataplane/ws_tunnel/ws_tunnel_engine.h"

namespace onedomain::dataplane {

class AnyStream;
struct CompiledListener;
struct WsHandoff;

namespace h2 {

// A stream's response bytes waiting for the client's window: the exchange's next write waits
// while more than this is queued (so at most this plus one relay chunk per stream).
constexpr size_t kStreamOutHigh = 64 * 1024;

// A tunnel's client stream takes this much from the tunnel engine before it says would_block.
constexpr size_t kTunnelOutLimit = 128 * 1024;

// Rapid reset (CVE-2023-44487): RST_STREAM from the client, as a token bucket; below
// nghttp2's own limit (1000, 33/s) so the answer is ours: GOAWAY ENHANCE_YOUR_CALM.
constexpr double kResetBurst = 200;

using stats::Http2Error;
using stats::Http2Goaway;

class Connection;

// One request stream. Owned by its Connection; lives until nghttp2 closed the stream and its
// coroutine ended, whichever comes last.
struct Stream {
  Stream(Connection& c, int32_t stream_id, uint32_t max_header_bytes, Dispatcher& d)
      : conn(c), id(stream_id), builder(max_header_bytes), reader(d), writer(d) {}

  Connection& conn;
  const int32_t id;
  H2RequestBuilder builder;
  RequestHead head;
  bool end_stream_with_headers = false;

  // Request body toward the exchange (chunked framing added when the length is unknown).
  // DATA goes to `arriving` as frames come in; `in` changes only when its reader takes them
  // (TakeArriving: H2Source::ReadMore, a tunnel's read, before the exchange starts). The
  // exchange writes straight from `in`, and a write waiting for the upstream must not see
  // its bytes move: appending to `in` itself could reallocate it under that write.
  beast::flat_buffer in;
  beast::flat_buffer arriving;
  bool chunked_in = false;
  bool end_in = false;   // END_STREAM received
  uint64_t unacked = 0;  // DATA bytes received and not yet handed back to the window
  Parked reader;

  // Response toward the client.
  H2Response resp;
  std::string scratch;        // a local reply's HTTP/1.1 rendering before conversion
  bool resp_pending = false;  // a head is waiting to be submitted
  bool resp_submitted = false;
  bool resp_no_body = false;
  bool resp_chunked = false;  // the upstream body arrives chunked: de-chunked here
  ChunkedScanner dechunker;
  std::optional<uint64_t> resp_length;
  uint64_t resp_body = 0;  // body bytes queued
  bool resp_complete = false;
  std::string out;  // body bytes not yet taken by the data provider
  size_t out_off = 0;
  bool out_eof = false;  // the body ended: the data provider ends the stream
  bool deferred = false;
  Parked writer;

  // Client limits: the connection's client, and the WebSocket counts this stream holds (many
  // tunnels share a connection; each counts once, until its stream ends).
  ClientState limits;

  // RFC 8441 tunnels.
  std::string ws_key;               // the Sec-WebSocket-Key we sent upstream
  bool bad_accept = false;          // the upstream's 101 did not prove it read our key
  StreamEvents* ws_sink = nullptr;  // the tunnel engine, while it runs on this stream
  bool ev_read = false;             // events owed to ws_sink
  bool ev_write = false;

  bool closed = false;     // nghttp2 closed the stream (done or reset)
  bool cancelled = false;  // the exchange cancelled the client I/O (request_timeout)
  bool running = false;    // its coroutine has not ended
  bool finished = false;   // its coroutine ended: nobody takes request bytes any more

  size_t out_pending() const { return out.size() - out_off; }
  // Lets go of a large response buffer once it is drained: an idle tunnel keeps none.
  void ReleaseDrainedOut() {
    if (out_pending() != 0 || out.capacity() <= 2 * kInitialReadSize) return;
    out.clear();
    out.shrink_to_fit();
    out_off = 0;
  }
  // Moves what arrived to the end of `in` (no copy when `in` is empty).
  void TakeArriving();
};

class Connection final : public StreamEvents {
 public:
  Connection(AnyStream& stream, Worker& worker, uint32_t slot, ClientState& client,
             const CompiledListener& listener);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // Sends our SETTINGS, feeds `already_read`, and starts taking the stream's events.
  bool Start(std::string_view already_read);
  // Waits until the connection ended and every stream's coroutine finished.
  net::awaitable<void> Wait();

  Worker& worker() { return worker_; }
  uint32_t slot() const { return slot_; }
  // Whether a lingering close can still get our last bytes to the client: its socket works
  // and took everything we wrote (a client that stopped reading would not get them anyway,
  // and must not keep the node reading what it floods).
  bool worth_lingering() const { return !socket_failed_ && woff_ == wbuf_.size(); }
  std::string_view client_ip() const { return client_.text; }
  ClientState& client() { return client_; }
  // The client is over its connection cap (counted by the caller): GOAWAY, no new streams.
  void RefuseClient() {
    if (terminated_) return;
    terminated_ = true;
    nghttp2_session_terminate_session(session_, NGHTTP2_ENHANCE_YOUR_CALM);
    Flush();
  }
  const ListenerLimits& limits() const { return limits_; }
  std::string_view forwarded_proto() const { return forwarded_proto_; }
  std::string_view listener_name() const { return listener_name_; }

  // ---- for streams (from their coroutines, never inside nghttp2 callbacks) ----
  // Hands the DATA bytes the exchange took back to the client's windows.
  void Consume(Stream& s);
  // Submits the response head pending on `s` (with a deferred body unless it has none).
  void SubmitResponse(Stream& s);
  // New body bytes, or the end, for the data provider.
  void ResumeData(Stream& s);
  // Sends an interim (1xx) head on `s` before its response; false once that cannot be.
  bool SubmitInterim(Stream& s, const H2Response& interim);
  void Reset(Stream& s, uint32_t code);
  void Flush();
  // Whether a stream is still producing its response (more frames will follow).
  bool MoreOutputComing() const;
  // Flushes once at the end of this loop turn: the frames every stream queued in the turn
  // (response HEADERS, DATA, END_STREAM) leave in one TLS record and one write. While the loop
  // already has completions waiting (a busy io_uring loop) and a stream of this connection
  // is still making its response, the flush waits for them, a turn at a time (at most 16
  // turns and 1 ms): the responses they complete leave in the same write. Fewer, larger
  // writes cost the client and the node less per response (h2load -c100 -m10, small GETs:
  // 7.7 instead of 4.3 responses per TLS write, the client 8.1 instead of 10.9 us of CPU per
  // request, 1.13x the requests). An idle loop flushes at once.
  void FlushSoon() {
    if (!flush_soon_.armed()) flush_soon_.ArmAt(worker_.Now());
  }
  void Count(Http2Error e) { worker_.counters().http2_errors[static_cast<size_t>(e)].Add(); }
  // Hands `n` bytes a tunnel read back to the client's windows.
  void ConsumeTunnel(Stream& s, size_t n);
  int32_t remote_window(const Stream& s) const {
    return nghttp2_session_get_stream_remote_window_size(session_, s.id);
  }
  // Tunnel events owed (set from nghttp2 callbacks, delivered from the loop).
  void OweEvents() {
    events_owed_ = true;
    if (!delivering_) drain_poll_.ArmAt(worker_.Now());
  }

  // nghttp2 callbacks.
  static int OnBeginHeaders(nghttp2_session*, const nghttp2_frame* frame, void* user);
  static int OnHeader(nghttp2_session*, const nghttp2_frame* frame, const uint8_t* name,
                      size_t namelen, const uint8_t* value, size_t valuelen, uint8_t flags,
                      void* user);
  static int OnFrameRecv(nghttp2_session*, const nghttp2_frame* frame, void* user);
  static int OnDataChunk(nghttp2_session*, uint8_t flags, int32_t stream_id, const uint8_t* data,
                         size_t len, void* user);
  static int OnStreamClose(nghttp2_session*, int32_t stream_id, uint32_t error_code, void* user);
  static ssize_t ReadBody(nghttp2_session*, int32_t stream_id, uint8_t* buf, size_t length,
                          uint32_t* data_flags, nghttp2_data_source* source, void* user);
  // DATA without nghttp2's copy (NGHTTP2_DATA_FLAG_NO_COPY): ReadBody sizes the frame,
  // SendData appends its header and payload from the stream's `out` to wbuf_.
  static int SendData(nghttp2_session*, nghttp2_frame* frame, const uint8_t* framehd, size_t length,
                      nghttp2_data_source* source, void* user);
  static int OnFrameSend(nghttp2_session*, const nghttp2_frame* frame, void* user);
  static int OnInvalidFrame(nghttp2_session*, const nghttp2_frame* frame, int lib_error,
                            void* user);

 private:
  // StreamEvents
  // Top-level calls from the loop: the only places (with drain_poll_) that call into a
  // tunnel engine, so that it is never re-entered from inside its own calls.
  void OnReadable() override {
    DoRead();
    DeliverEvents();
  }
  void OnWritable() override {
    write_blocked_ = false;
    Flush();
    DeliverEvents();
  }

  void DoRead();
  void StartStreams();
  void OnStreamDone(Stream* s);
  void Fail();
  // nghttp2 ends a session it finds flooded without a GOAWAY: ours (ENHANCE_YOUR_CALM), as raw
  // bytes after what is queued, written if the socket takes it now (a client that does not
  // read gets none).
  void SendFloodGoaway();
  // Writes wbuf_ from woff_ as far as the socket takes it now; false when it stopped early
  // (write_blocked_ set, or the socket failed: dead_ and socket_failed_ set).
  bool WriteBuffered();
  // Starts wbuf_ over when everything in it was written, before more is appended.
  void RewindWritten() {
    if (woff_ != wbuf_.size()) return;
    wbuf_.clear();
    woff_ = 0;
  }
  void MaybeFinish();
  void WakeAll();
  void ArmIdle();
  void DeliverEvents();
  void CheckDrain();
  void Terminate(uint32_t code, Http2Error why);
  // Wakes Wait once the connection finished and no stream is left.
  void NotifyIfDone();

  AnyStream& stream_;
  Worker& worker_;
  const uint32_t slot_;
  ClientState& client_;
  const ListenerLimits limits_;
  const std::string forwarded_proto_;
  const std::string listener_name_;
  const uint32_t max_streams_;
  const bool connect_protocol_;
  nghttp2_session* session_ = nullptr;
  std::unordered_map<int32_t, std::unique_ptr<Stream>> streams_;
  std::vector<Stream*> to_start_;
  std::string wbuf_;
  size_t woff_ = 0;
  bool write_blocked_ = false;
  bool data_appended_ = false;  // SendData appended a DATA frame inside this mem_send call
  bool read_paused_ = false;
  bool reading_ = false;
  bool flushing_ = false;
  bool dead_ = false;           // the socket failed or the peer left: no more I/O
  bool socket_failed_ = false;  // a read or write on the client's socket failed (or its end)
  bool finished_ = false;       // nothing more to do on the connection
  bool sink_set_ = false;
  bool delivering_ = false;
  bool events_owed_ = false;
  bool goaway_sent_ = false;  // drain: the final GOAWAY is out
  bool terminated_ = false;   // we ended the session for an abuse
  double reset_tokens_ = kResetBurst;
  Clock::time_point reset_refill_{};
  uint32_t empty_frames_ = 0;
  Timer idle_;
  Timer drain_poll_;
  Timer flush_soon_;
  int flush_holds_ = 0;  // turns FlushSoon's flush has waited (see FlushSoon)
  Clock::time_point flush_held_since_{};
  Parked done_;
};

// The coroutine of one request stream (h2_stream.cc): the phases and the exchange, then the
// tunnel when an extended CONNECT got its 101.
net::awaitable<void> RunStream(Stream& s);

// The RFC 8441 tunnel on `s` once the upstream answered 101 (h2_tunnel.cc).
net::awaitable<void> RunTunnel(Stream& s, std::unique_ptr<WsHandoff> handoff);

}  // namespace h2
}  // namespace onedomain::dataplane
