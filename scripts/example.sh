#!/usr/bin/env bash
# kiln's main job, on a machine with nothing but Rust: build kiln and its
# plugins, link the example's program statically, build the example image
# in examples/hello through kiln's default, daemonless builder into an OCI
# archive, and run it when a Docker Engine answers (none is needed to build).
# Its RUN step needs an OCI runtime: runc is installed when missing (as
# root, with apt-get).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v runc >/dev/null && ! command -v crun >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "example: installing runc (the OCI runtime RUN uses)" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q runc >/dev/null 2>&1 ||
      { apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q runc >/dev/null; }
  else
    echo "example: RUN needs an OCI runtime: install runc or crun (apt-get install runc)" >&2
    exit 1
  fi
fi
cargo build --release --locked
# A FROM scratch image needs a program with no shared libraries; without
# symbols (whose hashes depend on the checkout's path) it is the same bytes,
# and the image the same digest, from any checkout.
cargo rustc --release --locked -q -p kiln-example-greeter --bin greeter -- \
  -C target-feature=+crt-static -C strip=symbols
mkdir -p examples/hello/bin
cp target/release/greeter examples/hello/bin/greeter
archive=target/kiln-example.tar
./target/release/kiln --plugins-dir target/release build examples/hello \
  -t kiln-example:latest --output "type=oci,dest=$archive"
if command -v docker >/dev/null && timeout 10 docker info >/dev/null 2>&1; then
  docker load -i "$archive"
  docker run --rm kiln-example:latest
else
  echo "example: no Docker Engine answers here, so the image is not run; it is in $archive" >&2
  echo "example: elsewhere: docker load -i $archive && docker run --rm kiln-example:latest" >&2
fi
