// AnyStream on a worker's Dispatcher: real loopback sockets (127.0.0.1, ephemeral ports).
// The test thread turns both loops, bounded in time: the peers' io_context (the test's peers
// are Asio sockets, on Asio's reactor) and the dispatcher the streams live on.

#include <sys/epoll.h>
#include <sys/socket.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/read.hpp>
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

class PolledStreamTest : public ::testing::Test {
 protected:
  PolledStreamTest()
      : dispatcher_(std::make_unique<Dispatcher>()),
        acceptor_(ioc_, tcp::endpoint(net::ip::make_address("127.0.0.1"), 0)) {}
  ~PolledStreamTest() override { dispatcher_->Shutdown(); }

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
};

TEST_F(PolledStreamTest, ReadsWritesAndSeesTheEnd) {
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

TEST_F(PolledStreamTest, AReadAfterAShortReadWaitsForTheNextBytes) {
  Run([&]() -> net::awaitable<void> {
    AnyStream s(*dispatcher_);
    tcp::socket peer(ioc_);
    co_await ConnectPair(s, peer);
    co_await net::async_write(peer, net::buffer("a", 1), kToken);
    char buf[64];
    IoResult r = co_await s.ReadSome(net::buffer(buf));
    EXPECT_EQ(r.n, 1u);

    // Nothing is there: the read parks until the peer writes 100 ms later.
    net::co_spawn(ioc_, [&]() -> net::awaitable<void> {
      co_await Sleep(100ms);
      co_await net::async_write(peer, net::buffer("bc", 2), kToken);
    }, net::detached);
    const auto start = std::chrono::steady_clock::now();
    r = co_await s.ReadSome(net::buffer(buf));
    EXPECT_FALSE(r.ec);
    EXPECT_EQ(std::string(buf, r.n), "bc");
    EXPECT_GE(std::chrono::steady_clock::now() - start, 90ms);
  });
}

TEST_F(PolledStreamTest, DataWithTheFinIsReadThenTheEnd) {
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

TEST_F(PolledStreamTest, CancelAbortsAParkedRead) {
  Run([&]() -> net::awaitable<void> {
    AnyStream s(*dispatcher_);
    tcp::socket peer(ioc_);
    co_await ConnectPair(s, peer);
    net::co_spawn(ioc_, [&]() -> net::awaitable<void> {
      co_await Sleep(50ms);
      s.Cancel();
    }, net::detached);
    char buf[16];
    const IoResult r = co_await s.ReadSome(net::buffer(buf));
    EXPECT_EQ(r.ec, net::error::operation_aborted);
    // The stream still works afterwards.
    co_await net::async_write(peer, net::buffer("x", 1), kToken);
    const IoResult again = co_await s.ReadSome(net::buffer(buf));
    EXPECT_EQ(again.n, 1u);
  });
}

TEST_F(PolledStreamTest, ConnectToAClosedPortFails) {
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

TEST_F(PolledStreamTest, ALargeWriteWaitsForASlowReader) {
  Run([&]() -> net::awaitable<void> {
    AnyStream s(*dispatcher_);
    tcp::socket peer(ioc_);
    co_await ConnectPair(s, peer);
    const std::string data(8 * 1024 * 1024, 'z');  // far beyond both socket buffers
    size_t received = 0;
    bool reader_done = false;
    net::co_spawn(ioc_, [&]() -> net::awaitable<void> {
      std::vector<char> buf(64 * 1024);
      while (received < data.size()) {
        co_await Sleep(1ms);
        auto [ec, n] = co_await peer.async_read_some(net::buffer(buf), kToken);
        if (ec) break;
        received += n;
      }
      reader_done = true;
    }, net::detached);
    const IoResult w = co_await s.Write(net::buffer(data));
    EXPECT_FALSE(w.ec) << w.ec.message();
    EXPECT_EQ(w.n, data.size());
    while (!reader_done) co_await Sleep(5ms);
    EXPECT_EQ(received, data.size());
  });
}

TEST_F(PolledStreamTest, EventsGoToTheSinkWhileOneIsSet) {
  struct Sink : StreamEvents {
    int readable = 0;
    int writable = 0;
    void OnReadable() override { ++readable; }
    void OnWritable() override { ++writable; }
  } sink;
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

TEST_F(PolledStreamTest, ShutdownDestroysACoroutineParkedOnTheStream) {
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
