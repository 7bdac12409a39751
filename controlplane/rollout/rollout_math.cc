#include "controlplane/rollout/rollout_math.h"

#include <algorithm>
#include <cmath>
#include <map>

#include "common/strings/strings.h"
#include "google/protobuf/util/time_util.h"

namespace onedomain::controlplane::rollout {

const char* StateName(v1::RolloutState s) {
  switch (s) {
    case v1::ROLLOUT_STATE_RUNNING:
      return "running";
    case v1::ROLLOUT_STATE_PAUSED:
      return "paused";
    case v1::ROLLOUT_STATE_SUCCEEDED:
      return "succeeded";
    case v1::ROLLOUT_STATE_ROLLED_BACK:
      return "rolled_back";
    case v1::ROLLOUT_STATE_ABORTED:
      return "aborted";
    case v1::ROLLOUT_STATE_SUPERSEDED:
      return "superseded";
    default:
      return "none";
  }
}
namespace {

using google::protobuf::util::TimeUtil;

constexpr uint64_t kDefaultMinRequests = 100;
constexpr double kDefaultRatioFloor = 0.01;
constexpr double kDefaultRelative = 2.0;
constexpr double kDefaultWsFloor = 1.0;
constexpr int64_t kDefaultBakeSeconds = 30;
constexpr int64_t kDefaultBudgetSeconds = 15 * 60;
constexpr size_t kMaxWaves = 20;

// FNV-1a: stable across builds and processes (std::hash is not promised to be).
uint64_t Fnv1a(std::string_view data, uint64_t h = 1469598103934665603ULL) {
  for (const unsigned char c : data) {
    h ^= c;
    h *= 1099511628211ULL;
  }
  return h;
}

std::string Num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.4g", v);
  return buf;
}

// One ratio or rate gate.
v1::GateValue Gate(const std::string& name, double canary, double canary_weight, double baseline,
                   double baseline_weight, bool baseline_trusted, double floor, double relative,
                   bool waiting) {
  v1::GateValue g;
  g.set_gate(name);
  g.set_canary(canary);
  g.set_baseline(baseline_trusted ? baseline : 0);
  g.set_floor(floor);
  g.set_relative(relative);
  g.set_canary_weight(canary_weight);
  g.set_baseline_weight(baseline_weight);
  if (waiting) {
    g.set_verdict("waiting");
  } else if (canary > floor && (!baseline_trusted || canary > relative * baseline)) {
    g.set_verdict("failing");
  } else {
    g.set_verdict("ok");
  }
  return g;
}

std::string Describe(const v1::GateValue& g, bool ratio) {
  const auto show = [ratio](double v) { return ratio ? Num(v * 100) + "%" : Num(v) + "/min"; };
  return str::Cat(g.gate(), ": canary ", show(g.canary()), " over ", Num(g.canary_weight()),
                  ratio ? " requests" : " node-minutes", " > floor ", show(g.floor()),
                  g.baseline_weight() > 0 || g.baseline() > 0
                      ? str::Cat(" and > ", Num(g.relative()), " x baseline ", show(g.baseline()))
                      : std::string(" (no trusted baseline)"));
}

}  // namespace

v1::RolloutPolicy WithDefaults(const v1::RolloutPolicy& configured) {
  v1::RolloutPolicy p = configured;
  if (p.default_mode() == v1::ROLLOUT_MODE_UNSPECIFIED) p.set_default_mode(v1::ROLLOUT_MODE_NOW);
  if (p.waves_size() == 0) {
    for (const char* w : {"1", "10%", "50%", "100%"}) p.add_waves(w);
  }
  if (!p.has_bake()) *p.mutable_bake() = TimeUtil::SecondsToDuration(kDefaultBakeSeconds);
  if (!p.has_min_requests()) p.set_min_requests(kDefaultMinRequests);
  if (!p.has_http_5xx_floor()) p.set_http_5xx_floor(kDefaultRatioFloor);
  if (!p.has_http_5xx_relative()) p.set_http_5xx_relative(kDefaultRelative);
  if (!p.has_connect_failure_floor()) p.set_connect_failure_floor(kDefaultRatioFloor);
  if (!p.has_connect_failure_relative()) p.set_connect_failure_relative(kDefaultRelative);
  if (!p.has_ws_abnormal_close_floor()) p.set_ws_abnormal_close_floor(kDefaultWsFloor);
  if (!p.has_ws_abnormal_close_relative()) p.set_ws_abnormal_close_relative(kDefaultRelative);
  if (!p.has_budget()) *p.mutable_budget() = TimeUtil::SecondsToDuration(kDefaultBudgetSeconds);
  return p;
}

