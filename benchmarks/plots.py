"""PNG plots of the quality benchmark (matplotlib, non-interactive Agg backend)."""

from typing import Any, Mapping, Sequence, Tuple

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after selecting the backend)


def plot_accuracy_by_round(curves: Mapping[str, Mapping[str, Sequence[float]]], path: str, title: str) -> None:
    """Line plot of the mean accuracy over clients by round, one line per method (± std over seeds).

    Args:
        curves: ``{method: {"x": [0..R], "mean": [...], "std": [...]}}`` with accuracies as fractions; the last
            point is the final personalized model.
        path: PNG file to write.
        title: Plot title.
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
    ax.set_ylabel("mean accuracy over clients (%)")
    ax.set_title(f"Accuracy by round: {title}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_weight_matrices(
    first: Any, last: Any, labels: Sequence[str], path: str, title: str, rounds: Tuple[int, int]
) -> None:
    """Two heatmaps side by side: the aggregation weights p_ik of the first and the last round.

    Args:
        first: ``[N, N]`` weights of the first aggregated round (row i: how client i's model mixes client k).
        last: ``[N, N]`` weights of the last aggregated round.
        labels: N client labels (rows and columns).
        path: PNG file to write.
        title: Figure title.
        rounds: The two matrices' round indices.
    """
    n = len(labels)
    size = max(4.0, 0.55 * n + 2)
    fig, axes = plt.subplots(1, 2, figsize=(2 * size + 1, size))
    image = None
    for ax, matrix, rnd in zip(axes, (first, last), rounds):
        image = ax.imshow(matrix, vmin=0.0, vmax=1.0, cmap="viridis")
        ax.set_title(f"round {rnd}")
        ax.set_xticks(range(n), labels, rotation=90, fontsize="x-small")
        ax.set_yticks(range(n), labels if ax is axes[0] else [], fontsize="x-small")
        ax.set_xlabel("contributing client k")
        if n <= 12:
            for i in range(n):
                for k in range(n):
                    value = float(matrix[i][k])
                    color = "black" if value > 0.6 else "white"
                    ax.text(k, i, f"{value:.2f}", ha="center", va="center", fontsize="xx-small", color=color)
    axes[0].set_ylabel("receiving client i")
    fig.colorbar(image, ax=list(axes), shrink=0.8, label="p_ik")
    fig.suptitle(title)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
