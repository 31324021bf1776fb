#!/usr/bin/env bash
# The built image's two entrypoints, end to end: generate a small book, run the nightly batch in
# one container, serve the lake it wrote from another, and ask the API over HTTP. Exit 0 only if
# the night succeeded and a branch token got its own portfolio back.
#
#   deploy/image/smoke.sh                                   # docker, image "postloan"
#   ENGINE="podman --runtime runc" IMAGE=localhost/postloan deploy/image/smoke.sh
#   RUN_FLAGS="--ulimit nproc=32768:32768" ENGINE=podman deploy/image/smoke.sh   # extra `run` flags
#
# The API container shares the host's network and listens on 127.0.0.1:$PORT only.
set -euo pipefail

read -r -a engine <<<"${ENGINE:-docker}"
IMAGE=${IMAGE:-postloan}
PORT=${PORT:-18000}
LOANS=${LOANS:-2000}
AS_OF=${AS_OF:-2026-10-31}
read -r -a run_flags <<<"${RUN_FLAGS:-}"
data=$(mktemp -d)
server=postloan-smoke-$$
POSTLOAN_JWT_SECRET=$(head -c 48 /dev/urandom | base64 | tr -d '\n/+=')
export POSTLOAN_JWT_SECRET

cleanup() {
  "${engine[@]}" rm -f "$server" >/dev/null 2>&1 || true
  # The containers' user (uid 10001) owns what the night wrote; remove it as root, from inside a container.
  "${engine[@]}" run --rm "${run_flags[@]}" --user 0 --entrypoint rm -v "$data:/data" "$IMAGE" -rf /data/landing /data/lake \
    >/dev/null 2>&1 || true
  rm -rf "$data"
}
trap cleanup EXIT
# The image runs as uid 10001, which must be able to write the volume.
chmod 0777 "$data"

run() { "${engine[@]}" run --rm "${run_flags[@]}" -v "$data:/data" "$@"; }

step() { printf '%s  %s\n' "$(date +%T)" "$*"; }

step "generate $LOANS loans"
run "$IMAGE" generate --loans "$LOANS" --as-of "$AS_OF" --landing /data/landing
step "nightly $AS_OF"
started=$SECONDS
run "$IMAGE" nightly --as-of "$AS_OF" --landing /data/landing --lake /data/lake
step "nightly done in $((SECONDS - started)) s"

step "serve on 127.0.0.1:$PORT"
"${engine[@]}" run -d --name "$server" "${run_flags[@]}" --network host -e POSTLOAN_JWT_SECRET \
  -v "$data/lake:/data/lake:ro" "$IMAGE" serve --lake /data/lake --host 127.0.0.1 --port "$PORT" >/dev/null
for _ in $(seq 1 120); do
  if curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null; then break; fi
  sleep 1
done
curl -sf "http://127.0.0.1:$PORT/readyz" || { "${engine[@]}" logs "$server" | tail -20; exit 1; }
echo

token=$(run -e POSTLOAN_JWT_SECRET "$IMAGE" token --role BRANCH --branch T1-02)
answer=$(curl -s "http://127.0.0.1:$PORT/graphql" -H "Authorization: Bearer $token" \
  -H 'Content-Type: application/json' \
  -d '{"query":"{ portfolio(groupBy: TIER2_BRANCH) { key loanCount balance nplRatio } }"}')
echo "$answer" | head -c 600
echo
# A branch token's portfolio: rows, all of them tier-2 branches of its own (the generated book
# names T1-02's children T2-02-1, T2-02-2, ...), and no errors.
python3 - "$answer" <<'EOF'
import json
import sys

answer = json.loads(sys.argv[1])
assert "errors" not in answer, answer["errors"]
rows = answer["data"]["portfolio"]
assert rows and all(row["key"].startswith("T2-02-") for row in rows), rows
assert sum(row["loanCount"] for row in rows) > 0, rows
print(f"portfolio: {len(rows)} tier-2 branches under T1-02, {sum(r['loanCount'] for r in rows)} loans")
EOF
step "image $IMAGE: nightly and API OK"
