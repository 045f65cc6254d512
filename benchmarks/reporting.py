"""Writing a benchmark's raw numbers and its markdown table side by side."""

import json
import os
from typing import Any, Mapping


def write_report(output: str, json_file: str, markdown_file: str, info: Mapping[str, Any], text: str) -> str:
    """Writes ``output/json_file`` (``info``, indented) and ``output/markdown_file`` (``text``); returns ``text``."""
    os.makedirs(output, exist_ok=True)
    with open(os.path.join(output, json_file), "w") as f:
        json.dump(info, f, indent=2)
    with open(os.path.join(output, markdown_file), "w") as f:
        f.write(text)
    return text
