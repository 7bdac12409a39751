#pragma once

// A human-readable summary of what changed between two snapshots, for the audit log and the
// admin answer: one line per changed item, e.g.
//   "clusters[agents].endpoints: 127.0.0.1:8000 -> 127.0.0.1:8002"
//   "routes[ws]: added"

#include <string>
#include <vector>

namespace onedomain::v1 {
class Snapshot;
}  // namespace onedomain::v1

namespace onedomain::controlplane {

std::vector<std::string> DiffSnapshots(const v1::Snapshot& before, const v1::Snapshot& after);

}  // namespace onedomain::controlplane
