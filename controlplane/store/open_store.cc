#include "controlplane/store/open_store.h"

#include "common/config/defaults.h"
#include "common/config/duration.h"
#include "common/strings/strings.h"
#include "controlplane/store/file_store.h"
#ifdef ONEDOMAIN_HAVE_ETCD
#include "controlplane/store/etcd_store.h"
#endif

namespace onedomain::controlplane {

bool HaveEtcdStore() {
#ifdef ONEDOMAIN_HAVE_ETCD
  return true;
#else
  return false;
#endif
}

absl::StatusOr<std::unique_ptr<Store>> OpenStore(const v1::Store& config, StoreObserver observer) {
  const uint32_t keep =
      config.has_keep_versions() ? config.keep_versions() : config::defaults::kKeepVersions;
  if (!config.has_etcd()) {
    const std::string dir =
        config.directory().empty() ? config::defaults::kStoreDirectory : config.directory();
    auto store = FileStore::Open(dir, keep);
    if (!store.ok()) return store.status();
    if (observer.set_up) observer.set_up(true);  // a local directory: up while we run
    return std::unique_ptr<Store>(std::move(*store));
  }
#ifdef ONEDOMAIN_HAVE_ETCD
  const v1::EtcdStore& e = config.etcd();
  EtcdStore::Options options;
  options.endpoints.assign(e.endpoints().begin(), e.endpoints().end());
  if (!e.prefix().empty()) options.prefix = e.prefix();
  options.ca_file = e.ca_file();
  options.cert_file = e.cert_file();
  options.key_file = e.key_file();
  auto ms = [](bool has, const google::protobuf::Duration& d, std::chrono::milliseconds def) {
    return has ? std::chrono::duration_cast<std::chrono::milliseconds>(config::ToChrono(d)) : def;
  };
  options.dial_timeout = ms(e.has_dial_timeout(), e.dial_timeout(), options.dial_timeout);
  options.request_timeout =
      ms(e.has_request_timeout(), e.request_timeout(), options.request_timeout);
  options.keep_versions = keep;
  options.observer = std::move(observer);
  auto store = EtcdStore::Open(std::move(options));
  if (!store.ok()) return store.status();
  return std::unique_ptr<Store>(std::move(*store));
#else
  (void)observer;
  return absl::UnimplementedError(
      "store.etcd: this controlplane was built without the etcd store (etcd's .proto files "
      "were not found at build time: run scripts/install-deps.sh to install "
      "golang-etcd-server-dev and its proto imports, then rebuild)");
#endif
}

}  // namespace onedomain::controlplane
