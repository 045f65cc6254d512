"""The built-in offline ``instruct-tasks`` suite: the ``text-tasks`` corpora phrased as Flan-style instructions.

Site-k (1-based) gets task ``INSTRUCT_TASKS[(k - 1) % 8]``: the texts (class-balanced, disjoint train/test) that
``text-tasks`` gives its site of the same task and cycle (:func:`fedbip_nvflare.data.suites.load_suite_site`), each
turned into ``{"instruction": <the task's question, listing its answers>, "input": <the text, its first
max_input_words words>, "output": <the label's answer word(s)>}``. Scoring is by exact match of the generated
answer, so the answers are short and listed in every instruction.

=================  ==========================================================================================
task               instruction (answers)
=================  ==========================================================================================
rotten-tomatoes    sentiment of a movie review snippet (positive, negative)
election-tweets    who wrote a 2016 election tweet (Clinton, Trump)
bbc-news           section of a BBC News article (business, entertainment, politics, sports, tech)
reuters-r8         topic of a Reuters newswire (acquisition, crude oil, earnings, grain, interest rates, ...)
friends-speaker    which Friends character says a line (Chandler, Joey, Monica, Phoebe, Rachel, Ross)
debates-party      who speaks in a 2016 debate (Democrat, Republican, moderator)
20ng-comp          computer newsgroup of a post (graphics, windows, pc hardware, mac hardware, x window)
20ng-rec-sci       rec/sci newsgroup of a post (autos, motorcycles, baseball, hockey, cryptography, ...)
=================  ==========================================================================================
"""

from __future__ import annotations

from dataclasses import dataclass

from fedbip_nvflare.data.instruct import InstructExample, InstructSplit, InstructTaskData
from fedbip_nvflare.data.sites import site_index
from fedbip_nvflare.data.suites import TEXT_TASKS, load_suite_site
from fedbip_nvflare.data.text import TextSplit

SUITE = "instruct-tasks"


@dataclass(frozen=True)
class InstructTask:
    """How a ``text-tasks`` classification task is asked as an instruction.

    Attributes:
        question: The instruction before the list of answers.
        answers: ``{label name: answer}``, one per label of the task.
    """

    question: str
    answers: dict[str, str]

    def instruction(self) -> str:
        """The instruction: the question, then the possible answers."""
        return f"{self.question} Answer with one of: {', '.join(self.answers.values())}."


_TASKS: dict[str, InstructTask] = {
    "rotten-tomatoes": InstructTask(
        "Is the sentiment of this movie review snippet positive or negative?",
        {"fresh": "positive", "rotten": "negative"},
    ),
    "election-tweets": InstructTask(
        "Who wrote this tweet from the 2016 US presidential campaign?", {"Clinton": "Clinton", "Trump": "Trump"}
    ),
    "bbc-news": InstructTask(
        "Which section of BBC News does this article belong to?",
        {n: n for n in ("business", "entertainment", "politics", "sports", "tech")},
    ),
    "reuters-r8": InstructTask(
        "What is the topic of this Reuters newswire?",
        {
            "acq": "acquisition",
            "crude": "crude oil",
            "earn": "earnings",
            "grain": "grain",
            "interest": "interest rates",
            "money-fx": "currency exchange",
            "ship": "shipping",
            "trade": "trade",
        },
    ),
    "friends-speaker": InstructTask(
        "Which character of the TV series Friends says this line?",
        {n: n for n in ("Chandler", "Joey", "Monica", "Phoebe", "Rachel", "Ross")},
    ),
    "debates-party": InstructTask(
        "Who says this in a 2016 US presidential or vice-presidential debate?",
        {"Democratic": "Democrat", "Republican": "Republican", "Moderator": "moderator"},
    ),
    "20ng-comp": InstructTask(
        "To which computer newsgroup was this message posted?",
        {
            "comp.graphics": "graphics",
            "comp.os.ms-windows.misc": "windows",
            "comp.sys.ibm.pc.hardware": "pc hardware",
            "comp.sys.mac.hardware": "mac hardware",
            "comp.windows.x": "x window",
        },
    ),
    "20ng-rec-sci": InstructTask(
        "To which newsgroup was this message posted?",
        {
            "rec.autos": "autos",
            "rec.motorcycles": "motorcycles",
            "rec.sport.baseball": "baseball",
            "rec.sport.hockey": "hockey",
            "sci.crypt": "cryptography",
            "sci.electronics": "electronics",
            "sci.med": "medicine",
            "sci.space": "space",
        },
    ),
}
# Short texts first, so small jobs (2-4 clients) run fast on a CPU.
INSTRUCT_TASKS: list[str] = list(_TASKS)


def _phrase(task: InstructTask, split: TextSplit, label_names: list[str], max_input_words: int) -> InstructSplit:
    instruction = task.instruction()
    return InstructSplit(
        [
            InstructExample(instruction, task.answers[label_names[y]], " ".join(text.split()[:max_input_words]))
            for text, y in zip(split.texts, split.labels, strict=True)
        ]
    )


def load_instruct_suite_site(
    suite: str,
    site: str,
    n_train: int = 64,
    n_test: int = 32,
    seed: int = 0,
    data_dir: str | None = None,
    max_input_words: int = 64,
) -> InstructTaskData:
    """Loads one client's task of the ``instruct-tasks`` suite (see the module docstring).

    Args:
        suite: ``"instruct-tasks"``.
        site: ``"site-k"``, k >= 1.
        n_train: Training examples (class-balanced).
        n_test: Test examples (class-balanced, disjoint from the training texts).
        seed: Sampling seed; the same arguments always give the same data.
        data_dir: Dataset folder; defaults to ``fedbip_nvflare.assets.require_data_dir()``.
        max_input_words: Each text is cut to its first this many words (keeps prompts short).

    Returns:
        The site's task, with ``label_names`` = the task's answers.

    Raises:
        ValueError: Unknown suite or site name, non-positive sizes.
        FileNotFoundError: The datasets were not fetched.
    """
    if suite != SUITE:
        raise ValueError(f"unknown instruction suite {suite!r}; valid suites: [{SUITE!r}]")
    if not isinstance(max_input_words, int) or max_input_words < 1:
        raise ValueError(f"max_input_words must be an int >= 1, got {max_input_words!r}")
    k = site_index(site)
    cycle, name = divmod(k, len(INSTRUCT_TASKS))
    name = INSTRUCT_TASKS[name]
    text_site = f"site-{TEXT_TASKS.index(name) + 1 + cycle * len(TEXT_TASKS)}"
    data = load_suite_site("text-tasks", text_site, n_train=n_train, n_test=n_test, seed=seed, data_dir=data_dir)
    task = _TASKS[name]
    return InstructTaskData(
        task=name,
        train=_phrase(task, data.train, data.label_names, max_input_words),
        test=_phrase(task, data.test, data.label_names, max_input_words),
        label_names=[task.answers[n] for n in data.label_names],
    )


def instruct_suite_groups(num_clients: int) -> dict[str, str]:
    """Ground-truth grouping of the suite's sites (for an oracle baseline): every site is a group of its own.

    Returns:
        ``{site: f"{task}-g{k - 1}"}`` for ``site-k``, k = 1..num_clients (as ``text-tasks``).
    """
    if not isinstance(num_clients, int) or num_clients < 1:
        raise ValueError(f"num_clients must be an int >= 1, got {num_clients!r}")
    return {f"site-{k}": f"{INSTRUCT_TASKS[(k - 1) % len(INSTRUCT_TASKS)]}-g{k - 1}" for k in range(1, num_clients + 1)}
