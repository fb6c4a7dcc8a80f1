#!/usr/bin/env bash
# The whole test suite, from a fresh clone on Debian. Installs what the tests need that cargo
# does not fetch itself (librouteros, jsonschema and PyYAML from PyPI, Debian's crowdsec package
# unpacked under target/, strace from Debian),
# then runs every test in the workspace. Nothing is skipped: a missing dependency fails a test.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! python3 -c 'import librouteros, jsonschema, yaml' 2>/dev/null; then
    PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install --quiet --disable-pip-version-check \
        'librouteros==4.2.2' 'jsonschema==4.26.0' 'PyYAML==6.0.3'
fi
scripts/install-crowdsec.sh >/dev/null
# strace: the daemon's "never opens a file for writing" end-to-end test.
if ! command -v strace >/dev/null; then
    if [[ $(id -u) -eq 0 ]]; then
        apt-get install -y -qq strace >/dev/null || { apt-get update -qq && apt-get install -y -qq strace >/dev/null; }
    else
        echo "strace is missing: run 'sudo apt-get install strace'" >&2
        exit 1
    fi
fi

cargo test --workspace --locked "$@"
