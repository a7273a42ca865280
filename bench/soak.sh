#!/usr/bin/env bash
# Soak test (not run in CI): the release proxy under steady load for N minutes (default 10)
# while faults are injected, then the figures the README's "Reliability" section quotes.
#
#   bench/soak.sh [MINUTES]        e.g. bench/soak.sh 2; SOAK_MINUTES works too
#
# What runs, all on loopback:
#   - three demo upstreams (`wasmesh upstream`) behind cluster `app` (round robin, retries on
#     connect failures, resets and 5xx, outlier ejection);
#   - load: wrk (GET, 4 connections) on route `/` through chain `edge` (the stock headers
#     filter), plus a verifying client (Python) that POSTs bodies of random sizes and checks
#     that every 200 describes exactly its own request (path and body length): anything else
#     answered 200 is data lost;
#   - faults: every 4 s one upstream is killed with SIGKILL and restarted 2 s later; every 3 s
#     chain `edge` is replaced (`wasmesh chain set`), a reload; all the time, route `/hostile`
#     runs the hostile test filter, sent a trap, a runaway loop, memory exhaustion, a stack
#     overflow, a header flood or a pause on every request (a quarter of those sent clean).
#
# Prints: requests sent, faults injected, requests failed (normal traffic answered other than
# 2xx, or not at all), data lost (must be 0; the exit status is 1 otherwise).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-2}
minutes=${1:-${SOAK_MINUTES:-10}}
seconds=$((minutes * 60))

command -v wrk >/dev/null || {
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
}
cargo build --release --quiet -p wasmesh-proxy
cargo build --release --quiet --target wasm32-wasip1 \
  -p wasmesh-filter-headers -p wasmesh-hostile-filter
