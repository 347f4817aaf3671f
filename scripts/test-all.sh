#!/usr/bin/env bash
# Runs every check the project has, installing what they need first.
# This is the README's test command, and CI runs exactly this (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n==> %s\n' "$*"; }

install_tools() {
    # Debian packages the build and tests need: coturn (a real STUN/TURN
    # server for the ICE and relayed-call tests), cmake (the opus crate
    # builds its vendored libopus with it), libasound2-dev and pkg-config
    # (cpal, the SDK's optional microphone/speaker feature, which
    # --all-features builds), chromium (the web client's browser tests;
    # Node.js and npm come with the machine).
    local packages=(coturn cmake libasound2-dev pkg-config chromium)
    local missing=()
    for package in "${packages[@]}"; do
        dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
    done
    if ((${#missing[@]})); then
        log "installing ${missing[*]}"
        if [ "$(id -u)" -ne 0 ]; then
            echo "missing packages ${missing[*]}: run as root, or install them first" >&2
            exit 1
        fi
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
    fi
    if ! cargo fuzz --version >/dev/null 2>&1; then
        log "installing cargo-fuzz"
        cargo install cargo-fuzz --locked --quiet
    fi
}

install_tools

# A clean clone gains nothing from incremental compilation, and its cache
# would take gigabytes of the CI machine's disk.
if [ -n "${CI:-}" ]; then
    export CARGO_INCREMENTAL=0
fi

log "format"
cargo fmt --all -- --check

log "clippy"
cargo clippy --workspace --all-targets --all-features -- -D warnings

log "tests"
cargo test --workspace --all-features

log "web client in Chromium (Playwright; playwright-core from npm, no browser download)"
cargo build -p voice-examples --bins
(cd web-tests && npm ci --no-audit --no-fund && npm test)

log "benchmarks compile and run once (test profile, one iteration each; figures are in docs/BENCHMARKS.md)"
cargo test -p voice-benches --benches

log "fuzz smoke run"
# Stable toolchain only: no sanitizers, and RUSTC_BOOTSTRAP for the flags
# cargo-fuzz passes.
# Every target, 15 s each; the 10-minute runs are in docs/BENCHMARKS.md.
for target in wire_decode rest_bodies access_token stun_responder ice_urls \
    sdp_candidates call_machine; do
    RUSTC_BOOTSTRAP=1 cargo fuzz run --sanitizer none "$target" -- \
        -max_total_time=15 -rss_limit_mb=2048
done

log "disk used by build output"
du -sh target fuzz/target 2>/dev/null || true

log "all checks passed"
