"""Side-by-side benchmarks of FedBip and its baselines.

``python -m benchmarks.quality --suite text-tasks --methods all --seeds 0 1 2 --output DIR`` runs every method
on the same data, seeds and budget and writes per-run results, ``DIR/summary.md`` and plots.
"""
