"""Every example in the README runs (issue 24 part 3).

The test reads README.md's fenced ```python and ```bash/```sh/```shell blocks. Each block is either run, in README
order and at a small size, or listed in ``NOT_RUN`` with the reason (and the test that covers it instead). A block
that is in neither, or a listed block that left the README, fails ``test_every_readme_block_is_run_or_listed``, so
the table cannot go stale. A block is named by its first line.

Small size is applied to the README's own text by simple replacement (``PY_SIZES`` for Python, ``JOB_FLAGS`` and
``SIM_FLAGS`` for shell commands); the placeholders the README writes in angle brackets are filled in from earlier
runs (``PLACEHOLDERS``), and Python blocks that use names the README leaves to the reader get them from
``PY_PRELUDES``. Everything runs in a subprocess with its working folder, HOME and workspaces in a tmp folder.
"""

import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from typing import Callable

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
README = os.path.join(REPO, "README.md")
BIN = os.path.dirname(sys.executable)
SHELL = ("bash", "sh", "shell")
NOT_CODE = ("json",)  # fences that show a file's content, not something to run
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)

# Blocks run here, by first line, with what they show (README order is run order).
RUN = {
    "import torch": "the core's personalized_aggregate on two clients' task vectors",
    ".venv/bin/python jobs/fedbip_text/job.py --num-clients 8 --num-rounds 3 --max-examples 300 \\": (
        "the main job, model-level and FedBip-L"
    ),
    ".venv/bin/fedbip allow-list /tmp/fedbip_sim": "`nvflare simulator` on the exported text job, allow-listed",
    "from nvflare.recipe.sim_env import SimEnv": "FedBipRecipe with per-site data in SimEnv(num_clients=2)",
    ".venv/bin/python jobs/fedbip_vision/job.py        # vision-domains: 6 clients, 3 rounds, 200 images each, 32 px": (
        "the vision job"
    ),
    ".venv/bin/python jobs/fedbip_llm/job.py           "
    "# instruct-tasks: 4 clients, 2 rounds, 32 train / 16 test, CPU": ("the generative-LLM job"),
    "from peft import PeftModel": "loading a text site's personalized adapter and head from the main job's run",
    ".venv/bin/fedbip predict --adapter <adapter folder: the results table's last column> --input texts.txt \\": (
        "`fedbip predict` with that adapter"
    ),
    ".venv/bin/fedbip predict --adapter <site>/personalized_adapter "
    "--input questions.jsonl --output answers.jsonl \\": ("`fedbip predict` with the LLM job's adapter"),
}

# Blocks not run here, by first line, with the reason and what runs them instead.
NOT_RUN = {
    "make demo   # creates .venv, installs, fetches the offline model + data, runs FedBip on 8 real text tasks": (
        "`make demo` / `make test` build .venv and run the full demo and the whole suite (this test is part of it); "
        "the demo's command is `python jobs/fedbip_text/job.py` with other sizes, run here from 'Running a job'"
    ),
    ".venv/bin/python jobs/fedbip_llm/job.py --model meta-llama/Llama-3.2-1B-Instruct --precision bf16 \\": (
        "a gated 1B Hub model sized for GPU sites (not offline); the same job runs here on SmolLM2 (the block "
        "above), Client API mode by tests/integration/test_simulator_cli.py::test_client_api_mode_runs_in_simenv; "
        "--launch-external-process is checked only at construction (tests/integration/test_loud_failures.py)"
    ),
    ".venv/bin/python -m benchmarks.quality --suite flan-8 --data-dir ../shared/data/flan-ds1 \\": (
        "multi-hour benchmark on the FedDPA/FedOA splits, which are not part of the project; the runner on a flan "
        "directory is run small by tests/integration/test_flan_benchmark.py"
    ),
    "# 1. project admin: TLS certificates and one startup kit per participant; hand each kit to its owner": (
        "hosts, certificates and a running federation: tests/integration/test_deploy_netns.py runs these commands "
        "through deploy/run_netns.sh (server, 3 sites and the admin in network namespaces, nvflare job submit/wait/"
        "download), tests/integration/test_deploy_local.py the same on 127.0.0.1 through deploy/run_local.sh"
    ),
    "from nvflare.recipe.fedavg import FedAvgRecipe": (
        "a sketch around the reader's own `train.py` with elided `...` arguments; its runnable form is "
        "jobs/fedavg_dropin/job.py, run by tests/integration/test_dropin_jobs.py"
    ),
}

