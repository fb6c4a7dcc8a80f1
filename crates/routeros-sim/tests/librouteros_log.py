"""Print what the third-party librouteros client reads from `/log` on a running routeros-sim.

Usage: python3 librouteros_log.py HOST PORT USER PASSWORD

Prints one JSON list of the rows; tests/librouteros.rs asserts it. Exits 3 with an install hint if
librouteros is missing (the test must fail, never skip).
"""

import json
import sys

try:
    import librouteros
except ImportError as exc:  # pragma: no cover - environment problem
    print(f"librouteros is not installed ({exc}): pip install librouteros", file=sys.stderr)
    sys.exit(3)


def main() -> None:
    host, port, user, password = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    api = librouteros.connect(host, user, password, port=port)
    rows = list(api.path("log"))
    api.close()
    print(json.dumps(rows, sort_keys=True))


if __name__ == "__main__":
    main()
