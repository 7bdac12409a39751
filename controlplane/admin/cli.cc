#include "controlplane/admin/cli.h"

#include <grpcpp/grpcpp.h>

#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>
#include <thread>

#include "common/config/load.h"
#include "common/config/yaml_loader.h"
#include "common/strings/strings.h"
#include "controlplane/rollout/rollout_math.h"
#include "controlplane/server/time_text.h"
#include "google/protobuf/util/json_util.h"
#include "google/protobuf/util/time_util.h"
#include "onedomain/v1/admin.grpc.pb.h"
#include "onedomain/v1/snapshot.pb.h"

namespace onedomain::controlplane {
namespace {

constexpr int kExitOther = 1;
constexpr int kExitUsage = 2;
constexpr int kExitInvalid = 3;
constexpr int kExitAuth = 4;
constexpr int kExitConflict = 5;
constexpr int kExitUnavailable = 6;
constexpr int kExitRolloutFailed = 7;  // `rollout status -w`: it ended other than succeeded

struct Options {
  std::string server = "127.0.0.1:18000";
  std::string token_file;
  std::string ca_file;
  std::string output = "table";
  std::string file;
  std::string reason;
  bool dry_run = false;
  uint64_t expected_version = 0;
  uint64_t version = 0;
  uint32_t limit = 0;
  int timeout_seconds = 15;
  // Delivery: --rollout / --now (neither: the control plane's default), --supersede, and
  // policy overrides for this change.
  bool rollout = false;
  bool now = false;
  bool supersede = false;
  bool watch = false;
  int watch_seconds = 3600;
  v1::RolloutPolicy policy;
  std::vector<std::string> positional;  // verb first
};

int Usage(const std::string& message) {
  std::cerr << "controlplane admin: " << message << "\n(see `controlplane admin --help`)\n";
  return kExitUsage;
}

std::string ReadAll(const std::string& path, bool* ok) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream buf;
  buf << in.rdbuf();
  *ok = static_cast<bool>(in);
  return buf.str();
}

int ExitCodeFor(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK:
      return 0;
    case grpc::StatusCode::INVALID_ARGUMENT:
    case grpc::StatusCode::NOT_FOUND:
      return kExitInvalid;
    case grpc::StatusCode::UNAUTHENTICATED:
    case grpc::StatusCode::PERMISSION_DENIED:
      return kExitAuth;
    case grpc::StatusCode::FAILED_PRECONDITION:
    case grpc::StatusCode::ABORTED:
      return kExitConflict;
    case grpc::StatusCode::UNAVAILABLE:
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return kExitUnavailable;
    default:
      return kExitOther;
  }
}

int Fail(const grpc::Status& status) {
  static const std::map<int, const char*> kNames = {
      {1, "CANCELLED"},           {2, "UNKNOWN"},
      {3, "INVALID_ARGUMENT"},    {4, "DEADLINE_EXCEEDED"},
      {5, "NOT_FOUND"},           {6, "ALREADY_EXISTS"},
      {7, "PERMISSION_DENIED"},   {8, "RESOURCE_EXHAUSTED"},
      {9, "FAILED_PRECONDITION"}, {10, "ABORTED"},
      {11, "OUT_OF_RANGE"},       {12, "UNIMPLEMENTED"},
      {13, "INTERNAL"},           {14, "UNAVAILABLE"},
      {15, "DATA_LOSS"},          {16, "UNAUTHENTICATED"}};
  const auto it = kNames.find(status.error_code());
  std::cerr << "error: " << (it != kNames.end() ? it->second : "UNKNOWN") << ": "
            << status.error_message() << "\n";
  return ExitCodeFor(status.error_code());
}

std::string ToJson(const google::protobuf::Message& message) {
  std::string json;
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = true;
  options.preserve_proto_field_names = true;
  (void)google::protobuf::util::MessageToJsonString(message, &json, options);
  return json;
}

// Prints rows as aligned columns.
void PrintTable(const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> widths;
  for (const auto& row : rows) {
    for (size_t i = 0; i < row.size(); ++i) {
      if (widths.size() <= i) widths.push_back(0);
      widths[i] = std::max(widths[i], row[i].size());
    }
  }
  for (const auto& row : rows) {
    std::string line;
    for (size_t i = 0; i < row.size(); ++i) {
      line += row[i];
      if (i + 1 < row.size()) line += std::string(widths[i] - row[i].size() + 2, ' ');
    }
    std::cout << line << "\n";
  }
}

