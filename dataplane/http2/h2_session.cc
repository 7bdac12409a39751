#include "dataplane/http2/h2_session.h"

#include "dataplane/http2/h2_connection.h"

#include <nghttp2/nghttp2.h>

#include <algorithm>
#include <array>
#include <boost/asio/error.hpp>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/log/log.h"
#include "common/strings/strings.h"
#include "dataplane/http2/h2_headers.h"
#include "dataplane/http_proxy/body_relay.h"
#include "dataplane/http_proxy/chunked_scanner.h"
#include "dataplane/http_proxy/client_limits_phase.h"
#include "dataplane/http_proxy/local_reply.h"
#include "dataplane/http_proxy/phases.h"
#include "dataplane/http_proxy/request_record.h"
#include "dataplane/http_proxy/upstream_exchange.h"
#include "dataplane/http_proxy/ws_upgrade_checks.h"
#include "dataplane/net/any_stream.h"
#include "dataplane/routing/route_table.h"
#include "dataplane/runtime/parked.h"
#include "dataplane/worker/compiled_snapshot.h"
#include "dataplane/worker/worker.h"
#include "dataplane/worker/worker_config.h"
#include "dataplane/ws_tunnel/ws_handoff.h"
#include "dataplane/ws_tunnel/ws_tunnel.h"
#include "dataplane/ws_tunnel/ws_tunnel_engine.h"
#include "onedomain/v1/listener.pb.h"
#include "onedomain/v1/snapshot.pb.h"

