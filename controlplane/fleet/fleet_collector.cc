#include "controlplane/fleet/fleet_collector.h"

#include <prometheus/metric_family.h>

#include <chrono>
#include <set>

#include "common/strings/strings.h"
#include "controlplane/fleet/fleet.h"

namespace onedomain::controlplane {
namespace {

using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;

MetricFamily Family(std::string name, std::string help, MetricType type) {
  MetricFamily f;
  f.name = std::move(name);
  f.help = std::move(help);
  f.type = type;
  return f;
}

void AddSample(MetricFamily& family, std::vector<ClientMetric::Label> labels, double value) {
  ClientMetric m;
  m.label = std::move(labels);
  if (family.type == MetricType::Counter) {
    m.counter.value = value;
  } else {
    m.gauge.value = value;
  }
  family.metric.push_back(std::move(m));
}

// Counter keys of a report: "connections", "upgrades|<result>", "requests|<route>|<class>",
// "bytes|received", "bytes|sent".
std::map<std::string, double> CounterValues(const NodeRecord& node) {
  std::map<std::string, double> out;
  if (!node.has_report) return out;
  const v1::MetricsReport& r = node.report;
  out["connections"] = static_cast<double>(r.downstream_connections_total());
  for (const auto& [result, n] : r.websocket_upgrades()) {
    out["upgrades|" + result] = static_cast<double>(n);
  }
  for (const auto& [key, n] : r.http_requests()) out["requests|" + key] = static_cast<double>(n);
  out["bytes|received"] = static_cast<double>(r.bytes_received());
  out["bytes|sent"] = static_cast<double>(r.bytes_sent());
  return out;
}

}  // namespace

std::vector<MetricFamily> FleetCollector::Collect() const {
  const std::vector<NodeRecord> nodes = fleet_.Nodes();
  std::lock_guard lock(mu_);

  // Fold counter resets and departures into the carried bases.
  std::set<std::string> present;
  for (const NodeRecord& node : nodes) {
    const std::string& id = node.hello.node_id();
    present.insert(id);
    if (!node.has_report) continue;
    CounterTrack& t = tracks_[id];
    const long long start = node.report.start_time().seconds();
    if (t.start_seconds != 0 && start != t.start_seconds) {
      for (const auto& [key, v] : t.last) t.base[key] += v;  // the node restarted
      t.last.clear();
    }
    t.start_seconds = start;
    for (const auto& [key, v] : CounterValues(node)) t.last[key] = v;
  }
  for (auto it = tracks_.begin(); it != tracks_.end();) {
    if (present.count(it->first) == 0) {
      for (const auto& [key, v] : it->second.base) departed_[key] += v;
      for (const auto& [key, v] : it->second.last) departed_[key] += v;
      it = tracks_.erase(it);
    } else {
      ++it;
    }
  }

  auto connected = Family("onedomain_fleet_nodes_connected",
                          "Data-plane nodes with an open config stream.", MetricType::Gauge);
  auto on_latest =
      Family("onedomain_fleet_nodes_on_latest_version",
             "Connected nodes that acknowledged the newest committed version.", MetricType::Gauge);
  auto version = Family("onedomain_fleet_config_version",
                        "Config version each node last acknowledged.", MetricType::Gauge);
  auto nacked = Family("onedomain_fleet_node_nacked",
                       "1 when the node refused (NACKed) a version it has not since replaced "
                       "with a newer acknowledged one.",
                       MetricType::Gauge);
  auto node_up =
      Family("onedomain_fleet_node_connected",
             "1 while the node's config stream is open, 0 after it left.", MetricType::Gauge);
  auto report_age =
      Family("onedomain_fleet_last_report_age_seconds",
             "Seconds since the node's last message on its config stream.", MetricType::Gauge);
  auto conns = Family("onedomain_fleet_downstream_connections_active",
                      "Open client connections per node.", MetricType::Gauge);
  auto ws = Family("onedomain_fleet_websocket_connections_active",
                   "Open proxied WebSockets per node.", MetricType::Gauge);
  auto conns_total =
      Family("onedomain_fleet_downstream_connections_total",
             "Client connections accepted, per node (restarts carried over).", MetricType::Counter);
  auto upgrades = Family("onedomain_fleet_websocket_upgrades_total",
                         "WebSocket upgrade attempts by node and result.", MetricType::Counter);
  auto requests = Family("onedomain_fleet_http_requests_total",
                         "HTTP requests by node, route and status class.", MetricType::Counter);
  auto bytes = Family("onedomain_fleet_bytes_total",
                      "Bytes relayed by node and direction (received from clients, sent to "
                      "clients).",
                      MetricType::Counter);
  auto fleet_conns = Family("onedomain_fleet_total_downstream_connections_active",
                            "Open client connections across the fleet.", MetricType::Gauge);
  auto fleet_ws = Family("onedomain_fleet_total_websocket_connections_active",
                         "Open proxied WebSockets across the fleet.", MetricType::Gauge);
  auto fleet_upgrades = Family("onedomain_fleet_total_websocket_upgrades_total",
                               "WebSocket upgrade attempts across the fleet, by result, "
                               "including nodes that restarted or left.",
                               MetricType::Counter);
  auto fleet_requests = Family("onedomain_fleet_total_http_requests_total",
                               "HTTP requests across the fleet by route and status class, "
                               "including nodes that restarted or left.",
                               MetricType::Counter);

  uint64_t latest = 0;
  for (const NodeRecord& node : nodes) latest = std::max(latest, node.version_sent);
  double n_connected = 0;
  double n_latest = 0;
  double total_conns = 0;
  double total_ws = 0;
  std::map<std::string, double> totals = departed_;
  const auto now = std::chrono::system_clock::now();
  for (const NodeRecord& node : nodes) {
    const std::string& id = node.hello.node_id();
    const bool up = node.connection != nullptr;
    n_connected += up ? 1 : 0;
    AddSample(node_up, {{"node", id}}, up ? 1 : 0);
    AddSample(version, {{"node", id}}, static_cast<double>(node.version_acked));
    AddSample(nacked, {{"node", id}}, node.version_nacked != 0 ? 1 : 0);
    AddSample(report_age, {{"node", id}},
              std::chrono::duration<double>(now - node.last_seen).count());
    if (up && node.version_acked >= latest) n_latest += 1;
    if (up) {
      AddSample(conns, {{"node", id}},
                static_cast<double>(node.report.downstream_connections_active()));
      AddSample(ws, {{"node", id}},
                static_cast<double>(node.report.websocket_connections_active()));
      total_conns += static_cast<double>(node.report.downstream_connections_active());
      total_ws += static_cast<double>(node.report.websocket_connections_active());
    }
    const auto t = tracks_.find(id);
    if (t == tracks_.end()) continue;
    std::map<std::string, double> sums = t->second.base;
    for (const auto& [key, v] : t->second.last) sums[key] += v;
    for (const auto& [key, v] : sums) {
      totals[key] += v;
      const std::vector<std::string_view> parts = str::Split(key, '|');
      if (parts[0] == "connections") {
        AddSample(conns_total, {{"node", id}}, v);
      } else if (parts[0] == "upgrades" && parts.size() == 2) {
        AddSample(upgrades, {{"node", id}, {"result", std::string(parts[1])}}, v);
      } else if (parts[0] == "requests" && parts.size() == 3) {
        AddSample(
            requests,
            {{"node", id}, {"route", std::string(parts[1])}, {"code_class", std::string(parts[2])}},
            v);
      } else if (parts[0] == "bytes" && parts.size() == 2) {
        AddSample(bytes, {{"node", id}, {"direction", std::string(parts[1])}}, v);
      }
    }
  }
  for (const auto& [key, v] : totals) {
    const std::vector<std::string_view> parts = str::Split(key, '|');
    if (parts[0] == "upgrades" && parts.size() == 2) {
      AddSample(fleet_upgrades, {{"result", std::string(parts[1])}}, v);
    } else if (parts[0] == "requests" && parts.size() == 3) {
      AddSample(fleet_requests,
                {{"route", std::string(parts[1])}, {"code_class", std::string(parts[2])}}, v);
    }
  }
  AddSample(connected, {}, n_connected);
  AddSample(on_latest, {}, n_latest);
  AddSample(fleet_conns, {}, total_conns);
  AddSample(fleet_ws, {}, total_ws);

  std::vector<MetricFamily> out;
  for (MetricFamily* f :
       {&connected, &on_latest, &version, &nacked, &node_up, &report_age, &conns, &ws, &conns_total,
        &upgrades, &requests, &bytes, &fleet_conns, &fleet_ws, &fleet_upgrades, &fleet_requests}) {
    out.push_back(std::move(*f));
  }
  return out;
}

}  // namespace onedomain::controlplane