# Python: regex -> replacement, applied to the block's text in this order.
PY_SIZES = [
    (r"num_rounds=\d+", "num_rounds=1"),
    (r"FedBipRecipe\(", "FedBipRecipe(num_threads=1, max_length=32, "),
    (r"SimEnv\(", "SimEnv(workspace_root={ws!r}, "),
    (r'"/data/', '"{tmp}/data/'),
]

# Shell: every jobs/<name>/job.py run gets these flags (an existing value is replaced, a missing flag added).
SMALL = {
    "--num-clients": "2",
    "--num-rounds": "1",
    "--max-examples": "8",
    "--test-examples": "8",
    "--torch-threads": "1",
}
JOB_FLAGS = {
    "fedbip_text": {**SMALL, "--max-length": "32"},
    "fedbip_vision": SMALL,
    "fedbip_llm": {
        **SMALL,
        "--max-examples": "4",
        "--test-examples": "2",
        "--max-length": "64",
        "--max-new-tokens": "3",
        "--max-input-words": "12",
        "--batch-size": "4",
    },
}
# `nvflare simulator`: the committed job folder is swapped for one exported with JOB_FLAGS; clients and threads:
SIM_FLAGS = {"-n": "2", "-t": "2"}
# `fedbip predict` on a causal LM: fewer new tokens.
PREDICT_FLAGS = {"--max-new-tokens": "3"}

# Angle-bracket placeholders -> a function of the runs so far (job name -> its results.json).
PLACEHOLDERS: dict[str, Callable[[dict], str]] = {
    "<adapter folder: the results table's last column>": lambda runs: runs["fedbip_text"]["site-1"]["adapter_dir"],
    "<site>": lambda runs: os.path.dirname(runs["fedbip_llm"]["site-1"]["adapter_dir"]),
}

# Names a Python block leaves to the reader, set from earlier runs.
PY_PRELUDES: dict[str, Callable[[dict], str]] = {
    "from peft import PeftModel": lambda runs: (
        f"base_model_path = {runs['model_path']!r}\nadapter_dir = {runs['fedbip_text']['site-1']['adapter_dir']!r}\n"
    ),
}

# Input files a block's command reads from its working folder.
INPUTS = {
    "texts.txt": "what a wonderful film\nthe plot made no sense at all\n",
    "questions.jsonl": "".join(
        json.dumps({"instruction": "Is this review positive or negative?", "input": text}) + "\n"
        for text in ("Great!", "Awful.")
    ),
}


@dataclass(frozen=True)
class Block:
    """One fenced code block of the README.

    Attributes:
        lang: The fence's language (python, bash, ...).
        text: The block's text.
        line: Its first line number in README.md.
    """

    lang: str
    text: str
    line: int

    @property
    def name(self) -> str:
        """The block's first line, which names it in ``NOT_RUN`` and in test ids."""
        return self.text.splitlines()[0].strip()


def readme_blocks() -> list[Block]:
    """The README's Python and shell blocks, in order.

    Returns:
        Every ```python / ```bash / ```sh / ```shell block of README.md.
    """
    with open(README, encoding="utf-8") as f:
        readme = f.read()
    return [
        Block(m.group(1), m.group(2), readme.count("\n", 0, m.start()) + 1)
        for m in FENCE.finditer(readme)
        if m.group(1) == "python" or m.group(1) in SHELL
    ]


def _env(home: str) -> dict[str, str]:
    from fedbip_nvflare import assets

    return {
        **os.environ,
        "HOME": home,
        "PYTHONPATH": REPO,
        "FEDBIP_ASSETS_DIR": assets.assets_dir(),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }


