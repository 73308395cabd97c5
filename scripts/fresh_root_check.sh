#!/usr/bin/env bash
# The fresh-machine path, checked: a minimal Debian root with only gcc and make, the repository
# copied in, and in it, in this order:
#   1. `make deps` (--demo: `make deps-demo`) as an unprivileged user: must print the one-line
#      `sudo apt-get install ...` command and exit non-zero;
#   2. as root, `make deps && make test` (default) or `make demo` (--demo): installs what is
#      missing, builds, runs; the packages it installed and the time are recorded;
#   3. the check of step 1 again, as root: must be quick and install nothing.
# Results and the time of each step: docs/fresh_machine.md.
#
#   sudo bash scripts/fresh_root_check.sh [--demo] [--commit REV [--overlay FILE]...]
#                                         [--no-host-cache] [--host-ca] [--keep] [--dir DIR]
#
#   --demo           step 2 is `make demo` instead of `make deps && make test`
#   --commit REV     copy `git archive REV` instead of the working tree (tracked files and
#                    untracked ones git does not ignore); --overlay FILE puts the working tree's
#                    FILE on top (repeatable)
#   --no-host-cache  download every package (default: hard links to the host's
#                    /var/cache/apt/archives where the file system allows, so packages the host
#                    has already downloaded are not downloaded again; the host cache is not
#                    modified)
#   --host-ca        for networks that intercept TLS: put the host's local CA certificates
#                    (/usr/local/share/ca-certificates) into the root, where Debian's
#                    ca-certificates adds them to the bundle when `make deps` installs it
#   --keep           leave the root in place (default: unmounted and removed at the end)
#   --dir DIR        where to build the root (default /var/tmp/loqt-fresh-root)
#
# Needs root on a Debian host (debootstrap is installed from Debian's packages when missing),
# the Debian mirror and the npm registry, ~2 GiB of disk.  About 8 minutes on 2 cores (--demo:
# the demo's training on top).
# Environment: SUITE (bookworm), MIRROR (http://deb.debian.org/debian), SECURITY_MIRROR
# (http://deb.debian.org/debian-security), LOG (DIR.log: everything every step printed).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)

SUITE=${SUITE:-bookworm}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${SECURITY_MIRROR:-http://deb.debian.org/debian-security}
DIR=/var/tmp/loqt-fresh-root
demo=0
commit=""
overlays=()
host_cache=1
host_ca=0
keep=0
while [ $# -gt 0 ]; do
    case "$1" in
    --demo) demo=1 ;;
    --commit) commit=$2; shift ;;
    --overlay) overlays+=("$2"); shift ;;
    --no-host-cache) host_cache=0 ;;
    --host-ca) host_ca=1 ;;
    --keep) keep=1 ;;
    --dir) DIR=$2; shift ;;
    -h | --help) sed -n '2,31p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "fresh_root_check: error: unknown option '$1' (see --help)" >&2; exit 2 ;;
    esac
    shift
done
LOG=${LOG:-$DIR.log}
ROOT=$DIR/root
SRC=/src/loqt # inside the root
if [ "$demo" = 1 ]; then check=deps-demo; else check=deps; fi

