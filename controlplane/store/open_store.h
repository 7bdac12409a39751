#pragma once

// Opens the store a ControlplaneConfig names: the file store in `store.directory` (default),
// or etcd with `store.etcd`.

#include <memory>

#include "absl/status/statusor.h"
#include "controlplane/store/store.h"
#include "onedomain/v1/bootstrap.pb.h"

namespace onedomain::controlplane {

absl::StatusOr<std::unique_ptr<Store>> OpenStore(const v1::Store& config, StoreObserver observer);

// True when this binary was built with the etcd store (etcd's .proto files were found).
bool HaveEtcdStore();

}  // namespace onedomain::controlplane
