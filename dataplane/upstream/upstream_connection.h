#pragma once

// One connection to an upstream host. Owned by a request while in use and by its host's
// idle pool in between; its destructor closes the socket and updates the host's accounting.
//
// Thread: one worker.

#include <cstdint>

#include "dataplane/net/any_stream.h"
#include "dataplane/runtime/ref.h"
#include "dataplane/upstream/host.h"

namespace onedomain::dataplane {

class UpstreamConnection {
 public:
  UpstreamConnection(AnyStream stream, Ref<Host> host)
      : stream_(std::move(stream)), host_(std::move(host)) {
    host_->ConnectionOpened();
  }
  ~UpstreamConnection() {
    stream_.Close();
    host_->ConnectionClosed();
  }
  UpstreamConnection(const UpstreamConnection&) = delete;
  UpstreamConnection& operator=(const UpstreamConnection&) = delete;

  AnyStream& stream() { return stream_; }
  Host& host() { return *host_; }

  // Requests completed on this connection; > 0 means it came from the pool.
  uint32_t requests = 0;

 private:
  AnyStream stream_;
  Ref<Host> host_;
};

}  // namespace onedomain::dataplane
