#!/usr/bin/env bash
# Installs every Debian 12 package onedomain needs to build, test and run.
# Idempotent: packages already installed are skipped, and apt is not touched at all
# when nothing is missing.
# Usage: scripts/install-deps.sh [--with-bench] [--with-browser] [--with-node] [--with-containers]
set -euo pipefail

packages=(
  # toolchain
  build-essential cmake ninja-build ccache pkg-config git
  # libraries (Boost: versioned 1.81 packages only; the unversioned ones pull 1.74 and conflict)
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libboost1.81-dev libssl-dev prometheus-cpp-dev libyaml-cpp-dev
  libgtest-dev libgmock-dev liburing-dev
  # HTTP/2 (framing, HPACK, flow control) for the client side of the data plane
  libnghttp2-dev
  # the data plane's malloc (tcmalloc_minimal)
  libgoogle-perftools-dev
  # test clients and tools
  curl openssl python3 python3-pytest python3-websockets python3-grpcio
  clang libclang-rt-14-dev clang-format clang-tidy
  # real backends and a reference HTTP/1.1 parser for the integration tests
  gunicorn python3-uvicorn python3-h11
  # HTTP/2 test clients: nghttp and h2load, and a frame-level client for the defence tests
  nghttp2-client python3-h2 python3-hyperframe
  # the control plane's etcd store: a real etcd for the tests, and the .proto files its gRPC
  # stubs are generated from at build time (etcdserverpb, mvccpb, authpb, v3election, v3lock;
  # gogoproto and google/api imports)
  etcd-server etcd-client golang-etcd-server-dev golang-github-gogo-protobuf-dev
  golang-github-grpc-ecosystem-grpc-gateway-dev
)
for arg in "$@"; do
  case "$arg" in
    --with-bench) packages+=(nginx-light haproxy wrk linux-perf valgrind) ;;
    --with-browser) packages+=(chromium nodejs npm) ;;
    --with-node) packages+=(nodejs npm) ;;  # scripts/install-bench-node.sh
    # scripts/container-test.sh: podman with runc (Debian's crun 1.8 fails on hybrid cgroups),
    # buildah, debootstrap for the local base image; CNI plugins and catatonit (the pause
    # process of the infra container) for `podman kube play` pods.
    --with-containers)
      packages+=(podman runc buildah debootstrap containernetworking-plugins catatonit) ;;
    *) echo "install-deps.sh: unknown option '$arg'" >&2; exit 2 ;;
  esac
done

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages present"
  exit 0
fi

echo "install-deps: installing ${missing[*]}"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
