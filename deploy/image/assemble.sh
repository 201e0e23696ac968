#!/usr/bin/env bash
# Assembles the file tree of Remora's proxy image into a folder: what the Dockerfile's final
# stage holds on top of its Debian base. No image can be built on our machines, so the tests
# (tests/tests/image.rs) run Linkerd's chart's commands from a tree this script makes, as a
# read-only root.
#
#   deploy/image/assemble.sh OUT [--profile release|dev] [--no-build] [--base]
#
#   OUT          the folder to fill (created; an existing tree there is replaced)
#   --profile    the cargo profile whose binaries are used (default: release)
#   --no-build   use the binaries already built instead of running cargo build
#   --base       also copy, from this machine, the pieces the Debian base image provides
#                (iptables-nft/-legacy and their libraries, sleep, setpriv, /etc/protocols, the
#                dynamic loader), so OUT works as a whole root filesystem (for the tests)
#
# The tree (Linkerd's chart runs every path under /usr/lib/linkerd):
#   /usr/lib/linkerd/linkerd2-proxy              remora, stripped, no file capabilities: the
#                                                ENTRYPOINT (with no arguments it runs the proxy)
#   /usr/lib/linkerd/linkerd2-proxy-init         the init binary (proxy-init's flags), stripped,
#                                                cap_net_admin,cap_net_raw+ep (set when run as root)
#   /usr/lib/linkerd/linkerd-await               -> linkerd2-proxy (dispatches on its name)
#   /usr/lib/linkerd/linkerd2-network-validator  -> linkerd2-proxy
#   /usr/lib/linkerd/linkerd2-proxy-version.txt  the version
#   /usr/bin/remora                              -> ../lib/linkerd/linkerd2-proxy
# The pod's volumes (/var/run/linkerd/identity/end-entity, /var/run/secrets/tokens, init's /run)
# are mounted by the container runtime, which makes their mount points; /var/run is the base
# image's link to /run.
set -euo pipefail

usage() {
    sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 64
}

[ $# -ge 1 ] || usage
OUT=$1
shift
PROFILE=release
BUILD=1
BASE=0
while [ $# -gt 0 ]; do
    case "$1" in
        --profile) PROFILE=${2:?--profile needs a value}; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        --base) BASE=1; shift ;;
        *) usage ;;
    esac
done
case "$PROFILE" in
    release) DIR=release ;;
    dev) DIR=debug ;;
    *) echo "assemble.sh: unknown profile $PROFILE (release or dev)" >&2; exit 64 ;;
esac

