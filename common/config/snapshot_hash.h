#pragma once

// The content hash both planes compute for a snapshot (config_discovery.proto): SHA-256,
// lowercase hex, of the deterministic protobuf serialization of the Snapshot as sent
// (version included). The control plane compares a node's hash with its own to find a node
// that serves other content under the same version number. Pure; any thread.

#include <string>

namespace onedomain::v1 {
class Snapshot;
}  // namespace onedomain::v1

namespace onedomain::config {

std::string SnapshotHash(const v1::Snapshot& snapshot);

}  // namespace onedomain::config
