#!/usr/bin/env bash
# Loads two front doors (or a front door and the bare http-proxy server) at the same time, each with its own wrk
# (16 connections, 8 s), in front of one host replica, and prints each one's CPU per request: the machine's other load
# weighs on both alike. Usage (after npm run build): bench/side-by-side.sh A B, each a server in dist/bench/servers
# (front-door, bare-proxy) or the path of another checkout's dist/bench/servers/front-door.js.
cd "$(dirname "$0")/.."
D=$(mktemp -d)
echo "export function hello() { return 'hello'; }" > $D/hello.mjs
echo "{\"module\":\"$D/hello.mjs\",\"exportName\":\"hello\",\"initArgs\":[],\"controlSecret\":\"x\"}" > $D/entry.json
FLOTILLA_ENTRY_FILE=$D/entry.json FLOTILLA_SOCKET=$D/r.sock node dist/src/replica/main.js 2>/dev/null & RP=$!
sleep 1
i=0; PIDS=()
for s in "$1" "$2"; do
  f=${s%%:*}; envs=${s#*:}; [ "$envs" = "$s" ] && envs=
  case $f in /*) js=$f;; *) js=dist/bench/servers/$f.js;; esac; env $envs node $js $D/r.sock /hello > $D/$i.out & PIDS+=($!); i=$((i+1))
done
sleep 1.5
P0=$(node -e "console.log(JSON.parse(require('fs').readFileSync('$D/0.out','utf8')).port)")
P1=$(node -e "console.log(JSON.parse(require('fs').readFileSync('$D/1.out','utf8')).port)")
wrk -t1 -c16 -d2s http://127.0.0.1:$P0/hello >/dev/null & W=$!; wrk -t1 -c16 -d2s http://127.0.0.1:$P1/hello >/dev/null; wait $W; sleep 0.5
b0=$(awk '{print $14+$15}' /proc/${PIDS[0]}/stat); b1=$(awk '{print $14+$15}' /proc/${PIDS[1]}/stat)
wrk -t1 -c16 -d8s http://127.0.0.1:$P0/hello > $D/w0 & W=$!; wrk -t1 -c16 -d8s http://127.0.0.1:$P1/hello > $D/w1; wait $W
a0=$(awk '{print $14+$15}' /proc/${PIDS[0]}/stat); a1=$(awk '{print $14+$15}' /proc/${PIDS[1]}/stat)
n0=$(awk '/requests in/{print $1}' $D/w0); n1=$(awk '/requests in/{print $1}' $D/w1)
echo "$1: $n0 req, $(( (a0-b0)*10000/n0 )) µs/req | $2: $n1 req, $(( (a1-b1)*10000/n1 )) µs/req"
kill ${PIDS[@]} $RP; wait 2>/dev/null; rm -rf $D
