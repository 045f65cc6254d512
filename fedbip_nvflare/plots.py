"""PNG plots of runs and benchmarks (matplotlib, non-interactive Agg backend): accuracy curves, heatmaps."""

from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after selecting the backend)


def plot_accuracy_by_round(
    curves: Mapping[str, Mapping[str, Sequence[float]]], path: str, title: str, metric: str = "accuracy"
) -> None:
    """Line plot of the mean accuracy over clients by round, one line per method (± std over seeds).

    Args:
        curves: ``{method: {"x": [0..R], "mean": [...], "std": [...]}}`` with accuracies as fractions; the last
            point is the final personalized model.
        path: PNG file to write.
        title: Plot title.
        metric: Name of what the curves measure (e.g. "exact match").
    """
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for method, c in curves.items():
        mean = [100 * v for v in c["mean"]]
        std = [100 * v for v in c["std"]]
        ax.plot(c["x"], mean, marker="o", label=method)
        ax.fill_between(c["x"], [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)], alpha=0.15)
    rounds = max((len(c["x"]) for c in curves.values()), default=1)
    ax.set_xticks(range(rounds), [str(r) for r in range(rounds - 1)] + ["final"])
    ax.set_xlabel("round (model received at its start)")
    ax.set_ylabel(f"mean {metric} over clients (%)")
    ax.set_title(f"{metric[:1].upper()}{metric[1:]} by round: {title}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def site_labels(
    clients: Sequence[str], tasks: Mapping[str, Any], groups: Optional[Mapping[str, Any]] = None
) -> List[str]:
    """Axis labels naming what each site holds: ``"site-3\nsst2"``, or ``"site-3\nsst2 [sentiment]"`` with groups.

    Args:
        clients: The sites, in matrix order.
        tasks: ``{site: task}`` (a site missing from it, or with task None, is labelled by its name alone).
        groups: ``{site: ground-truth group}`` where the suite has groups.
    """
    labels = []
    for c in clients:
        parts = [str(tasks[c])] if tasks.get(c) is not None else []
        if groups and groups.get(c) is not None:
            parts.append(f"[{groups[c]}]")
        labels.append("\n".join([c, " ".join(parts)]) if parts else c)
    return labels


def partner_cells(clients: Sequence[str], groups: Optional[Mapping[str, Any]]) -> List[Tuple[int, int]]:
    """``(i, k)`` cells of two different sites in the same ground-truth group (no groups: none)."""
    if not groups:
        return []
    return [
        (i, k)
        for i, a in enumerate(clients)
        for k, b in enumerate(clients)
        if i != k and groups.get(a) is not None and groups.get(a) == groups.get(b)
    ]


def plot_weight_matrices(
    first: Any,
    last: Any,
    labels: Sequence[str],
    path: str,
    title: str,
    rounds: Tuple[int, int],
    value_range: Tuple[float, float] = (0.0, 1.0),
    value_name: str = "p_ik",
    partners: Sequence[Tuple[int, int]] = (),
) -> None:
    """Two heatmaps side by side: a client × client matrix (default: weights p_ik) at the first and last round.

    Args:
        first: ``[N, N]`` matrix of the first aggregated round (row i: how client i's model mixes client k).
        last: ``[N, N]`` matrix of the last aggregated round.
        labels: N client labels (rows and columns), e.g. from :func:`site_labels`.
        path: PNG file to write.
        title: Figure title.
        rounds: The two matrices' round indices.
        value_range: Colour scale limits (cosine similarities: (-1, 1)).
        value_name: Colour bar label.
        partners: ``(i, k)`` cells of ground-truth partners (see :func:`partner_cells`), outlined in red.
    """
    n = len(labels)
    size = max(4.0, 0.55 * n + 2)
    fig, axes = plt.subplots(1, 2, figsize=(2 * size + 1, size))
    image = None
    for ax, matrix, rnd in zip(axes, (first, last), rounds):
        image = ax.imshow(matrix, vmin=value_range[0], vmax=value_range[1], cmap="viridis")
        ax.set_title(f"round {rnd}")
        ax.set_xticks(range(n), labels, rotation=90, fontsize="x-small")
        ax.set_yticks(range(n), labels if ax is axes[0] else [], fontsize="x-small")
        ax.set_xlabel("contributing client k")
        for i, k in partners:
            ax.add_patch(plt.Rectangle((k - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=1.5))
        if n <= 12:
            for i in range(n):
                for k in range(n):
                    value = float(matrix[i][k])
                    bright = (value - value_range[0]) / (value_range[1] - value_range[0]) > 0.6
                    color = "black" if bright else "white"
                    ax.text(k, i, f"{value:.2f}", ha="center", va="center", fontsize="xx-small", color=color)
    axes[0].set_ylabel("receiving client i")
    fig.colorbar(image, ax=list(axes), shrink=0.8, label=value_name)
    fig.suptitle(title + ("\n(red: ground-truth partners)" if partners else ""))
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def plot_client_curves(curves: Mapping[str, Sequence[float]], path: str, title: str) -> None:
    """Per-client accuracy by round: one line per client; the last point is the final personalized model.

    Args:
        curves: ``{client: [accuracy of the model received at round 0, ..., final accuracy]}`` (fractions; NaN
            where unknown).
        path: PNG file to write.
        title: Plot title.
    """
    fig, ax = plt.subplots(figsize=(7, 4.5))
    points = max((len(v) for v in curves.values()), default=1)
    for client, values in curves.items():
        ax.plot(range(len(values)), [100 * v for v in values], marker="o", label=client)
    ax.set_xticks(range(points), [str(r) for r in range(points - 1)] + ["final"])
    ax.set_xlabel("round (model received at its start)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="x-small", ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_method_comparison(means: Dict[str, float], path: str, title: str) -> None:
    """Bar chart of the mean accuracy over clients per method.

    Args:
        means: ``{method: mean accuracy}`` (fractions), in display order.
        path: PNG file to write.
        title: Plot title.
    """
    fig, ax = plt.subplots(figsize=(max(5.0, 0.9 * len(means) + 2), 4))
    bars = ax.bar(list(means), [100 * v for v in means.values()], color="tab:blue")
    ax.bar_label(bars, fmt="%.1f", fontsize="small")
    ax.set_ylabel("mean accuracy over clients (%)")
    ax.set_title(title)
    ax.tick_params(axis="x", rotation=30)
    low = min(means.values(), default=0.0)
    ax.set_ylim(max(0.0, 100 * low - 10), 100)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