namespace onedomain::dataplane::h2 {
namespace {

// Flow control. A stream may have this much request body in flight toward us before the
// exchange took it; all streams of a connection together, kConnectionWindow. Those bound the
// request bytes a connection can make us hold.
constexpr int32_t kStreamWindow = 128 * 1024;
constexpr int32_t kConnectionWindow = 1024 * 1024;

// Beyond the connection window, what a lingering close reads of a client's other frames.
constexpr uint64_t kLingerSlack = 64 * 1024;

// Frames nghttp2 produced that the socket has not taken: reading stops above this.
constexpr size_t kWriteBacklogHigh = 256 * 1024;

// How long FlushSoon's flush may wait for the responses still being made on the connection
// while the loop has completions waiting: at most this many turns, and this long.
constexpr int kFlushHoldTurns = 16;
constexpr std::chrono::microseconds kFlushHold{1000};

// nghttp2_session_mem_send is asked for more until this much is ready for one write.
constexpr size_t kWriteBatch = 64 * 1024;

// One socket read, into a per-thread buffer (nghttp2 copies what it keeps).
constexpr size_t kReadScratch = 64 * 1024;

// SETTINGS_MAX_CONCURRENT_STREAMS unless the listener says otherwise.
constexpr uint32_t kDefaultMaxStreams = 100;

// Rapid reset: the token bucket's refill (its burst, kResetBurst, is in h2_connection.h).
constexpr double kResetsPerSecond = 50;

// DATA frames that carry nothing and do not end the stream: harmless once, a CPU flood by
// the thousand.
constexpr uint32_t kMaxEmptyFrames = 100;

// Header bytes of one request beyond which decoding stops (HPACK bombs): the stream is reset
// instead of answered 431.
constexpr uint64_t kHeaderHardFactor = 4;

// How often a connection looks whether the worker started draining.
constexpr auto kDrainPoll = std::chrono::milliseconds(250);

}  // namespace

// ---- Connection ------------------------------------------------------------------------

Connection::Connection(AnyStream& stream, Worker& worker, uint32_t slot, ClientState& client,
                       const CompiledListener& listener)
    : stream_(stream),
      worker_(worker),
      slot_(slot),
      client_(client),
      limits_(listener.limits),
      forwarded_proto_(listener.forwarded_proto),
      listener_name_(listener.name),
      max_streams_(listener.source.http2().max_concurrent_streams() != 0
                       ? listener.source.http2().max_concurrent_streams()
                       : kDefaultMaxStreams),
      connect_protocol_(!listener.source.http2().has_enable_connect_protocol() ||
                        listener.source.http2().enable_connect_protocol()),
      idle_(worker.dispatcher(),
            [this] {
              if (session_ != nullptr && !finished_) {
                nghttp2_session_terminate_session(session_, NGHTTP2_NO_ERROR);
                Flush();
              }
            }),
      drain_poll_(worker.dispatcher(),
                  [this] {
                    drain_poll_.Arm(kDrainPoll);
                    CheckDrain();
                    DeliverEvents();  // from the loop: never inside a tunnel's own call
                  }),
      flush_soon_(worker.dispatcher(),
                  [this] {
                    const Clock::time_point now = worker_.Now();
                    if (flush_holds_ == 0) flush_held_since_ = now;
                    if (flush_holds_ < kFlushHoldTurns && now - flush_held_since_ < kFlushHold &&
                        worker_.dispatcher().events_waiting() && MoreOutputComing()) {
                      // Next turn, after the waiting completions: see FlushSoon. (Due a
                      // nanosecond on, so this turn's timer pass does not run it again; a
                      // test's manual clock that stands still would hold it until it moves.)
                      ++flush_holds_;
                      flush_soon_.ArmAt(now + std::chrono::nanoseconds(1));
                      return;
                    }
                    flush_holds_ = 0;
                    flush_soon_.Disarm();
                    Flush();
                  }),
      done_(worker.dispatcher()) {}

Connection::~Connection() {
  // Streams whose coroutine still runs exist only when the worker shuts down (Wait returns
  // after the last one ended otherwise): their frames, destroyed in no set order with this
  // one, still point at them, so they are left to the process's end.
  for (auto& [id, st] : streams_) {
    if (st->running) (void)st.release();  // NOLINT(bugprone-unused-return-value): on purpose
  }
  if (sink_set_) stream_.SetEventSink(nullptr);
  if (session_ != nullptr) nghttp2_session_del(session_);
}

bool Connection::Start(std::string_view already_read) {
  nghttp2_session_callbacks* cb = nullptr;
  if (nghttp2_session_callbacks_new(&cb) != 0) return false;
  nghttp2_session_callbacks_set_on_begin_headers_callback(cb, &Connection::OnBeginHeaders);
  nghttp2_session_callbacks_set_on_header_callback(cb, &Connection::OnHeader);
  nghttp2_session_callbacks_set_on_frame_recv_callback(cb, &Connection::OnFrameRecv);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, &Connection::OnDataChunk);
  nghttp2_session_callbacks_set_on_stream_close_callback(cb, &Connection::OnStreamClose);
  nghttp2_session_callbacks_set_on_frame_send_callback(cb, &Connection::OnFrameSend);
  nghttp2_session_callbacks_set_send_data_callback(cb, &Connection::SendData);
  nghttp2_session_callbacks_set_on_invalid_frame_recv_callback(cb, &Connection::OnInvalidFrame);
  nghttp2_option* opt = nullptr;
  nghttp2_option_new(&opt);
  // Window updates are ours: a DATA byte is acknowledged once the exchange took it.
  nghttp2_option_set_no_auto_window_update(opt, 1);
  const int rv = nghttp2_session_server_new2(&session_, cb, this, opt);
  nghttp2_option_del(opt);
  nghttp2_session_callbacks_del(cb);
  if (rv != 0) return false;

