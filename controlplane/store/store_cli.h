#pragma once

// `controlplane store copy --from FILE_DIR --to etcd://HOST:PORT[,HOST:PORT...]/PREFIX/`:
// copies a file store's kept snapshots, its whole audit log and its version floor into etcd.
// Idempotent: keys already holding the same content are skipped, so an interrupted copy is
// simply run again; a key holding other content stops the copy (exit 1) before anything of
// the head (version, floor) moves.

namespace onedomain::controlplane {

int RunStoreCli(int argc, char** argv);

}  // namespace onedomain::controlplane
