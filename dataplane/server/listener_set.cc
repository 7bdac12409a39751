#include "dataplane/server/listener_set.h"

#include "common/config/defaults.h"
#include "common/strings/strings.h"
#include "dataplane/listener/acceptor.h"

namespace onedomain::dataplane {
namespace {

uint16_t PortOf(const v1::Listener& l) {
  return static_cast<uint16_t>(l.has_port() ? l.port() : config::defaults::kDataplanePort);
}

std::string AddressOf(const v1::Listener& l) {
  return l.address().empty() ? "0.0.0.0" : l.address();
}

}  // namespace

std::string ListenerSet::KeyOf(const v1::Listener& l) {
  return str::Cat(AddressOf(l), "|", PortOf(l), "|", l.has_tls() ? "tls" : "plain");
}

ListenerSet::Plan ListenerSet::PlanFor(
    const google::protobuf::RepeatedPtrField<v1::Listener>& listeners) {
  Plan plan;
  for (const v1::Listener& l : listeners) {
    const std::string key = KeyOf(l);
    const auto it = bound_.find(l.name());
    if (it != bound_.end() && it->second.key == key) {
      plan.slots[l.name()] = it->second.slot;
      plan.keys[l.name()] = {key, it->second.port};
      continue;
    }
    NewListener added;
    added.slot = next_slot_++;  // slots are never reused, even by a failed apply
    added.name = l.name();
    added.address = AddressOf(l);
    added.port = PortOf(l);
    plan.slots[l.name()] = added.slot;
    plan.keys[l.name()] = {key, added.port};
    plan.added.push_back(std::move(added));
    plan.changed = true;
  }
  for (const auto& [name, b] : bound_) {
    const auto it = plan.slots.find(name);
    if (it == plan.slots.end() || it->second != b.slot) {
      plan.removed.push_back(b.slot);
      plan.changed = true;
    }
  }
  return plan;
}

bool ListenerSet::HoldsPort(const std::string& address, uint16_t port) const {
  const std::string prefix = str::Cat(address, "|", port, "|");
  for (const auto& [name, b] : bound_) {
    if (b.key.starts_with(prefix)) return true;
  }
  return false;
}

absl::Status ListenerSet::Bind(Plan& plan, size_t workers, bool share_ports) {
  for (NewListener& n : plan.added) {
    if (!share_ports && n.port != 0 && !HoldsPort(n.address, n.port)) {
      if (absl::Status s = CheckPortFree(n.address, n.port); !s.ok()) {
        return absl::Status(s.code(), str::Cat("listener '", n.name, "': ", s.message()));
      }
    }
    for (size_t i = 0; i < workers; ++i) {
      // The first worker's bind picks an ephemeral port; the others join it.
      auto socket = OpenListenSocket(n.address, n.port);
      if (!socket.ok()) {
        return absl::Status(socket.status().code(),
                            str::Cat("listener '", n.name, "': ", socket.status().message()));
      }
      if (n.port == 0) n.port = LocalPort(socket->get());
      n.sockets.push_back(*std::move(socket));
    }
    plan.keys[n.name].second = n.port;
  }
  return absl::OkStatus();
}

void ListenerSet::Commit(const Plan& plan) {
  bound_.clear();
  for (const auto& [name, slot] : plan.slots) {
    const auto& [key, port] = plan.keys.at(name);
    bound_.emplace(name, Bound{slot, key, port});
  }
}

std::vector<std::pair<std::string, int>> ListenerSet::Ports() const {
  std::vector<std::pair<std::string, int>> out;
  for (const auto& [name, b] : bound_) out.emplace_back(str::Cat("listener.", name), b.port);
  return out;
}

}  // namespace onedomain::dataplane