v1::RolloutPolicy Merge(const v1::RolloutPolicy& base, const v1::RolloutPolicy& change) {
  v1::RolloutPolicy p = base;
  if (change.waves_size() > 0) *p.mutable_waves() = change.waves();
  if (change.has_bake()) *p.mutable_bake() = change.bake();
  if (change.has_budget()) *p.mutable_budget() = change.budget();
  if (change.has_min_requests()) p.set_min_requests(change.min_requests());
  if (change.has_http_5xx_floor()) p.set_http_5xx_floor(change.http_5xx_floor());
  if (change.has_http_5xx_relative()) p.set_http_5xx_relative(change.http_5xx_relative());
  if (change.has_connect_failure_floor()) {
    p.set_connect_failure_floor(change.connect_failure_floor());
  }
  if (change.has_connect_failure_relative()) {
    p.set_connect_failure_relative(change.connect_failure_relative());
  }
  if (change.has_ws_abnormal_close_floor()) {
    p.set_ws_abnormal_close_floor(change.ws_abnormal_close_floor());
  }
  if (change.has_ws_abnormal_close_relative()) {
    p.set_ws_abnormal_close_relative(change.ws_abnormal_close_relative());
  }
  return p;
}

absl::StatusOr<WaveSpec> ParseWave(const std::string& spec) {
  WaveSpec w;
  std::string_view s = spec;
  if (str::ConsumeSuffix(s, "%")) {
    double pct = 0;
    if (s.empty() || !str::ParseDouble(s, pct)) {
      return absl::InvalidArgumentError(str::Cat("'", spec, "' is not a percentage like \"10%\""));
    }
    if (!(pct > 0 && pct <= 100)) {
      return absl::InvalidArgumentError(str::Cat("'", spec, "': a percentage must be in (0, 100]"));
    }
    w.percent = pct;
    return w;
  }
  uint64_t n = 0;
  if (s.empty() || !str::ParseInt(s, n) || n == 0 || n > 100000) {
    return absl::InvalidArgumentError(
        str::Cat("'", spec, "' is neither a node count (1..100000) nor a percentage (\"10%\")"));
  }
  w.count = static_cast<uint32_t>(n);
  return w;
}

uint32_t WaveSize(const WaveSpec& spec, uint32_t connected) {
  if (connected == 0) return 0;
  if (spec.percent > 0) {
    const double n = std::ceil(spec.percent * connected / 100.0 - 1e-9);
    return std::clamp<uint32_t>(static_cast<uint32_t>(n), 1, connected);
  }
  return std::min(spec.count, connected);
}

