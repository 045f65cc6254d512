"""Reads what NVFlare's CLI prints with ``--format json`` for deploy/run_netns.sh (standard library only).

python netns_cli.py job-id '<nvflare --format json job submit ... output>'      # prints the job id
python netns_cli.py status '<nvflare --format json job meta ... output>'        # prints the job's status
python netns_cli.py connected '<nvflare --format json system status client>' site-1 site-2   # exit 0 if listed
"""

import json
import sys
from typing import Any, Iterator, List


def envelope_data(text: str) -> Any:
    """The ``data`` of the CLI's JSON envelope (``{"status": "ok", "data": ...}``); raises on an error envelope."""
    start = text.find("{")
    if start < 0:
        raise ValueError(f"no JSON in the CLI's output: {text.strip()[:500]!r}")
    payload = json.loads(text[start:])
    if payload.get("status") != "ok":
        raise ValueError(f"the CLI reported an error: {json.dumps(payload)[:1000]}")
    return payload.get("data")


def client_names(data: Any) -> Iterator[str]:
    """Every ``client_name`` anywhere in a status reply."""
    if isinstance(data, dict):
        if isinstance(data.get("client_name"), str):
            yield data["client_name"]
        for value in data.values():
            yield from client_names(value)
    elif isinstance(data, list):
        for value in data:
            yield from client_names(value)


def main(argv: List[str]) -> int:
    command, text, *rest = argv
    try:
        data = envelope_data(text)
    except ValueError as e:
        print(e, file=sys.stderr)
        return 1
    if command == "job-id":
        print(data["job_id"])
    elif command == "status":
        print(data.get("status", "UNKNOWN"))
    elif command == "connected":
        return 0 if set(rest) <= set(client_names(data)) else 1
    else:
        print(f"unknown command {command!r}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
