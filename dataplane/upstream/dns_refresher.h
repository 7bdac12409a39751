#pragma once

// Re-resolves the host names of cluster endpoints every dns_refresh_interval, so a
// Kubernetes Service name follows its pods, and publishes changed answers to the workers.
// Literal IPs are never resolved. One resolver for the node (not one per worker): workers
// receive the answers by post, like a snapshot.
//
// Thread: the server's control io_context.

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <functional>
#include <memory>
#include <vector>

#include "dataplane/runtime/time_source.h"
#include "dataplane/upstream/cluster_config.h"

namespace onedomain::dataplane {

class DnsRefresher {
 public:
  using Publish =
      std::function<void(const std::shared_ptr<const CompiledCluster>& def, size_t endpoint,
                         const std::vector<boost::asio::ip::tcp::endpoint>& addrs)>;

  DnsRefresher(boost::asio::io_context& control, Publish publish);
  ~DnsRefresher();
  DnsRefresher(const DnsRefresher&) = delete;
  DnsRefresher& operator=(const DnsRefresher&) = delete;

  // Control thread. The names of these clusters are the ones kept fresh from now on.
  void SetClusters(const std::vector<std::shared_ptr<const CompiledCluster>>& clusters);
  void Start();
  void Stop();

 private:
  struct Target {
    std::shared_ptr<const CompiledCluster> def;
    size_t endpoint = 0;
    Clock::time_point due{};
    std::vector<boost::asio::ip::tcp::endpoint> last;
    bool in_flight = false;
    bool active = true;
  };
  void Schedule();
  void Tick();
  void Resolve(const std::shared_ptr<Target>& t);

  boost::asio::io_context& control_;
  Publish publish_;
  boost::asio::ip::tcp::resolver resolver_;
  boost::asio::steady_timer timer_;
  std::vector<std::shared_ptr<Target>> targets_;
  bool stopped_ = false;
};

}  // namespace onedomain::dataplane