absl::Status Validate(const v1::RolloutPolicy& policy, const std::string& prefix) {
  const auto field = [&prefix](const std::string& name) {
    return prefix.empty() ? name : str::Cat(prefix, ".", name);
  };
  if (policy.waves_size() > static_cast<int>(kMaxWaves)) {
    return absl::InvalidArgumentError(
        str::Cat(field("waves"), ": ", policy.waves_size(), " waves, at most ", kMaxWaves));
  }
  double last_pct = 0;
  uint32_t last_count = 0;
  for (int i = 0; i < policy.waves_size(); ++i) {
    auto w = ParseWave(policy.waves(i));
    const std::string name = field(str::Cat("waves[", i, "]"));
    if (!w.ok()) return absl::InvalidArgumentError(str::Cat(name, ": ", w.status().message()));
    // Counts and percentages may mix; only like with like can be compared.
    if ((w->percent > 0 && w->percent <= last_pct) || (w->percent == 0 && w->count <= last_count)) {
      return absl::InvalidArgumentError(
          str::Cat(name, ": '", policy.waves(i), "' does not grow the previous waves"));
    }
    if (w->percent > 0) last_pct = w->percent;
    if (w->percent == 0) last_count = w->count;
  }
  if (policy.waves_size() > 0 && policy.waves(policy.waves_size() - 1) != "100%") {
    return absl::InvalidArgumentError(str::Cat(
        field(str::Cat("waves[", policy.waves_size() - 1, "]")),
        ": the last wave must be \"100%\", got '", policy.waves(policy.waves_size() - 1), "'"));
  }
  if (policy.has_bake() && (policy.bake().seconds() < 0 || policy.bake().nanos() < 0 ||
                            policy.bake().seconds() > 24 * 3600)) {
    return absl::InvalidArgumentError(str::Cat(field("bake"), ": must be 0s..24h"));
  }
  if (policy.has_budget() && policy.budget().seconds() <= 0) {
    return absl::InvalidArgumentError(str::Cat(field("budget"), ": must be positive"));
  }
  const std::pair<const char*, std::optional<double>> checks[] = {
      {"http_5xx_floor",
       policy.has_http_5xx_floor() ? std::optional(policy.http_5xx_floor()) : std::nullopt},
      {"connect_failure_floor", policy.has_connect_failure_floor()
                                    ? std::optional(policy.connect_failure_floor())
                                    : std::nullopt}};
  for (const auto& [name, v] : checks) {
    if (v && !(*v >= 0 && *v <= 1)) {
      return absl::InvalidArgumentError(
          str::Cat(field(name), ": a ratio in [0, 1], got ", Num(*v)));
    }
  }
  const std::pair<const char*, std::optional<double>> positives[] = {
      {"http_5xx_relative",
       policy.has_http_5xx_relative() ? std::optional(policy.http_5xx_relative()) : std::nullopt},
      {"connect_failure_relative", policy.has_connect_failure_relative()
                                       ? std::optional(policy.connect_failure_relative())
                                       : std::nullopt},
      {"ws_abnormal_close_relative", policy.has_ws_abnormal_close_relative()
                                         ? std::optional(policy.ws_abnormal_close_relative())
                                         : std::nullopt},
      {"ws_abnormal_close_floor", policy.has_ws_abnormal_close_floor()
                                      ? std::optional(policy.ws_abnormal_close_floor())
                                      : std::nullopt}};
  for (const auto& [name, v] : positives) {
    if (v && !(*v >= 0 && std::isfinite(*v))) {
      return absl::InvalidArgumentError(
          str::Cat(field(name), ": must be a finite number >= 0, got ", Num(*v)));
    }
  }
  return absl::OkStatus();
}

void PickCanaries(const std::vector<Candidate>& candidates, uint64_t version, uint32_t size,
                  std::set<std::string>& chosen) {
  if (chosen.size() >= size) return;
  const std::string salt = str::Cat("v", version, "/");
  // Per zone: the candidates not chosen yet, in hash order; and how many are chosen already.
  std::map<std::string, std::vector<std::pair<uint64_t, std::string>>> by_zone;
  std::map<std::string, size_t> taken;
  for (const Candidate& c : candidates) {
    if (chosen.count(c.node_id) != 0) {
      ++taken[c.zone];
      continue;
    }
    by_zone[c.zone].emplace_back(Fnv1a(c.node_id, Fnv1a(salt)), c.node_id);
  }
  for (auto& [zone, nodes] : by_zone) std::sort(nodes.rbegin(), nodes.rend());  // pop_back: lowest
  while (chosen.size() < size) {
    std::string best_zone;
    bool found = false;
    for (auto& [zone, nodes] : by_zone) {
      if (nodes.empty()) continue;
      if (!found || taken[zone] < taken[best_zone]) {
        best_zone = zone;
        found = true;
      }
    }
    if (!found) return;  // fewer candidates than the wave wants
    auto& nodes = by_zone[best_zone];
    chosen.insert(nodes.back().second);
    nodes.pop_back();
    ++taken[best_zone];
  }
}

