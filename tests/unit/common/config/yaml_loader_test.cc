#include "common/config/yaml_loader.h"

#include <gtest/gtest.h>

#include <map>

#include "common/config/validation.h"
#include "onedomain/v1/bootstrap.pb.h"
#include "onedomain/v1/snapshot.pb.h"

namespace onedomain::config {
namespace {

EnvLookup FakeEnv(std::map<std::string, std::string> vars = {}) {
  return [vars = std::move(vars)](const std::string& name) -> std::optional<std::string> {
    auto it = vars.find(name);
    if (it == vars.end()) return std::nullopt;
    return it->second;
  };
}

// Loads `yaml` as a bootstrap named "dp.yaml", then validates it the way --check-config does.
absl::Status LoadAndValidate(const std::string& yaml, v1::DataplaneBootstrap& out,
                             const EnvLookup& env = FakeEnv()) {
  SourceMap map("dp.yaml");
  absl::Status s = YamlToMessage(yaml, "dp.yaml", out, &map, env);
  if (!s.ok()) return s;
  return map.Annotate(ValidateDataplaneBootstrap(out));
}

std::string Message(const absl::Status& s) { return std::string(s.message()); }

// Asserts the error names the file and line, and contains every fragment.
void ExpectError(const absl::Status& s, int line, std::vector<std::string> fragments) {
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  const std::string m = Message(s);
  EXPECT_NE(m.find("dp.yaml:" + std::to_string(line) + ":"), std::string::npos)
      << "expected line " << line << " in: " << m;
  for (const auto& f : fragments) {
    EXPECT_NE(m.find(f), std::string::npos) << "expected '" << f << "' in: " << m;
  }
}

constexpr char kGood[] = R"(node:
  id: dp-1
admin:
  port: 0
snapshot:
  site:
    origins: ["https://amir.hirecj.ai"]
    cookie_domain: .hirecj.ai
  listeners:
    - name: main
      port: 0
      limits:
        header_timeout: 250ms
  clusters:
    - name: agents
      endpoints: ["${AGENTS_SERVICE_URL:-http://127.0.0.1:8000}"]
      lbPolicy: least_request
      connect_timeout: 1m30s
  routes:
    - name: api
      match: {prefix: /api/v1/}
      cluster: agents
    - name: ws
      match: {prefix: /ws/}
      cluster: agents
      websocket: true
)";

TEST(YamlLoader, GoodFileLoads) {
  v1::DataplaneBootstrap b;
  ASSERT_TRUE(LoadAndValidate(kGood, b).ok()) << LoadAndValidate(kGood, b);
  EXPECT_EQ(b.node().id(), "dp-1");
  EXPECT_TRUE(b.admin().has_port());
  EXPECT_EQ(b.admin().port(), 0u);
  const auto& c = b.snapshot().clusters(0);
  EXPECT_EQ(c.endpoints(0).host(), "127.0.0.1");
  EXPECT_EQ(c.endpoints(0).port(), 8000u);
  EXPECT_EQ(c.lb_policy(), v1::LB_POLICY_LEAST_REQUEST);  // camelCase key, short enum name
  EXPECT_EQ(c.connect_timeout().seconds(), 90);
  EXPECT_EQ(b.snapshot().listeners(0).limits().header_timeout().nanos(), 250000000);
  EXPECT_TRUE(b.snapshot().routes(1).websocket());
}

TEST(YamlLoader, EnvironmentPointsTheCluster) {
  v1::DataplaneBootstrap b;
  auto env = FakeEnv({{"AGENTS_SERVICE_URL", "http://agents-service:8000"}});
  ASSERT_TRUE(LoadAndValidate(kGood, b, env).ok());
  EXPECT_EQ(b.snapshot().clusters(0).endpoints(0).host(), "agents-service");
  EXPECT_EQ(b.snapshot().clusters(0).endpoints(0).port(), 8000u);
}

TEST(YamlLoader, UnsetVariableWithoutDefaultNamesItAndTheLine) {
  v1::DataplaneBootstrap b;
  ExpectError(LoadAndValidate("node:\n  id: ${NODE_NAME}\n", b), 2,
              {"node.id", "NODE_NAME is not set"});
}

TEST(YamlLoader, UnknownKeyNamesFileLineAndKey) {
  v1::DataplaneBootstrap b;
  ExpectError(LoadAndValidate("node:\n  id: a\n  zoen: eu\n", b), 3,
              {"node.zoen", "unknown key 'zoen'", "expected one of: id, pod, zone"});
}

TEST(YamlLoader, UnknownTopLevelKey) {
  v1::DataplaneBootstrap b;
  ExpectError(LoadAndValidate("workers: 2\nlisteners: []\n", b), 2, {"unknown key 'listeners'"});
}

TEST(YamlLoader, WrongTypeNamesTheKey) {
  v1::DataplaneBootstrap b;
  ExpectError(LoadAndValidate("workers: two\n", b), 1, {"workers", "expected a whole number"});
  ExpectError(LoadAndValidate("admin: 9901\n", b), 1, {"admin", "expected a mapping"});
  ExpectError(LoadAndValidate("snapshot:\n  listeners: {name: x}\n", b), 2,
              {"snapshot.listeners", "expected a list"});
  ExpectError(LoadAndValidate("access_log:\n  enabled: yes-please\n", b), 2,
              {"access_log.enabled", "expected true or false"});
}

TEST(YamlLoader, NegativeAndOverflowingNumbers) {
  v1::DataplaneBootstrap b;
  ExpectError(LoadAndValidate("workers: -1\n", b), 1, {"workers"});
  ExpectError(LoadAndValidate("workers: 99999999999\n", b), 1, {"workers"});
}

TEST(YamlLoader, PortOutOfRange) {
  v1::DataplaneBootstrap b;
  const std::string yaml = std::string(kGood) + "";
  std::string bad = yaml;
  bad.replace(bad.find("admin:\n  port: 0"), 16, "admin:\n  port: 70000");
  ExpectError(LoadAndValidate(bad, b), 4, {"admin.port", "must be 0..65535, got 70000"});
}

TEST(YamlLoader, EndpointPortOutOfRangeIsReportedAtItsLine) {
  v1::DataplaneBootstrap b;
  std::string bad = kGood;
  bad.replace(bad.find("\"${AGENTS_SERVICE_URL:-http://127.0.0.1:8000}\""), 46,
              "{host: 127.0.0.1, port: 0}");
  ExpectError(LoadAndValidate(bad, b), 16,
              {"snapshot.clusters[0].endpoints[0].port", "must be 1..65535, got 0"});
}

TEST(YamlLoader, MissingRequiredFieldReportedAtItsParent) {
  v1::DataplaneBootstrap b;
  std::string bad = kGood;
  bad.replace(bad.find("      cluster: agents\n    - name: ws"), 22, "");
  ExpectError(LoadAndValidate(bad, b), 20, {"snapshot.routes[0].cluster", "required"});
}

TEST(YamlLoader, StaticModeRequiresSnapshot) {
  v1::DataplaneBootstrap b;
  ExpectError(LoadAndValidate("node:\n  id: a\n", b), 1, {"snapshot", "required in static mode"});
}

TEST(YamlLoader, BadDuration) {
  v1::DataplaneBootstrap b;
  ExpectError(LoadAndValidate("drain:\n  delay: 5\n", b), 2,
              {"drain.delay", "expected a duration"});
  ExpectError(LoadAndValidate("drain:\n  delay: -5s\n", b), 2, {"drain.delay", "non-negative"});
  ExpectError(LoadAndValidate("drain:\n  delay: 5 parsecs\n", b), 2, {"drain.delay"});
}

TEST(YamlLoader, DurationForms) {
  long long s = 0;
  int n = 0;
  ASSERT_TRUE(ParseDurationText("1.5s", &s, &n).ok());
  EXPECT_EQ(s, 1);
  EXPECT_EQ(n, 500000000);
  ASSERT_TRUE(ParseDurationText("1h30m", &s, &n).ok());
  EXPECT_EQ(s, 5400);
  ASSERT_TRUE(ParseDurationText("0", &s, &n).ok());
  EXPECT_EQ(s, 0);
  ASSERT_TRUE(ParseDurationText("10us", &s, &n).ok());
  EXPECT_EQ(n, 10000);
  EXPECT_FALSE(ParseDurationText("", &s, &n).ok());
  EXPECT_FALSE(ParseDurationText("s", &s, &n).ok());
  EXPECT_FALSE(ParseDurationText("5d", &s, &n).ok());
}

TEST(YamlLoader, UnknownEnumListsChoices) {
  v1::DataplaneBootstrap b;
  std::string bad = kGood;
  bad.replace(bad.find("least_request"), 13, "random");
  ExpectError(LoadAndValidate(bad, b), 17,
              {"lb_policy", "unknown value 'random'", "round_robin, least_request"});
}

TEST(YamlLoader, DuplicateKey) {
  v1::DataplaneBootstrap b;
  ExpectError(LoadAndValidate("workers: 1\nworkers: 2\n", b), 2,
              {"workers", "given twice (first on line 1)"});
}

TEST(YamlLoader, SyntaxError) {
  v1::DataplaneBootstrap b;
  auto s = LoadAndValidate("node:\n  id: [a\n", b);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(Message(s).find("dp.yaml:"), std::string::npos);
  EXPECT_NE(Message(s).find("YAML syntax error"), std::string::npos) << s;
}

TEST(YamlLoader, EndpointShorthandErrors) {
  v1::DataplaneBootstrap b;
  std::string bad = kGood;
  bad.replace(bad.find("\"${AGENTS_SERVICE_URL:-http://127.0.0.1:8000}\""), 46, "no-port-here");
  ExpectError(LoadAndValidate(bad, b), 16,
              {"snapshot.clusters[0].endpoints[0]", "expected host:port"});
  bad = kGood;
  bad.replace(bad.find("\"${AGENTS_SERVICE_URL:-http://127.0.0.1:8000}\""), 46, "https://x:443");
  ExpectError(LoadAndValidate(bad, b), 16, {"tls"});
  v1::DataplaneBootstrap ok;
  bad = kGood;
  bad.replace(bad.find("\"${AGENTS_SERVICE_URL:-http://127.0.0.1:8000}\""), 46, "\"[::1]:9000\"");
  ASSERT_TRUE(LoadAndValidate(bad, ok).ok());
  EXPECT_EQ(ok.snapshot().clusters(0).endpoints(0).host(), "::1");
}

TEST(YamlLoader, EmptyDocumentIsEmptyMessage) {
  v1::Snapshot s;
  EXPECT_TRUE(YamlToMessage("", "x.yaml", s, nullptr, FakeEnv()).ok());
  EXPECT_EQ(s.ByteSizeLong(), 0u);
}

TEST(YamlLoader, RootMustBeAMapping) {
  v1::Snapshot s;
  auto st = YamlToMessage("- a\n- b\n", "x.yaml", s, nullptr, FakeEnv());
  ASSERT_FALSE(st.ok());
  EXPECT_NE(Message(st).find("x.yaml:1:1"), std::string::npos) << st;
}

TEST(YamlLoader, MissingFileNamesIt) {
  v1::Snapshot s;
  auto st = LoadYamlFile("/nonexistent/od.yaml", s, nullptr, FakeEnv());
  ASSERT_FALSE(st.ok());
  EXPECT_NE(Message(st).find("/nonexistent/od.yaml"), std::string::npos);
}

TEST(YamlLoader, NullValuesLeaveFieldsUnset) {
  v1::DataplaneBootstrap b;
  SourceMap map("dp.yaml");
  ASSERT_TRUE(YamlToMessage("node:\nworkers:\n", "dp.yaml", b, &map, FakeEnv()).ok());
  EXPECT_TRUE(b.has_node());
  EXPECT_EQ(b.workers(), 0u);
}

}  // namespace
}  // namespace onedomain::config
