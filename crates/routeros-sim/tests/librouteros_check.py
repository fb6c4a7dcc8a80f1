"""Drive a running routeros-sim with the third-party librouteros client.

Usage: python3 librouteros_check.py HOST PORT USER PASSWORD

Prints one JSON object with exactly what librouteros returned; tests/librouteros.rs asserts it.
Exits 3 with an install hint if librouteros is missing (the test must fail, never skip).
"""

import json
import sys

try:
    import librouteros
    from librouteros.exceptions import TrapError
    from librouteros.query import Key
except ImportError as exc:  # pragma: no cover - environment problem
    print(f"librouteros is not installed ({exc}): pip install librouteros", file=sys.stderr)
    sys.exit(3)


def main() -> None:
    host, port, user, password = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    out = {}

    try:
        librouteros.connect(host, user, password + "-wrong", port=port)
        out["bad_login"] = None
    except TrapError as err:
        out["bad_login"] = {"message": err.message, "category": err.category}

    api = librouteros.connect(host, user, password, port=port)
    v4 = api.path("ip", "firewall", "address-list")
    v6 = api.path("ipv6", "firewall", "address-list")

    out["add_v4"] = v4.add(list="tikban", address="192.0.2.1/32", timeout="1h", comment="t1")
    out["add_v4_prefix"] = v4.add(list="tikban", address="203.0.113.77/24", timeout="1d")
    out["add_v4_other_list"] = v4.add(list="other", address="198.51.100.9", timeout="1h")
    out["add_v6"] = v6.add(list="tikban", address="2001:db8::1", timeout="1h")

    try:
        v4.add(list="tikban", address="192.0.2.1", timeout="1h")
        out["duplicate"] = None
    except TrapError as err:
        out["duplicate"] = {"message": err.message, "category": err.category}

    keys = (Key(".id"), Key("list"), Key("address"), Key("dynamic"), Key("disabled"), Key("comment"))
    out["print_v4"] = list(v4.select(*keys).where(Key("list") == "tikban"))
    out["print_v4_timeout"] = [
        row["timeout"] for row in v4.select(Key("timeout")).where(Key("address") == "192.0.2.1")
    ]
    out["print_v6"] = list(v6.select(*keys).where(Key("list") == "tikban"))
    out["print_in"] = [
        row["address"]
        for row in v4.select(Key("address")).where(Key("list").In("tikban", "other"))
    ]

    v4.remove(out["add_v4"], out["add_v4_prefix"])
    out["after_remove"] = list(v4.select(Key(".id"), Key("address")).where(Key("list") == "tikban"))

    try:
        v4.remove(out["add_v4"])
        out["remove_missing"] = None
    except TrapError as err:
        out["remove_missing"] = {"message": err.message, "category": err.category}

    out["identity"] = list(api.path("system", "identity"))
    resource = list(api.path("system", "resource").select(Key("version"), Key("architecture-name")))
    out["resource"] = resource
    api.close()
    print(json.dumps(out, sort_keys=True))


if __name__ == "__main__":
    main()