Counters CountersOf(const v1::MetricsReport& report) {
  Counters c;
  for (const auto& [key, n] : report.http_requests()) {
    c.requests += static_cast<double>(n);
    if (str::EndsWith(key, "|5xx")) c.http_5xx += static_cast<double>(n);
  }
  c.connect_failures = static_cast<double>(report.upstream_connect_failures());
  c.ws_abnormal = static_cast<double>(report.websocket_closes_abnormal());
  return c;
}

std::optional<Counters> Delta(const Counters& start, const Counters& now) {
  if (now.requests < start.requests || now.http_5xx < start.http_5xx ||
      now.connect_failures < start.connect_failures || now.ws_abnormal < start.ws_abnormal) {
    return std::nullopt;
  }
  return Counters{now.requests - start.requests, now.http_5xx - start.http_5xx,
                  now.connect_failures - start.connect_failures,
                  now.ws_abnormal - start.ws_abnormal};
}

Verdict Judge(const Side& canary, const Side& baseline, double window_minutes, double bake_minutes,
              const v1::RolloutPolicy& policy, RememberedBaseline& remembered) {
  Verdict v;
  const double min_requests = static_cast<double>(policy.min_requests());
  const bool canary_waiting = canary.sum.requests < min_requests || canary.nodes == 0;
  const bool baseline_trusted =
      baseline.nodes > 0 && baseline.sum.requests >= min_requests && baseline.sum.requests > 0;
  const auto ratio = [](double errors, double requests) {
    return requests > 0 ? errors / requests : 0.0;
  };

  // Ratio gates.
  struct RatioGate {
    const char* name;
    double canary_errors;
    double baseline_errors;
    double floor;
    double relative;
    std::optional<double>& remembered;
  };
  RatioGate ratio_gates[] = {
      {"http_5xx", canary.sum.http_5xx, baseline.sum.http_5xx, policy.http_5xx_floor(),
       policy.http_5xx_relative(), remembered.http_5xx},
      {"connect_failure", canary.sum.connect_failures, baseline.sum.connect_failures,
       policy.connect_failure_floor(), policy.connect_failure_relative(),
       remembered.connect_failure},
  };
  for (RatioGate& g : ratio_gates) {
    double base = 0;
    bool trusted = false;
    if (baseline_trusted) {
      base = ratio(g.baseline_errors, baseline.sum.requests);
      g.remembered = base;
      trusted = true;
    } else if (g.remembered) {
      base = *g.remembered;
      trusted = true;
    }
    v.gates.push_back(Gate(g.name, ratio(g.canary_errors, canary.sum.requests), canary.sum.requests,
                           base, baseline_trusted ? baseline.sum.requests : 0, trusted, g.floor,
                           g.relative, canary_waiting));
    if (canary_waiting) v.waiting = true;
  }

  // The WebSocket rate gate, over max(window, bake) per node.
  const double minutes = std::max(window_minutes, bake_minutes);
  const double canary_nm = canary.nodes * minutes;
  const double baseline_nm = baseline.nodes * minutes;
  double ws_base = 0;
  bool ws_trusted = false;
  if (baseline_trusted && baseline_nm > 0) {
    ws_base = baseline.sum.ws_abnormal / baseline_nm;
    remembered.ws_abnormal_close = ws_base;
    ws_trusted = true;
  } else if (remembered.ws_abnormal_close) {
    ws_base = *remembered.ws_abnormal_close;
    ws_trusted = true;
  }
  v.gates.push_back(Gate(
      "ws_abnormal_close", canary_nm > 0 ? canary.sum.ws_abnormal / canary_nm : 0, canary_nm,
      ws_base, baseline_trusted ? baseline_nm : 0, ws_trusted, policy.ws_abnormal_close_floor(),
      policy.ws_abnormal_close_relative(), canary.nodes == 0));
  if (canary.nodes == 0) v.waiting = true;

  for (const v1::GateValue& g : v.gates) {
    if (g.verdict() == "failing" && !v.failed) {
      v.failed = true;
      v.failure = Describe(g, g.gate() != "ws_abnormal_close");
    }
  }
  return v;
}

}  // namespace onedomain::controlplane::rollout
