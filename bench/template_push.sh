#!/usr/bin/env bash
# Issue 15: `poolpilot template push` of a 1 GiB image to a local S3 server (moto, from PyPI) and
# the simulator, beside a plain local copy (`cp`) of the same file in the same run. Prints the
# push's throughput as a ratio of cp's, the upload alone (multipart to S3, MD5 from the same
# reads) and the whole push (upload, pre-signed URL, registration: the simulator downloads the
# image again and checks its MD5, then the CLI's first operation poll, 3 s after registering).
# Everything runs on 127.0.0.1 and ends by itself. SIZE_MIB=N for another size.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -c 'import moto.server' 2>/dev/null || {
  echo "moto is required: python3 -m pip install 'moto[server]>=5,<6'" >&2; exit 1; }
cargo build --release --locked -q
BIN=$PWD/target/release/poolpilot
SIZE_MIB=${SIZE_MIB:-1024}
work=$(mktemp -d /tmp/poolpilot-bench-template.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
python3 -m moto.server -H 127.0.0.1 -p "$port" >"$work/moto.log" 2>&1 &
pids+=($!)
"$BIN" sim --listen 127.0.0.1:0 --operation-delay 100ms --env-file "$work/sim.env" \
  --log-format text 2>"$work/sim.log" &
pids+=($!)
for _ in $(seq 300); do
  [ -s "$work/sim.env" ] && curl -s -o /dev/null "http://127.0.0.1:$port/" && break
  sleep 0.1
done
[ -s "$work/sim.env" ] || { echo "the simulator did not start" >&2; exit 1; }
# shellcheck disable=SC1091
. "$work/sim.env"

echo "== writing a ${SIZE_MIB} MiB image of random bytes"
head -c $((SIZE_MIB * 1024 * 1024)) /dev/urandom >"$work/image.qcow2"

now() { date +%s.%N; }
echo "== cp of the same file"
t0=$(now); cp "$work/image.qcow2" "$work/copy.qcow2"; t1=$(now)
rm -f "$work/copy.qcow2"

echo "== poolpilot template push"
t2=$(now)
"$BIN" --log-format json template push --zone ch-gva-2 --sos-endpoint "http://127.0.0.1:$port" \
  --bucket bench --name bench-image --file "$work/image.qcow2" --json \
  >"$work/push.json" 2>"$work/push.log"
t3=$(now)
t4=$(now)
"$BIN" template delete --zone ch-gva-2 --sos-endpoint "http://127.0.0.1:$port" \
  --bucket bench --name bench-image --json >"$work/delete.json" 2>"$work/delete.log"
t5=$(now)

echo "== boto3 (moto's own client library) uploading the same file to the same server"
t6=$(now)
python3 - "$port" "$work/image.qcow2" <<'PY'
import sys, boto3
s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{sys.argv[1]}", region_name="ch-gva-2",
                  aws_access_key_id="bench", aws_secret_access_key="bench")
s3.upload_file(sys.argv[2], "bench", "boto3.qcow2")
s3.delete_object(Bucket="bench", Key="boto3.qcow2")
PY
t7=$(now)

python3 - "$SIZE_MIB" "$t0" "$t1" "$t2" "$t3" "$t4" "$t5" "$t6" "$t7" "$work/push.json" "$work/push.log" "$work/delete.json" <<'PY'
import json, sys
from datetime import datetime
mib = float(sys.argv[1])
t0, t1, t2, t3, t4, t5, t6, t7 = map(float, sys.argv[2:10])
push = json.load(open(sys.argv[10]))
delete = json.load(open(sys.argv[12]))
assert push["uploaded"] and push["registered"], push
assert delete["deleted-templates"] == [push["id"]], delete
# The upload ends at the "uploaded" log event; it starts at the command's first event.
events = [json.loads(l) for l in open(sys.argv[11]) if l.startswith("{")]
def at(e):
    ts = e["timestamp"].rstrip("Z")
    whole, _, frac = ts.partition(".")
    return datetime.fromisoformat(f"{whole}.{(frac + '000000')[:6]}+00:00").timestamp()
uploaded = next(at(e) for e in events if e.get("message") == "uploaded")
cp_s, push_s, del_s = t1 - t0, t3 - t2, t5 - t4
upload_s = uploaded - t2
print(f"size:                {mib:8.0f} MiB (md5 {push['checksum']})")
print(f"cp:                  {cp_s:8.2f} s   {mib / cp_s:8.1f} MiB/s")
print(f"push, upload only:   {upload_s:8.2f} s   {mib / upload_s:8.1f} MiB/s   ratio to cp {cp_s / upload_s:.3f}")
print(f"push, end to end:    {push_s:8.2f} s   {mib / push_s:8.1f} MiB/s   ratio to cp {cp_s / push_s:.3f}")
boto_s = t7 - t6
print(f"boto3 upload (same server, reference): {boto_s:.2f} s   {mib / boto_s:8.1f} MiB/s   ratio to cp {cp_s / boto_s:.3f}")
print(f"delete (template + object): {del_s:.2f} s")
PY
