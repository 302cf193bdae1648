#!/usr/bin/env bash
# The README's first command: build fetchfs and the local S3-compatible test server, serve a
# generated sample bucket on 127.0.0.1, mount it, and read it with ordinary tools.
# DEMO_NONINTERACTIVE=1 unmounts and stops the server at the end (used by tests).
set -euo pipefail
cd "$(dirname "$0")/.."

# FETCHFS_DEMO_BIN: a directory with fetchfs and test-s3-server already built (the test uses it).
bin=${FETCHFS_DEMO_BIN:-target/release}
mnt=${FETCHFS_DEMO_DIR:-/tmp/fetchfs-demo}
# A free port unless one is asked for: another server (MinIO's, on 9000) may hold the usual one.
port=${FETCHFS_DEMO_PORT:-0}
log="${mnt%/}-server.log"
fslog="${mnt%/}-fetchfs.log"
# What a running demo left for its own stop command: its server's pid.
state="${mnt%/}.demo-server-pid"

# A demo still running from an earlier run is left as it is: this run says so and stops there,
# and never unmounts what it did not mount.
if mountpoint -q "$mnt" 2>/dev/null; then
  if [ -f "$state" ] && kill -0 "$(cat "$state")" 2>/dev/null; then
    echo "demo: already running: the sample bucket is mounted at $mnt (test server pid $(cat "$state"))."
    echo "Stop it with: umount $mnt && kill $(cat "$state") && rmdir $mnt && rm -f $log $fslog $state"
    exit 0
  fi
  echo "demo: $mnt is a mount this demo did not make; unmount it or set FETCHFS_DEMO_DIR" >&2
  exit 1
fi

if [ -z "${FETCHFS_DEMO_BIN:-}" ]; then
  echo "demo: building fetchfs and the test S3 server (release; the first time about 17 CPU-minutes: 9-10 minutes on two idle cores) ..."
  cargo build --release -p fetchfs -p mount-tests --bins
fi

# The log exists before the server starts, so reading it never races the redirection.
: >"$log"
"$bin/test-s3-server" --port "$port" --sample >"$log" 2>&1 &
server=$!
# Whatever happens, a run that is not kept for the user leaves no mount and no server behind.
mounted=0
stop_demo() {
  if [ "$mounted" = 1 ]; then umount "$mnt" 2>/dev/null || true; fi
  kill "$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
  rm -f "$state"
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
# A sandbox: deleting and replacing objects are allowed here (a real mount refuses both unless
# asked), and the bucket lives in the server's memory.
"$bin/fetchfs" mount sample "$mnt" --endpoint-url "$endpoint" --force-path-style \
  --allow-delete --allow-overwrite --log-file "$fslog"
mounted=1
echo "$server" >"$state"
echo "demo: mounted with --allow-delete --allow-overwrite (rm, mv and > onto existing files work here;"
echo "      a real mount refuses them unless asked); the sample bucket lives in the server's memory"
echo "      and is gone when the server stops"

set -x
ls -la "$mnt"
find "$mnt" -maxdepth 2 | sed -n 1,8p
cat "$mnt/README.txt" "$mnt/records/042.json"
sha256sum "$mnt/images/train/shard-0000.bin"
dd if="$mnt/big/random-64MiB.bin" of=/dev/null bs=1M
set +x

if [ "${DEMO_NONINTERACTIVE:-0}" = 1 ]; then
  stop_demo
  rm -f "$log" "$fslog"
  rmdir "$mnt" 2>/dev/null || true
  echo "demo finished: unmounted $mnt and stopped the server"
else
  echo
  echo "fetchfs is serving the sample bucket at $mnt (test server pid $server)."
  echo "The binary is $bin/fetchfs; the test server answers at $endpoint with the keys above"
  echo "(AWS_ACCESS_KEY_ID=$AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY=$AWS_SECRET_ACCESS_KEY)."
  echo "fetchfs's log (it says why an operation was refused): $fslog; the server's: $log"
  echo "Stop with (also removes the mount point and both logs):"
  echo "  umount $mnt && kill $server && rmdir $mnt && rm -f $log $fslog $state"
fi
