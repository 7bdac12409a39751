#include "controlplane/server/diff.h"

#include <map>

#include "common/strings/strings.h"
#include "google/protobuf/util/message_differencer.h"
#include "onedomain/v1/snapshot.pb.h"

namespace onedomain::controlplane {
namespace {

using google::protobuf::util::MessageDifferencer;

std::string Endpoints(const v1::Cluster& c) {
  std::vector<std::string> parts;
  for (const auto& e : c.endpoints()) parts.push_back(str::Cat(e.host(), ":", e.port()));
  return str::Join(parts, ",");
}

// Diffs two lists of named items (clusters, routes, listeners) by name.
template <typename T>
void DiffNamed(std::string_view field, const google::protobuf::RepeatedPtrField<T>& before,
               const google::protobuf::RepeatedPtrField<T>& after, std::vector<std::string>& out) {
  const size_t first = out.size();
  std::map<std::string, const T*> old_items;
  for (const T& item : before) old_items[item.name()] = &item;
  std::vector<std::string> order_before;
  std::vector<std::string> order_after;
  for (const T& item : before) order_before.push_back(item.name());
  for (const T& item : after) {
    order_after.push_back(item.name());
    const auto it = old_items.find(item.name());
    if (it == old_items.end()) {
      out.push_back(str::Cat(field, "[", item.name(), "]: added"));
      continue;
    }
    if (!MessageDifferencer::Equals(*it->second, item)) {
      if constexpr (std::is_same_v<T, v1::Cluster>) {
        if (Endpoints(*it->second) != Endpoints(item)) {
          out.push_back(str::Cat(field, "[", item.name(), "].endpoints: ", Endpoints(*it->second),
                                 " -> ", Endpoints(item)));
          v1::Cluster a = *it->second;
          v1::Cluster b = item;
          a.clear_endpoints();
          b.clear_endpoints();
          if (MessageDifferencer::Equals(a, b)) {
            old_items.erase(it);
            continue;
          }
        }
      }
      out.push_back(str::Cat(field, "[", item.name(), "]: changed"));
    }
    old_items.erase(it);
  }
  for (const auto& [name, item] : old_items) {
    out.push_back(str::Cat(field, "[", name, "]: removed"));
  }
  if (out.size() == first && order_before != order_after) {
    out.push_back(str::Cat(field, ": reordered"));
  }
}

}  // namespace

std::vector<std::string> DiffSnapshots(const v1::Snapshot& before, const v1::Snapshot& after) {
  std::vector<std::string> out;
  if (!MessageDifferencer::Equals(before.site(), after.site())) out.push_back("site: changed");
  DiffNamed("listeners", before.listeners(), after.listeners(), out);
  DiffNamed("clusters", before.clusters(), after.clusters(), out);
  DiffNamed("routes", before.routes(), after.routes(), out);
  if (!MessageDifferencer::Equals(before.cookie_policy(), after.cookie_policy())) {
    out.push_back("cookie_policy: changed");
  }
  if (!MessageDifferencer::Equals(before.websocket_policy(), after.websocket_policy())) {
    out.push_back("websocket_policy: changed");
  }
  if (out.empty()) out.push_back("no change");
  return out;
}

}  // namespace onedomain::controlplane
