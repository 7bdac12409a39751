#include "common/http/admin_server.h"

#include <gtest/gtest.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

namespace onedomain::http {
namespace {

namespace beast = boost::beast;
using tcp = boost::asio::ip::tcp;

// A blocking Beast client: one request per connection.
beast::http::response<beast::http::string_body> Get(
    uint16_t port, std::string_view target, beast::http::verb verb = beast::http::verb::get) {
  boost::asio::io_context ioc;
  tcp::socket socket(ioc);
  socket.connect(tcp::endpoint(boost::asio::ip::make_address("127.0.0.1"), port));
  beast::http::request<beast::http::empty_body> req{verb, target, 11};
  req.set(beast::http::field::host, "127.0.0.1");
  beast::http::write(socket, req);
  beast::flat_buffer buffer;
  beast::http::response_parser<beast::http::string_body> parser;
  parser.skip(verb == beast::http::verb::head);
  beast::http::read(socket, buffer, parser);
  return parser.release();
}

TEST(AdminServer, ServesRegisteredPathsOnEphemeralPort) {
  AdminServer server;
  server.Handle("/healthz", [](std::string_view, std::string_view) {
    return AdminReply{200, "text/plain", "ok\n"};
  });
  server.Handle("/echo", [](std::string_view, std::string_view target) {
    return AdminReply{202, "text/plain", std::string(target)};
  });
  ASSERT_TRUE(server.Start("127.0.0.1", 0).ok());
  ASSERT_NE(server.port(), 0);

  auto res = Get(server.port(), "/healthz");
  EXPECT_EQ(res.result_int(), 200);
  EXPECT_EQ(res.body(), "ok\n");

  res = Get(server.port(), "/echo?x=1");
  EXPECT_EQ(res.result_int(), 202);
  EXPECT_EQ(res.body(), "/echo?x=1");

  EXPECT_EQ(Get(server.port(), "/nope").result_int(), 404);
  EXPECT_EQ(Get(server.port(), "/healthz", beast::http::verb::post).result_int(), 405);
  auto head = Get(server.port(), "/healthz", beast::http::verb::head);
  EXPECT_EQ(head.result_int(), 200);
  EXPECT_EQ(head[beast::http::field::content_length], "3");
  server.Stop();
  server.Stop();  // idempotent
}

TEST(AdminServer, HandlerExceptionBecomes500) {
  AdminServer server;
  server.Handle("/boom", [](std::string_view, std::string_view) -> AdminReply {
    throw std::runtime_error("boom");
  });
  ASSERT_TRUE(server.Start("127.0.0.1", 0).ok());
  EXPECT_EQ(Get(server.port(), "/boom").result_int(), 500);
}

TEST(AdminServer, BindFailureIsAnError) {
  AdminServer a;
  ASSERT_TRUE(a.Start("127.0.0.1", 0).ok());
  AdminServer b;
  auto st = b.Start("127.0.0.1", a.port());
  // SO_REUSEADDR does not allow two listeners on one port.
  EXPECT_FALSE(st.ok());
  EXPECT_FALSE(AdminServer().Start("not-an-ip", 0).ok());
}

TEST(AdminServer, RequestHandlersSeeAuthorizationAndCookieAndSetHeaders) {
  AdminServer server;
  server.HandleRequest("/who", [](const AdminRequest& r) {
    AdminReply reply{200, "text/plain", std::string(r.authorization) + "|" + std::string(r.cookie)};
    reply.headers = {{"Set-Cookie", "s=1; HttpOnly; SameSite=Strict"}, {"X-Frame-Options", "DENY"}};
    return reply;
  });
  ASSERT_TRUE(server.Start("127.0.0.1", 0).ok());
  boost::asio::io_context ioc;
  tcp::socket socket(ioc);
  socket.connect(tcp::endpoint(boost::asio::ip::make_address("127.0.0.1"), server.port()));
  beast::http::request<beast::http::empty_body> req{beast::http::verb::get, "/who", 11};
  req.set(beast::http::field::host, "127.0.0.1");
  req.set(beast::http::field::authorization, "Bearer abc");
  req.set(beast::http::field::cookie, "a=b; s=1");
  beast::http::write(socket, req);
  beast::flat_buffer buffer;
  beast::http::response<beast::http::string_body> res;
  beast::http::read(socket, buffer, res);
  EXPECT_EQ(res.result_int(), 200);
  EXPECT_EQ(res.body(), "Bearer abc|a=b; s=1");
  EXPECT_EQ(res[beast::http::field::set_cookie], "s=1; HttpOnly; SameSite=Strict");
  EXPECT_EQ(res["X-Frame-Options"], "DENY");
  // Without the headers a request handler sees empty views.
  auto bare = Get(server.port(), "/who");
  EXPECT_EQ(bare.body(), "|");
  server.Stop();
}

}  // namespace
}  // namespace onedomain::http
