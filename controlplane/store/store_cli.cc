#include "controlplane/store/store_cli.h"

#include <iostream>
#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "common/strings/strings.h"
#include "controlplane/store/file_store.h"
#ifdef ONEDOMAIN_HAVE_ETCD
#include "controlplane/store/etcd_store.h"
#endif

namespace onedomain::controlplane {
namespace {

constexpr int kExitUsage = 2;

void PrintStoreUsage() {
  std::cout
      << R"(usage: controlplane store copy --from FILE_DIR --to etcd://HOST:PORT[,HOST:PORT...]/PREFIX/
                               [--ca-file FILE [--cert-file FILE --key-file FILE]]

copy   move a file store's history into etcd: kept snapshots, the whole audit log and the
       version floor, under PREFIX (default /onedomain/). Idempotent: run it again after an
       interruption; keys already holding the same content are skipped. With --ca-file the
       etcd endpoints are https. Stop the file-store control plane first.
Exit codes: 0 ok, 1 error (named), 2 usage.
)";
}

int Usage(const std::string& error) {
  std::cerr << "controlplane store: " << error << " (see controlplane store --help)\n";
  return kExitUsage;
}

}  // namespace

int RunStoreCli(int argc, char** argv) {
  std::string from, to, ca_file, cert_file, key_file;
  std::string verb;
  for (int i = 0; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&](std::string& out) {
      if (i + 1 >= argc) return false;
      out = argv[++i];
      return true;
    };
    if (arg == "--help" || arg == "-h") {
      PrintStoreUsage();
      return 0;
    }
    if (arg == "--from") {
      if (!value(from)) return Usage("--from needs a directory");
    } else if (arg == "--to") {
      if (!value(to)) return Usage("--to needs etcd://HOST:PORT/PREFIX/");
    } else if (arg == "--ca-file") {
      if (!value(ca_file)) return Usage("--ca-file needs a file");
    } else if (arg == "--cert-file") {
      if (!value(cert_file)) return Usage("--cert-file needs a file");
    } else if (arg == "--key-file") {
      if (!value(key_file)) return Usage("--key-file needs a file");
    } else if (verb.empty() && !arg.starts_with("-")) {
      verb = arg;
    } else {
      return Usage(str::Cat("unknown argument '", arg, "'"));
    }
  }
  if (verb != "copy")
    return Usage(verb.empty() ? "a verb is required (copy)"
                              : str::Cat("unknown verb '", verb, "'"));
  if (from.empty() || to.empty()) return Usage("copy needs --from FILE_DIR and --to etcd://...");
  std::string_view rest = to;
  if (!str::ConsumePrefix(rest, "etcd://")) {
    return Usage(str::Cat("--to '", to, "' must start with etcd://"));
  }
  std::string prefix = "/onedomain/";
  if (const size_t slash = rest.find('/'); slash != std::string_view::npos) {
    prefix = std::string(rest.substr(slash));
    rest = rest.substr(0, slash);
    if (prefix == "/") prefix = "/onedomain/";
    if (!prefix.ends_with("/")) prefix += '/';
  }
  if (rest.empty()) return Usage(str::Cat("--to '", to, "' names no HOST:PORT"));
  if (cert_file.empty() != key_file.empty()) {
    return Usage("--cert-file and --key-file go together");
  }
#ifndef ONEDOMAIN_HAVE_ETCD
  std::cerr << "controlplane store copy: this controlplane was built without the etcd store "
               "(install golang-etcd-server-dev with scripts/install-deps.sh and rebuild)\n";
  return 1;
#else
  // Open must not prune: keep_versions is only applied on commit, and nothing commits here.
  auto source = FileStore::Open(from, 2);
  if (!source.ok()) {
    std::cerr << "controlplane store copy: --from " << from << ": " << source.status().message()
              << "\n";
    return 1;
  }
  EtcdStore::Options options;
  for (std::string_view hostport : str::Split(rest, ',')) {
    options.endpoints.push_back(str::Cat(ca_file.empty() ? "http://" : "https://", hostport));
  }
  options.prefix = prefix;
  options.ca_file = ca_file;
  options.cert_file = cert_file;
  options.key_file = key_file;
  auto target = EtcdStore::Open(options);
  if (!target.ok()) {
    std::cerr << "controlplane store copy: --to " << to << ": " << target.status().message()
              << "\n";
    return 1;
  }
  std::map<uint64_t, v1::AuditRecord> audit;
  for (v1::AuditRecord& r : (*source)->History(0)) audit.emplace(r.version(), std::move(r));
  std::map<uint64_t, bool> versions;  // version -> has a kept snapshot
  for (uint64_t v : (*source)->KeptVersions()) versions[v] = true;
  for (const auto& [v, r] : audit) versions.emplace(v, false);
  int written = 0;
  int skipped = 0;
  for (const auto& [version, kept] : versions) {
    std::optional<v1::Snapshot> snapshot;
    if (kept) {
      auto s = (*source)->Get(version);
      if (!s.ok()) {
        std::cerr << "controlplane store copy: " << s.status().message() << "\n";
        return 1;
      }
      snapshot = std::move(*s);
    }
    const auto it = audit.find(version);
    bool wrote = false;
    if (absl::Status s =
            (*target)->ImportVersion(version, snapshot ? &*snapshot : nullptr,
                                     it != audit.end() ? &it->second : nullptr, &wrote);
        !s.ok()) {
      std::cerr << "controlplane store copy: version " << version << ": " << s.message() << "\n";
      return 1;
    }
    (wrote ? written : skipped) += 1;
  }
  const uint64_t latest = (*source)->latest_version();
  const uint64_t floor = (*source)->next_version() - 1;
  if (absl::Status s = (*target)->ImportHead(latest, floor > latest ? floor : 0); !s.ok()) {
    std::cerr << "controlplane store copy: " << s.message() << "\n";
    return 1;
  }
  std::cout << "copied " << from << " to " << to << ": " << versions.size() << " versions ("
            << written << " written, " << skipped << " already there), latest version " << latest
            << "\n";
  return 0;
#endif
}

}  // namespace onedomain::controlplane
