#!/usr/bin/env bash
# Make sure a Docker Engine answers on this machine, that the base image the
# Docker-builder tests use (local/busybox:1) and /bin/busybox (which the
# daemonless-builder tests copy into images) exist, and that the registry
# tools the registry tests start themselves are installed (Debian's
# docker-registry, htpasswd from apache2-utils, skopeo, and openssl for the
# token service of the Bearer-auth test). Idempotent.
#
# On a fresh Debian machine (root): installs Debian's docker.io and
# busybox-static, starts dockerd detached, and makes local/busybox:1 with
# `docker import` (nothing can be pulled here; see shared/ENVIRONMENT.md).
# Exits non-zero, saying why, when the daemon cannot be made to answer.
set -euo pipefail

log=${KILN_DOCKERD_LOG:-/tmp/kiln-dockerd.log}
say() { echo "docker-env: $*" >&2; }
docker_cli=$(command -v docker || true)

answers() { [ -n "$docker_cli" ] && timeout 10 "$docker_cli" info >/dev/null 2>&1; }

if ! answers; then
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    say "no Docker daemon answers and this is not a root Debian machine: start dockerd yourself"
    exit 1
  fi
  if ! command -v dockerd >/dev/null; then
    say "installing docker.io (Debian)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker.io >/dev/null 2>&1 ||
      { apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker.io >/dev/null; }
  fi
  docker_cli=$(command -v docker)
  if ! pgrep -x dockerd >/dev/null; then
    say "starting dockerd (log: $log)"
    setsid dockerd >"$log" 2>&1 < /dev/null &
  fi
  for _ in $(seq 1 60); do answers && break; sleep 1; done
  answers || { say "dockerd did not answer within 60 s; see $log"; exit 1; }
fi

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  missing=()
  command -v docker-registry >/dev/null || missing+=(docker-registry)
  command -v htpasswd >/dev/null || missing+=(apache2-utils)
  command -v skopeo >/dev/null || missing+=(skopeo)
  command -v openssl >/dev/null || missing+=(openssl)
  # The oci builder's RUN needs an OCI runtime (docker.io brings runc).
  command -v runc >/dev/null || missing+=(runc)
  if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null 2>&1 ||
      { apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null; }
  fi
fi

if ! [ -x /bin/busybox ]; then
  [ "$(id -u)" = 0 ] || { say "busybox-static is needed (/bin/busybox)"; exit 1; }
  say "installing busybox-static"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q busybox-static >/dev/null 2>&1 ||
    { apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q busybox-static >/dev/null; }
fi

if ! "$docker_cli" image inspect local/busybox:1 >/dev/null 2>&1; then
  rootfs=$(mktemp -d)
  trap 'rm -rf "$rootfs"' EXIT
  mkdir -p "$rootfs/bin" "$rootfs/tmp" "$rootfs/etc"
  cp /bin/busybox "$rootfs/bin/busybox"
  for tool in $("$rootfs/bin/busybox" --list); do
    [ -e "$rootfs/bin/$tool" ] || ln -s busybox "$rootfs/bin/$tool"
  done
  echo "root:x:0:0:root:/root:/bin/sh" > "$rootfs/etc/passwd"
  echo "nobody:x:65534:65534:nobody:/:/bin/sh" >> "$rootfs/etc/passwd"
  echo "root:x:0:" > "$rootfs/etc/group"
  echo "nogroup:x:65534:" >> "$rootfs/etc/group"
  tar -C "$rootfs" -c . | "$docker_cli" import -c 'ENV PATH=/bin' - local/busybox:1 >/dev/null
  say "made local/busybox:1"
fi

# A real Debian base for the RUN tests, made without any daemon or pull:
# debootstrap's minbase (about 45 s, once per machine), kept outside the
# repo with a Dockerfile that makes it an image (`FROM scratch`, `COPY`).
debian=${KILN_TEST_DEBIAN:-/var/cache/kiln-test/debian}
if ! [ -f "$debian/Dockerfile" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    command -v debootstrap >/dev/null || {
      say "installing debootstrap"
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap >/dev/null 2>&1 ||
        { apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap >/dev/null; }
    }
    say "making a Debian base with debootstrap in $debian (about a minute, once)"
    rm -rf "$debian.tmp" && mkdir -p "$debian.tmp"
    debootstrap --variant=minbase bookworm "$debian.tmp/rootfs" >"$debian.tmp.log" 2>&1 ||
      { say "debootstrap failed; see $debian.tmp.log"; exit 1; }
    printf 'FROM scratch\nCOPY rootfs/ /\nCMD ["bash"]\n' > "$debian.tmp/Dockerfile"
    rm -rf "$debian" && mv "$debian.tmp" "$debian"
  else
    say "no Debian base at $debian (made as root with debootstrap); the Debian RUN tests need it"
  fi
fi

# Foreign platforms for the multi-platform tests: QEMU user emulation
# registered with binfmt_misc (Debian's qemu-user-static, flag F), and a
# static busybox of the other architecture (from Debian's busybox-static
# package for it, unpacked; nothing pulled), kept outside the repo.
host_arch=$(dpkg --print-architecture 2>/dev/null || true)
case "$host_arch" in
  amd64) foreign=arm64 qemu=aarch64 ;;
  arm64) foreign=amd64 qemu=x86_64 ;;
  *) foreign= ;;
esac
if [ -n "$foreign" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  if ! [ -f /usr/sbin/update-binfmts ] || ! ls /usr/libexec/qemu-binfmt/ >/dev/null 2>&1; then
    say "installing qemu-user-static binfmt-support (RUN for foreign platforms)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q qemu-user-static binfmt-support >/dev/null 2>&1 ||
      { apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q qemu-user-static binfmt-support >/dev/null; }
  fi
  [ -e /proc/sys/fs/binfmt_misc/register ] ||
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc 2>/dev/null || true
  [ -e "/proc/sys/fs/binfmt_misc/qemu-$qemu" ] || update-binfmts --enable >/dev/null 2>&1 || true
  [ -e "/proc/sys/fs/binfmt_misc/qemu-$qemu" ] ||
    say "qemu-$qemu is not registered with binfmt_misc; the foreign-platform RUN tests will fail"
  bb="/var/cache/kiln-test/busybox-$foreign"
  if ! [ -x "$bb" ]; then
    say "fetching Debian's busybox-static for $foreign into $bb"
    dpkg --print-foreign-architectures | grep -qx "$foreign" || {
      dpkg --add-architecture "$foreign"
      apt-get update -q >/dev/null 2>&1
    }
    work=$(mktemp -d)
    (cd "$work" && apt-get download -q "busybox-static:$foreign" >/dev/null 2>&1 &&
      dpkg-deb -x busybox-static_*.deb root) ||
      { apt-get update -q >/dev/null 2>&1 &&
        (cd "$work" && apt-get download -q "busybox-static:$foreign" >/dev/null && dpkg-deb -x busybox-static_*.deb root); }
    mkdir -p "$(dirname "$bb")" && cp "$work/root/bin/busybox" "$bb.tmp" && mv "$bb.tmp" "$bb"
    rm -rf "$work"
  fi
fi
