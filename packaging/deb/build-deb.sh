#!/usr/bin/env bash
# Builds fetchfs_VERSION_ARCH.deb with dpkg-deb from an already built binary.
# Usage: packaging/deb/build-deb.sh [BINARY] [OUTPUT_DIR]
#   BINARY defaults to target/release/fetchfs (build it first: cargo build --release -p fetchfs);
#   OUTPUT_DIR defaults to target/debian.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
binary="$(realpath "${1:-$root/target/release/fetchfs}")"
out="$(mkdir -p "${2:-$root/target/debian}" && cd "${2:-$root/target/debian}" && pwd)"

version="$("$binary" --version | awk '{print $2}')"
arch="$(dpkg --print-architecture)"
stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
chmod 0755 "$stage"

install -D -m 0755 "$binary" "$stage/usr/bin/fetchfs"
# The release profile keeps line tables for backtraces; the package ships without them.
strip --strip-debug "$stage/usr/bin/fetchfs"
# mount(8) runs /sbin/mount.fuse.fetchfs for `-t fuse.fetchfs`; fetchfs knows the name.
mkdir -p "$stage/usr/sbin"
ln -s ../bin/fetchfs "$stage/usr/sbin/mount.fuse.fetchfs"
mkdir -p "$stage/usr/share/man/man8"
"$binary" manpage | gzip -9n > "$stage/usr/share/man/man8/fetchfs.8.gz"
"$binary" manpage mount | gzip -9n > "$stage/usr/share/man/man8/fetchfs-mount.8.gz"
install -D -m 0644 "$root/packaging/systemd/fetchfs@.service" "$stage/lib/systemd/system/fetchfs@.service"
install -D -m 0644 "$root/packaging/systemd/example.env" "$stage/etc/fetchfs/example.env"
install -D -m 0644 "$root/packaging/fstab.example" "$stage/usr/share/doc/fetchfs/fstab.example"
install -D -m 0644 "$root/README.md" "$stage/usr/share/doc/fetchfs/README.md"

mkdir -p "$stage/DEBIAN"
cat > "$stage/DEBIAN/control" <<CONTROL
Package: fetchfs
Version: $version
Architecture: $arch
Maintainer: fetchfs developers <fetchfs@example.org>
Depends: fuse3, ca-certificates
Section: utils
Priority: optional
Installed-Size: $(du -sk "$stage" | cut -f1)
Description: mount an S3 bucket as a fast local directory (read objects, write new ones)
 fetchfs turns reads of files under the mount into parallel, cached ranged GETs
 against S3 or any S3-compatible endpoint, so ordinary tools read buckets fast.
CONTROL
echo /etc/fetchfs/example.env > "$stage/DEBIAN/conffiles"
install -m 0755 "$here/postinst" "$here/postrm" "$stage/DEBIAN/"

deb="$out/fetchfs_${version}_${arch}.deb"
dpkg-deb --root-owner-group --build "$stage" "$deb" >/dev/null
echo "$deb"
