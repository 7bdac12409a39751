#include "dataplane/net/tls_context.h"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <sys/stat.h>

#include <boost/asio/ssl/context.hpp>

#include "common/strings/strings.h"
#include "onedomain/v1/listener.pb.h"

namespace onedomain::dataplane {
namespace {

// TLS 1.2: forward secrecy (ECDHE) and AEAD only, as Mozilla's "intermediate" profile.
constexpr char kDefaultCipherList[] =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";

// ALPN protocols in wire format, stored on the SSL_CTX itself so the select callback never
// outlives them (sessions keep the SSL_CTX alive, not our wrapper).
void FreeAlpn(void*, void* ptr, CRYPTO_EX_DATA*, int, long, void*) {  // NOLINT(runtime/int)
  delete static_cast<std::string*>(ptr);
}

int AlpnIndex() {
  static const int index =
      CRYPTO_get_ex_new_index(CRYPTO_EX_INDEX_SSL_CTX, 0, nullptr, nullptr, nullptr, FreeAlpn);
  return index;
}

int SelectAlpn(SSL* ssl, const unsigned char** out, unsigned char* outlen, const unsigned char* in,
               unsigned int inlen, void*) {
  const auto* wire =
      static_cast<const std::string*>(SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), AlpnIndex()));
  if (wire == nullptr) return SSL_TLSEXT_ERR_NOACK;
  unsigned char* selected = nullptr;
  if (SSL_select_next_proto(&selected, outlen, reinterpret_cast<const unsigned char*>(wire->data()),
                            static_cast<unsigned int>(wire->size()), in,
                            inlen) != OPENSSL_NPN_NEGOTIATED) {
    // No protocol in common: continue without ALPN rather than failing the handshake; the
    // client then speaks HTTP/1.1 or gives up on its own.
    return SSL_TLSEXT_ERR_NOACK;
  }
  *out = selected;
  return SSL_TLSEXT_ERR_OK;
}

std::string OpenSslErrors() {
  std::string out;
  while (const unsigned long e = ERR_get_error()) {  // NOLINT(runtime/int)
    char buf[256];
    ERR_error_string_n(e, buf, sizeof(buf));
    if (!out.empty()) out += "; ";
    out += buf;
  }
  return out;
}

}  // namespace

FileStamp StampOf(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return {};
  return FileStamp{st.st_ino, st.st_size,
                   static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec};
}

TlsServerContext::TlsServerContext() = default;
TlsServerContext::~TlsServerContext() = default;

SSL_CTX* TlsServerContext::native_handle() { return ctx_->native_handle(); }

bool TlsServerContext::FilesChanged() const {
  return StampOf(cert_file_) != cert_stamp_ || StampOf(key_file_) != key_stamp_;
}

absl::StatusOr<std::shared_ptr<TlsServerContext>> TlsServerContext::Load(
    const v1::ListenerTls& tls) {
  std::shared_ptr<TlsServerContext> self(new TlsServerContext());
  self->cert_file_ = tls.cert_file();
  self->key_file_ = tls.key_file();
  // Stamp before reading: if a file changes while we read it, the next check sees a
  // difference and loads again.
  self->cert_stamp_ = StampOf(self->cert_file_);
  self->key_stamp_ = StampOf(self->key_file_);
  ERR_clear_error();
  SSL_CTX* raw = SSL_CTX_new(TLS_server_method());
  if (raw == nullptr) return absl::InternalError(str::Cat("SSL_CTX_new: ", OpenSslErrors()));
  self->ctx_ = std::make_unique<boost::asio::ssl::context>(raw);
  SSL_CTX* ctx = self->ctx_->native_handle();

  const int min_version = tls.min_version() == "TLSv1.3" ? TLS1_3_VERSION : TLS1_2_VERSION;
  SSL_CTX_set_min_proto_version(ctx, min_version);
  SSL_CTX_set_options(
      ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
  SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
  const char* ciphers = tls.cipher_list().empty() ? kDefaultCipherList : tls.cipher_list().c_str();
  if (SSL_CTX_set_cipher_list(ctx, ciphers) != 1) {
    return absl::InvalidArgumentError(
        str::Cat("cipher_list: no usable cipher in '", ciphers, "': ", OpenSslErrors()));
  }
  if (!tls.ciphersuites().empty() &&
      SSL_CTX_set_ciphersuites(ctx, tls.ciphersuites().c_str()) != 1) {
    return absl::InvalidArgumentError(
        str::Cat("ciphersuites: no usable suite in '", tls.ciphersuites(), "': ", OpenSslErrors()));
  }

  if (SSL_CTX_use_certificate_chain_file(ctx, self->cert_file_.c_str()) != 1) {
    return absl::InvalidArgumentError(
        str::Cat("cannot load certificate chain '", self->cert_file_, "': ", OpenSslErrors()));
  }
  if (SSL_CTX_use_PrivateKey_file(ctx, self->key_file_.c_str(), SSL_FILETYPE_PEM) != 1) {
    return absl::InvalidArgumentError(
        str::Cat("cannot load private key '", self->key_file_, "': ", OpenSslErrors()));
  }
  if (SSL_CTX_check_private_key(ctx) != 1) {
    return absl::InvalidArgumentError(str::Cat(
        "private key '", self->key_file_, "' does not match certificate '", self->cert_file_, "'"));
  }

  std::string wire;
  if (tls.alpn_size() == 0) {
    // HTTP/2 first (the HTTP/2 codec takes "h2" connections), HTTP/1.1 for everyone else.
    wire = std::string("\x02h2\x08http/1.1", 12);
  } else {
    for (const std::string& p : tls.alpn()) {
      wire.push_back(static_cast<char>(p.size()));
      wire += p;
    }
  }
  SSL_CTX_set_ex_data(ctx, AlpnIndex(), new std::string(std::move(wire)));
  SSL_CTX_set_alpn_select_cb(ctx, SelectAlpn, nullptr);
  return self;
}

}  // namespace onedomain::dataplane
