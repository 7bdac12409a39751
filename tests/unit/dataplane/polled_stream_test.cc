// AnyStream on a worker's Dispatcher: real loopback sockets (127.0.0.1, ephemeral ports).
// The test thread turns both loops, bounded in time: the peers' io_context (the test's peers
// are Asio sockets, on Asio's reactor) and the dispatcher the streams live on.

#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "dataplane/net/any_stream.h"
#include "dataplane/runtime/dispatcher.h"

namespace onedomain::dataplane {
namespace {

using namespace std::chrono_literals;
constexpr auto kToken = net::as_tuple(net::use_awaitable);

// Every test runs on both backends; with io_uring, streams receive through the ring
// (multishot receives into provided buffers) where the kernel offers it.
class PolledStreamTest : public ::testing::TestWithParam<IoBackend> {
 protected:
  PolledStreamTest() : acceptor_(ioc_, tcp::endpoint(net::ip::make_address("127.0.0.1"), 0)) {
    std::string why;
    if (GetParam() == IoBackend::kIoUring && !Dispatcher::IoUringAvailable(&why)) {
      skip_ = why;
      dispatcher_ = std::make_unique<Dispatcher>();
    } else {
      dispatcher_ = std::make_unique<Dispatcher>(RealTime(), GetParam());
    }
  }
  ~PolledStreamTest() override { dispatcher_->Shutdown(); }

  void SetUp() override {
    if (!skip_.empty()) GTEST_SKIP() << "io_uring is not available here: " << skip_;
  }

  tcp::endpoint endpoint() const { return acceptor_.local_endpoint(); }

  // Connects a polled stream to our acceptor; the accepted (Asio) socket is the peer.
  net::awaitable<void> ConnectPair(AnyStream& s, tcp::socket& peer) {
    const error_code ec = co_await s.Connect(endpoint());
    EXPECT_FALSE(ec) << ec.message();
    auto [aec, accepted] = co_await acceptor_.async_accept(kToken);
    EXPECT_FALSE(aec) << aec.message();
    peer = std::move(accepted);
  }

  // Runs `body` to completion (or fails after 5 s).
  template <typename F>
  void Run(F body) {
    bool done = false;
    // A named lambda: the coroutine refers to its captures, so it must outlive the frame.
    auto coroutine = [&]() -> net::awaitable<void> {
      co_await body();
      done = true;
    };
    dispatcher_->Spawn(coroutine(), "test");
    Drive(ioc_, *dispatcher_, 5s, &done);
    EXPECT_TRUE(done) << "the coroutine did not finish within 5 s";
  }

  // The loop: for `limit`, or until *done.
  static void Drive(net::io_context& io, Dispatcher& dispatcher, std::chrono::milliseconds limit,
                    const bool* done = nullptr) {
    const auto until = std::chrono::steady_clock::now() + limit;
    while ((done == nullptr || !*done) && std::chrono::steady_clock::now() < until) {
      io.restart();  // poll() stops the context whenever it runs out of work
      io.poll();
      dispatcher.RunOnce(1ms);
    }
  }

  net::awaitable<void> Sleep(std::chrono::milliseconds d) {
    net::steady_timer t(ioc_, d);
    co_await t.async_wait(kToken);
  }