def _set_flags(args: list[str], flags: dict[str, str]) -> list[str]:
    """Sets each ``--flag value`` in a command: replaces the value where the flag is given, appends it where not."""
    args = list(args)
    for flag, value in flags.items():
        if flag in args:
            args[args.index(flag) + 1] = value
        else:
            args += [flag, value]
    return args


class Runner:
    """Runs README blocks in order in one tmp folder, remembering each job's results for later blocks."""

    def __init__(self, tmp: str) -> None:
        """Creates the folders.

        Args:
            tmp: The folder every block runs in (working folder, HOME, workspaces, inputs).
        """
        from fedbip_nvflare import assets

        self.tmp = tmp
        self.home = os.path.join(tmp, "home")
        os.makedirs(self.home)
        self.runs: dict = {"model_path": assets.model_path("sentence-transformers/all-MiniLM-L6-v2")}
        self.count = 0
        for name, text in INPUTS.items():
            with open(os.path.join(tmp, name), "w", encoding="utf-8") as f:
                f.write(text)

    def _new_dir(self, what: str) -> str:
        self.count += 1
        return os.path.join(self.tmp, f"{what}-{self.count}")

    def _call(self, cmd: list[str], timeout: int = 300) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            cmd, cwd=self.tmp, env=_env(self.home), capture_output=True, text=True, timeout=timeout, check=False
        )
        out = (proc.stdout + proc.stderr)[-4000:]
        assert proc.returncode == 0, f"{shlex.join(cmd)} exited {proc.returncode}:\n{out}"
        return proc

    def python(self, block: Block) -> None:
        """Runs a Python block at the small size, checking its results where it runs a job."""
        ws = self._new_dir("py-ws")
        code = block.text
        for pattern, replacement in PY_SIZES:
            code = re.sub(pattern, replacement.format(ws=ws, tmp=self.tmp).replace("\\", "\\\\"), code)
        if "/data/" in block.text:
            self._write_data()
        prelude = PY_PRELUDES.get(block.name)
        script = os.path.join(self.tmp, f"block_{block.line}.py")
        with open(script, "w", encoding="utf-8") as f:
            f.write((prelude(self.runs) if prelude else "") + code)
        self._call([sys.executable, script])
        if "recipe.execute(" in code:
            (job,) = os.listdir(ws)
            with open(os.path.join(ws, job, "server", "simulate_job", "fedbip", "results.json")) as f:
                self._check_clients(json.load(f)["clients"], 2)

    def _write_data(self) -> None:
        """The files the README's recipe example names under /data: text,label CSVs and one site's JSONL."""
        texts = [("a great and moving film", "pos"), ("dull, slow and far too long", "neg")] * 12
        os.makedirs(os.path.join(self.tmp, "data", "s1"), exist_ok=True)
        for name in ("train.csv", "test.csv"):
            with open(os.path.join(self.tmp, "data", name), "w", encoding="utf-8") as f:
                f.write("text,label\n" + "".join(f'"{t} {i}",{y}\n' for i, (t, y) in enumerate(texts)))
        with open(os.path.join(self.tmp, "data", "s1", "train.jsonl"), "w", encoding="utf-8") as f:
            f.writelines(json.dumps({"text": f"{t} {i}", "label": y}) + "\n" for i, (t, y) in enumerate(texts))

    def shell(self, block: Block) -> None:
        """Runs each command of a shell block at the small size."""
        text = block.text.replace("\\\n", " ")
        text = re.sub(r"(?<![\w/.])/tmp/", os.path.join(self.tmp, "abs", ""), text)  # the README's /tmp paths
        for placeholder in re.findall(r"<[^<>]+>", text):
            assert placeholder in PLACEHOLDERS, f"README line {block.line}: no value for {placeholder}"
            text = text.replace(placeholder, PLACEHOLDERS[placeholder](self.runs))
        text = re.sub(r"\[([^\[\]]+)\]", r"\1", text)  # optional flags: given
        for line in text.splitlines():
            args = shlex.split(line, comments=True)
            if args:
                self._command(args, block)

    def _command(self, args: list[str], block: Block) -> None:
        args = [os.path.join(BIN, a[len(".venv/bin/") :]) if a.startswith(".venv/bin/") else a for a in args]
        tool = os.path.basename(args[0])
        if tool.startswith("python") and args[1].startswith("jobs/"):
            self._job(args)
        elif tool == "nvflare" and args[1] == "simulator":
            self._simulator(args)
        elif tool == "fedbip" and args[1] == "predict":
            self._call(_set_flags(args, PREDICT_FLAGS) if "--max-new-tokens" in args else args)
            output = args[args.index("--output") + 1]
            with open(os.path.join(self.tmp, output), encoding="utf-8") as f:
                assert len(f.read().strip().splitlines()) >= 2, f"{output}: no predictions"
        elif tool == "fedbip" and args[1] == "allow-list":
            self._call(args)
        else:
            pytest.fail(f"README line {block.line}: no small-size rule for {shlex.join(args)}")

    def _job(self, args: list[str]) -> None:
        """`python jobs/<name>/job.py ...`: small flags, its own workspace and output, then its results checked."""
        name = args[1].split("/")[1]
        flags = {**JOB_FLAGS[name], "--workspace": self._new_dir("ws")}
        if "--output" not in args:
            flags["--output"] = self._new_dir("out")
        args = _set_flags([args[0], os.path.join(REPO, args[1]), *args[2:]], flags)
        self._call(args, timeout=400)
        with open(os.path.join(self.tmp, args[args.index("--output") + 1], "results.json")) as f:
            clients = json.load(f)["clients"]
        self._check_clients(clients, 2)
        self.runs[name] = clients

    def _simulator(self, args: list[str]) -> None:
        """`nvflare simulator jobs/<name>/job_folder/<job> ...`: on the same job exported at the small size."""
        folder = args[2]
        assert folder.startswith("jobs/") and "/job_folder/" in folder, f"not a committed job folder: {folder}"
        name, job = folder.split("/")[1], folder.split("/")[-1]
        export = self._new_dir("export")
        flags = {k: v for k, v in JOB_FLAGS[name].items() if k != "--torch-threads"}
        self._call(
            _set_flags([sys.executable, os.path.join(REPO, "jobs", name, "job.py"), "--export"], flags)
            + ["--export-dir", export]
        )
        args = _set_flags([args[0], args[1], os.path.join(export, job), *args[3:]], SIM_FLAGS)
        self._call(args, timeout=400)
        workspace = args[args.index("-w") + 1]
        with open(os.path.join(workspace, "server", "simulate_job", "fedbip", "results.json")) as f:
            self._check_clients(json.load(f)["clients"], 2)

    @staticmethod
    def _check_clients(clients: dict, n: int) -> None:
        assert len(clients) == n, clients
        for site, info in clients.items():
            assert 0.0 <= info["accuracy"] <= 1.0, (site, info)
            assert os.path.isdir(info["adapter_dir"]), (site, info)


