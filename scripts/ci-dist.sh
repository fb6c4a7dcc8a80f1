#!/usr/bin/env bash
# Release artefacts in CI (docs/packaging.md): installs its own tools, then
#   1. `cargo xtask dist` for aarch64 and x86_64: static musl binaries built with zig, size
#      budgets, no program interpreter, `--version` under qemu-user / natively, image tars, and
#      the multi-platform OCI image layout dist/oci;
#   2. `cargo xtask validate-image`: skopeo inspect, skopeo copy to OCI + umoci unpack, then the
#      unpacked /tikban runs `--version`;
#   3. `cargo xtask registry-check`: dist/oci pushed to a loopback docker-registry with
#      `skopeo copy --all`, the index read back unchanged, each platform pulled back with
#      skopeo --override-arch/--override-variant, unpacked with umoci, `--version` run;
#   4. a second `dist` must give byte-identical binaries, tars and dist/oci;
#   5. `routeros-lsp check` of routeros-scripts/: 0 errors, and only the accepted warnings
#      (the container package's menus, which the checker's schema lacks).
# With --all it does the same for all four targets (armv7 and armv5te: nightly, -Zbuild-std,
# ~4 min each; not in CI, the release workflow runs it).
# With TIKBAN_DIST_SMOKE=1 it also runs the qemu end-to-end smoke (`cargo xtask smoke`).
#
# Idempotent; honours CARGO_TARGET_DIR. Needs root for apt-get when packages are missing.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
start=$(date +%s)
step() { echo "=== ci-dist: $* ($(( $(date +%s) - start ))s)"; }

all=()
suffixes=(arm64 x86)
case "${1:-}" in
    "") ;;
    --all) all=(--all); suffixes=(arm64 x86 arm armv5) ;;
    *) echo "usage: scripts/ci-dist.sh [--all]" >&2; exit 2 ;;
esac

step "tools (cargo xtask dist --install-tools; versions: scripts/dist-tools.env)"
# The one place for the tool versions; `cargo xtask dist --install-tools` reads the same file.
# shellcheck source=scripts/dist-tools.env
source scripts/dist-tools.env
cargo xtask dist "${all[@]}" --install-tools
cargo xtask registry-check "${all[@]}" --install-tools
# Debian's own python3 refuses pip installs without this (PEP 668); pyenv's ignores it.
export PIP_BREAK_SYSTEM_PACKAGES=1
python3 -m pip install --quiet --disable-pip-version-check "routeros-lsp==$ROUTEROS_LSP"
hash -r

step "cargo xtask dist${all[*]:+ ${all[*]}} (${suffixes[*]})"
cargo xtask dist "${all[@]}"
version=$(cargo pkgid -p tikban | sed 's/.*[#@]//')
binaries=()
tars=()
for s in "${suffixes[@]}"; do
    binaries+=("dist/tikban-$version-$s")
    tars+=("dist/tikban-$version-$s.tar")
done

step "validate images with skopeo and umoci"
cargo xtask validate-image "${tars[@]}"

step "registry image: push to a loopback registry, pull each platform back"
cargo xtask registry-check "${all[@]}"

step "reproducible artefacts"
# Same binaries must give the same tar bytes and the same OCI blobs (a changed binary means the
# sources changed).
artefacts() { find "${binaries[@]}" "${tars[@]}" dist/oci -type f | LC_ALL=C sort | xargs sha256sum; }
sums=$(artefacts)
cargo xtask dist "${all[@]}" >/dev/null 2>&1
if [[ "$(artefacts)" != "$sums" ]]; then
    echo "a second dist changed the artefacts; before:" >&2
    echo "$sums" >&2
    echo "after:" >&2
    artefacts >&2
    exit 1
fi
echo "$sums"

step "routeros-lsp check routeros-scripts/"
routeros-lsp check routeros-scripts/ || true
routeros-lsp check --format json routeros-scripts/ | python3 -c '
import json, re, sys
findings = json.load(sys.stdin)
# The checker schema comes from a CHR without the container package (docs/reference/build-env.md), so the
# package menus /container and /interface/veth are unknown to it. Nothing else is accepted.
accepted = re.compile(r"^'"'"'(container|veth)'"'"' is not a menu or command")
bad = [f for f in findings
       if f["severity"] == "error"
       or not (f["rule"] == "schema/unknown-command" and accepted.match(f["message"]))]
for f in bad:
    print("{path}:{line}:{column}: {severity}: {message} [{rule}]".format(**f), file=sys.stderr)
errors = sum(f["severity"] == "error" for f in findings)
print(f"routeros-lsp: {errors} errors, {len(findings) - errors} warnings, {len(bad)} not accepted")
sys.exit(1 if bad else 0)
'

if [[ "${TIKBAN_DIST_SMOKE:-0}" == 1 ]]; then
    step "qemu smoke (aarch64, real LAPI, routeros-sim)"
    scripts/install-crowdsec.sh >/dev/null
    cargo xtask smoke --target aarch64-unknown-linux-musl
fi

step "done"
