#!/usr/bin/env bash
# Fuzz smoke (issue 9): every cargo-fuzz target for FUZZ_SECONDS (default 30) each, one after
# the other. Fails if any target finds a crash, a leak or a timeout; the reproducer is left in
# that crate's fuzz/artifacts/<target>/. The long runs and their figures are in docs/reliability.md.
#
#   scripts/fuzz-smoke.sh               # all eight targets, 30 s each
#   FUZZ_SECONDS=600 scripts/fuzz-smoke.sh
#
# Needs the nightly toolchain (rustup toolchain install nightly) and cargo-fuzz, which is
# installed here when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
seconds="${FUZZ_SECONDS:-30}"

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    echo "fuzz-smoke: the nightly toolchain is missing: rustup toolchain install nightly" >&2
    exit 1
fi
if ! command -v cargo-fuzz >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

# crate directory, target, extra corpus directories (read-only seeds)
targets=(
    "crates/routeros-proto decoder"
    "crates/routeros-client mux"
    "crates/crowdsec-lapi stream_parser"
    "crates/crowdsec-lapi go_duration"
    "crates/crowdsec-lapi canonical_value"
    "crates/tikban env_config fuzz/seeds/env_config"
    "crates/tikban guard_parse fuzz/seeds/guard_parse"
    "crates/tikban guard_replay fuzz/seeds/guard_replay"
)

failed=()
summary=()
for entry in "${targets[@]}"; do
    read -r crate target seeds <<<"$entry"
    echo "=== $crate: $target, ${seconds}s"
    corpus="fuzz/corpus/$target"
    mkdir -p "$root/$crate/$corpus"
    log=$(mktemp)
    # Corpus paths are relative to the crate directory, where cargo fuzz runs.
    # One target directory for all four fuzz workspaces: tokio, hyper and rustls build once.
    if (cd "$root/$crate" && cargo +nightly fuzz run -O --target-dir "$root/target/fuzz" \
        "$target" "$corpus" ${seeds:+"$seeds"} -- \
        -max_total_time="$seconds" -print_final_stats=1) >"$log" 2>&1; then
        execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
        corp=$(grep -o 'corp: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
        summary+=("$crate $target: ${execs:-?} execs, corpus ${corp:-?}, no findings")
    else
        tail -40 "$log" >&2
        failed+=("$crate $target")
        summary+=("$crate $target: FAILED (see $crate/fuzz/artifacts/$target/)")
    fi
    rm -f "$log"
done

echo "=== fuzz smoke summary"
printf '%s\n' "${summary[@]}"
if ((${#failed[@]})); then
    echo "fuzz-smoke: findings in: ${failed[*]}" >&2
    exit 1
fi