void PrintChange(const Options& opts, const v1::ChangeResponse& response) {
  if (opts.output == "json") {
    std::cout << ToJson(response) << "\n";
    return;
  }
  std::cout << (response.dry_run() ? "dry run: would commit version " : "committed version ")
            << response.version() << "\n";
  for (const auto& line : response.diff()) std::cout << "  " << line << "\n";
}

// Parses the words after "admin" into options; returns a usage error or "".
std::string ParseArgs(int argc, char** argv, Options& opts) {
  auto need = [&](int& i, std::string_view flag) -> std::optional<std::string> {
    if (i + 1 >= argc) return std::nullopt;
    (void)flag;
    return std::string(argv[++i]);
  };
  for (int i = 0; i < argc; ++i) {
    const std::string_view arg = argv[i];
    std::optional<std::string> value;
    auto take = [&](std::string& out) -> bool {
      value = need(i, arg);
      if (!value) return false;
      out = *value;
      return true;
    };
    if (arg == "--server") {
      if (!take(opts.server)) return "--server needs HOST:PORT";
    } else if (arg == "--token-file") {
      if (!take(opts.token_file)) return "--token-file needs a path";
    } else if (arg == "--ca-file") {
      if (!take(opts.ca_file)) return "--ca-file needs a path";
    } else if (arg == "-o" || arg == "--output") {
      if (!take(opts.output) || (opts.output != "table" && opts.output != "json")) {
        return "-o takes table or json";
      }
    } else if (arg == "-f" || arg == "--file") {
      if (!take(opts.file)) return "-f needs a file";
    } else if (arg == "--reason") {
      if (!take(opts.reason)) return "--reason needs text";
    } else if (arg == "--dry-run") {
      opts.dry_run = true;
    } else if (arg == "--rollout") {
      opts.rollout = true;
    } else if (arg == "--now") {
      opts.now = true;
    } else if (arg == "--supersede") {
      opts.supersede = true;
    } else if (arg == "-w" || arg == "--watch") {
      opts.watch = true;
    } else if (arg == "--waves") {
      std::string text;
      if (!take(text) || text.empty()) return "--waves needs a list like 1,10%,50%,100%";
      opts.policy.clear_waves();
      for (std::string_view w : str::Split(text, ',')) opts.policy.add_waves(std::string(w));
    } else if (arg == "--bake" || arg == "--budget") {
      std::string text;
      if (!take(text)) return str::Cat(arg, " needs a duration like 30s");
      long long secs = 0;
      int nanos = 0;
      if (absl::Status st = config::ParseDurationText(text, &secs, &nanos); !st.ok()) {
        return str::Cat(arg, ": ", st.message());
      }
      google::protobuf::Duration* d =
          arg == "--bake" ? opts.policy.mutable_bake() : opts.policy.mutable_budget();
      d->set_seconds(secs);
      d->set_nanos(nanos);
    } else if (arg == "--min-requests" || arg == "--watch-for") {
      std::string text;
      if (!take(text)) return str::Cat(arg, " needs a number");
      uint64_t n = 0;
      if (!str::ParseInt(text, n)) return str::Cat(arg, " needs a number, got '", text, "'");
      if (arg == "--min-requests") opts.policy.set_min_requests(n);
      if (arg == "--watch-for") opts.watch_seconds = static_cast<int>(n);
    } else if (arg == "--expected-version" || arg == "--version" || arg == "--limit" ||
               arg == "--timeout") {
      std::string text;
      if (!take(text)) return str::Cat(arg, " needs a number");
      uint64_t n = 0;
      if (!str::ParseInt(text, n)) return str::Cat(arg, " needs a number, got '", text, "'");
      if (arg == "--expected-version") opts.expected_version = n;
      if (arg == "--version") opts.version = n;
      if (arg == "--limit") opts.limit = static_cast<uint32_t>(n);
      if (arg == "--timeout") opts.timeout_seconds = static_cast<int>(n);
    } else if (arg.starts_with("-") && arg.size() > 1) {
      return str::Cat("unknown flag ", arg);
    } else {
      opts.positional.emplace_back(arg);
    }
  }
  return "";
}

