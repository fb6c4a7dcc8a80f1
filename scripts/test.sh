#!/usr/bin/env bash
# The whole test suite, from a fresh clone on Debian. Installs what the tests need that cargo
# does not fetch itself (librouteros, jsonschema and PyYAML from PyPI, Debian's crowdsec package
# unpacked under target/, strace and prometheus from Debian),
# then runs every test in the workspace. Nothing is skipped: a missing dependency fails a test.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! python3 -c 'import librouteros, jsonschema, yaml' 2>/dev/null; then
    PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install --quiet --disable-pip-version-check \
        'librouteros==4.2.2' 'jsonschema==4.26.0' 'PyYAML==6.0.3'
fi
scripts/install-crowdsec.sh >/dev/null
# strace: the daemon's "never opens a file for writing" end-to-end test. prometheus: the
# dashboard test (tests/dashboard.rs) starts Debian's binary itself, on loopback; the Debian
# service is not started (policy-rc.d exit 101 while the package installs).
missing=()
command -v strace >/dev/null || missing+=(strace)
command -v prometheus >/dev/null || missing+=(prometheus)
if [[ ${#missing[@]} -gt 0 ]]; then
    if [[ $(id -u) -eq 0 ]]; then
        policy=/usr/sbin/policy-rc.d own_policy=
        if [[ ! -e $policy ]]; then
            own_policy=1
            printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod 755 "$policy"
        fi
        apt-get install -y -qq "${missing[@]}" >/dev/null \
            || { apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null; }
        if [[ -n $own_policy ]]; then rm -f "$policy"; fi
    else
        echo "${missing[*]} missing: run 'sudo apt-get install ${missing[*]}'" >&2
        exit 1
    fi
fi

cargo test --workspace --locked "$@"