REPO=$(cd "$(dirname "$0")/../.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$REPO/target}
if [ "$BUILD" = 1 ]; then
    (cd "$REPO" && cargo build --locked --profile "$PROFILE" \
        -p remora --bin remora -p remora-init --bin linkerd2-proxy-init)
fi
BIN=$TARGET/$DIR
for b in remora linkerd2-proxy-init; do
    [ -x "$BIN/$b" ] || { echo "assemble.sh: $BIN/$b is not built" >&2; exit 1; }
done

rm -rf "$OUT"
mkdir -p "$OUT/usr/lib/linkerd" "$OUT/usr/bin"
L=$OUT/usr/lib/linkerd
strip --strip-all -o "$L/linkerd2-proxy" "$BIN/remora"
strip --strip-all -o "$L/linkerd2-proxy-init" "$BIN/linkerd2-proxy-init"
chmod 0755 "$L/linkerd2-proxy" "$L/linkerd2-proxy-init"
ln -s linkerd2-proxy "$L/linkerd-await"
ln -s linkerd2-proxy "$L/linkerd2-network-validator"
ln -s ../lib/linkerd/linkerd2-proxy "$OUT/usr/bin/remora"
sed -n 's/^version = "\(.*\)"/\1/p' "$REPO/Cargo.toml" | head -n1 > "$L/linkerd2-proxy-version.txt"
for d in run tmp proc dev; do
    mkdir -p "$OUT/$d"
done
chmod 1777 "$OUT/tmp"
if [ "$(id -u)" = 0 ]; then
    setcap cap_net_admin,cap_net_raw+ep "$L/linkerd2-proxy-init"
else
    echo "assemble.sh: not root: $L/linkerd2-proxy-init has no file capabilities" >&2
fi

# What debian:bookworm-slim plus `apt-get install iptables` provides, copied from this machine
# (also a Debian bookworm) with the libraries each binary links.
copy_with_libs() {
    local src=$1
    local real
    real=$(readlink -f "$src")
    install -D -m 0755 "$real" "$OUT/usr${real#/usr}"
    copy_libs_of "$real"
}

# The shared libraries `bin` links, as the base image has them.
copy_libs_of() {
    ldd "$1" | awk '/=>/ { print $3 } /^\t\/lib/ { print $1 }' | while read -r lib; do
        [ -n "$lib" ] || continue
        local r
        r=$(readlink -f "$lib")
        local dest=$OUT/usr${r#/usr}
        [ -e "$dest" ] || install -D -m 0644 "$r" "$dest"
        # The name the binary asks for, linked to the file it resolves to.
        local want=$OUT/usr${lib#/usr}
        if [ ! -e "$want" ] && [ ! -L "$want" ]; then
            mkdir -p "$(dirname "$want")"
            ln -sr "$dest" "$want"
        fi
    done
}

if [ "$BASE" = 1 ]; then
    # usrmerge, as Debian bookworm has it, and /var/run -> /run.
    for d in bin sbin lib lib64; do
        mkdir -p "$OUT/usr/$d"
        [ -e "$OUT/$d" ] || ln -s "usr/$d" "$OUT/$d"
    done
    mkdir -p "$OUT/var" "$OUT/etc"
    ln -s ../run "$OUT/var/run"
    # What our own binaries link (libc, libgcc_s, ...).
    copy_libs_of "$L/linkerd2-proxy"
    copy_libs_of "$L/linkerd2-proxy-init"
    copy_with_libs /usr/bin/sleep
    copy_with_libs /usr/bin/setpriv
    copy_with_libs /usr/bin/sh
    copy_with_libs /usr/sbin/xtables-nft-multi
    copy_with_libs /usr/sbin/xtables-legacy-multi
    for t in iptables ip6tables; do
        for v in nft legacy; do
            ln -sf "xtables-$v-multi" "$OUT/usr/sbin/$t-$v"
            ln -sf "xtables-$v-multi" "$OUT/usr/sbin/$t-$v-save"
            ln -sf "xtables-$v-multi" "$OUT/usr/sbin/$t-$v-restore"
        done
        ln -sf "xtables-nft-multi" "$OUT/usr/sbin/$t"
        ln -sf "xtables-nft-multi" "$OUT/usr/sbin/$t-save"
    done
    XT=/usr/lib/x86_64-linux-gnu/xtables
    mkdir -p "$OUT$XT"
    cp -a "$XT/." "$OUT$XT/"
    for so in "$XT"/*.so; do
        copy_with_libs "$so" >/dev/null
    done
    loader=$(readlink -f /lib64/ld-linux-x86-64.so.2)
    install -D -m 0755 "$loader" "$OUT/usr${loader#/usr}"
    [ -e "$OUT/usr/lib64/ld-linux-x86-64.so.2" ] ||
        ln -sr "$OUT/usr${loader#/usr}" "$OUT/usr/lib64/ld-linux-x86-64.so.2"
    mkdir -p "$OUT/etc"
    cp /etc/protocols "$OUT/etc/protocols"
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\nproxy:x:2102:2102:linkerd proxy:/nonexistent:/usr/sbin/nologin\n' > "$OUT/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\nproxy:x:2102:\n' > "$OUT/etc/group"
    printf 'passwd: files\ngroup: files\nhosts: files dns\n' > "$OUT/etc/nsswitch.conf"
    printf '127.0.0.1 localhost\n::1 localhost\n' > "$OUT/etc/hosts"
    : > "$OUT/etc/resolv.conf"
fi
echo "assemble.sh: $OUT ($(du -sh "$L/linkerd2-proxy" | cut -f1) proxy, $(du -sh "$L/linkerd2-proxy-init" | cut -f1) init)"