// The bearer token: --token-file, else $ONEDOMAIN_ADMIN_TOKEN_FILE, else $ONEDOMAIN_ADMIN_TOKEN.
std::optional<std::string> LoadToken(const Options& opts, std::string* error) {
  std::string file = opts.token_file;
  if (file.empty()) {
    if (const char* f = std::getenv("ONEDOMAIN_ADMIN_TOKEN_FILE")) file = f;
  }
  if (!file.empty()) {
    bool ok = false;
    const std::string text = ReadAll(file, &ok);
    if (!ok) {
      *error = str::Cat("cannot read token file ", file);
      return std::nullopt;
    }
    // A tokens file line `NAME ROLE TOKEN` or a bare token.
    for (std::string_view line : str::Split(text, '\n')) {
      line = str::StripWhitespace(line);
      if (line.empty() || line.front() == '#') continue;
      const size_t last_space = line.find_last_of(" \t");
      return std::string(last_space == std::string_view::npos ? line : line.substr(last_space + 1));
    }
    *error = str::Cat("token file ", file, " holds no token");
    return std::nullopt;
  }
  if (const char* t = std::getenv("ONEDOMAIN_ADMIN_TOKEN"); t != nullptr && *t != '\0') {
    return std::string(t);
  }
  return std::string();  // no token: the server answers UNAUTHENTICATED, said plainly
}

std::string Fixed(double v, int digits) {
  char buf[48];
  std::snprintf(buf, sizeof(buf), "%.*f", digits, v);
  return buf;
}

void PrintRollout(const Options& opts, const v1::RolloutStatus& r) {
  if (opts.output == "json") {
    std::cout << ToJson(r) << "\n";
    return;
  }
  if (r.state() == v1::ROLLOUT_STATE_NONE) {
    std::cout << "no rollout\n";
    return;
  }
  std::cout << "rollout of version " << r.version() << " (base " << r.base_version()
            << "): " << rollout::StateName(r.state()) << ", wave " << r.wave() + 1 << "/"
            << r.waves_size() << ", baked " << Fixed(r.baked_seconds(), 1) << "s of "
            << Fixed(r.bake_seconds(), 1) << "s; nodes on " << r.version() << ": "
            << r.nodes_on_version() << ", on " << r.base_version() << ": " << r.nodes_on_base()
            << ", other: " << r.nodes_other() << "\n";
  std::cout << "  by " << r.who() << (r.reason().empty() ? "" : ": " + r.reason()) << "\n";
  std::vector<std::string> waves;
  for (const auto& w : r.waves()) waves.push_back(str::Cat(w.spec(), "=", w.state()));
  std::cout << "  waves: " << str::Join(waves, ", ") << "\n";
  for (const auto& g : r.gates()) {
    const bool rate = g.gate() == "ws_abnormal_close";
    const auto show = [rate](double v) {
      return rate ? Fixed(v, 2) + "/min" : Fixed(v * 100, 2) + "%";
    };
    std::cout << "  gate " << g.gate() << ": " << g.verdict() << " canary " << show(g.canary())
              << " (" << Fixed(g.canary_weight(), rate ? 2 : 0) << (rate ? " node-min" : " req")
              << ") baseline " << show(g.baseline()) << " ("
              << Fixed(g.baseline_weight(), rate ? 2 : 0) << (rate ? " node-min" : " req")
              << ") floor " << show(g.floor()) << " x" << Fixed(g.relative(), 1) << "\n";
  }
  if (!r.detail().empty()) std::cout << "  " << r.detail() << "\n";
  if (r.revert_version() != 0) std::cout << "  reverted by version " << r.revert_version() << "\n";
}

