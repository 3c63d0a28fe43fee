#!/bin/sh
# Two users chat through a running goim server, with curl and examples/chat_client.py.
#
#   terminal 1:  twistd -n --pidfile= goim      (client TCP on 50000, HTTP on 8080)
#   terminal 2:  examples/two_users.sh
#
# GOIM_HTTP (default http://127.0.0.1:8080), GOIM_HOST and GOIM_TCP_PORT (default
# 127.0.0.1 and 50000) point it elsewhere; PYTHON is the interpreter goim is
# installed in (default .venv/bin/python when it exists, else python3).
set -eu

HTTP=${GOIM_HTTP:-http://127.0.0.1:8080}
HOST=${GOIM_HOST:-127.0.0.1}
PORT=${GOIM_TCP_PORT:-50000}
HERE=$(cd "$(dirname "$0")" && pwd)
if [ -z "${PYTHON:-}" ]; then
    if [ -x "$HERE/../.venv/bin/python" ]; then PYTHON="$HERE/../.venv/bin/python"; else PYTHON=python3; fi
fi
CLIENT="$HERE/chat_client.py"
SUFFIX=$$   # user numbers are unique: run the script as often as you like

# call METHOD PATH [BODY [DEVICE_ID TOKEN]] -> prints the envelope's data as JSON; fails on an error
call() {
    if [ -n "${4:-}" ]; then
        answer=$(curl -sS -X "$1" "$HTTP$2" -H "device_id: $4" -H "token: $5" -d "${3:-}")
    else
        answer=$(curl -sS -X "$1" "$HTTP$2" -d "${3:-}")
    fi
    echo "$answer" | "$PYTHON" -c '
import json, sys
envelope = json.load(sys.stdin)
if envelope["code"] != 0:
    sys.exit(f"HTTP API error {envelope}")
print(json.dumps(envelope["data"]))'
}

# field NAME: reads JSON on stdin, prints one field
field() { "$PYTHON" -c "import json, sys; print(json.load(sys.stdin)['$1'])"; }

DEVICE='{"type": 1, "brand": "demo", "model": "shell", "system_version": "1", "app_version": "1.0"}'

echo "== registering devices and users at $HTTP"
device=$(call POST /device "$DEVICE")
ALICE_DEVICE=$(echo "$device" | field id); ALICE_TOKEN=$(echo "$device" | field token)
ALICE=$(call POST /user "{\"number\": \"alice-$SUFFIX\", \"nickname\": \"Alice\", \"password\": \"secret-pw\"}" \
    "$ALICE_DEVICE" "$ALICE_TOKEN" | field user_id)
device=$(call POST /device "$DEVICE")
BOB_DEVICE=$(echo "$device" | field id); BOB_TOKEN=$(echo "$device" | field token)
BOB=$(call POST /user "{\"number\": \"bob-$SUFFIX\", \"nickname\": \"Bob\", \"password\": \"secret-pw\"}" \
    "$BOB_DEVICE" "$BOB_TOKEN" | field user_id)
echo "alice: user $ALICE on device $ALICE_DEVICE; bob: user $BOB on device $BOB_DEVICE"

echo "== alice befriends bob (friendship is mutual)"
call POST /friend "{\"friend_id\": $BOB, \"label\": \"Bob\"}" "$ALICE_DEVICE" "$ALICE_TOKEN" >/dev/null

echo "== bob connects over TCP ($HOST:$PORT) and waits for messages"
BOB_OUT=$(mktemp)
"$PYTHON" "$CLIENT" --host "$HOST" --port "$PORT" --device-id "$BOB_DEVICE" --token "$BOB_TOKEN" \
    --user-id "$BOB" >"$BOB_OUT" 2>&1 &
BOB_PID=$!
trap 'kill $BOB_PID 2>/dev/null || true; rm -f "$BOB_OUT"' EXIT INT TERM
# wait_for TEXT: until bob's client printed TEXT (at most 10 s)
wait_for() {
    tries=0
    until grep -q "$1" "$BOB_OUT"; do
        tries=$((tries + 1))
        if [ $tries -gt 100 ] || ! kill -0 $BOB_PID 2>/dev/null; then
            echo "bob's client did not print '$1':"; cat "$BOB_OUT"; exit 1
        fi
        sleep 0.1
    done
}
wait_for "synced up to"

echo "== alice sends a message to bob"
"$PYTHON" "$CLIENT" --host "$HOST" --port "$PORT" --device-id "$ALICE_DEVICE" --token "$ALICE_TOKEN" \
    --user-id "$ALICE" --to "$BOB" --text "hello bob, this is alice" --exit | sed 's/^/alice | /'

wait_for "hello bob"
echo "== what bob's client printed"
sed 's/^/bob   | /' "$BOB_OUT"
