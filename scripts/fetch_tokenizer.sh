#!/usr/bin/env bash
# Fetches the LLaMA tokenizer and converts it to loqt's file format.
#   bash scripts/fetch_tokenizer.sh [DIR]      (DIR defaults to data)
# Makes DIR/llama.tok (read by src/data/tokenizer.c) and keeps the unpacked npm package in
# DIR/npm/llama-tokenizer-js/ (tests/gen_tokenizer_cases.js runs it to make reference encodings).
# Idempotent: does nothing when both are present and the .tok file is valid.
set -euo pipefail

DIR=${1:-data}
PKG=llama-tokenizer-js
VERSION=1.2.2
# sha256 of the registry tarball of llama-tokenizer-js 1.2.2 (npm's sha1: 4db5d5f0...)
SHA256=ee83014ac8b379b16cf8d81e99ffcdb23dfade8c0d2e751bd06e7dc0b8476e72
HERE=$(cd "$(dirname "$0")" && pwd)
PYTHON=${PYTHON:-python3}
CONVERT="$HERE/convert_tokenizer.py"
PKG_DIR="$DIR/npm/$PKG"
OUT="$DIR/llama.tok"

die() { echo "fetch_tokenizer: error: $*" >&2; exit 1; }
say() { echo "fetch_tokenizer: $*"; }

command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON not found (the converter needs Python 3, standard library only)"

pkg_ok() {
    [ -f "$PKG_DIR/llama-tokenizer.js" ] && [ -f "$PKG_DIR/package.json" ] &&
        grep -q "\"version\": *\"$VERSION\"" "$PKG_DIR/package.json"
}

if pkg_ok && [ -f "$OUT" ] && "$PYTHON" "$CONVERT" --check "$OUT" >/dev/null; then
    say "$OUT and $PKG_DIR are present and valid; nothing to do"
    exit 0
fi

if ! pkg_ok; then
    command -v npm >/dev/null 2>&1 || die "npm not found; install Node.js and npm (Debian: apt-get install nodejs npm)"
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    say "downloading $PKG@$VERSION with npm pack"
    (cd "$tmp" && npm pack "$PKG@$VERSION" >pack.log 2>&1) ||
        die "npm pack $PKG@$VERSION failed (is the npm registry reachable?): $(grep -m 2 -i 'error' "$tmp/pack.log" | tr '\n' ' ')"
    tgz="$tmp/$PKG-$VERSION.tgz"
    [ -f "$tgz" ] || die "npm pack did not produce $PKG-$VERSION.tgz"
    if command -v sha256sum >/dev/null 2>&1; then
        got=$(sha256sum "$tgz" | cut -d' ' -f1)
        [ "$got" = "$SHA256" ] || die "$PKG-$VERSION.tgz has sha256 $got, expected $SHA256"
        say "checksum ok ($SHA256)"
    fi
    mkdir -p "$tmp/x"
    tar -xzf "$tgz" -C "$tmp/x" || die "cannot unpack $tgz"
    [ -f "$tmp/x/package/llama-tokenizer.js" ] || die "the package has no llama-tokenizer.js"
    mkdir -p "$DIR/npm"
    rm -rf "$PKG_DIR"
    mv "$tmp/x/package" "$PKG_DIR"
    say "unpacked into $PKG_DIR"
fi

say "converting $PKG_DIR/llama-tokenizer.js -> $OUT"
mkdir -p "$DIR"
"$PYTHON" "$CONVERT" "$PKG_DIR/llama-tokenizer.js" "$OUT.tmp" || { rm -f "$OUT.tmp"; die "conversion failed"; }
"$PYTHON" "$CONVERT" --check "$OUT.tmp" || { rm -f "$OUT.tmp"; die "the converted file does not verify"; }
mv -f "$OUT.tmp" "$OUT"
say "done: $OUT"