int RunRolloutVerb(const Options& opts, v1::Admin::Stub& stub, const std::string& token) {
  if (opts.positional.size() != 2) {
    return Usage("rollout needs one of status, promote, pause, resume, abort");
  }
  const std::string& what = opts.positional[1];
  auto context = [&opts, &token](grpc::ClientContext& c) {
    c.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(opts.timeout_seconds));
    if (!token.empty()) c.AddMetadata("authorization", "Bearer " + token);
  };
  if (what == "status") {
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(opts.watch_seconds);
    std::string last_key;
    for (;;) {
      grpc::ClientContext c;
      context(c);
      v1::RolloutStatus r;
      grpc::Status s = stub.GetRollout(&c, v1::GetRolloutRequest(), &r);
      if (!s.ok()) return Fail(s);
      // A rolled-back or aborted rollout has ended once `finished` is set: until then its
      // revert is being committed and the revert version is not known yet.
      const bool active = r.state() == v1::ROLLOUT_STATE_RUNNING ||
                          r.state() == v1::ROLLOUT_STATE_PAUSED ||
                          (r.state() != v1::ROLLOUT_STATE_NONE && !r.has_finished());
      if (!opts.watch) {
        PrintRollout(opts, r);
        return 0;
      }
      // Watching: print when the state or the wave changes, and the gates once a second.
      const std::string key = str::Cat(r.version(), "/", static_cast<int>(r.state()), "/", r.wave(),
                                       "/", r.has_finished());
      if (key != last_key) {
        if (opts.output != "json" && active) {
          std::cout << "wave " << r.wave() + 1 << "/" << r.waves_size() << " ("
                    << r.waves(static_cast<int>(r.wave())).spec() << ", "
                    << r.waves(static_cast<int>(r.wave())).nodes() << " nodes)\n";
        }
        PrintRollout(opts, r);
        std::cout.flush();
        last_key = key;
      }
      if (!active) {
        return r.state() == v1::ROLLOUT_STATE_SUCCEEDED || r.state() == v1::ROLLOUT_STATE_NONE
                   ? 0
                   : kExitRolloutFailed;
      }
      if (std::chrono::steady_clock::now() > until) {
        std::cerr << "error: still " << rollout::StateName(r.state()) << " after --watch-for "
                  << opts.watch_seconds << "s\n";
        return kExitOther;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(250));
    }
  }
  v1::ControlRolloutRequest request;
  if (what == "promote") {
    request.set_action(v1::ControlRolloutRequest::PROMOTE);
  } else if (what == "pause") {
    request.set_action(v1::ControlRolloutRequest::PAUSE);
  } else if (what == "resume") {
    request.set_action(v1::ControlRolloutRequest::RESUME);
  } else if (what == "abort") {
    request.set_action(v1::ControlRolloutRequest::ABORT);
  } else {
    return Usage(
        str::Cat("rollout: unknown action '", what, "' (status, promote, pause, resume, abort)"));
  }
  request.set_reason(opts.reason);
  grpc::ClientContext c;
  context(c);
  v1::RolloutStatus r;
  grpc::Status s = stub.ControlRollout(&c, request, &r);
  if (!s.ok()) return Fail(s);
  PrintRollout(opts, r);
  return 0;
}

}  // namespace

void PrintAdminUsage() {
  std::cout <<
      R"(usage: controlplane admin [FLAGS] VERB [ARGS]

Verbs:
  get [--version N]                      print the committed snapshot (latest or version N)
  apply -f FILE [--dry-run]              replace the whole snapshot with FILE (YAML)
  set-upstream CLUSTER HOST:PORT...      replace one cluster's endpoints
  set-cookie-policy -f FILE              replace the global cookie policy (YAML)
  nodes                                  list data-plane nodes, versions sent/acked/nacked
  history [--limit N]                    committed versions with who, when, why and what
  rollback VERSION                       commit an older version's content again
  rollout status [-w]                    the running (or last) rollout: waves, nodes, gates;
                                         -w prints each change until it ends (exit 0 when it
                                         succeeded, 7 otherwise)
  rollout promote|pause|resume|abort     skip the current bake / stop advancing / go on /
                                         return the canaries to the previous version

Flags:
  --server HOST:PORT        control plane gRPC address (default 127.0.0.1:18000)
  --token-file FILE         file holding the bearer token (a bare token, or a tokens-file
                            line NAME ROLE TOKEN); default $ONEDOMAIN_ADMIN_TOKEN_FILE, else
                            the token in $ONEDOMAIN_ADMIN_TOKEN. Never pass a token as a flag.
  --ca-file FILE            use TLS, trusting this CA bundle
  -o table|json             output format (default table)
  --dry-run                 validate and show the diff, commit nothing
  --expected-version N      apply only if the latest version is N (else exit 5)
  --reason TEXT             recorded in the audit log
  --rollout | --now         deliver a change in canary waves, or to every node at once
                            (--now needs role admin when the default is rollout); neither:
                            the control plane's rollout.default_mode
  --supersede               replace a running rollout instead of being refused (exit 5)
  --waves 1,10%,50%,100%    this change's waves; --bake 30s, --budget 15m, --min-requests N
  --timeout SECONDS         per-call deadline (default 15)

Exit codes: 0 ok, 1 other error, 2 usage, 3 invalid argument or not found,
4 unauthenticated or permission denied, 5 version conflict or a rollout running,
6 control plane unreachable, 7 a watched rollout rolled back, was aborted or superseded.
)";
}

