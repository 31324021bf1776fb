#!/usr/bin/env bash
# Stand-ins for the Dockerfile's two base images, made from Debian packages, for a build host that
# reaches a Debian archive but no container registry (the project's own machine is one; so are
# many bank build farms without a registry mirror). Where a registry or a mirror of it is
# reachable, build FROM the real images instead (docs/operations.md, "Docker").
#
#   sudo deploy/image/bases-from-debian.sh [ENGINE]        # ENGINE: podman (default) or docker
#
# Makes, from Debian 12 (bookworm, the release python:3.11-slim-bookworm is built on):
#   localhost/postloan-base/python:3.11-bookworm   Debian's python3.11 as the image's `python` and `pip`
#   localhost/postloan-base/maven:3-jdk17          Debian's Maven and OpenJDK 17 (the jars stage)
# and prints the --build-arg flags that select them. Needs root (debootstrap) and debootstrap.
set -euo pipefail

ENGINE=${1:-podman}
SUITE=bookworm
PYTHON_BASE=localhost/postloan-base/python:3.11-bookworm
MAVEN_BASE=localhost/postloan-base/maven:3-jdk17
work=$(mktemp -d)
cleanup() {
  if mountpoint -q "$work/root/proc"; then umount "$work/root/proc"; fi
  rm -rf --one-file-system "$work"
}
trap cleanup EXIT

# One root filesystem per base: debootstrap's smallest variant plus the named packages, then
# imported as a one-layer image. The host's own certificate authorities (the ones added under
# /usr/local/share/ca-certificates, such as a bank proxy's that inspects TLS) go in, so that the
# build can fetch packages and jars the way the host does; Java's trust store is made from them too.
make_base() {
  local tag=$1 packages=$2 fixup=$3 root="$work/root"
  rm -rf "$root"
  debootstrap --variant=minbase --include="$packages" "$SUITE" "$root" >"$work/debootstrap.log" 2>&1 \
    || { tail -20 "$work/debootstrap.log"; exit 1; }
  cp -r /usr/local/share/ca-certificates/. "$root/usr/local/share/ca-certificates/"
  # Java (for its trust store's hook) needs /proc inside the chroot.
  mount -t proc proc "$root/proc"
  chroot "$root" /bin/sh -c "update-ca-certificates >/dev/null && $fixup"
  umount "$root/proc"
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb
  tar -C "$root" --numeric-owner -c . | "$ENGINE" import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["/bin/bash"]' - "$tag" >/dev/null
  echo "made $tag"
}

# The official python image installs with pip into its own interpreter; Debian marks its
# interpreter as managed by apt (PEP 668), which an image that is nothing but this application
# does not need.
make_base "$PYTHON_BASE" ca-certificates,python3,python3-pip,python3-venv \
  'rm -f /usr/lib/python3.*/EXTERNALLY-MANAGED
   ln -sf /usr/bin/python3 /usr/local/bin/python
   ln -sf /usr/bin/pip3 /usr/local/bin/pip'
make_base "$MAVEN_BASE" ca-certificates,ca-certificates-java,openjdk-17-jdk-headless,maven \
  'keytool -list -cacerts -storepass changeit >/dev/null'

echo "build with: --build-arg PYTHON_IMAGE=$PYTHON_BASE --build-arg MAVEN_IMAGE=$MAVEN_BASE"
