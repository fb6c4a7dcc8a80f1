#!/usr/bin/env bash
# Release artefacts in CI (docs/packaging.md): installs its own tools, then
#   1. `cargo xtask dist` for aarch64 and x86_64: static musl binaries built with zig, size
#      budgets, no program interpreter, `--version` under qemu-user / natively, image tars;
#   2. `cargo xtask validate-image`: skopeo inspect, skopeo copy to OCI + umoci unpack, then the
#      unpacked /tikban runs `--version`;
#   3. a second `dist` must give byte-identical tars;
#   4. `routeros-lsp check` of routeros-scripts/: 0 errors, and only the accepted warnings
#      (the container package's menus, which the checker's schema lacks).
# With TIKBAN_DIST_SMOKE=1 it also runs the qemu end-to-end smoke (`cargo xtask smoke`).
# armv7 and armv5te (nightly, -Zbuild-std, ~4 min each) are `cargo xtask dist --all`, not CI.
#
# Idempotent; honours CARGO_TARGET_DIR. Needs root for apt-get when packages are missing.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
start=$(date +%s)
step() { echo "=== ci-dist: $* ($(( $(date +%s) - start ))s)"; }

step "tools (cargo xtask dist --install-tools; versions: scripts/dist-tools.env)"
# The one place for the tool versions; `cargo xtask dist --install-tools` reads the same file.
# shellcheck source=scripts/dist-tools.env
source scripts/dist-tools.env
cargo xtask dist --install-tools
# Debian's own python3 refuses pip installs without this (PEP 668); pyenv's ignores it.
export PIP_BREAK_SYSTEM_PACKAGES=1
python3 -m pip install --quiet --disable-pip-version-check "routeros-lsp==$ROUTEROS_LSP"
hash -r

step "cargo xtask dist (aarch64, x86_64)"
cargo xtask dist
version=$(cargo pkgid -p tikban | sed 's/.*[#@]//')
tars=("dist/tikban-$version-arm64.tar" "dist/tikban-$version-x86.tar")

step "validate images with skopeo and umoci"
cargo xtask validate-image "${tars[@]}"

step "reproducible tars"
# Same binaries must give the same tar bytes (a changed binary means the sources changed).
files=("dist/tikban-$version-arm64" "dist/tikban-$version-x86" "${tars[@]}")
sums=$(sha256sum "${files[@]}")
cargo xtask dist >/dev/null 2>&1
if [[ "$(sha256sum "${files[@]}")" != "$sums" ]]; then
    echo "a second dist changed the artefacts; before:" >&2
    echo "$sums" >&2
    echo "after:" >&2
    sha256sum "${files[@]}" >&2
    exit 1
fi
echo "$sums"

step "routeros-lsp check routeros-scripts/"
routeros-lsp check routeros-scripts/ || true
routeros-lsp check --format json routeros-scripts/ | python3 -c '
import json, re, sys
findings = json.load(sys.stdin)
# The checker schema comes from a CHR without the container package (build-env.md), so the
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