int RunAdminCli(int argc, char** argv) {
  Options opts;
  for (int i = 0; i < argc; ++i) {
    if (std::string_view(argv[i]) == "--help" || std::string_view(argv[i]) == "-h") {
      PrintAdminUsage();
      return 0;
    }
  }
  if (std::string error = ParseArgs(argc, argv, opts); !error.empty()) return Usage(error);
  if (opts.positional.empty()) return Usage("a verb is required");
  const std::string verb = opts.positional[0];

  std::string token_error;
  const std::optional<std::string> token = LoadToken(opts, &token_error);
  if (!token) {
    std::cerr << "error: " << token_error << "\n";
    return kExitUsage;
  }

  std::shared_ptr<grpc::ChannelCredentials> creds = grpc::InsecureChannelCredentials();
  if (!opts.ca_file.empty()) {
    bool ok = false;
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = ReadAll(opts.ca_file, &ok);
    if (!ok) return Usage(str::Cat("cannot read --ca-file ", opts.ca_file));
    creds = grpc::SslCredentials(ssl);
  }
  auto stub = v1::Admin::NewStub(grpc::CreateChannel(opts.server, creds));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::seconds(opts.timeout_seconds));
  if (!token->empty()) context.AddMetadata("authorization", "Bearer " + *token);

  v1::ChangeOptions change;
  change.set_dry_run(opts.dry_run);
  change.set_expected_version(opts.expected_version);
  change.set_reason(opts.reason);
  if (opts.rollout && opts.now) return Usage("--rollout and --now exclude each other");
  if (opts.rollout) change.set_mode(v1::ROLLOUT_MODE_ROLLOUT);
  if (opts.now) change.set_mode(v1::ROLLOUT_MODE_NOW);
  change.set_supersede(opts.supersede);
  if (opts.policy.ByteSizeLong() != 0) *change.mutable_rollout_policy() = opts.policy;

  if (verb == "rollout") {
    return RunRolloutVerb(opts, *stub, *token);
  }

  if (verb == "get") {
    v1::GetConfigRequest request;
    request.set_version(opts.version);
    v1::GetConfigResponse response;
    grpc::Status s = stub->GetConfig(&context, request, &response);
    if (!s.ok()) return Fail(s);
    if (!response.stale().empty()) std::cerr << "warning: stale: " << response.stale() << "\n";
    std::cout << ToJson(response.snapshot()) << "\n";
    return 0;
  }
  if (verb == "apply") {
    if (opts.file.empty()) return Usage("apply needs -f FILE");
    v1::ApplyRequest request;
    if (absl::Status s =
            config::LoadSnapshotFile(opts.file, config::ProcessEnv(), *request.mutable_snapshot());
        !s.ok()) {
      std::cerr << "error: " << s.message() << "\n";
      return kExitInvalid;
    }
    *request.mutable_options() = change;
    v1::ChangeResponse response;
    grpc::Status s = stub->Apply(&context, request, &response);
    if (!s.ok()) return Fail(s);
    PrintChange(opts, response);
    return 0;
  }
  if (verb == "set-upstream") {
    if (opts.positional.size() < 3) return Usage("set-upstream needs CLUSTER HOST:PORT...");
    v1::SetUpstreamRequest request;
    request.set_cluster(opts.positional[1]);
    for (size_t i = 2; i < opts.positional.size(); ++i) {
      std::string host;
      uint32_t port = 0;
      if (absl::Status s = config::ParseEndpointText(opts.positional[i], &host, &port); !s.ok()) {
        return Usage(str::Cat("endpoint ", i - 1, ": ", std::string(s.message())));
      }
      v1::Endpoint* e = request.add_endpoints();
      e->set_host(host);
      e->set_port(port);
    }
    *request.mutable_options() = change;
    v1::ChangeResponse response;
    grpc::Status s = stub->SetUpstream(&context, request, &response);
    if (!s.ok()) return Fail(s);
    PrintChange(opts, response);
    return 0;
  }
  if (verb == "set-cookie-policy") {
    if (opts.file.empty()) return Usage("set-cookie-policy needs -f FILE");
    v1::SetCookiePolicyRequest request;
    config::SourceMap map(opts.file);
    if (absl::Status s = config::LoadYamlFile(opts.file, *request.mutable_cookie_policy(), &map,
                                              config::ProcessEnv());
        !s.ok()) {
      std::cerr << "error: " << s.message() << "\n";
      return kExitInvalid;
    }
    *request.mutable_options() = change;
    v1::ChangeResponse response;
    grpc::Status s = stub->SetCookiePolicy(&context, request, &response);
    if (!s.ok()) return Fail(s);
    PrintChange(opts, response);
    return 0;
  }
  if (verb == "rollback") {
    uint64_t version = 0;
    if (opts.positional.size() != 2 || !str::ParseInt(opts.positional[1], version)) {
      return Usage("rollback needs one VERSION number");
    }
    v1::RollbackRequest request;
    request.set_version(version);
    *request.mutable_options() = change;
    v1::ChangeResponse response;
    grpc::Status s = stub->Rollback(&context, request, &response);
    if (!s.ok()) return Fail(s);
    PrintChange(opts, response);
    return 0;
  }
  if (verb == "nodes") {
    v1::ListNodesResponse response;
    grpc::Status s = stub->ListNodes(&context, v1::ListNodesRequest(), &response);
    if (!s.ok()) return Fail(s);
    if (opts.output == "json") {
      std::cout << ToJson(response) << "\n";
      return 0;
    }
    std::cout << "latest version " << response.latest_version() << ", last known good "
              << response.last_known_good_version();
    // Several replicas (etcd store): say which ones answered, and who holds each node.
    const bool replicas = response.replicas_size() > 1;
    if (replicas) std::cout << ", replicas " << str::Join(response.replicas(), " ");
    std::cout << "\n";
    std::vector<std::vector<std::string>> rows = {{"NODE", "POD", "ZONE", "CONNECTED", "SENT",
                                                   "ACKED", "NACKED", "LAST SEEN", "CONNS",
                                                   "WEBSOCKETS", "UPGRADES"}};
    if (replicas) rows[0].push_back("REPLICA");
    for (const auto& n : response.nodes()) {
      // pod, zone and the NACK text are the node's words: escaped for the terminal.
      rows.push_back(
          {n.node_id(), n.pod().empty() ? "-" : str::EscapeForLog(n.pod(), 64),
           n.zone().empty() ? "-" : str::EscapeForLog(n.zone(), 64), n.connected() ? "yes" : "no",
           str::Cat(n.version_sent()), str::Cat(n.version_acked()),
           n.version_nacked() ? str::Cat(n.version_nacked()) : "-", TimeText(n.last_seen()),
           str::Cat(n.downstream_connections_active()), str::Cat(n.websocket_connections_active()),
           str::Cat(n.websocket_upgrades_total())});
      if (replicas) rows.back().push_back(n.replica().empty() ? "-" : n.replica());
    }
    PrintTable(rows);
    for (const auto& n : response.nodes()) {
      if (n.version_nacked() != 0) {
        std::cout << "NACK " << n.node_id() << " version " << n.version_nacked() << ": "
                  << str::EscapeForLog(n.nack_error(), 1024) << "\n";
      }
      if (!n.divergence().empty()) {
        std::cout << "DIVERGED " << n.node_id() << ": " << n.divergence() << " (content hash "
                  << str::EscapeForLog(n.content_hash(), 64) << "); pushed again\n";
      }
    }
    return 0;
  }
  if (verb == "history") {
    v1::HistoryRequest request;
    request.set_limit(opts.limit);
    v1::HistoryResponse response;
    grpc::Status s = stub->History(&context, request, &response);
    if (!s.ok()) return Fail(s);
    if (!response.stale().empty()) std::cerr << "warning: stale: " << response.stale() << "\n";
    if (opts.output == "json") {
      std::cout << ToJson(response) << "\n";
      return 0;
    }
    std::vector<std::vector<std::string>> rows = {
        {"VERSION", "TIME", "WHO", "METHOD", "DELIVERY", "OUTCOME", "REASON", "CHANGES"}};
    for (const auto& e : response.entries()) {
      rows.push_back({str::Cat(e.version()), TimeText(e.time()), e.who(), e.method(),
                      e.delivery().empty() ? "-" : e.delivery(),
                      e.outcome().empty() ? "-" : e.outcome(),
                      e.reason().empty() ? "-" : e.reason(), str::Join(e.diff(), "; ")});
    }
    PrintTable(rows);
    for (const auto& e : response.entries()) {
      if (!e.outcome_detail().empty()) {
        std::cout << e.outcome() << " " << e.version() << ": " << e.outcome_detail() << "\n";
      }
    }
    return 0;
  }
  return Usage(str::Cat("unknown verb '", verb, "'"));
}

}  // namespace onedomain::controlplane
