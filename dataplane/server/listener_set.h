#pragma once

// The listeners this node has bound, across snapshots. Applying a snapshot plans its
// listeners (slots: no I/O), then binds what is new (one SO_REUSEPORT socket per worker)
// before anything is published, so a port that cannot be bound fails the apply with nothing
// changed. A listener keeps its sockets (and slot) while its name, address, port and
// TLS-ness stay the same; a changed one is bound again under a new slot, and the old
// sockets close once every worker switched.
//
// Thread: the applying thread (under the server's apply lock).

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "dataplane/runtime/unique_fd.h"
#include "onedomain/v1/listener.pb.h"

namespace onedomain::dataplane {

class ListenerSet {
 public:
  struct NewListener {
    uint32_t slot = 0;
    std::string name;
    std::string address;
    uint16_t port = 0;              // as configured; the bound one after Bind
    std::vector<UniqueFd> sockets;  // listening, one per worker, after Bind
  };
  struct Plan {
    std::vector<NewListener> added;
    std::vector<uint32_t> removed;
    bool changed = false;                   // the port file must be written again
    std::map<std::string, uint32_t> slots;  // every listener of the snapshot

    uint32_t SlotOf(const std::string& name) const {
      const auto it = slots.find(name);
      return it == slots.end() ? 0 : it->second;
    }

   private:
    friend class ListenerSet;
    std::map<std::string, std::pair<std::string, uint16_t>> keys;  // name -> (key, port)
  };

  // Slots for `listeners`; no I/O.
  Plan PlanFor(const google::protobuf::RepeatedPtrField<v1::Listener>& listeners);

  // Binds the plan's new listeners, one socket for each of `workers` workers. A port that
  // another process already listens on is refused (SO_REUSEPORT would otherwise let the
  // kernel split its traffic between two nodes with different configs) unless
  // `share_ports` says that is wanted.
  absl::Status Bind(Plan& plan, size_t workers, bool share_ports = false);

  // Makes `plan` the current set (after every worker switched).
  void Commit(const Plan& plan);

  // Bound ports by "listener.<name>", for the port file.
  std::vector<std::pair<std::string, int>> Ports() const;

 private:
  struct Bound {
    uint32_t slot;
    std::string key;
    uint16_t port;  // actually bound (an ephemeral port once chosen)
  };
  static std::string KeyOf(const v1::Listener& l);
  // Does this process already listen on address:port (under any listener name)?
  bool HoldsPort(const std::string& address, uint16_t port) const;

  std::map<std::string, Bound> bound_;  // by listener name
  uint32_t next_slot_ = 0;
};

}  // namespace onedomain::dataplane