  std::vector<nghttp2_settings_entry> settings = {
      {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, max_streams_},
      {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, static_cast<uint32_t>(kStreamWindow)},
  };
  if (connect_protocol_) settings.push_back({NGHTTP2_SETTINGS_ENABLE_CONNECT_PROTOCOL, 1});
  // What we decode at most (RFC 9113 6.5.2, advisory): a larger section resets the stream; one
  // over the HTTP/1.1 limit but under this gets its 431 answer.
  settings.push_back({NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE,
                      static_cast<uint32_t>(std::min<uint64_t>(
                          kHeaderHardFactor * limits_.max_header_bytes, UINT32_MAX))});
  if (nghttp2_submit_settings(session_, NGHTTP2_FLAG_NONE, settings.data(), settings.size()) != 0 ||
      nghttp2_session_set_local_window_size(session_, NGHTTP2_FLAG_NONE, 0, kConnectionWindow) !=
          0) {
    return false;
  }
  stream_.SetEventSink(this);
  sink_set_ = true;
  if (!already_read.empty()) {
    const auto* p = reinterpret_cast<const uint8_t*>(already_read.data());
    const ssize_t rv = nghttp2_session_mem_recv(session_, p, already_read.size());
    if (rv < 0) {
      Count(rv == NGHTTP2_ERR_BAD_CLIENT_MAGIC ? Http2Error::kBadPreface : Http2Error::kProtocol);
      Fail();
      return true;
    }
    StartStreams();
  }
  idle_.Arm(limits_.header_timeout);
  reset_refill_ = worker_.Now();
  drain_poll_.Arm(kDrainPoll);
  Flush();
  DoRead();
  return true;
}

net::awaitable<void> Connection::Wait() {
  while (!(finished_ && streams_.empty())) {
    (void)co_await done_.Wait();  // resumed by MaybeFinish or a stream's end
  }
}

void Connection::ArmIdle() {
  if (streams_.empty() && !finished_) idle_.Arm(limits_.idle_timeout);
}

void Connection::DoRead() {
  if (reading_ || read_paused_ || dead_ || finished_) return;
  reading_ = true;
  // Not the tunnels' scratch buffer: a tunnel may be between reading into that and copying
  // out of it when its write to one of our streams flushes and resumes this read.
  thread_local const std::unique_ptr<uint8_t[]> scratch(new uint8_t[kReadScratch]);
  for (;;) {
    error_code ec;
    const size_t n = stream_.TryRead(net::buffer(scratch.get(), kReadScratch), ec);
    if (ec == net::error::would_block) break;
    if (ec) {
      // The client's end (or a failure): what is in flight toward it cannot arrive.
      dead_ = true;
      socket_failed_ = true;
      break;
    }
    const ssize_t rv = nghttp2_session_mem_recv(session_, scratch.get(), n);
    if (rv < 0) {
      log::Debug("http2", str::Cat("session error with ", client_.text, ": ",
                                   nghttp2_strerror(static_cast<int>(rv))));
      const bool flood = rv == NGHTTP2_ERR_FLOODED || rv == NGHTTP2_ERR_TOO_MANY_CONTINUATIONS;
      Count(rv == NGHTTP2_ERR_BAD_CLIENT_MAGIC ? Http2Error::kBadPreface
            : flood                            ? Http2Error::kFlood
                                               : Http2Error::kProtocol);
      if (flood) SendFloodGoaway();
      Fail();
      break;
    }
    StartStreams();
    if (wbuf_.size() - woff_ > kWriteBacklogHigh) {
      read_paused_ = true;  // the client does not read what we send: stop taking more
      break;
    }
    Flush();
  }
  reading_ = false;
  Flush();
  if (dead_) WakeAll();
  MaybeFinish();
}

void Connection::StartStreams() {
  // A drain that began since the last poll: the GOAWAY goes out with the first new stream.
  if (!to_start_.empty() && worker_.draining() && !goaway_sent_) CheckDrain();
  std::vector<int32_t> start;
  for (const Stream* s : to_start_) start.push_back(s->id);
  to_start_.clear();
  for (const int32_t id : start) {
    // By id: a coroutine may run inline here and close (or fail) the connection, which
    // deletes streams that did not start.
    const auto it = streams_.find(id);
    if (dead_ || it == streams_.end()) continue;
    Stream* s = it->second.get();
    if (s->closed || s->running || s->finished) continue;
    s->running = true;
    idle_.Disarm();
    worker_.counters().http2_streams_active.Inc();
    worker_.dispatcher().Spawn(RunStream(*s), "http2 stream", [this, s] { OnStreamDone(s); });
  }
}

void Connection::OnStreamDone(Stream* s) {
  worker_.counters().http2_streams_active.Dec();
  s->running = false;
  s->finished = true;
  if (s->closed) streams_.erase(s->id);
  FlushSoon();
  ArmIdle();
  MaybeFinish();
  NotifyIfDone();
}

