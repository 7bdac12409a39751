// What OpenSSL itself keeps per idle server TLS connection: the floor under the wss:// idle
// figure of tls_idle.py (whose rest is the data plane's own per-connection state, the same as
// for ws://). Makes N TLS 1.3 sessions in-process over socketpairs, with a self-signed P-256
// certificate and the session options of dataplane/listener/tls_context.cc and AnyStream
// (SSL_MODE_RELEASE_BUFFERS and partial writes), passes one small message each way, frees the
// client side and prints the heap the server sessions still hold (glibc mallinfo2).
//
//   ninja -C build tls_session_memory && build/bench/websocket/tls_session_memory [N]

#include <fcntl.h>
#include <malloc.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <vector>

namespace {

size_t HeapInUse() { return mallinfo2().uordblks; }

SSL_CTX* ServerContext() {
  EVP_PKEY* key = EVP_EC_gen("P-256");
  X509* cert = X509_new();
  X509_set_version(cert, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(cert), 1);
  X509_gmtime_adj(X509_getm_notBefore(cert), 0);
  X509_gmtime_adj(X509_getm_notAfter(cert), 3600);
  X509_set_pubkey(cert, key);
  X509_NAME* name = X509_get_subject_name(cert);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>("localhost"), -1, -1, 0);
  X509_set_issuer_name(cert, name);
  X509_sign(cert, key, EVP_sha256());
  SSL_CTX* ctx = SSL_CTX_new(TLS_server_method());
  if (key == nullptr || SSL_CTX_use_certificate(ctx, cert) != 1 ||
      SSL_CTX_use_PrivateKey(ctx, key) != 1) {
    std::fprintf(stderr, "tls_session_memory: cannot make a certificate\n");
    std::exit(1);
  }
  X509_free(cert);
  EVP_PKEY_free(key);
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_options(
      ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
  SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
  return ctx;
}

// Both sides are non-blocking on one thread: step each until both are done (bounded).
bool Handshake(SSL* client, SSL* server) {
  for (int i = 0; i < 100; ++i) {
    const int c = SSL_do_handshake(client);
    const int s = SSL_do_handshake(server);
    if (c == 1 && s == 1) return true;
  }
  return false;
}

}  // namespace

int main(int argc, char** argv) {
  const int n = argc > 1 ? std::atoi(argv[1]) : 1000;
  if (n < 20) {
    std::fprintf(stderr, "usage: tls_session_memory [N >= 20]\n");
    return 2;
  }
  SSL_CTX* server_ctx = ServerContext();
  SSL_CTX* client_ctx = SSL_CTX_new(TLS_client_method());
  std::vector<SSL*> servers;
  std::vector<int> fds;
  servers.reserve(n);
  fds.reserve(2 * n);
  const int warm = 10;  // the first sessions also fill OpenSSL's one-time caches
  size_t base = 0;
  for (int i = 0; i < n; ++i) {
    if (i == warm) base = HeapInUse();
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) {
      std::perror("socketpair");
      return 1;
    }
    fcntl(sv[0], F_SETFL, O_NONBLOCK);
    fcntl(sv[1], F_SETFL, O_NONBLOCK);
    SSL* server = SSL_new(server_ctx);
    SSL_set_fd(server, sv[0]);
    SSL_set_accept_state(server);
    SSL_set_mode(server, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                             SSL_MODE_RELEASE_BUFFERS);
    SSL* client = SSL_new(client_ctx);
    SSL_set_fd(client, sv[1]);
    SSL_set_connect_state(client);
    if (!Handshake(client, server)) {
      std::fprintf(stderr, "tls_session_memory: handshake %d failed\n", i);
      return 1;
    }
    char buf[64];
    size_t k = 0;
    SSL_write_ex(client, "ping", 4, &k);
    SSL_read_ex(server, buf, sizeof(buf), &k);
    SSL_write_ex(server, "pong", 4, &k);
    SSL_read_ex(client, buf, sizeof(buf), &k);  // also takes the session tickets
    SSL_free(client);
    close(sv[1]);
    servers.push_back(server);
    fds.push_back(sv[0]);
  }
  const size_t per_session = (HeapInUse() - base) / static_cast<size_t>(n - warm);
  const size_t before_new = HeapInUse();
  std::vector<SSL*> fresh;
  for (int i = 0; i < 100; ++i) fresh.push_back(SSL_new(server_ctx));
  const size_t per_new = (HeapInUse() - before_new) / fresh.size();
  std::printf(
      "OpenSSL %s, %s: %zu bytes (%.2f KiB) of heap per idle server session after "
      "one message each way; SSL_new alone %zu bytes (%.2f KiB)\n",
      OpenSSL_version(OPENSSL_VERSION), SSL_get_version(servers.back()), per_session,
      per_session / 1024.0, per_new, per_new / 1024.0);
  for (SSL* s : fresh) SSL_free(s);
  for (SSL* s : servers) SSL_free(s);
  for (int fd : fds) close(fd);
  SSL_CTX_free(client_ctx);
  SSL_CTX_free(server_ctx);
  return 0;
}
