// The HTTP/1.1 session (the codec) on a real worker thread: a loopback client connection
// handed to SpawnConnection, a scripted loopback backend behind the one route.

#include "dataplane/http_proxy/http_session.h"

#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <thread>

#include <gtest/gtest.h>

#include "dataplane/runtime/unique_fd.h"
#include "tests/unit/dataplane/proxy_test_support.h"

namespace onedomain::dataplane {
namespace {

using namespace std::chrono_literals;
using proxytest::Always;
using proxytest::LoopbackUpstream;
using proxytest::OneRouteSnapshot;

class HttpSessionTest : public proxytest::WorkerFixture {
 protected:
  ~HttpSessionTest() override {
    if (client_ >= 0) ::close(client_);
    // Wait for the session to see the close, so the worker stops with nothing in flight.
    const auto until = std::chrono::steady_clock::now() + 5s;
    while (worker_ && worker_->live_sessions() > 0 && std::chrono::steady_clock::now() < until) {
      std::this_thread::sleep_for(5ms);  // polling a condition, bounded
    }
  }

  // Connects a client to a session served by the worker; the test holds the client end.
  void Connect() {
    uint16_t port = 0;
    const int listener = testing::ListenLoopback(&port);
    ASSERT_GE(listener, 0);
    client_ = testing::ConnectLoopback(port);
    ASSERT_GE(client_, 0);
    const int server = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    ::close(listener);
    ASSERT_GE(server, 0);
    Worker* w = worker_.get();
    ASSERT_TRUE(RunOnWorker([w, server] { SpawnConnection(*w, 0, UniqueFd(server)); }));
  }

  void Send(std::string_view bytes) {
    ASSERT_EQ(::send(client_, bytes.data(), bytes.size(), MSG_NOSIGNAL),
              static_cast<ssize_t>(bytes.size()));
  }

  int client_ = -1;
};

// Counts complete responses whose bodies end in "|" (the backend's marker).
size_t Responses(const std::string& bytes) {
  size_t n = 0;
  for (size_t at = bytes.find("|"); at != std::string::npos; at = bytes.find("|", at + 1)) ++n;
  return n;
}

TEST_F(HttpSessionTest, PipelinedRequestsAreAnsweredInOrder) {
  // Echoes the request line's target, so the order of the answers shows.
  LoopbackUpstream up([](const std::string& request) {
    const size_t sp = request.find(' ');
    const std::string body = request.substr(sp + 1, request.find(' ', sp + 1) - sp - 1) + "|";
    return LoopbackUpstream::Reply{
        "HTTP/1.1 200 OK\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body};
  });
  StartWorker(OneRouteSnapshot({up.port()}));
  Connect();
  // Three requests in one write, the middle one with a body: the session must find each
  // request's end (the body's too) in the bytes it already read.
  Send(
      "GET /one HTTP/1.1\r\nHost: a.test\r\n\r\n"
      "POST /two HTTP/1.1\r\nHost: a.test\r\nContent-Length: 4\r\n\r\nbody"
      "GET /three HTTP/1.1\r\nHost: a.test\r\n\r\n");
  const std::string got =
      proxytest::ReadUntil(client_, [](const std::string& b) { return Responses(b) >= 3; });

  ASSERT_EQ(Responses(got), 3u) << got;
  const size_t one = got.find("/one|");
  const size_t two = got.find("/two|");
  const size_t three = got.find("/three|");
  ASSERT_NE(one, std::string::npos) << got;
  ASSERT_NE(two, std::string::npos) << got;
  ASSERT_NE(three, std::string::npos) << got;
  EXPECT_LT(one, two);
  EXPECT_LT(two, three);
  EXPECT_EQ(got.find("Connection: close"), std::string::npos) << got;
  const auto requests = up.requests();
  ASSERT_EQ(requests.size(), 3u);
  EXPECT_EQ(requests[1].substr(requests[1].size() - 8), "\r\n\r\nbody");
  EXPECT_EQ(up.accepted(), 1);  // one pooled upstream connection carried all three
}

TEST_F(HttpSessionTest, PipelinedRequestAfterALocalReplyIsServed) {
  LoopbackUpstream up(Always("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok|"));
  v1::Snapshot s = OneRouteSnapshot({up.port()});
  s.mutable_routes(0)->mutable_match()->set_prefix("/api/");
  StartWorker(s);
  Connect();
  Send(
      "GET /nowhere HTTP/1.1\r\nHost: a.test\r\n\r\n"
      "GET /api/x HTTP/1.1\r\nHost: a.test\r\n\r\n");
  const std::string got =
      proxytest::ReadUntil(client_, [](const std::string& b) { return Responses(b) >= 1; });

  const size_t not_found = got.find("HTTP/1.1 404 ");
  const size_t ok = got.find("HTTP/1.1 200 ");
  ASSERT_NE(not_found, std::string::npos) << got;
  ASSERT_NE(ok, std::string::npos) << got;
  EXPECT_LT(not_found, ok);
}

}  // namespace
}  // namespace onedomain::dataplane