bool Connection::MoreOutputComing() const {
  for (const auto& [id, s] : streams_) {
    if (s->running && !s->out_eof) return true;
  }
  return false;
}

void Connection::NotifyIfDone() {
  if (finished_ && streams_.empty()) done_.Post({});
}

bool Connection::WriteBuffered() {
  while (woff_ < wbuf_.size()) {
    error_code ec;
    const net::const_buffer b(wbuf_.data() + woff_, wbuf_.size() - woff_);
    const size_t n = stream_.TryWrite(&b, 1, ec);
    if (ec == net::error::would_block) {
      write_blocked_ = true;
      return false;
    }
    if (ec) {
      dead_ = true;
      socket_failed_ = true;
      return false;
    }
    woff_ += n;
  }
  wbuf_.clear();
  woff_ = 0;
  return true;
}

void Connection::Flush() {
  if (flushing_ || session_ == nullptr) return;
  flushing_ = true;
  while (!dead_) {
    while (wbuf_.size() - woff_ < kWriteBatch && nghttp2_session_want_write(session_)) {
      const uint8_t* data = nullptr;
      const ssize_t n = nghttp2_session_mem_send(session_, &data);
      if (n < 0) {
        dead_ = true;
        break;
      }
      if (n == 0) {
        if (!data_appended_) break;
        data_appended_ = false;  // SendData paused mem_send after a DATA frame: ask again
        continue;
      }
      RewindWritten();
      wbuf_.append(reinterpret_cast<const char*>(data), static_cast<size_t>(n));
    }
    if (dead_ || woff_ == wbuf_.size() || write_blocked_) break;
    if (!WriteBuffered()) break;
  }
  if (wbuf_.capacity() > 4 * kWriteBatch && wbuf_.empty()) wbuf_.shrink_to_fit();
  flushing_ = false;
  if (dead_) WakeAll();
  // Tunnel events owed from here are delivered by the loop (this may run inside a tunnel's
  // own call).
  if (events_owed_ && !delivering_) drain_poll_.ArmAt(worker_.Now());
  if (read_paused_ && wbuf_.size() - woff_ <= kWriteBacklogHigh / 2) {
    read_paused_ = false;
    DoRead();
  }
  MaybeFinish();
}

void Connection::SendFloodGoaway() {
  // Length 8, type GOAWAY, no flags, stream 0; then the last stream id and the error code.
  uint8_t frame[17] = {0, 0, 8, NGHTTP2_GOAWAY};
  const auto put32 = [&frame](size_t at, uint32_t v) {
    for (size_t i = 0; i < 4; ++i) frame[at + i] = static_cast<uint8_t>(v >> (24 - 8 * i));
  };
  put32(9, static_cast<uint32_t>(nghttp2_session_get_last_proc_stream_id(session_)) & 0x7fffffffu);
  put32(13, NGHTTP2_ENHANCE_YOUR_CALM);
  wbuf_.append(reinterpret_cast<const char*>(frame), sizeof frame);
  worker_.counters().http2_goaways[static_cast<size_t>(Http2Goaway::kEnhanceYourCalm)].Add();
  if (!dead_ && !write_blocked_) WriteBuffered();
}

void Connection::Fail() {
  // nghttp2 already queued a GOAWAY for protocol errors; send what we can, then stop.
  Flush();
  dead_ = true;
  WakeAll();
}

void Connection::WakeAll() {
  for (auto& [id, s] : streams_) {
    s->closed = true;
    s->reader.Post(net::error::connection_reset);
    s->writer.Post(net::error::connection_reset);
    s->ev_read = s->ev_write = true;
    events_owed_ = true;
  }
  to_start_.clear();  // never started: they go now
  for (auto it = streams_.begin(); it != streams_.end();) {
    it = it->second->running ? std::next(it) : streams_.erase(it);
  }
}

void Connection::MaybeFinish() {
  if (finished_ || reading_ || flushing_) return;
  const bool idle_session = session_ == nullptr || (!nghttp2_session_want_read(session_) &&
                                                    !nghttp2_session_want_write(session_));
  if (!dead_ && !(idle_session && woff_ == wbuf_.size())) return;
  finished_ = true;
  idle_.Disarm();
  WakeAll();
  NotifyIfDone();
}

