#!/usr/bin/env bash
# Builds the images of deploy/docker/Dockerfile and runs them for real, with no registry:
#   1. installs podman, runc, buildah, debootstrap, CNI plugins, catatonit
#      (scripts/install-deps.sh --with-containers) and helm (scripts/install-helm.sh), both
#      idempotent;
#   2. makes the base images once: debootstrap of bookworm from the host's own Debian mirror,
#      imported as docker.io/library/debian:bookworm, and a slimmed copy as :bookworm-slim
#      (each reused while present), so the Dockerfile keeps its ordinary FROM lines;
#   3. builds the dataplane, controlplane and demo targets with --pull=never, and sets their
#      OCI labels (version, revision, source);
#   4. runs tests/deploy/container_checks.py: the images' contents, the binaries as uid 65532 on
#      a read-only root with no capabilities, the three in containers with real traffic, a
#      SIGTERM drain, and the chart's Deployments under `podman kube play`.
# Exit 0 pass, 1 fail, 77 skipped (podman cannot run here: not root, or `podman info` fails).
#
# Env: CONTAINER_TEST_STATE (/var/tmp/onedomain-container-test: lock, leak record),
#      CONTAINER_TEST_BUDGET (seconds for the whole run, default 2900: below ctest's 3000, so
#      the script stops its own build and cleans up before ctest would kill it).
# Needs root (rootful podman); the podman storage in /var/lib/containers is the build cache.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

log() { echo "container-test: $*"; }
skip() { echo "container-test: SKIPPED: $*"; exit 77; }
started=$(date +%s)
deadline=$(( started + ${CONTAINER_TEST_BUDGET:-2900} ))
left() { echo $(( deadline - $(date +%s) )); }

[ "$(id -u)" -eq 0 ] || skip "needs root for podman (rootful storage, runc, host network)"

bash scripts/install-deps.sh --with-containers
bash scripts/install-helm.sh >/dev/null

state="${CONTAINER_TEST_STATE:-/var/tmp/onedomain-container-test}"
mkdir -p "$state"
work="$(mktemp -d /var/tmp/onedomain-container-test.XXXXXX)"

# podman's defaults fail on these hosts: crun 1.8 rejects hybrid cgroups, there is no systemd
# (cgroupfs, file events), and nofile above the hard limit makes setrlimit fail in runc.
hard_nofile=$(ulimit -Hn)
[ "$hard_nofile" = unlimited ] && hard_nofile=1048576
cat >"$work/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=${hard_nofile}:${hard_nofile}", "nproc=4096:4096"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF
export CONTAINERS_CONF="$work/containers.conf"
if ! podman info >"$work/podman-info.txt" 2>&1; then
  cat "$work/podman-info.txt" >&2
  rm -rf "$work"
  skip "podman cannot run on this machine (podman info failed, output above)"
fi

# One run at a time per machine: the runs share podman's storage and the image tags.
exec 9>"$state/lock"
flock -w 1200 9 || { echo "container-test: another run holds $state/lock" >&2; exit 1; }

# Buildah working containers of a build killed from outside (SIGKILL: no trap runs) stay
# behind with their layers (gigabytes). Each run records the containers that existed before it
# in $state/buildah-before; a record still present at start means that run was killed, and
# the containers created since it began are its leftovers.
buildah_containers() { buildah containers --quiet --notruncate 2>/dev/null | sort; }
remove_new_buildah_containers() {  # remove_new_buildah_containers BEFORE_FILE
  local leaked
  leaked=$(comm -13 "$1" <(buildah_containers) || true)
  if [ -n "$leaked" ]; then
    log "removing $(echo "$leaked" | wc -l) buildah working container(s) left by an interrupted build"
    # shellcheck disable=SC2086
    buildah rm $leaked >/dev/null || true
  fi
}
if [ -f "$state/buildah-before" ]; then
  remove_new_buildah_containers "$state/buildah-before"
fi
buildah_containers >"$state/buildah-before"

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  [ -n "${build_pid:-}" ] && kill -TERM "$build_pid" 2>/dev/null && wait "$build_pid" 2>/dev/null
  remove_new_buildah_containers "$state/buildah-before"
  rm -f "$state/buildah-before"
  rm -rf "$work"
  log "finished in $(( $(date +%s) - started ))s (exit $rc)"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 143' TERM
trap 'exit 130' INT

