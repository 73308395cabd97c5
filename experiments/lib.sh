# Shared by the experiment scripts (sourced from the repository root): the binary, and building it
# and fetching the default corpus when they are missing.
#   BUILD  the build directory (default build); LOQT is its loqt binary
BUILD=${BUILD:-build}
LOQT=${LOQT:-$BUILD/loqt}

# builds loqt and fetches the default corpus (make data) unless both are there
ensure_loqt_and_corpus() {
    [ -x "$LOQT" ] || make -j2
    [ -f data/corpus/manifest.json ] || make data
}