void Connection::DeliverEvents() {
  if (delivering_ || !events_owed_) return;
  delivering_ = true;
  // Handlers may write, which flushes, which may owe new events: a few rounds at most.
  for (int round = 0; round < 8 && events_owed_; ++round) {
    events_owed_ = false;
    std::vector<int32_t> ids;
    for (const auto& [id, st] : streams_) {
      if (st->ws_sink != nullptr && (st->ev_read || st->ev_write)) ids.push_back(id);
    }
    for (const int32_t id : ids) {
      const auto it = streams_.find(id);
      if (it == streams_.end()) continue;
      Stream& st = *it->second;
      if (st.ev_read && st.ws_sink != nullptr) {
        st.ev_read = false;
        st.ws_sink->OnReadable();
      }
      if (st.ev_write && st.ws_sink != nullptr) {
        st.ev_write = false;
        st.ws_sink->OnWritable();
      }
    }
  }
  delivering_ = false;
  if (events_owed_) {
    // Still owed after the rounds: the next turn of the loop delivers them.
    drain_poll_.ArmAt(worker_.Now());
  }
}

void Connection::CheckDrain() {
  if (finished_ || dead_ || goaway_sent_ || !worker_.draining()) return;
  // Graceful first (the client stops opening streams), then the final GOAWAY naming the last
  // stream served; open streams (WebSockets: Close 1001 from the tunnel drain) finish.
  nghttp2_submit_shutdown_notice(session_);
  nghttp2_submit_goaway(session_, NGHTTP2_FLAG_NONE,
                        nghttp2_session_get_last_proc_stream_id(session_), NGHTTP2_NO_ERROR,
                        nullptr, 0);
  goaway_sent_ = true;
  Flush();
}

void Connection::Terminate(uint32_t code, Http2Error why) {
  if (terminated_) return;  // once per connection, counted once
  terminated_ = true;
  Count(why);
  nghttp2_session_terminate_session(session_, code);
}

void Connection::ConsumeTunnel(Stream& s, size_t n) {
  const uint64_t k = std::min<uint64_t>(n, s.unacked);
  if (k == 0 || s.closed || dead_) return;
  s.unacked -= k;
  nghttp2_session_consume(session_, s.id, k);
  FlushSoon();
}

void Connection::Consume(Stream& s) {
  if (s.unacked == 0 || s.closed || dead_) return;
  nghttp2_session_consume(session_, s.id, s.unacked);
  s.unacked = 0;
  FlushSoon();
}

namespace {

// `head` as nghttp2 takes it (views into `head`; nghttp2 copies them when submitted). A
// typical head fits in place; a longer one takes a heap array.
class HeadFields {
 public:
  explicit HeadFields(const H2Response& head) {
    const size_t n = head.fields.size() + 1;
    if (n > kInPlace) {
      heap_.resize(n);
      nv_ = heap_.data();
    }
    nv_[size_++] = Make(":status", head.status);
    const std::string_view storage(head.storage);
    for (const H2Response::Field& f : head.fields) {
      nv_[size_++] =
          Make(storage.substr(f.name_off, f.name_size), storage.substr(f.value_off, f.value_size));
    }
  }
  HeadFields(const HeadFields&) = delete;
  HeadFields& operator=(const HeadFields&) = delete;

  const nghttp2_nv* data() const { return nv_; }
  size_t size() const { return size_; }

 private:
  static constexpr size_t kInPlace = 32;
  static nghttp2_nv Make(std::string_view n, std::string_view v) {
    return nghttp2_nv{reinterpret_cast<uint8_t*>(const_cast<char*>(n.data())),
                      reinterpret_cast<uint8_t*>(const_cast<char*>(v.data())), n.size(), v.size(),
                      NGHTTP2_NV_FLAG_NONE};
  }

  std::array<nghttp2_nv, kInPlace> in_place_;
  std::vector<nghttp2_nv> heap_;
  nghttp2_nv* nv_ = in_place_.data();
  size_t size_ = 0;
};

}  // namespace

