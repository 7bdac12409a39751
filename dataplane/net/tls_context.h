#pragma once

// A server TLS context built from a listener's certificate and key files: TLS 1.2+ (or 1.3+),
// ALPN from the listener (default "h2", "http/1.1"), record buffers released on idle connections.
// Immutable once loaded; certificate rotation loads a new one and publishes it like a config
// change, so connections keep the context they started with.
//
// Thread safety: an OpenSSL SSL_CTX may be used by many threads to create sessions.

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace boost::asio::ssl {
class context;
}  // namespace boost::asio::ssl
struct ssl_ctx_st;  // OpenSSL's SSL_CTX

namespace onedomain::v1 {
class ListenerTls;
}  // namespace onedomain::v1

namespace onedomain::dataplane {

// Identity of a file's content as far as stat can tell.
struct FileStamp {
  ino_t inode = 0;
  off_t size = -1;
  int64_t mtime_ns = 0;
  bool operator==(const FileStamp&) const = default;
};

// Stamp of `path`; size -1 when it cannot be stat'ed.
FileStamp StampOf(const std::string& path);

class TlsServerContext {
 public:
  // Loads and checks the pair (the key must match the certificate). Errors name the file.
  static absl::StatusOr<std::shared_ptr<TlsServerContext>> Load(const v1::ListenerTls& tls);

  ~TlsServerContext();
  TlsServerContext(const TlsServerContext&) = delete;
  TlsServerContext& operator=(const TlsServerContext&) = delete;

  // The OpenSSL context sessions are created from.
  ssl_ctx_st* native_handle();

  const std::string& cert_file() const { return cert_file_; }
  const std::string& key_file() const { return key_file_; }
  // True when either file differs from what was loaded (rotation).
  bool FilesChanged() const;

 private:
  TlsServerContext();

  std::unique_ptr<boost::asio::ssl::context> ctx_;
  std::string cert_file_;
  std::string key_file_;
  FileStamp cert_stamp_;
  FileStamp key_stamp_;
};

}  // namespace onedomain::dataplane
