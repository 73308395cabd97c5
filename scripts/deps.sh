#!/usr/bin/env bash
# The Debian packages a make target needs: checks them, and installs the missing ones as root.
#
#   scripts/deps.sh [--check] [--quiet] LEVEL...        (the Makefile calls it; see `make deps`)
#
# Levels (each includes what it says, nothing else):
#   build   the compiler, its OpenMP (OMP=1) and the GEMM library: oneDNN (BLAS=dnnl, the
#           default) or OpenBLAS (BLAS=openblas)                             make, make bench-7b
#   demo    build + Node.js/npm (tokenizer and corpus downloads), python3 (the tokenizer
#           converter, standard library only), ca-certificates                make demo, make data
#   test    demo + python3-torch and python3-numpy for $PYTHON (PyTorch references), and Open MPI
#           (the 2-rank data-parallel tests)                                          make test
#   bench   build + gemm-bench + python3-torch and python3-numpy (the PyTorch baseline)  make bench
#   gemm-bench  build + both GEMM libraries, oneDNN and OpenBLAS (the GEMM microbenchmark
#           compares them)                                                     make gemm-bench
#   fuzz    clang and its libFuzzer runtime                                          make fuzz
#   mpi     Open MPI: libopenmpi-dev (mpicc, mpi.h), openmpi-bin (mpirun)     make MPI=1
#
# Everything present: prints nothing with --quiet, else one "deps: ... present" line; no network,
# well under a second.  Something missing:
#   - as root: `apt-get update` once, then `apt-get install --no-install-recommends` of exactly
#     the missing packages, then checks again;
#   - otherwise (or with --check): one line with the `sudo apt-get install ...` command, exit 1.
# Presence is probed cheaply (commands and files first, dpkg-query for the Python packages), so a
# Node.js that did not come from Debian (nodesource, nvm) is kept: installing Debian's nodejs over
# it would conflict.  Not a Debian system (no dpkg-query): one warning line, exit 0, nothing else.
#
# Environment (the Makefile passes its variables): CC, OMP, BLAS, OPENBLAS_DIR, PYTHON, CLANG (the
# fuzzers' compiler).  LOQT_DEPS_PRETEND_MISSING="pkg ..." treats those packages as missing (to
# test the messages and the install path on a machine that has everything).
set -euo pipefail

CC=${CC:-gcc}
OMP=${OMP:-1}
BLAS=${BLAS:-dnnl}
PYTHON=${PYTHON:-/usr/bin/python3}
CLANG=${CLANG:-clang}
PRETEND=" ${LOQT_DEPS_PRETEND_MISSING:-} "

check_only=0
quiet=0
levels=()
for a in "$@"; do
    case "$a" in
    --check) check_only=1 ;;
    --quiet) quiet=1 ;;
    build | demo | test | bench | gemm-bench | fuzz | mpi) levels+=("$a") ;;
    -h | --help) sed -n '2,30p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "deps: error: unknown level or option '$a' (see --help)" >&2; exit 2 ;;
    esac
done
[ ${#levels[@]} -gt 0 ] || levels=(build)

if ! command -v dpkg-query >/dev/null 2>&1; then
    echo "deps: warning: not a Debian system (no dpkg-query); not checking the packages of: ${levels[*]}" >&2
    exit 0
fi

missing=() # Debian package names, in order, no duplicates
need() {   # need PACKAGE: record PACKAGE as missing
    local p
    for p in "${missing[@]:-}"; do [ "$p" = "$1" ] && return 0; done
    missing+=("$1")
}
pretend() { case "$PRETEND" in *" $1 "*) return 0 ;; esac; return 1; }
have_cmd() { ! pretend "$2" && command -v "$1" >/dev/null 2>&1; }  # have_cmd COMMAND PACKAGE
have_file() { ! pretend "$2" && [ -e "$1" ]; }                      # have_file FILE PACKAGE
# dpkg_installed PACKAGE...: succeeds when every one is installed (one dpkg-query for all)
dpkg_installed() {
    local n
    n=$(dpkg-query -W -f='${db:Status-Abbrev}\n' "$@" 2>/dev/null | grep -c '^ii' || true)
    [ "$n" -eq $# ]
}
major() { "$1" -dumpversion 2>/dev/null | cut -d. -f1; }
# the compiler finds omp.h with -fopenmp (a preprocessor run, a few milliseconds)
has_openmp() { echo '#include <omp.h>' | "$1" -fopenmp -E -x c - -o /dev/null >/dev/null 2>&1; }

want_build() {
    local cc=${CC%% *} v
    case "$(basename "$cc")" in
    *clang*)
        if have_cmd "$cc" clang; then
            if [ "$OMP" = 1 ]; then
                v=$(major "$cc")
                if pretend "libomp-$v-dev" || ! has_openmp "$cc"; then need "libomp-${v:+$v-}dev"; fi
            fi
        else
            need clang
            [ "$OMP" = 1 ] && need libomp-dev
        fi
        ;;
    *)
        if have_cmd "$cc" gcc; then
            if [ "$OMP" = 1 ]; then
                v=$(major "$cc")
                if pretend "libgcc-$v-dev" || ! has_openmp "$cc"; then need "libgcc-$v-dev"; fi
            fi
        else
            need gcc # brings its OpenMP (libgomp)
        fi
        ;;
    esac
    # gcc only recommends the C library's headers
    have_file /usr/include/stdio.h libc6-dev || need libc6-dev
    case "$BLAS" in
    openblas) want_openblas ;;
    dnnl) want_dnnl ;;
    esac
}