def test_every_readme_block_is_run_or_listed():
    with open(README, encoding="utf-8") as f:
        langs = {m.group(1) for m in FENCE.finditer(f.read())}
    assert langs <= {"python", *SHELL, *NOT_CODE}, f"README fences of an unknown language: {langs}"
    names = [b.name for b in readme_blocks()]
    assert len(names) == len(set(names)), "two README blocks share a first line; make them distinguishable"
    assert not set(RUN) & set(NOT_RUN), "a block is both run and listed as not run"
    new = [n for n in names if n not in RUN and n not in NOT_RUN]
    assert not new, f"README blocks neither run (RUN) nor listed with a reason (NOT_RUN): {new}"
    stale = sorted((set(RUN) | set(NOT_RUN)) - set(names))
    assert not stale, f"RUN / NOT_RUN name blocks that are no longer in the README: {stale}"


@pytest.fixture(scope="module")
def runner(tmp_path_factory, minilm_path) -> Runner:
    """One folder and run history for all blocks, so a block can use what an earlier one produced."""
    return Runner(str(tmp_path_factory.mktemp("readme")))


@pytest.mark.parametrize("block", [b for b in readme_blocks() if b.name in RUN], ids=lambda b: f"L{b.line}")
def test_readme_block_runs(block: Block, runner: Runner):
    if block.lang == "python":
        runner.python(block)
    else:
        runner.shell(block)
