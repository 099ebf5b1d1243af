# Shared helpers for scripts/demo.sh and scripts/bench.sh (sourced, not run).
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
TOOLS_DIR=${LIFEBOAT_TOOLS_DIR:-$REPO_ROOT/.tools}
LIFEBOAT=${LIFEBOAT:-$REPO_ROOT/target/release/lifeboat}
LOADGEN=${LOADGEN:-$REPO_ROOT/target/release/examples/load_kubernetes}

need() { [[ -x $1 ]] || { echo "missing $1: run 'make deps' (or 'make demo' / 'make test')" >&2; exit 1; }; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start_etcd VERSION DATA_DIR -> sets ETCD_PID and ETCD_ENDPOINT
start_etcd() {
    local version=$1 dir=$2 client peer
    client=$(free_port); peer=$(free_port)
    need "$TOOLS_DIR/etcd-$version/etcd"
    "$TOOLS_DIR/etcd-$version/etcd" --name lifeboat-demo --data-dir "$dir/data" \
        --listen-client-urls "http://127.0.0.1:$client" --advertise-client-urls "http://127.0.0.1:$client" \
        --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
        --initial-cluster "lifeboat-demo=http://127.0.0.1:$peer" --quota-backend-bytes 8589934592 \
        >"$dir/etcd.log" 2>&1 &
    ETCD_PID=$!
    ETCD_ENDPOINT="http://127.0.0.1:$client"
    for _ in $(seq 1 100); do
        if ETCDCTL_API=3 "$TOOLS_DIR/etcd-$version/etcdctl" --endpoints "$ETCD_ENDPOINT" endpoint health >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.1
    done
    echo "etcd did not become healthy; its log:" >&2; tail -20 "$dir/etcd.log" >&2; exit 1
}

stop_etcd() {
    if [[ -n ${ETCD_PID:-} ]]; then
        kill "$ETCD_PID" 2>/dev/null || true
        wait "$ETCD_PID" 2>/dev/null || true
    fi
    ETCD_PID=
}