# ---- base image -------------------------------------------------------------------------------
# The host's Debian mirror (deb822 sources or sources.list), never a URL written in the repo.
debian_mirror() {
  local f=/etc/apt/sources.list.d/debian.sources
  if [ -f "$f" ]; then
    awk '/^URIs:/ {u=$2} /^Suites:/ && / bookworm( |$)/ {print u; exit}' "$f"
  elif [ -f /etc/apt/sources.list ]; then
    awk '$1 == "deb" && $3 == "bookworm" {print $2; exit}' /etc/apt/sources.list
  fi
}
base=docker.io/library/debian
# Slimmed as Debian's own -slim images are: no documentation, manual pages or translations,
# dpkg told to leave them out of every later install too, and apt's docker-clean config (no
# package caches or downloaded .debs left in a layer).
slimify() {  # slimify ROOTFS
  printf 'path-exclude %s\n' /usr/share/doc/\* /usr/share/man/\* /usr/share/groff/\* \
    /usr/share/info/\* /usr/share/locale/\* /usr/share/lintian/\* /usr/share/linda/\* \
    >"$1/etc/dpkg/dpkg.cfg.d/docker"
  echo 'path-include /usr/share/doc/*/copyright' >>"$1/etc/dpkg/dpkg.cfg.d/docker"
  local clean='"rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true";'
  printf '%s\n' "DPkg::Post-Invoke { $clean };" "APT::Update::Post-Invoke { $clean };" \
    'Dir::Cache::pkgcache "";' 'Dir::Cache::srcpkgcache "";' >"$1/etc/apt/apt.conf.d/docker-clean"
  find "$1/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
  find "$1/usr/share/doc" -mindepth 1 -type d -empty -delete
  rm -rf "$1"/usr/share/man/* "$1"/usr/share/groff/* "$1"/usr/share/info/* \
         "$1"/usr/share/locale/* "$1"/usr/share/lintian/* "$1"/usr/share/linda/*
}
if podman image exists "$base:bookworm"; then
  log "base image $base:bookworm present (made $(podman image inspect --format '{{.Created}}' "$base:bookworm"))"
else
  mirror=$(debian_mirror)
  [ -n "$mirror" ] || { echo "container-test: no bookworm mirror in the host's apt sources" >&2; exit 1; }
  log "making $base:bookworm with debootstrap from $mirror"
  t0=$(date +%s)
  rootfs="$work/rootfs"
  debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 ||
    { tail -n 30 "$work/debootstrap.log" >&2; exit 1; }
  # The image's apt uses what the host uses (mirror and security suites).
  rm -f "$rootfs/etc/apt/sources.list"
  if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    cp /etc/apt/sources.list.d/debian.sources "$rootfs/etc/apt/sources.list.d/"
  else
    cp /etc/apt/sources.list "$rootfs/etc/apt/sources.list"
  fi
  rm -rf "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb \
         "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/*.log "$rootfs"/var/log/apt/*
  tar --numeric-owner -C "$rootfs" -c . |
    podman import --quiet --change 'CMD ["bash"]' - "$base:bookworm" >/dev/null
  rm -rf "$rootfs"
  log "made $base:bookworm in $(( $(date +%s) - t0 ))s"
fi
if podman image exists "$base:bookworm-slim"; then
  log "base image $base:bookworm-slim present"
else
  t0=$(date +%s)
  rootfs="$work/rootfs-slim"
  mkdir "$rootfs"
  tar --numeric-owner -C "$(podman image mount "$base:bookworm")" -c . | tar -C "$rootfs" -x
  podman image unmount "$base:bookworm" >/dev/null
  slimify "$rootfs"
  tar --numeric-owner -C "$rootfs" -c . |
    podman import --quiet --change 'CMD ["bash"]' - "$base:bookworm-slim" >/dev/null
  rm -rf "$rootfs"
  log "made $base:bookworm-slim in $(( $(date +%s) - t0 ))s"
fi
log "base images: $(podman image ls --format '{{.Tag}} {{.Size}}' "$base" | paste -sd, -)"

# ---- images -----------------------------------------------------------------------------------
version=$(sed -n 's/^project(onedomain VERSION \([0-9.]*\).*/\1/p' CMakeLists.txt)
revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
source_url=$(git config --get remote.origin.url 2>/dev/null || echo unknown)
# buildah 1.28 reuses a cached LABEL step whose ARG value changed (and a cached image whatever
# --label says), so a new commit would keep the previous revision: the labels are set again on
# the built image, a metadata-only commit.
relabel() {  # relabel IMAGE PREVIOUS_ID: PREVIOUS_ID, the last run's relabelled image, goes
  local ctr built
  built=$(podman image inspect --format '{{.Id}}' "$1")
  ctr=$(buildah from --pull-never --name "odct-relabel-$$" "$1")
  buildah config --label "org.opencontainers.image.version=$version" \
    --label "org.opencontainers.image.revision=$revision" \
    --label "org.opencontainers.image.source=$source_url" "$ctr"
  buildah commit --quiet --rm "$ctr" "$1" >/dev/null
  # (Not the build's own output, which is the layer cache; rmi refuses an image with children.)
  if [ -n "$2" ] && [ "$2" != "$built" ]; then podman rmi "$2" >/dev/null 2>&1 || true; fi
}
declare -A build_seconds
for target in dataplane controlplane demo; do
  t0=$(date +%s)
  previous=$(podman image inspect --format '{{.Id}}' "localhost/onedomain/$target:$version" 2>/dev/null || true)
  [ "$(left)" -gt 300 ] || { echo "container-test: out of time before building $target" >&2; exit 1; }
  log "building localhost/onedomain/$target:$version"
  # In the background so that a TERM reaches the trap at once (which stops the build).
  # 240 s of the budget stay for the checks.
  timeout --signal=TERM "$(( $(left) - 240 ))" \
    podman build --pull=never --layers -f deploy/docker/Dockerfile --target "$target" \
      --build-arg "VERSION=$version" --build-arg "REVISION=$revision" \
      --build-arg "SOURCE=$source_url" \
      -t "localhost/onedomain/$target:$version" . >"$work/build-$target.log" 2>&1 &
  build_pid=$!
  if ! wait "$build_pid"; then
    build_pid=
    tail -n 60 "$work/build-$target.log" >&2
    echo "container-test: building $target failed or ran out of time (log above)" >&2
    exit 1
  fi
  build_pid=
  relabel "localhost/onedomain/$target:$version" "$previous"
  build_seconds[$target]=$(( $(date +%s) - t0 ))
  log "built $target in ${build_seconds[$target]}s"
done
log "images built in $(( $(date +%s) - started ))s since start"

# ---- run them ---------------------------------------------------------------------------------
[ "$(left)" -gt 60 ] || { echo "container-test: out of time before the checks" >&2; exit 1; }
timeout --signal=TERM "$(left)" /usr/bin/python3 tests/deploy/container_checks.py \
  --version "$version" --revision "$revision" --helm "$repo/.tools/bin/helm" --work "$work"