want_openblas() {
    local multiarch dir
    multiarch=$(gcc -dumpmachine 2>/dev/null || echo "$(uname -m)-linux-gnu")
    dir=${OPENBLAS_DIR:-/usr/lib/$multiarch/openblas-openmp}
    have_file "$dir/libopenblas.so" libopenblas-openmp-dev || need libopenblas-openmp-dev
}

# oneDNN's header and the unversioned library the linker wants (libdnnl2, which PyTorch brings,
# has only the versioned one)
want_dnnl() {
    local multiarch
    multiarch=$(gcc -dumpmachine 2>/dev/null || echo "$(uname -m)-linux-gnu")
    if ! have_file /usr/include/oneapi/dnnl/dnnl.h libdnnl-dev ||
        ! have_file "/usr/lib/$multiarch/libdnnl.so" libdnnl-dev; then
        need libdnnl-dev
    fi
}

want_node() {
    have_cmd node nodejs || need nodejs
    have_cmd npm npm || need npm
    have_file /etc/ssl/certs/ca-certificates.crt ca-certificates || need ca-certificates
    have_cmd python3 python3 || need python3
}

want_torch() {
    local pkgs=(python3-torch python3-numpy) p
    if [ "$PYTHON" = /usr/bin/python3 ] || [ "$PYTHON" = python3 ]; then
        have_file /usr/bin/python3 python3 || need python3
        if pretend python3-torch || pretend python3-numpy || ! dpkg_installed "${pkgs[@]}"; then
            # not (all) from Debian: accept them if /usr/bin/python3 imports them anyway (slower)
            for p in "${pkgs[@]}"; do
                if pretend "$p" || { ! dpkg_installed "$p" &&
                    ! /usr/bin/python3 -c "import ${p#python3-}" >/dev/null 2>&1; }; then
                    need "$p"
                fi
            done
        fi
    else
        # a Python of the user's own (a virtual environment): it has to import them itself
        for p in "${pkgs[@]}"; do
            if pretend "$p" || ! "$PYTHON" -c "import ${p#python3-}" >/dev/null 2>&1; then
                echo "deps: error: $PYTHON cannot import ${p#python3-}; install it there, or use PYTHON=/usr/bin/python3 (Debian's $p)" >&2
                exit 1
            fi
        done
    fi
}

want_fuzz() {
    local v rt
    if have_cmd "$CLANG" clang; then
        v=$(major "$CLANG")
        rt="$("$CLANG" -print-resource-dir 2>/dev/null)/lib/linux/libclang_rt.fuzzer-$(uname -m).a"
        have_file "$rt" "libclang-rt-$v-dev" || need "libclang-rt-${v:+$v-}dev"
    else
        need clang
        need libclang-rt-dev
    fi
}

want_mpi() {
    have_cmd mpicc libopenmpi-dev || need libopenmpi-dev
    have_cmd mpirun openmpi-bin || need openmpi-bin
}

probe() {
    missing=()
    local l
    for l in "${levels[@]}"; do
        case "$l" in
        build) want_build ;;
        demo) want_build; want_node ;;
        test) want_build; want_node; want_torch; want_mpi ;;
        bench) want_build; want_openblas; want_dnnl; want_torch ;;
        gemm-bench) want_build; want_openblas; want_dnnl ;;
        fuzz) want_fuzz ;;
        mpi) want_mpi ;;
        esac
    done
}

probe
if [ ${#missing[@]} -eq 0 ]; then
    [ "$quiet" = 1 ] || echo "deps: the packages for ${levels[*]} are present"
    exit 0
fi

list=${missing[*]}
if [ "$check_only" = 1 ] || [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    hint=""
    if [ "$check_only" = 1 ] && [ "$(id -u)" = 0 ]; then
        case "${levels[0]}" in test) hint=" (or: make deps)" ;; *) hint=" (or: make deps-${levels[0]})" ;; esac
    fi
    echo "deps: missing Debian packages for ${levels[*]}: $list; install them with: sudo apt-get update && sudo apt-get install -y --no-install-recommends $list$hint" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
start=$(date +%s)
echo "deps: installing $list (apt-get update, then apt-get install)"
apt-get update -q || { echo "deps: error: apt-get update failed (is a Debian mirror reachable?)" >&2; exit 1; }
# shellcheck disable=SC2086
apt-get install -y -q --no-install-recommends $list ||
    { echo "deps: error: apt-get install $list failed" >&2; exit 1; }
LOQT_DEPS_PRETEND_MISSING="" PRETEND="  "
probe
if [ ${#missing[@]} -gt 0 ]; then
    echo "deps: error: still missing after apt-get install: ${missing[*]}" >&2
    exit 1
fi
echo "deps: installed $list in $(($(date +%s) - start)) s"