bool Connection::SubmitInterim(Stream& s, const H2Response& interim) {
  if (s.resp_submitted || s.closed || dead_) return false;
  const HeadFields nv(interim);
  if (nghttp2_submit_headers(session_, NGHTTP2_FLAG_NONE, s.id, nullptr, nv.data(), nv.size(),
                             nullptr) != 0) {
    return false;
  }
  FlushSoon();
  return true;
}

void Connection::SubmitResponse(Stream& s) {
  if (s.resp_submitted || s.closed || dead_) return;
  s.resp_submitted = true;
  s.resp_pending = false;
  const HeadFields nv(s.resp);
  nghttp2_data_provider body{};
  body.source.ptr = &s;
  body.read_callback = &Connection::ReadBody;
  const bool no_body = s.resp_no_body && s.out_pending() == 0;
  if (nghttp2_submit_response(session_, s.id, nv.data(), nv.size(), no_body ? nullptr : &body) !=
      0) {
    Reset(s, NGHTTP2_INTERNAL_ERROR);
    return;
  }
  FlushSoon();
}

void Connection::ResumeData(Stream& s) {
  if (!s.resp_submitted || s.closed || dead_) return;
  if (s.deferred) {
    s.deferred = false;
    nghttp2_session_resume_data(session_, s.id);
  }
  FlushSoon();
}

void Connection::Reset(Stream& s, uint32_t code) {
  if (s.closed || dead_) return;
  nghttp2_submit_rst_stream(session_, NGHTTP2_FLAG_NONE, s.id, code);
  Flush();
}

int Connection::OnBeginHeaders(nghttp2_session* session, const nghttp2_frame* frame, void* user) {
  auto* c = static_cast<Connection*>(user);
  if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;
  auto s = std::make_unique<Stream>(*c, frame->hd.stream_id, c->limits_.max_header_bytes,
                                    c->worker_.dispatcher());
  nghttp2_session_set_stream_user_data(session, frame->hd.stream_id, s.get());
  c->streams_[frame->hd.stream_id] = std::move(s);
  return 0;
}

int Connection::OnHeader(nghttp2_session* session, const nghttp2_frame* frame, const uint8_t* name,
                         size_t namelen, const uint8_t* value, size_t valuelen, uint8_t, void*) {
  if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST) {
    return 0;  // trailers: not forwarded (the upstream body ends with its last chunk)
  }
  auto* s =
      static_cast<Stream*>(nghttp2_session_get_stream_user_data(session, frame->hd.stream_id));
  if (s == nullptr) return 0;
  s->builder.Add({reinterpret_cast<const char*>(name), namelen},
                 {reinterpret_cast<const char*>(value), valuelen});
  if (s->builder.bytes() > kHeaderHardFactor * s->conn.limits().max_header_bytes) {
    // An HPACK bomb: stop decoding into this stream (reset) rather than count on.
    s->conn.Count(Http2Error::kHeaderListTooLarge);
    return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
  }
  return 0;
}

