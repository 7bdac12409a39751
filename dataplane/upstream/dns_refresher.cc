#include "dataplane/upstream/dns_refresher.h"

#include <algorithm>

#include "common/log/log.h"
#include "common/strings/strings.h"

namespace onedomain::dataplane {
namespace {

constexpr auto kTick = std::chrono::seconds(1);

}  // namespace

DnsRefresher::DnsRefresher(boost::asio::io_context& control, Publish publish)
    : control_(control), publish_(std::move(publish)), resolver_(control), timer_(control) {}

DnsRefresher::~DnsRefresher() { Stop(); }

void DnsRefresher::SetClusters(
    const std::vector<std::shared_ptr<const CompiledCluster>>& clusters) {
  std::vector<std::shared_ptr<Target>> next;
  const Clock::time_point now = Clock::now();
  for (const auto& def : clusters) {
    for (size_t i = 0; i < def->endpoints.size(); ++i) {
      if (def->endpoints[i].literal) continue;
      std::shared_ptr<Target> keep;
      for (const auto& t : targets_) {
        if (t->def == def && t->endpoint == i) keep = t;
      }
      if (!keep) {
        keep = std::make_shared<Target>();
        keep->def = def;
        keep->endpoint = i;
        keep->last = def->endpoints[i].addresses;
        keep->due = now + def->dns_refresh_interval;
      }
      next.push_back(std::move(keep));
    }
  }
  for (const auto& t : targets_) {
    if (std::find(next.begin(), next.end(), t) == next.end()) t->active = false;
  }
  targets_ = std::move(next);
}

void DnsRefresher::Start() {
  stopped_ = false;
  Schedule();
}

void DnsRefresher::Stop() {
  stopped_ = true;
  timer_.cancel();
  resolver_.cancel();
}

void DnsRefresher::Schedule() {
  timer_.expires_after(kTick);
  timer_.async_wait([this](const boost::system::error_code& ec) {
    if (ec || stopped_) return;
    Tick();
    Schedule();
  });
}

void DnsRefresher::Tick() {
  const Clock::time_point now = Clock::now();
  for (const auto& t : targets_) {
    if (!t->in_flight && t->due <= now) Resolve(t);
  }
}

void DnsRefresher::Resolve(const std::shared_ptr<Target>& t) {
  const CompiledEndpoint& ep = t->def->endpoints[t->endpoint];
  t->in_flight = true;
  resolver_.async_resolve(
      ep.host, std::to_string(ep.port),
      [this, t](const boost::system::error_code& ec,
                const boost::asio::ip::tcp::resolver::results_type& results) {
        t->in_flight = false;
        if (ec == boost::asio::error::operation_aborted || stopped_ || !t->active) return;
        const CompiledEndpoint& ep = t->def->endpoints[t->endpoint];
        t->due = Clock::now() + t->def->dns_refresh_interval;
        if (ec) {
          // Keep the last good answer: a DNS hiccup must not empty a cluster.
          log::Warn("dns", str::Cat("cannot resolve '", ep.host, "' for cluster '", t->def->name,
                                    "': ", ec.message(), "; keeping ", t->last.size(),
                                    " known address(es)"));
          return;
        }
        std::vector<boost::asio::ip::tcp::endpoint> addrs;
        for (const auto& r : results) {
          if (std::find(addrs.begin(), addrs.end(), r.endpoint()) == addrs.end()) {
            addrs.push_back(r.endpoint());
          }
        }
        std::sort(addrs.begin(), addrs.end());
        std::vector<boost::asio::ip::tcp::endpoint> last = t->last;
        std::sort(last.begin(), last.end());
        if (addrs == last) return;
        log::Info("dns", str::Cat("cluster '", t->def->name, "': '", ep.host, "' now resolves to ",
                                  addrs.size(), " address(es)"));
        t->last = addrs;
        publish_(t->def, t->endpoint, addrs);
      });
}

}  // namespace onedomain::dataplane