  net::io_context ioc_;
  std::unique_ptr<Dispatcher> dispatcher_;
  tcp::acceptor acceptor_;
  std::string skip_;
};

INSTANTIATE_TEST_SUITE_P(Backends, PolledStreamTest,
                         ::testing::Values(IoBackend::kEpoll, IoBackend::kIoUring),
                         [](const auto& info) { return std::string(IoBackendName(info.param)); });

TEST_P(PolledStreamTest, ReadsWritesAndSeesTheEnd) {
  Run([&]() -> net::awaitable<void> {
    AnyStream s(*dispatcher_);
    tcp::socket peer(ioc_);
    co_await ConnectPair(s, peer);
    EXPECT_FALSE(s.is_tls());
    EXPECT_GE(s.native_handle(), 0);

    const IoResult w = co_await s.Write(net::buffer("GET ", 4), net::buffer("/\r\n", 3));
    EXPECT_FALSE(w.ec);
    EXPECT_EQ(w.n, 7u);
    std::string got(7, '\0');
    auto [rec, rn] = co_await net::async_read(peer, net::buffer(got), kToken);
    EXPECT_FALSE(rec);
    EXPECT_EQ(got, "GET /\r\n");

    co_await net::async_write(peer, net::buffer("hello", 5), kToken);
    char buf[64];
    const IoResult r = co_await s.ReadSome(net::buffer(buf));
    EXPECT_FALSE(r.ec);
    EXPECT_EQ(std::string(buf, r.n), "hello");

    peer.close();
    const IoResult end = co_await s.ReadSome(net::buffer(buf));
    EXPECT_EQ(end.ec, net::error::eof);
  });
}

TEST_P(PolledStreamTest, AReadAfterAShortReadWaitsForTheNextBytes) {
  Run([&]() -> net::awaitable<void> {
    AnyStream s(*dispatcher_);
    tcp::socket peer(ioc_);
    co_await ConnectPair(s, peer);
    co_await net::async_write(peer, net::buffer("a", 1), kToken);
    char buf[64];
    IoResult r = co_await s.ReadSome(net::buffer(buf));
    EXPECT_EQ(r.n, 1u);

    // Nothing is there: the read parks until the peer writes 100 ms later.
    net::co_spawn(
        ioc_,
        [&]() -> net::awaitable<void> {
          co_await Sleep(100ms);
          co_await net::async_write(peer, net::buffer("bc", 2), kToken);
        },
        net::detached);
    const auto start = std::chrono::steady_clock::now();
    r = co_await s.ReadSome(net::buffer(buf));
    EXPECT_FALSE(r.ec);
    EXPECT_EQ(std::string(buf, r.n), "bc");
    EXPECT_GE(std::chrono::steady_clock::now() - start, 90ms);
  });
}

TEST_P(PolledStreamTest, DataWithTheFinIsReadThenTheEnd) {
  Run([&]() -> net::awaitable<void> {
    AnyStream s(*dispatcher_);
    tcp::socket peer(ioc_);
    co_await ConnectPair(s, peer);
    // Bytes and FIN arrive together: one edge. A short read must not wait for another.
    co_await net::async_write(peer, net::buffer("abc", 3), kToken);
    error_code ignored;
    peer.shutdown(tcp::socket::shutdown_send, ignored);
    co_await Sleep(20ms);
    char buf[64];
    const IoResult r = co_await s.ReadSome(net::buffer(buf));
    EXPECT_EQ(std::string(buf, r.n), "abc");
    const IoResult end = co_await s.ReadSome(net::buffer(buf));
    EXPECT_EQ(end.ec, net::error::eof);
  });
}

// 4 MiB arrive while nobody reads: with ring reads the bytes outrun the reader into the
// stream's backlog, which pauses the receive past its bound and resumes it once read. Every
// byte arrives once, in order, however small the reads; a peek takes nothing.
TEST_P(PolledStreamTest, ABurstNobodyReadsArrivesWholeAndInOrder) {
  Run([&]() -> net::awaitable<void> {
    AnyStream s(*dispatcher_);
    tcp::socket peer(ioc_);
    co_await ConnectPair(s, peer);
    if (GetParam() == IoBackend::kIoUring) {
      EXPECT_TRUE(s.reads_through_ring()) << "io_uring here, but streams do not read through it";
    }
    std::string sent(4 << 20, '\0');
    for (size_t i = 0; i < sent.size(); ++i)
      sent[i] = static_cast<char>((i * 131 + i / 7919) & 0xff);
    bool written = false;
    net::co_spawn(
        ioc_,
        [&]() -> net::awaitable<void> {
          co_await net::async_write(peer, net::buffer(sent), kToken);
          written = true;
        },
        net::detached);
    co_await Sleep(50ms);  // the peer's bytes pile up (here or in the socket) unread
    char first[3];
    error_code ec;
    const size_t peeked = s.TryPeek(net::buffer(first), ec);
    if (!ec) {
      EXPECT_EQ(std::string(first, peeked), sent.substr(0, peeked)) << "a peek saw other bytes";
    }
    std::string got;
    std::vector<char> buf(1000);  // smaller than any receive: reads leave bytes behind
    while (got.size() < sent.size()) {
      const IoResult r = co_await s.ReadSome(net::buffer(buf));
      if (r.ec) {
        ADD_FAILURE() << "read failed after " << got.size() << " bytes: " << r.ec.message();
        break;
      }
      got.append(buf.data(), r.n);
    }
    EXPECT_TRUE(got == sent) << "bytes lost, doubled or reordered (" << got.size() << " read)";
    EXPECT_TRUE(written);
    peer.close();
    const IoResult end = co_await s.ReadSome(net::buffer(buf));
    EXPECT_EQ(end.ec, net::error::eof);
  });
}

// A pooled connection's check: unsolicited bytes (or the upstream's close) make the stream
// maybe_readable, with either backend, without a read.
TEST_P(PolledStreamTest, BytesArrivingWhileIdleMakeTheStreamMaybeReadable) {
  Run([&]() -> net::awaitable<void> {
    AnyStream s(*dispatcher_);
    tcp::socket peer(ioc_);
    co_await ConnectPair(s, peer);
    co_await Sleep(20ms);
    EXPECT_FALSE(s.maybe_readable()) << "a fresh idle connection looks readable";
    co_await net::async_write(peer, net::buffer("x", 1), kToken);
    for (int i = 0; i < 100 && !s.maybe_readable(); ++i) co_await Sleep(5ms);
    EXPECT_TRUE(s.maybe_readable());
    char buf[4];
    const IoResult r = co_await s.ReadSome(net::buffer(buf));
    EXPECT_EQ(r.n, 1u);
    EXPECT_FALSE(s.maybe_readable()) << "drained, yet still maybe readable";
    peer.close();
    for (int i = 0; i < 100 && !s.maybe_readable(); ++i) co_await Sleep(5ms);
    EXPECT_TRUE(s.maybe_readable()) << "the peer's close left the stream looking idle";
  });
}

TEST_P(PolledStreamTest, CancelAbortsAParkedRead) {
  Run([&]() -> net::awaitable<void> {
    AnyStream s(*dispatcher_);
    tcp::socket peer(ioc_);
    co_await ConnectPair(s, peer);
    net::co_spawn(
        ioc_,
        [&]() -> net::awaitable<void> {
          co_await Sleep(50ms);
          s.Cancel();
        },
        net::detached);
    char buf[16];
    const IoResult r = co_await s.ReadSome(net::buffer(buf));
    EXPECT_EQ(r.ec, net::error::operation_aborted);
    // The stream still works afterwards.
    co_await net::async_write(peer, net::buffer("x", 1), kToken);
    const IoResult again = co_await s.ReadSome(net::buffer(buf));
    EXPECT_EQ(again.n, 1u);
  });
}

TEST_P(PolledStreamTest, ConnectToAClosedPortFails) {
  tcp::endpoint closed;
  {
    tcp::acceptor a(ioc_, tcp::endpoint(net::ip::make_address("127.0.0.1"), 0));
    closed = a.local_endpoint();
  }
  Run([&]() -> net::awaitable<void> {
    AnyStream s(*dispatcher_);
    const error_code ec = co_await s.Connect(closed);
    EXPECT_EQ(ec, net::error::connection_refused) << ec.message();
  });
}

TEST_P(PolledStreamTest, ALargeWriteWaitsForASlowReader) {
  Run([&]() -> net::awaitable<void> {
    AnyStream s(*dispatcher_);
    tcp::socket peer(ioc_);
    co_await ConnectPair(s, peer);
    const std::string data(8 * 1024 * 1024, 'z');  // far beyond both socket buffers
    size_t received = 0;
    bool reader_done = false;
    net::co_spawn(
        ioc_,
        [&]() -> net::awaitable<void> {
          std::vector<char> buf(64 * 1024);
          while (received < data.size()) {
            co_await Sleep(1ms);
            auto [ec, n] = co_await peer.async_read_some(net::buffer(buf), kToken);
            if (ec) break;
            received += n;
          }
          reader_done = true;
        },
        net::detached);
    const IoResult w = co_await s.Write(net::buffer(data));
    EXPECT_FALSE(w.ec) << w.ec.message();
    EXPECT_EQ(w.n, data.size());
    while (!reader_done) co_await Sleep(5ms);
    EXPECT_EQ(received, data.size());
  });
}

// The bytes of write number `i` of a run: its own number, so that a lost, doubled or
// reordered write shows in what the peer reads.
std::string Numbered(int i, size_t size) {
  std::string out = std::to_string(i) + ":";
  out.resize(size, static_cast<char>('a' + i % 26));
  return out;
}

// Reads until the peer's end (or 5 s), slowly when asked to.
net::awaitable<std::string> ReadToEnd(tcp::socket& peer, std::chrono::milliseconds pause) {
  std::string got;
  std::vector<char> buf(16 * 1024);
  const auto until = std::chrono::steady_clock::now() + 5s;
  while (std::chrono::steady_clock::now() < until) {
    if (pause.count() > 0) {
      net::steady_timer t(peer.get_executor(), pause);
      co_await t.async_wait(kToken);
    }
    auto [ec, n] = co_await peer.async_read_some(net::buffer(buf), kToken);
    got.append(buf.data(), n);
    if (ec) break;
  }
  co_return got;
}

// With io_uring, writes are queued and sent through the ring (a bounded queue per stream):
// many small writes to a slow reader fill the queue, wait for its sends and arrive whole and
// in order.
TEST_P(PolledStreamTest, ManySmallWritesArriveWholeAndInOrder) {
  Run([&]() -> net::awaitable<void> {
    AnyStream s(*dispatcher_);
    tcp::socket peer(ioc_);
    co_await ConnectPair(s, peer);
    std::string expected;
    std::string got;
    bool reader_done = false;
    net::co_spawn(
        ioc_,
        [&]() -> net::awaitable<void> {
          got = co_await ReadToEnd(peer, 1ms);
          reader_done = true;
        },
        net::detached);
    for (int i = 0; i < 3000; ++i) {  // 3 MB in all: far beyond the queue and socket buffers
      const std::string w = Numbered(i, 1000);
      expected += w;
      const IoResult r = co_await s.Write(net::buffer(w));
      EXPECT_FALSE(r.ec) << r.ec.message();
      EXPECT_EQ(r.n, w.size());
      if (r.ec) break;
    }
    s.ShutdownSend();
    while (!reader_done) co_await Sleep(5ms);
    EXPECT_EQ(got.size(), expected.size());
    EXPECT_TRUE(got == expected) << "the bytes arrived changed or out of order";
  });
}

// Closing right after writing loses nothing: the peer reads every byte, then the end. With
// io_uring the descriptor stays open until the queued sends went out.
TEST_P(PolledStreamTest, BytesWrittenJustBeforeCloseStillArrive) {
  Run([&]() -> net::awaitable<void> {
    tcp::socket peer(ioc_);
    std::string expected;
    std::string got;
    bool reader_done = false;
    {
      AnyStream s(*dispatcher_);
      co_await ConnectPair(s, peer);
      net::co_spawn(
          ioc_,
          [&]() -> net::awaitable<void> {
            got = co_await ReadToEnd(peer, 1ms);  // slow: sends are still queued at the close
            reader_done = true;
          },
          net::detached);
      for (int i = 0; i < 600; ++i) {
        const std::string w = Numbered(i, 4000);
        expected += w;
        const IoResult r = co_await s.Write(net::buffer(w));
        EXPECT_FALSE(r.ec) << r.ec.message();
        if (r.ec) break;
      }
      s.Close();
    }
    while (!reader_done) co_await Sleep(5ms);
    EXPECT_EQ(got.size(), expected.size());
    EXPECT_TRUE(got == expected) << "bytes written before the close were lost or changed";
  });
}

// Shutting the send side down right after writing ends the stream after those bytes, and
// reading goes on (a half-close).
TEST_P(PolledStreamTest, ShutdownSendComesAfterTheBytesWritten) {
  Run([&]() -> net::awaitable<void> {
    AnyStream s(*dispatcher_);
    tcp::socket peer(ioc_);
    co_await ConnectPair(s, peer);
    std::string expected;
    for (int i = 0; i < 40; ++i) {
      const std::string w = Numbered(i, 900);
      expected += w;
      const IoResult r = co_await s.Write(net::buffer(w));
      EXPECT_FALSE(r.ec) << r.ec.message();
    }
    s.ShutdownSend();
    const std::string got = co_await ReadToEnd(peer, 0ms);
    EXPECT_TRUE(got == expected) << "got " << got.size() << " of " << expected.size() << " bytes";
    co_await net::async_write(peer, net::buffer("after", 5), kToken);
    char buf[16];
    const IoResult r = co_await s.ReadSome(net::buffer(buf));
    EXPECT_FALSE(r.ec) << r.ec.message();
    EXPECT_EQ(std::string(buf, r.n), "after");
  });
}

// A peer that resets the connection: writes end with an error instead of queueing forever.
TEST_P(PolledStreamTest, WritesToAResetConnectionFail) {
  Run([&]() -> net::awaitable<void> {
    AnyStream s(*dispatcher_);
    tcp::socket peer(ioc_);
    co_await ConnectPair(s, peer);
    peer.set_option(net::socket_base::linger(true, 0));
    peer.close();  // RST
    const std::string w(1000, 'r');
    error_code last;
    for (int i = 0; i < 2000 && !last; ++i) {
      const IoResult r = co_await s.Write(net::buffer(w));
      last = r.ec;
      if (!last) co_await Sleep(1ms);
    }
    EXPECT_TRUE(last) << "2000 writes to a reset connection all succeeded";
  });
}

// Counts the readiness a stream hands to its event sink.
struct CountingSink final : StreamEvents {
  void OnReadable() override { ++readable; }
  void OnWritable() override { ++writable; }
  int readable = 0;
  int writable = 0;
};

TEST_P(PolledStreamTest, EventsGoToTheSinkWhileOneIsSet) {
  CountingSink sink;
  Run([&]() -> net::awaitable<void> {
    AnyStream s(*dispatcher_);
    tcp::socket peer(ioc_);
    co_await ConnectPair(s, peer);
    s.SetEventSink(&sink);
    co_await net::async_write(peer, net::buffer("d", 1), kToken);
    for (int i = 0; i < 500 && sink.readable == 0; ++i) co_await Sleep(1ms);
    EXPECT_GE(sink.readable, 1);
    EXPECT_TRUE(s.maybe_readable());
    char buf[4];
    error_code ec;
    EXPECT_EQ(s.TryRead(net::buffer(buf), ec), 1u);
    EXPECT_FALSE(ec) << ec.message();
    EXPECT_FALSE(s.maybe_readable()) << "a short read drained the socket";
    EXPECT_EQ(s.TryRead(net::buffer(buf), ec), 0u);
    EXPECT_EQ(ec, net::error::would_block);
    s.SetEventSink(nullptr);
    const int seen = sink.readable;
    co_await net::async_write(peer, net::buffer("e", 1), kToken);
    const IoResult r = co_await s.ReadSome(net::buffer(buf));  // the stream's own wait again
    EXPECT_EQ(std::string(buf, r.n), "e");
    EXPECT_EQ(sink.readable, seen) << "events reached a sink that was taken away";
  });
}

// A server context with a self-signed P-256 certificate made here.
struct TestTlsServer {
  TestTlsServer() {
    EVP_PKEY* key = EVP_EC_gen("P-256");
    X509* cert = X509_new();
    X509_set_version(cert, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(cert), 1);
    X509_gmtime_adj(X509_getm_notBefore(cert), 0);
    X509_gmtime_adj(X509_getm_notAfter(cert), 3600);
    X509_set_pubkey(cert, key);
    X509_NAME* name = X509_get_subject_name(cert);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                               reinterpret_cast<const unsigned char*>("localhost"), -1, -1, 0);
    X509_set_issuer_name(cert, name);
    X509_sign(cert, key, EVP_sha256());
    ctx = SSL_CTX_new(TLS_server_method());
    ok = key != nullptr && SSL_CTX_use_certificate(ctx, cert) == 1 &&
         SSL_CTX_use_PrivateKey(ctx, key) == 1;
    X509_free(cert);
    EVP_PKEY_free(key);
  }
  ~TestTlsServer() { SSL_CTX_free(ctx); }
  SSL_CTX* ctx = nullptr;
  bool ok = false;
};

// The non-blocking face of a TLS stream, as the WebSocket tunnel drives it: a write larger
// than the socket takes stops with would_block and goes on after OnWritable (OpenSSL's
// want-write), reads wait for OnReadable (want-read), and ShutdownSend sends close_notify.
TEST_P(PolledStreamTest, TlsStreamsTryReadAndWriteAndWaitForTheirEvents) {
  TestTlsServer server;
  ASSERT_TRUE(server.ok);
  CountingSink sink;
  Run([&]() -> net::awaitable<void> {
    AnyStream s(*dispatcher_);
    tcp::socket peer(ioc_);
    co_await ConnectPair(s, peer);
    EXPECT_FALSE(s.StartTls(server.ctx));
    net::ssl::context client_ctx(net::ssl::context::tls_client);
    client_ctx.set_verify_mode(net::ssl::verify_none);
    net::ssl::stream<tcp::socket&> client(peer, client_ctx);
    bool client_ready = false;
    net::co_spawn(
        ioc_,
        [&]() -> net::awaitable<void> {
          auto [ec] = co_await client.async_handshake(net::ssl::stream_base::client, kToken);
          EXPECT_FALSE(ec) << ec.message();
          client_ready = true;
        },
        net::detached);
    if (const error_code ec = co_await s.Handshake(); ec) {
      ADD_FAILURE() << "handshake: " << ec.message();
      co_return;
    }
    while (!client_ready) co_await Sleep(1ms);
    s.SetEventSink(&sink);
    // Small socket buffers (no autotuning), so that 4 MiB cannot fit in them.
    const int small = 64 * 1024;
    ::setsockopt(s.native_handle(), SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
    peer.set_option(net::socket_base::receive_buffer_size(small));

    // Out: 4 MiB to a reader that starts late.
    std::string data(4 << 20, '\0');
    for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(i % 251);
    std::string got(data.size(), '\0');
    bool reader_done = false;
    net::co_spawn(
        ioc_,
        [&]() -> net::awaitable<void> {
          co_await Sleep(20ms);
          auto [ec, n] = co_await net::async_read(client, net::buffer(got), kToken);
          EXPECT_FALSE(ec) << ec.message();
          reader_done = true;
        },
        net::detached);
    size_t off = 0;
    int would_block = 0;
    while (off < data.size()) {
      error_code ec;
      const net::const_buffer rest(data.data() + off, data.size() - off);
      const int seen = sink.writable;
      off += s.TryWrite(&rest, 1, ec);
      if (ec == net::error::would_block) {
        ++would_block;
        while (sink.writable == seen) co_await Sleep(1ms);  // bounded by Run's limit
      } else if (ec) {
        ADD_FAILURE() << "write: " << ec.message();
        co_return;
      }
    }
    EXPECT_GT(would_block, 0) << "the socket never filled: nothing waited for OnWritable";
    while (!reader_done) co_await Sleep(2ms);
    EXPECT_TRUE(got == data) << "bytes lost or reordered across want-write";

    // In: 300 KB, read as it comes.
    const std::string sent(300000, 'y');
    net::co_spawn(
        ioc_,
        [&]() -> net::awaitable<void> {
          auto [ec, n] = co_await net::async_write(client, net::buffer(sent), kToken);
          EXPECT_FALSE(ec) << ec.message();
        },
        net::detached);
    std::string received;
    char buf[16384];
    int waits = 0;
    while (received.size() < sent.size()) {
      if (!s.maybe_readable()) {
        ++waits;
        const int seen = sink.readable;
        while (sink.readable == seen) co_await Sleep(1ms);
        continue;
      }
      error_code ec;
      const int seen = sink.readable;
      const size_t n = s.TryRead(net::buffer(buf), ec);
      if (ec == net::error::would_block) {
        // OnReadable says when to try again (maybe_readable() may stay true: OpenSSL holds
        // part of a record).
        ++waits;
        while (sink.readable == seen) co_await Sleep(1ms);
        continue;
      }
      if (ec) {
        ADD_FAILURE() << "read: " << ec.message();
        co_return;
      }
      received.append(buf, n);
    }
    EXPECT_EQ(received, sent);
    EXPECT_GT(waits, 0);

    s.ShutdownSend();  // close_notify, then FIN
    char c;
    auto [ec, n] = co_await client.async_read_some(net::buffer(&c, 1), kToken);
    EXPECT_EQ(ec, net::error::eof) << ec.message();
    s.SetEventSink(nullptr);
  });
}

TEST_P(PolledStreamTest, ShutdownDestroysACoroutineParkedOnTheStream) {
  struct Flag {
    bool* destroyed;
    ~Flag() { *destroyed = true; }
  };
  bool destroyed = false;
  tcp::socket peer(ioc_);
  auto dispatcher = std::make_unique<Dispatcher>();
  auto coroutine = [&]() -> net::awaitable<void> {
    Flag f{&destroyed};
    AnyStream s(*dispatcher);
    const error_code ec = co_await s.Connect(endpoint());
    EXPECT_FALSE(ec);
    char buf[4];
    co_await s.ReadSome(net::buffer(buf));  // never completes: nobody writes
    ADD_FAILURE() << "the read should not complete";
  };
  dispatcher->Spawn(coroutine(), "test");
  Drive(ioc_, *dispatcher, 200ms);
  EXPECT_FALSE(destroyed);
  dispatcher->Shutdown();  // as ~Worker does: before what the frames refer to goes
  dispatcher.reset();
  EXPECT_TRUE(destroyed);
}

}  // namespace
}  // namespace onedomain::dataplane