int Connection::OnFrameRecv(nghttp2_session* session, const nghttp2_frame* frame, void* user) {
  auto* c = static_cast<Connection*>(user);
  const bool end = (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
  if (frame->hd.type == NGHTTP2_RST_STREAM) {
    const Clock::time_point now = c->worker_.Now();
    const double elapsed = std::chrono::duration<double>(now - c->reset_refill_).count();
    c->reset_refill_ = now;
    c->reset_tokens_ = std::min(kResetBurst, c->reset_tokens_ + elapsed * kResetsPerSecond);
    c->reset_tokens_ -= 1;
    if (c->reset_tokens_ < 0) {
      c->Terminate(NGHTTP2_ENHANCE_YOUR_CALM, Http2Error::kRapidReset);
      return 0;
    }
  }
  if (frame->hd.type == NGHTTP2_DATA && frame->hd.length == 0 && !end &&
      ++c->empty_frames_ > kMaxEmptyFrames) {
    c->Terminate(NGHTTP2_ENHANCE_YOUR_CALM, Http2Error::kEmptyFrames);
    return 0;
  }
  if (frame->hd.stream_id == 0) return 0;
  auto* s =
      static_cast<Stream*>(nghttp2_session_get_stream_user_data(session, frame->hd.stream_id));
  if (s == nullptr) return 0;
  if (frame->hd.type == NGHTTP2_HEADERS && frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
    s->end_stream_with_headers = end;
    s->chunked_in = !end && !s->builder.has_content_length() && s->builder.protocol().empty();
    if (end) s->end_in = true;
    c->to_start_.push_back(s);
    return 0;
  }
  if (end && (frame->hd.type == NGHTTP2_DATA || frame->hd.type == NGHTTP2_HEADERS)) {
    if (s->chunked_in && !s->end_in) {
      s->arriving.commit(net::buffer_copy(s->arriving.prepare(5), net::buffer("0\r\n\r\n", 5)));
    }
    s->end_in = true;
    s->reader.Post({});
    if (s->ws_sink != nullptr) {
      s->ev_read = true;
      c->events_owed_ = true;
    }
  }
  return 0;
}

int Connection::OnDataChunk(nghttp2_session* session, uint8_t, int32_t stream_id,
                            const uint8_t* data, size_t len, void*) {
  auto* s = static_cast<Stream*>(nghttp2_session_get_stream_user_data(session, stream_id));
  if (s == nullptr || s->finished || s->closed) {
    // Nobody will take these bytes: give the window back at once.
    nghttp2_session_consume(session, stream_id, len);
    return 0;
  }
  if (s->chunked_in) {
    char size_line[24];
    const int n = std::snprintf(size_line, sizeof(size_line), "%zx\r\n", len);
    s->arriving.commit(net::buffer_copy(s->arriving.prepare(static_cast<size_t>(n)),
                                        net::buffer(size_line, static_cast<size_t>(n))));
  }
  s->arriving.commit(net::buffer_copy(s->arriving.prepare(len), net::buffer(data, len)));
  if (s->chunked_in) {
    s->arriving.commit(net::buffer_copy(s->arriving.prepare(2), net::buffer("\r\n", 2)));
  }
  s->unacked += len;
  s->reader.Post({});
  if (s->ws_sink != nullptr) {
    s->ev_read = true;
    s->conn.OweEvents();
  }
  return 0;
}

int Connection::OnStreamClose(nghttp2_session* session, int32_t stream_id, uint32_t, void* user) {
  auto* c = static_cast<Connection*>(user);
  auto* s = static_cast<Stream*>(nghttp2_session_get_stream_user_data(session, stream_id));
  if (s == nullptr) return 0;
  nghttp2_session_set_stream_user_data(session, stream_id, nullptr);
  s->closed = true;
  s->reader.Post(net::error::connection_reset);
  s->writer.Post(net::error::connection_reset);
  if (s->ws_sink != nullptr) {
    s->ev_read = s->ev_write = true;
    c->events_owed_ = true;
  }
  if (!s->running) {
    // Never started (reset before its headers ended) or already finished.
    std::erase(c->to_start_, s);
    c->streams_.erase(stream_id);
    c->ArmIdle();
    c->NotifyIfDone();
  }
  return 0;
}

ssize_t Connection::ReadBody(nghttp2_session*, int32_t, uint8_t*, size_t length,
                             uint32_t* data_flags, nghttp2_data_source* source, void*) {
  auto* s = static_cast<Stream*>(source->ptr);
  const size_t n = std::min(length, s->out_pending());
  if (n == s->out_pending() && s->out_eof) *data_flags |= NGHTTP2_DATA_FLAG_EOF;
  if (n > 0) {
    // SendData writes the frame straight from `out`, in this same mem_send call.
    *data_flags |= NGHTTP2_DATA_FLAG_NO_COPY;
    return static_cast<ssize_t>(n);
  }
  s->ReleaseDrainedOut();
  if (s->out_eof) return 0;
  s->deferred = true;
  return NGHTTP2_ERR_DEFERRED;
}

int Connection::SendData(nghttp2_session*, nghttp2_frame* frame, const uint8_t* framehd,
                         size_t length, nghttp2_data_source* source, void* user) {
  auto* c = static_cast<Connection*>(user);
  auto* s = static_cast<Stream*>(source->ptr);
  if (length > s->out_pending()) return NGHTTP2_ERR_CALLBACK_FAILURE;  // ReadBody said less
  // Called from inside nghttp2_session_mem_send, between the frames it returns: appending
  // here keeps the frames in order in wbuf_.
  c->RewindWritten();
  const size_t pad = frame->data.padlen;  // 0: we never ask for padding
  c->wbuf_.append(reinterpret_cast<const char*>(framehd), 9);
  if (pad > 0) c->wbuf_.push_back(static_cast<char>(pad - 1));
  c->wbuf_.append(s->out.data() + s->out_off, length);
  if (pad > 1) c->wbuf_.append(pad - 1, '\0');
  s->out_off += length;
  if (s->out_pending() <= kStreamOutHigh) s->writer.Post({});
  if (s->ws_sink != nullptr) {
    s->ev_write = true;
    c->OweEvents();
  }
  s->ReleaseDrainedOut();
  // mem_send returns after each DATA frame (as it does with copied DATA), so that Flush
  // bounds a batch to kWriteBatch; without the pause, one call would take every stream's DATA
  // the windows allow.
  c->data_appended_ = true;
  return NGHTTP2_ERR_PAUSE;
}

int Connection::OnFrameSend(nghttp2_session*, const nghttp2_frame* frame, void* user) {
  auto* c = static_cast<Connection*>(user);
  if (frame->hd.type != NGHTTP2_GOAWAY) return 0;
  Http2Goaway r = Http2Goaway::kOther;
  switch (frame->goaway.error_code) {
    case NGHTTP2_NO_ERROR:
      r = Http2Goaway::kNoError;
      break;
    case NGHTTP2_PROTOCOL_ERROR:
      r = Http2Goaway::kProtocolError;
      break;
    case NGHTTP2_FLOW_CONTROL_ERROR:
      r = Http2Goaway::kFlowControlError;
      break;
    case NGHTTP2_COMPRESSION_ERROR:
      r = Http2Goaway::kCompressionError;
      break;
    case NGHTTP2_ENHANCE_YOUR_CALM:
      r = Http2Goaway::kEnhanceYourCalm;
      break;
    default:
      break;
  }
  c->worker_.counters().http2_goaways[static_cast<size_t>(r)].Add();
  return 0;
}

int Connection::OnInvalidFrame(nghttp2_session*, const nghttp2_frame*, int lib_error, void* user) {
  auto* c = static_cast<Connection*>(user);
  c->Count(lib_error == NGHTTP2_ERR_HTTP_HEADER      ? Http2Error::kBadHeader
           : lib_error == NGHTTP2_ERR_HTTP_MESSAGING ? Http2Error::kBadMessage
           : lib_error == NGHTTP2_ERR_FLOW_CONTROL   ? Http2Error::kFlowControl
                                                     : Http2Error::kProtocol);
  return 0;
}

net::awaitable<uint64_t> ServeHttp2(AnyStream& stream, Worker& worker, uint32_t slot,
                                    ClientState& client, SessionLink& link,
                                    std::string_view already_read) {
  (void)link;
  std::optional<Connection> conn;
  {
    // The listener's settings are copied; the config itself is pinned per stream only.
    const Ref<WorkerConfig> cfg = worker.config();
    const CompiledListener* listener = cfg ? cfg->listener(slot) : nullptr;
    if (listener == nullptr) co_return 0;
    conn.emplace(stream, worker, slot, client, *listener);
  }
  if (!conn->Start(already_read)) {
    log::Warn("http2", str::Cat("cannot start an HTTP/2 session with ", client.text));
    co_return 0;
  }
  co_await conn->Wait();
  // In flight from a client told to stop: at most our connection window of DATA, plus frames.
  co_return conn->worth_lingering() ? kConnectionWindow + kLingerSlack : 0;
}

}  // namespace onedomain::dataplane::h2
