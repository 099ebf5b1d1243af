#!/usr/bin/env bash
# make demo: start a local etcd 3.5.30, write Kubernetes-like data, take a real backup
# into the default local storage (./lifeboat-backups), then list and verify it, and show
# what lifeboat reads from the snapshot.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
need "$LIFEBOAT"; need "$LOADGEN"
ETCDCTL="$TOOLS_DIR/etcd-3.5.30/etcdctl"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/lifeboat-demo.XXXXXX")
trap 'stop_etcd; rm -rf "$WORK"' EXIT
cd "$REPO_ROOT"

echo "==> starting etcd 3.5.30 on 127.0.0.1 (data in $WORK)"
start_etcd 3.5.30 "$WORK"
echo "    $ETCD_ENDPOINT"
echo "==> writing Kubernetes-like objects under /registry/"
"$LOADGEN" --endpoint "$ETCD_ENDPOINT" --max-keys 3000 --namespaces 2 >/dev/null 2>&1
"$ETCDCTL" --endpoints "$ETCD_ENDPOINT" put /calico/ipam/v2/host/node-1 '{"block":"10.0.0.0/26"}' >/dev/null
"$ETCDCTL" --endpoints "$ETCD_ENDPOINT" del --prefix /registry/events/team-00/ >/dev/null

echo
echo "\$ lifeboat backup --endpoints $ETCD_ENDPOINT --cluster demo"
"$LIFEBOAT" backup --endpoints "$ETCD_ENDPOINT" --cluster demo
echo
echo "\$ lifeboat list --cluster demo -w table"
"$LIFEBOAT" list --cluster demo -w table
echo
echo "\$ lifeboat verify latest --cluster demo"
"$LIFEBOAT" verify latest --cluster demo
stop_etcd

echo
echo "\$ lifeboat fetch latest --cluster demo --out snapshot.db"
"$LIFEBOAT" fetch latest --cluster demo --out "$WORK/snapshot.db"
echo
echo "\$ lifeboat snapshot status snapshot.db -w table"
"$LIFEBOAT" snapshot status "$WORK/snapshot.db" -w table
echo
echo "\$ lifeboat snapshot inspect snapshot.db --prefix /registry/ --depth 1 -w table"
"$LIFEBOAT" snapshot inspect "$WORK/snapshot.db" --prefix /registry/ --depth 1 -w table
echo
echo "\$ etcdutl snapshot status snapshot.db -w table   # the reference, for comparison"
"$TOOLS_DIR/etcd-3.5.30/etcdutl" snapshot status "$WORK/snapshot.db" -w table
echo
echo "Backups are in $REPO_ROOT/lifeboat-backups/demo/ (git-ignored)."
