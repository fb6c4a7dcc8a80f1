#!/usr/bin/env bash
# Unpack Debian's crowdsec package (LAPI + cscli) into target/deps/crowdsec without running its
# maintainer scripts: the postinst registers with the Central API, which fails offline
# (docs/reference/build-env.md, "The real CrowdSec LAPI").
#
# Idempotent. Prints the directory holding `crowdsec` and `cscli`.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dest="${TIKBAN_CROWDSEC_DIR:-$root/target/deps/crowdsec}"
if [[ -x "$dest/usr/bin/crowdsec" && -x "$dest/usr/bin/cscli" ]]; then
    echo "$dest/usr/bin"
    exit 0
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
if ! apt-get download crowdsec >&2; then
    if [[ $(id -u) -ne 0 ]]; then
        echo "apt-get download failed; run 'sudo apt-get update' first" >&2
    else
        apt-get update >&2
        apt-get download crowdsec >&2
    fi
fi
mkdir -p "$dest"
dpkg -x crowdsec_*.deb "$dest"
echo "$dest/usr/bin"