bin=$PWD/target/release/wasmesh
headers_wasm=$PWD/target/wasm32-wasip1/release/wasmesh_filter_headers.wasm
hostile_wasm=$PWD/target/wasm32-wasip1/release/wasmesh_hostile_filter.wasm

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}" "${upstream_pids[@]:-}"; do
    [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  if [ -n "${SOAK_KEEP:-}" ]; then echo "soak: work directory kept: $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# --- upstreams (fixed ports, so a killed one comes back where the proxy expects it) ----------
upstream_ports=()
upstream_pids=()
for i in 0 1 2; do
  upstream_ports+=("$(free_port)")
done
start_upstream() {
  local i=$1
  "$bin" upstream --listen "127.0.0.1:${upstream_ports[$i]}" --name "u$i" \
    >"$work/upstream$i.log" 2>&1 &
  upstream_pids[$i]=$!
}
for i in 0 1 2; do start_upstream "$i"; done

# --- the proxy -------------------------------------------------------------------------------
listen_port=$(free_port)
admin_port=$(free_port)
cat >"$work/soak.yaml" <<EOF
listeners:
  - name: main
    address: "127.0.0.1:$listen_port"
    route_config: main
routes:
  - name: main
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - name: hostile
            match: { prefix: "/hostile" }
            cluster: app
            timeout: 2s
            filter_chain: hostile
          - name: default
            match: { prefix: "/" }
            cluster: app
            timeout: 5s
            filter_chain: edge
            retry_policy:
              retry_on: [connect-failure, reset, 5xx]
              num_retries: 3
              per_try_timeout: 1s
              base_interval: 5ms
clusters:
  - name: app
    endpoints: ["127.0.0.1:${upstream_ports[0]}", "127.0.0.1:${upstream_ports[1]}", "127.0.0.1:${upstream_ports[2]}"]
    connect_timeout: 500ms
    outlier_detection: { consecutive_gateway_failure: 3, consecutive_5xx: 3, base_ejection_time: 2s, max_ejection_percent: 34 }
    circuit_breakers: { max_retries: 64 }
filter_chains:
  - name: edge
    plugins:
      - name: headers
        source: "file://$headers_wasm"
        config: { response: { set: { x-soak: "0" } } }
  - name: hostile
    plugins:
      - name: hostile
        source: "file://$hostile_wasm"
        failure_policy: fail_closed
        deadline: 100ms
        memory_limit: 16777216
admin:
  address: "127.0.0.1:$admin_port"
EOF
RUST_LOG=error "$bin" run --config "$work/soak.yaml" >"$work/proxy.log" 2>&1 &
proxy_pid=$!
pids+=("$proxy_pid")
for _ in $(seq 1 100); do
  grep -q "wasmesh: ready" "$work/proxy.log" 2>/dev/null && break
  sleep 0.1
done
grep -q "wasmesh: ready" "$work/proxy.log" || { cat "$work/proxy.log"; exit 1; }
base="http://127.0.0.1:$listen_port"
echo "soak: ${minutes} min against $base (work dir $work)"

# --- faults ----------------------------------------------------------------------------------
(
  kills=0
  end=$((SECONDS + seconds))
  while [ $SECONDS -lt $end ]; do
    sleep 4
    i=$((kills % 3))
    kill -9 "${upstream_pids[$i]}" 2>/dev/null || true
    sleep 2
    start_upstream "$i"
    kills=$((kills + 1))
    echo "$kills" >"$work/kills"
  done
  kill "${upstream_pids[@]}" 2>/dev/null || true
) &
pids+=($!)
(
  reloads=0
  end=$((SECONDS + seconds))
  while [ $SECONDS -lt $end ]; do
    sleep 3
    reloads=$((reloads + 1))
    if "$bin" chain set edge --plugin "file://$headers_wasm" \
        --config "{\"response\":{\"set\":{\"x-soak\":\"$reloads\"}}}" \
        --admin "127.0.0.1:$admin_port" >/dev/null 2>>"$work/reload.log"; then
      echo "$reloads" >"$work/reloads"
    else
      echo "reload $reloads failed" >>"$work/reload.log"
    fi
  done
) &
pids+=($!)

# --- load ------------------------------------------------------------------------------------
wrk -t 2 -c 4 -d "${seconds}s" --timeout 10s "$base/" >"$work/wrk.txt" 2>&1 &
wrk_pid=$!
pids+=("$wrk_pid")

python3 - "$base" "$seconds" >"$work/verify.txt" <<'PY' &
import http.client, json, os, random, sys, threading, time
base, seconds = sys.argv[1], int(sys.argv[2])
host = base.split("//")[1]
end = time.time() + seconds
lock = threading.Lock()
stats = {"sent": 0, "failed": 0, "lost": 0, "hostile": 0, "hostile_answered": 0, "why": {}}
words = ["trap-request-headers", "loop", "grow", "recurse", "headers-flood", "pause",
         "trap-response-body", "", "", ""]

def bump(key, n=1):
    with lock:
        stats[key] += n

def failed(why):
    with lock:
        stats["failed"] += 1
        stats["why"][why] = stats["why"].get(why, 0) + 1

def verifier(seed):
    rng = random.Random(seed)
    seq = 0
    while time.time() < end:
        seq += 1
        size = rng.choice([0, 1, 100, 4096, 65536, rng.randrange(0, 200_000)])
        body = os.urandom(size)
        path = f"/verify?worker={seed}&seq={seq}"
        bump("sent")
        try:
            c = http.client.HTTPConnection(host, timeout=15)
            c.request("POST", path, body=body, headers={"content-type": "application/octet-stream"})
            r = c.getresponse()
            data = r.read()
            c.close()
        except Exception as e:
            failed(type(e).__name__)
            continue
        if r.status != 200:
            failed(str(r.status))
            continue
        try:
            seen = json.loads(data)
            if seen.get("path") != path or seen.get("body_bytes") != size or seen.get("method") != "POST":
                bump("lost")
        except Exception:
            bump("lost")

def hostile():
    i = 0
    while time.time() < end:
        word = words[i % len(words)]
        i += 1
        bump("hostile")
        try:
            c = http.client.HTTPConnection(host, timeout=15)
            c.request("GET", "/hostile", headers={"x-hostile": word} if word else {})
            r = c.getresponse()
            r.read()
            c.close()
            bump("hostile_answered")
        except Exception:
            pass

threads = [threading.Thread(target=verifier, args=(n,)) for n in range(4)]
threads.append(threading.Thread(target=hostile))
for t in threads:
    t.start()
for t in threads:
    t.join()
print(json.dumps(stats))
PY
verify_pid=$!
pids+=("$verify_pid")

wait "$wrk_pid" || true
wait "$verify_pid" || true
sleep 1

# --- figures ---------------------------------------------------------------------------------
wrk_requests=$(awk '/requests in/ {print $1}' "$work/wrk.txt")
wrk_non2xx=$(awk '/Non-2xx or 3xx responses:/ {print $NF}' "$work/wrk.txt")
wrk_socket=$(awk -F'[ ,]+' '/Socket errors:/ {print $4 + $6 + $8 + $10}' "$work/wrk.txt")
read -r v_sent v_failed v_lost h_sent h_answered < <(python3 -c '
import json, sys
s = json.load(open(sys.argv[1]))
print(s["sent"], s["failed"], s["lost"], s["hostile"], s["hostile_answered"])' "$work/verify.txt")
kills=$(cat "$work/kills" 2>/dev/null || echo 0)
reloads=$(cat "$work/reloads" 2>/dev/null || echo 0)
stats=$(curl -s "http://127.0.0.1:$admin_port/stats" || true)
why=$(python3 -c '
import json, sys
print(", ".join(f"{k}: {v}" for k, v in sorted(json.load(open(sys.argv[1]))["why"].items())) or "none")' "$work/verify.txt")
codes=$(printf '%s\n' "$stats" | awk '/^wasmesh_requests_total/ && /route="default"/ && !/code="2/ {match($0, /code="[0-9]+"/); c = substr($0, RSTART + 6, RLENGTH - 7); n[c] += $NF} END {for (k in n) printf "%s: %d, ", k, n[k]}' | sed 's/, $//')
filter_failures=$(printf '%s\n' "$stats" | awk '/^wasmesh_filter_failures_total/ {s += $NF} END {print s + 0}')
ejections=$(printf '%s\n' "$stats" | awk '/^wasmesh_outlier_ejections_total/ {s += $NF} END {print s + 0}')
alive=yes
kill -0 "$proxy_pid" 2>/dev/null || alive=no
rss=$(awk '/VmRSS/ {print $2 " " $3}' "/proc/$proxy_pid/status" 2>/dev/null || echo "?")

sent=$((${wrk_requests:-0} + v_sent + h_sent))
failed=$((${wrk_non2xx:-0} + ${wrk_socket:-0} + v_failed))
echo "soak: ${minutes} min; proxy alive at the end: $alive (RSS $rss)"
echo "soak: requests sent:   $sent (wrk $wrk_requests, verified POSTs $v_sent, to the hostile filter $h_sent)"
echo "soak: faults injected: $((kills + reloads + h_sent)) ($kills upstream SIGKILLs, $reloads chain reloads, $h_sent hostile-filter requests; $filter_failures filter failures and $ejections ejections counted)"
echo "soak: requests failed: $failed of $((${wrk_requests:-0} + v_sent)) normal requests (wrk non-2xx ${wrk_non2xx:-0}, wrk socket errors ${wrk_socket:-0}, verified $v_failed); hostile requests answered $h_answered of $h_sent"
echo "soak: failures by answer: verified ${why}; the proxy answered non-2xx: ${codes:-none}"
echo "soak: data lost:       $v_lost"
[ "$v_lost" = 0 ] && [ "$alive" = yes ]
