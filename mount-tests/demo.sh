#!/usr/bin/env bash
# The README's first command: build fetchfs and the local S3-compatible test server, serve a
# generated sample bucket on 127.0.0.1, mount it, and read it with ordinary tools.
# DEMO_NONINTERACTIVE=1 unmounts and stops the server at the end (used by tests).
set -euo pipefail
cd "$(dirname "$0")/.."

# FETCHFS_DEMO_BIN: a directory with fetchfs and test-s3-server already built (the test uses it).
bin=${FETCHFS_DEMO_BIN:-target/release}
if [ -z "${FETCHFS_DEMO_BIN:-}" ]; then
  cargo build --release --quiet -p fetchfs -p mount-tests --bins
fi
mnt=${FETCHFS_DEMO_DIR:-/tmp/fetchfs-demo}
# A free port unless one is asked for: another server (MinIO's, on 9000) may hold the usual one.
port=${FETCHFS_DEMO_PORT:-0}
log="${mnt%/}-server.log"

# The log exists before the server starts, so reading it never races the redirection.
: >"$log"
"$bin/test-s3-server" --port "$port" --sample >"$log" 2>&1 &
server=$!
# Whatever happens, a run that is not kept for the user leaves no mount and no server behind.
stop_demo() {
  umount "$mnt" 2>/dev/null || true
  kill "$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
}
if [ "${DEMO_NONINTERACTIVE:-0}" = 1 ]; then
  trap stop_demo EXIT
else
  trap 'status=$?; [ "$status" = 0 ] || stop_demo' EXIT
fi
# The server prints its endpoint on its first line once it listens, or says why it cannot.
endpoint=
for _ in $(seq 300); do
  endpoint=$(sed -n '1{/^http/p}' "$log")
  [ -n "$endpoint" ] && break
  if ! kill -0 "$server" 2>/dev/null; then
    echo "demo: the test S3 server did not start: $(cat "$log")" >&2
    exit 1
  fi
  sleep 0.1
done
if [ -z "$endpoint" ]; then
  echo "demo: the test S3 server did not start within 30 s (log: $log)" >&2
  exit 1
fi

mkdir -p "$mnt"
# The test server's keys; real use takes them from the AWS credential chain the same way.
export AWS_ACCESS_KEY_ID=fetchfs-test-access AWS_SECRET_ACCESS_KEY=fetchfs-test-secret-key
"$bin/fetchfs" mount sample "$mnt" --endpoint-url "$endpoint" --force-path-style

set -x
ls -la "$mnt"
find "$mnt" -maxdepth 2 | sed -n 1,8p
cat "$mnt/README.txt" "$mnt/records/042.json"
sha256sum "$mnt/images/train/shard-0000.bin"
dd if="$mnt/big/random-64MiB.bin" of=/dev/null bs=1M
set +x

if [ "${DEMO_NONINTERACTIVE:-0}" = 1 ]; then
  stop_demo
  echo "demo finished: unmounted $mnt and stopped the server"
else
  echo
  echo "fetchfs is serving the sample bucket at $mnt (test server pid $server)."
  echo "Stop with: umount $mnt && kill $server"
fi