die() { echo "fresh_root_check: error: $*" >&2; exit 1; }
say() { echo "fresh_root_check: $*" | tee -a "$LOG"; }
[ "$(id -u)" = 0 ] || die "needs root (debootstrap, chroot, mount)"
command -v apt-get >/dev/null 2>&1 || die "needs a Debian host (apt-get)"
[ ${#overlays[@]} -eq 0 ] || [ -n "$commit" ] || die "--overlay needs --commit"

mounted=()
cleanup() {
    local i
    for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do umount "${mounted[$i]}" 2>/dev/null || umount -l "${mounted[$i]}" || true; done
    mounted=()
    if [ "$keep" = 0 ] && [ -d "$ROOT" ]; then
        if findmnt -rn -o TARGET | grep -q "^$ROOT/"; then
            echo "fresh_root_check: something is still mounted under $ROOT; not removing it" >&2
        else
            rm -rf --one-file-system "$ROOT"
        fi
    fi
}
trap cleanup EXIT
mnt() { # mnt TYPE SOURCE TARGET [OPTIONS]
    mkdir -p "$3"
    mount -t "$1" ${4:+-o "$4"} "$2" "$3"
    mounted+=("$3")
}
in_root() { chroot "$ROOT" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HOME=/root LANG=C.UTF-8 TERM=dumb bash -c "$1"; }
# shellcheck disable=SC2016
pkgs_now() { chroot "$ROOT" dpkg-query -W -f='${db:Status-Abbrev} ${Package}\n' | awk '$1 == "ii" { print $2 }' | sort; }
secs() { echo $(($(date +%s) - $1)); }

if [ -e "$ROOT" ]; then
    findmnt -rn -o TARGET | grep -q "^$ROOT/" && die "$ROOT has mounts from an earlier run; unmount them first"
    rm -rf --one-file-system "$ROOT"
fi
mkdir -p "$ROOT"
: >"$LOG"
say "log: $LOG"

if ! command -v debootstrap >/dev/null 2>&1; then
    say "installing debootstrap (Debian package) on the host"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends debootstrap >>"$LOG" 2>&1 ||
        { apt-get update -q >>"$LOG" 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends debootstrap >>"$LOG" 2>&1; } ||
        die "cannot install debootstrap"
fi

# ---- the root: Debian minbase plus gcc and make, nothing else ----
linked=0
if [ "$host_cache" = 1 ] && [ -d /var/cache/apt/archives ]; then
    mkdir -p "$ROOT/var/cache/apt/archives/partial"
    # hard links: instant, and the chroot's apt can never change the host's files (it only adds
    # and unlinks); apt and debootstrap check every file's checksum before using it
    if ln /var/cache/apt/archives/*.deb "$ROOT/var/cache/apt/archives/" 2>/dev/null; then
        linked=$(find "$ROOT/var/cache/apt/archives" -maxdepth 1 -name '*.deb' | wc -l)
        say "host package cache: $linked .deb files linked in"
    else
        rm -f "$ROOT"/var/cache/apt/archives/*.deb
        say "host package cache: on another file system, not used"
    fi
fi
t0=$(date +%s)
say "debootstrap --variant=minbase --include=gcc,make $SUITE"
debootstrap --variant=minbase --include=gcc,make "$SUITE" "$ROOT" "$MIRROR" >>"$LOG" 2>&1 ||
    die "debootstrap failed (see $LOG)"
t_boot=$(secs "$t0")
say "debootstrap: $t_boot s"
cat >"$ROOT/etc/apt/sources.list" <<EOF
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
deb $SECURITY_MIRROR $SUITE-security main
EOF
cp /etc/resolv.conf "$ROOT/etc/resolv.conf" 2>/dev/null || true
# fresh mounts only (no bind mounts of the host), so removing the root can never reach the host
mnt proc proc "$ROOT/proc"
mnt sysfs sysfs "$ROOT/sys" ro
mnt devpts devpts "$ROOT/dev/pts" newinstance,ptmxmode=0666
mnt tmpfs tmpfs "$ROOT/dev/shm" mode=1777
[ -c "$ROOT/dev/null" ] || die "the root has no /dev/null (debootstrap could not create device nodes)"
base_pkgs=$(pkgs_now)
say "base root: $(echo "$base_pkgs" | wc -l) packages, $(du -shx --exclude=archives "$ROOT" | cut -f1)"
for p in gcc make libc6-dev libdnnl-dev libopenblas-openmp-dev nodejs npm python3 python3-torch; do
    printf '  %-24s %s\n' "$p" "$(echo "$base_pkgs" | grep -qx "$p" && echo present || echo absent)"
done | tee -a "$LOG"

if [ "$host_ca" = 1 ]; then
    mkdir -p "$ROOT/usr/local/share/ca-certificates"
    n=$(find /usr/local/share/ca-certificates -name '*.crt' -exec cp {} "$ROOT/usr/local/share/ca-certificates/" \; -print 2>/dev/null | wc -l)
    say "host CA certificates: $n copied in (trusted once ca-certificates is installed)"
fi

# ---- the repository ----
mkdir -p "$ROOT$SRC"
if [ -n "$commit" ]; then
    rev=$(git -C "$REPO" rev-parse --verify "$commit^{commit}") || die "no commit $commit"
    git -C "$REPO" archive "$rev" | tar -x -C "$ROOT$SRC"
    for f in "${overlays[@]}"; do
        mkdir -p "$(dirname "$ROOT$SRC/$f")"
        cp -p "$REPO/$f" "$ROOT$SRC/$f"
    done
    say "repository: commit $rev${overlays[*]:+, with these files of the working tree: ${overlays[*]}}"
else
    # (a tracked file deleted in the working tree is skipped)
    (cd "$REPO" && git ls-files -z -co --exclude-standard | tar --null -T - -c --ignore-failed-read 2>/dev/null) |
        tar -x -C "$ROOT$SRC"
    say "repository: working tree of commit $(git -C "$REPO" rev-parse HEAD) ($(git -C "$REPO" status --porcelain | wc -l) changed or new files)"
fi

# ---- 1. not root: the one-line install command ----
t0=$(date +%s)
set +e
out=$(chroot --userspec=65534:65534 "$ROOT" /usr/bin/env -i PATH=/usr/bin:/bin HOME=/tmp LANG=C.UTF-8 \
    bash -c "cd $SRC && make $check" 2>&1)
rc=$?
set -e
echo "$out" >>"$LOG"
line=$(echo "$out" | grep 'sudo apt-get' || true)
say "step 1, make $check as uid 65534: exit $rc in $(secs "$t0") s, printed:"
echo "$out" | sed 's/^/    /' | tee -a "$LOG"
ok1=1
{ [ "$rc" != 0 ] && [ "$(echo "$line" | grep -c .)" = 1 ]; } || ok1=0

# ---- 2. root: install, build, run ----
if [ "$demo" = 1 ]; then steps=("make demo"); else steps=("make deps" "make test"); fi
: >"$DIR.step2"
rc2=0
times=""
for step in "${steps[@]}"; do
    say "step 2, as root: $step"
    t0=$(date +%s)
    set +e
    in_root "cd $SRC && $step" 2>&1 | tee -a "$DIR.step2" >>"$LOG"
    rc=${PIPESTATUS[0]}
    set -e
    times="$times${times:+, }$step: $(secs "$t0") s"
    say "  $step: exit $rc in $(secs "$t0") s"
    [ "$rc" = 0 ] || { rc2=$rc; break; }
done
after_pkgs=$(pkgs_now)
new_pkgs=$(comm -13 <(echo "$base_pkgs") <(echo "$after_pkgs"))
n_new=$(echo "$new_pkgs" | grep -c . || true)
asked=$(sed -n 's/^deps: installing \(.*\) (apt-get.*/\1/p' "$DIR.step2" | paste -sd' ')
dl=$(grep -E '^(Need to get|Fetched) ' "$DIR.step2" | paste -sd';' || true)
inst=$(sed -n 's/^deps: installed .* in \([0-9]*\) s$/\1/p' "$DIR.step2" | awk '{ s += $1 } END { print s + 0 }')
summary=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$DIR.step2" | tail -n 1 || true)
say "step 2: ${times} (apt-get update + install: $inst s)"
say "  make deps asked apt-get for: ${asked:-nothing}"
say "  apt-get installed $n_new packages; ${dl:-no downloads}"
say "  last lines:"
tail -n 12 "$DIR.step2" | sed 's/^/    /' | tee -a "$LOG"

# ---- 3. everything present: a quick check ----
t0=$(date +%s%N)
set +e
out3=$(in_root "cd $SRC && make $check" 2>&1)
rc3=$?
set -e
ms3=$((($(date +%s%N) - t0) / 1000000))
say "step 3, make $check again: exit $rc3 in $ms3 ms: $out3"
[ "$(pkgs_now)" = "$after_pkgs" ] || say "step 3 installed something (should not have)"

echo "$new_pkgs" >"$DIR.packages"
say "packages installed in step 2: $DIR.packages"
say "result: non-root message $([ $ok1 = 1 ] && echo ok || echo WRONG); ${times}, exit $rc2; $n_new packages installed; ${summary:-no test summary}; re-check $ms3 ms"
[ "$ok1" = 1 ] && [ "$rc2" = 0 ] && [ "$rc3" = 0 ]
