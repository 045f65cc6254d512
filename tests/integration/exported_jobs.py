"""What an exported job folder that runs wherever it is copied must hold: its configs name no path of the machine
that built it, and each client app ships FedBip's Client API script and names it relative to the app."""

import filecmp
import json
import os
from typing import Iterable, List

SCRIPT = "fedbip_client.py"  # the name the script travels under, in every Client API job


def _json_strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _json_strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _json_strings(v)


def assert_names_no_local_path(job: str, machine_paths: Iterable[str]) -> List[str]:
    """No JSON file of the job folder names one of ``machine_paths`` or any absolute path (a word of a string, or
    the value of its ``key=value``); returns the JSON files."""
    configs = [os.path.join(r, f) for r, _, files in os.walk(job) for f in files if f.endswith(".json")]
    for path in configs:
        with open(path) as f:
            text = f.read()
        assert not [p for p in machine_paths if p in text], f"{path} names a path of this machine"
        absolute = [s for s in _json_strings(json.loads(text)) for w in s.split() if os.path.isabs(w.split("=")[-1])]
        assert not absolute, f"{path} holds absolute paths {absolute}"
    return configs


def assert_ships_the_script(app: str, source: str, external: bool) -> None:
    """The app's ``custom/`` folder holds a copy of ``source`` alone, as ``fedbip_client.py``, and its Client API
    executor runs it by that name: in process looked up in the custom folder, else run from the app folder."""
    assert os.listdir(os.path.join(app, "custom")) == [SCRIPT], app
    assert filecmp.cmp(os.path.join(app, "custom", SCRIPT), source, shallow=False), f"{app} ships another script"
    with open(os.path.join(app, "config", "config_fed_client.json")) as f:
        executor = json.load(f)["executors"][0]["executor"]["args"]
    if external:
        assert f"custom/{SCRIPT}" in executor["command"], executor
    else:
        assert executor["task_script_path"] == SCRIPT, executor
