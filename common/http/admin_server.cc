#include "common/http/admin_server.h"
#include "common/strings/strings.h"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>
#include <map>
#include <thread>

#include "common/log/log.h"

namespace onedomain::http {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
using tcp = asio::ip::tcp;
constexpr auto kToken = asio::as_tuple(asio::use_awaitable);

using HandlerMap = std::map<std::string, AdminServer::RequestHandler, std::less<>>;

AdminReply Dispatch(const HandlerMap& handlers, const AdminRequest& request) {
  const std::string_view target = request.target;
  const std::string_view path = target.substr(0, target.find('?'));
  const auto it = handlers.find(path);
  if (it == handlers.end()) return {404, "text/plain; charset=utf-8", "not found\n"};
  if (request.method != "GET" && request.method != "HEAD") {
    return {405, "text/plain; charset=utf-8", "only GET and HEAD are allowed\n"};
  }
  try {
    return it->second(request);
  } catch (const std::exception& e) {
    log::Error("admin_http", str::Cat("handler for ", path, " threw: ", e.what()));
    return {500, "text/plain; charset=utf-8", "internal error\n"};
  }
}

// One admin connection: keep-alive loop with a deadline on every read and small limits.
asio::awaitable<void> Serve(tcp::socket socket, const HandlerMap& handlers) {
  beast::tcp_stream stream(std::move(socket));
  beast::flat_buffer buffer(8192);
  for (;;) {
    beast::http::request_parser<beast::http::empty_body> parser;
    parser.header_limit(8192);
    stream.expires_after(std::chrono::seconds(10));
    auto [ec, n] = co_await beast::http::async_read(stream, buffer, parser, kToken);
    if (ec) co_return;  // Closed, timed out or malformed: nothing useful to answer.
    const auto& req = parser.get();
    AdminRequest request{req.method_string(), req.target(), {}, {}};
    if (const auto a = req.find(beast::http::field::authorization); a != req.end()) {
      request.authorization = a->value();
    }
    if (const auto c = req.find(beast::http::field::cookie); c != req.end()) {
      request.cookie = c->value();
    }
    AdminReply reply = Dispatch(handlers, request);
    beast::http::response<beast::http::string_body> res{
        static_cast<beast::http::status>(reply.status), req.version()};
    res.set(beast::http::field::content_type, reply.content_type);
    res.set(beast::http::field::cache_control, "no-store");
    for (const auto& [name, value] : reply.headers) res.insert(name, value);
    res.keep_alive(req.keep_alive());
    if (req.method() == beast::http::verb::head) {
      res.content_length(reply.body.size());
    } else {
      res.body() = std::move(reply.body);
      res.prepare_payload();
    }
    auto [wec, wn] = co_await beast::http::async_write(stream, res, kToken);
    if (wec || !res.keep_alive()) co_return;
  }
}

asio::awaitable<void> Accept(tcp::acceptor& acceptor, const HandlerMap& handlers) {
  for (;;) {
    auto [ec, socket] = co_await acceptor.async_accept(kToken);
    if (ec == asio::error::operation_aborted) co_return;
    if (ec) {
      // Out of descriptors or similar: wait briefly instead of spinning.
      asio::steady_timer pause(acceptor.get_executor(), std::chrono::milliseconds(50));
      co_await pause.async_wait(kToken);
      continue;
    }
    asio::co_spawn(acceptor.get_executor(), Serve(std::move(socket), handlers), asio::detached);
  }
}

}  // namespace

struct AdminServer::Impl {
  HandlerMap handlers;
  asio::io_context ioc{1};
  tcp::acceptor acceptor{ioc};
  std::thread thread;
  uint16_t port = 0;
};

AdminServer::AdminServer() : impl_(std::make_unique<Impl>()) {}

AdminServer::~AdminServer() { Stop(); }

void AdminServer::Handle(std::string path, Handler handler) {
  impl_->handlers[std::move(path)] = [handler = std::move(handler)](const AdminRequest& r) {
    return handler(r.method, r.target);
  };
}

void AdminServer::HandleRequest(std::string path, RequestHandler handler) {
  impl_->handlers[std::move(path)] = std::move(handler);
}

absl::Status AdminServer::Start(const std::string& address, uint16_t port) {
  boost::system::error_code ec;
  const auto ip = asio::ip::make_address(address, ec);
  if (ec) return absl::InvalidArgumentError(str::Cat("bad admin address '", address, "'"));
  const tcp::endpoint endpoint(ip, port);
  impl_->acceptor.open(endpoint.protocol(), ec);
  if (!ec) impl_->acceptor.set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec) impl_->acceptor.bind(endpoint, ec);
  if (!ec) impl_->acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    return absl::UnavailableError(
        str::Cat("cannot listen on ", address, ":", port, ": ", ec.message()));
  }
  impl_->port = impl_->acceptor.local_endpoint().port();
  asio::co_spawn(impl_->ioc, Accept(impl_->acceptor, impl_->handlers), asio::detached);
  impl_->thread = std::thread([impl = impl_.get()] { impl->ioc.run(); });
  return absl::OkStatus();
}

uint16_t AdminServer::port() const { return impl_->port; }

void AdminServer::Stop() {
  if (!impl_->thread.joinable()) return;
  impl_->ioc.stop();
  impl_->thread.join();
  boost::system::error_code ignored;  // Closing a listener we are abandoning anyway.
  impl_->acceptor.close(ignored);
}

}  // namespace onedomain::http
