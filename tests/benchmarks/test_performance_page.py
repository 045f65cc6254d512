"""The performance page from small synthetic JSON: targets computed (met and missed), provenance flagged."""

import json
import os

from benchmarks import performance_page as pp


def _record(n: int, params: int, dtype: str, floor: float, model: list, layer: list, **extra) -> dict:
    return {
        "clients": n,
        "params": params,
        "dtype": dtype,
        "floor_s": floor,
        "model_s": min(model),
        "model_times_s": model,
        "layer_s": min(layer),
        "layer_times_s": layer,
        "outputs_bytes": 2**30,
        "model_peak_extra_bytes": 2**30,
        "stream_one_s": 0.1,
        "stream_all_s": 3.2,
        "stream_all_extrapolated": n > 16,
        **extra,
    }


def _write(root: str, path: str, data: dict) -> None:
    os.makedirs(os.path.dirname(os.path.join(root, path)), exist_ok=True)
    with open(os.path.join(root, path), "w") as f:
        json.dump(data, f)


def _results(tmp_path, commit="c1") -> dict:
    records = [
        _record(n, d, t, 1.0, [1.5, 1.8, 2.5], [1.6, 1.7, 1.9], per_tensor_s=40.0, pairwise_s=10.0)
        for n in (8, 32, 128)
        for d in (1_007_616, 10_092_544)
        for t in ("fp32", "bf16")
    ]
    records[-1] = _record(128, 10_092_544, "bf16", 1.0, [3.0, 3.0, 3.1], [6.0, 6.0, 6.0])  # ÷ floor 3, layer 2
    info = {"command": "python -m benchmarks.aggregation", "git_commit": commit, "machine": {"cpus": 2}}
    _write(str(tmp_path), "perf/aggregation.json", {"info": info, "records": records})
    return records


def _sources(tmp_path, script_at=lambda c, s: "blob") -> dict:
    path = "perf/aggregation.json"
    return {path: pp.load_source(path, str(tmp_path), script_at)}


def test_a_target_missed_in_one_cell_is_reported_as_missed(tmp_path):
    _results(tmp_path)
    rows = {r[0]: r for r in pp.targets(_sources(tmp_path))}
    floor = rows["CPU: model-level ÷ floor"]
    assert floor[3].startswith("**no**: 1 of 12 cells") and "N=128, d=1e7, bf16: 3.00×" in floor[3]
    assert floor[2] == "1.80–3.00× over 12 cells"  # medians: 1.8 everywhere, 3.0 in the last cell
    layer = rows["CPU: layer-wise ÷ model-level"]
    assert "**no**" in layer[3] and "2.00×" in layer[3]
    per_tensor = rows["CPU: per-tensor pairwise loop ÷ model-level, N = 32"]
    assert per_tensor[3] == "yes" and per_tensor[2].startswith("22.22–22.22×")
    flattened = rows["CPU: flattened pairwise loop ÷ model-level, N = 32"]
    assert flattened[3].startswith("**no**: 4 of 4")
    assert all(r[4] == "`perf/aggregation.json`" for r in rows.values())


def test_page_shows_spread_extrapolation_and_names_the_file(tmp_path):
    _results(tmp_path)
    text = pp.page(_sources(tmp_path), "python -m benchmarks.performance_page")
    assert "1.80 (1.50–2.50)" in text  # median (min–max) of the repeats
    assert "3.20 (extrapolated)" in text and "| 8 | 1e6 (1,007,616) | fp32 |" in text
    assert "From `perf/aggregation.json`" in text and "untraceable" not in text


def test_untraceable_files_are_flagged_not_hidden(tmp_path):
    _results(tmp_path, commit=None)
    source = _sources(tmp_path)["perf/aggregation.json"]
    assert source.status == "untraceable: rerun (no commit recorded)"
    assert "(untraceable)" in pp.targets_table({source.path: source})
    _results(tmp_path, commit="abc1234+dirty")
    blobs = {"abc1234": "old", "": "new"}  # the recorded commit holds another version of the script
    source = _sources(tmp_path, lambda c, s: blobs.get(c))["perf/aggregation.json"]
    assert source.status.startswith("untraceable: rerun (made by a aggregation.py that commit abc1234")
    assert pp.trace_problem("f00", "benchmarks/aggregation.py", None, lambda c, s: None) == "commit f00 unknown here"


def test_files_from_different_commits_are_said_to_be(tmp_path):
    _results(tmp_path, commit="c1")
    other = {"command": "python -m benchmarks.throughput", "git_commit": "c2", "results": []}
    _write(str(tmp_path), "perf/throughput/throughput.json", other)
    sources = {
        p: pp.load_source(p, str(tmp_path), lambda c, s: "blob")
        for p in ("perf/aggregation.json", "perf/throughput/throughput.json")
    }
    assert "**These files come from 2 different commits: c1, c2.**" in "\n".join(pp.provenance_lines(sources))


def test_older_layouts_are_read(tmp_path):
    assert pp.provenance_of({"info": {"command": "a", "commit": "x", "machine": "2 CPU cores"}}) == (
        "a",
        "x",
        "2 CPU cores",
    )
    env = {"git_commit": "y", "cpu_count": 2, "processor": "x86_64"}
    assert pp.provenance_of({"command": "b", "environment": env}) == ("b", "y", "2 CPU cores (x86_64)")


def test_readme_markers_get_the_table(tmp_path):
    _results(tmp_path)
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{pp.BEGIN}\nold 1.0×\n{pp.END}\nrest\n")
    pp.write_between_markers(str(readme), pp.targets_table(_sources(tmp_path)), pp.BEGIN, pp.END)
    text = readme.read_text()
    assert "old 1.0×" not in text and "| CPU: model-level ÷ floor |" in text and text.endswith("rest\n")


def test_interleaved_file_judges_the_strong_floor_and_shows_spread_and_attempts(tmp_path):
    records = _results(tmp_path)
    for r in records:
        r.update(
            floor_times_s=[0.9, 1.0, 1.1],
            strong_floor_s=1.4,
            strong_floor_times_s=[1.4, 1.5, 1.6],
            copy_times_s=[0.5, 0.5, 0.5],
            fresh_outputs_times_s=[1.0, 1.2, 1.5],
            stream_one_times_s=[0.1, 0.2, 0.3],
            attempts=2,
            max_spread=0.5,
            spread={"model": 0.56, "floor": 0.2},
        )
    _write(str(tmp_path), "perf/aggregation.json", {"info": {"git_commit": "c1"}, "records": records})
    sources = _sources(tmp_path)
    rows = {r[0]: r for r in pp.targets(sources)}
    assert "CPU: model-level ÷ floor" not in rows
    strong, contiguous = rows["CPU: model-level ÷ strong floor"], rows["CPU: model-level ÷ contiguous floor"]
    assert strong[2] == "1.20–2.00× over 12 cells" and strong[3] == "yes"  # 1.8 / 1.5 and 3 / 1.5: within 2×
    assert contiguous[2] == "1.80–3.00× over 12 cells" and contiguous[1] == "≤ 2× (beside it)"
    text = pp.page(sources, "python -m benchmarks.performance_page")
    assert "| 8 | 1e6 (1,007,616) | fp32 | 1.00 (0.900–1.10) | 1.50 (1.40–1.60) | 2.40× | 1.80 (1.50–2.50) |" in text
    assert "| 1.80× | 1.20× |" in text and "| 0.200 (0.100–0.300) |" in text and "| 2 (0.56) |" in text
    assert "took 2.40–2.40× the contiguous copy" in text and "strong floor is 1.50–1.50×" in text
    assert "Which floor: In `perf/aggregation.json`" in text and "interleaved round-robin" in text


def _limits_source(tmp_path) -> dict:
    """A grid with a strong floor: model-level median 1.8 s everywhere, strong floor 1.0 s but where changed."""
    records = []
    for n in (8, 32, 128):
        for d in (1_007_616, 10_092_544):
            for t in ("fp32", "bf16"):
                r = _record(n, d, t, 0.5, [1.5, 1.8, 2.5], [1.6, 1.7, 1.9], tensors=1000, attempts=1, max_spread=0.5)
                r.update(strong_floor_s=1.0, strong_floor_times_s=[1.0, 1.0, 1.0], spread={"model": 0.1})
                if t == "bf16":  # the fp32-math strong floor below the bf16 one, but where changed
                    r.update(strong_floor_fp32_math_s=0.9, strong_floor_fp32_math_times_s=[0.9, 0.9, 0.9])
                records.append(r)
    cells = {pp.cell_name(r): r for r in records}
    for name in ("N=8, d=1e6, fp32", "N=8, d=1e6, bf16"):  # 1.8 / 0.6 = 3× the strong floor: over
        cells[name].update(strong_floor_s=0.6, strong_floor_times_s=[0.6, 0.6, 0.6])
    cells["N=8, d=1e6, bf16"].update(strong_floor_fp32_math_s=1.0, strong_floor_fp32_math_times_s=[1.0, 1.0, 1.0])
    cells["N=8, d=1e7, fp32"].update(model_times_s=[1.1, 1.8, 2.7], attempts=3, spread={"model": 0.9})
    cells["N=128, d=1e7, fp32"].update(layer_times_s=[3.6, 3.6, 3.6])  # layer ÷ model 2
    cells["N=32, d=1e6, fp32"].update(per_tensor_s=40.0, pairwise_s=6.6)
    cells["N=32, d=1e7, fp32"].update(pairwise_s=30.0)
    _write(str(tmp_path), "perf/aggregation.json", {"info": {"git_commit": "c1"}, "records": records})
    return _sources(tmp_path)


def test_what_limits_us_computes_the_excess_per_tensor_the_fp32_math_floor_and_the_spread(tmp_path):
    source = _limits_source(tmp_path)["perf/aggregation.json"]
    text = pp.floor_limits(source, "CPU")
    assert text.startswith("**CPU: model-level ≤ 2× the strong floor.** From `perf/aggregation.json` (medians)")
    assert "2 of 12 cells are over: N=8, d=1e6, fp32 and N=8, d=1e6, bf16." in text
    # (1.8 − 0.6) / (8 × 1000) s = 150 µs; within: (1.8 − 1.0) / (N × 1000) = 100, 25 and 6.25 µs
    assert "is 150 µs in those cells and 6.25–100 µs in the 10 within it." in text
    assert "6.25–150 µs at d=1e6 (1,000 tensors of 1,008 parameters on average)" in text
    assert "The ranges overlap across d" in text
    # fp32 math: 1.0 − 0.6 = 0.4 s of the 1.2 s excess; 1.8 / 1.0 = 1.80× the fp32-math strong floor
    assert "In 1 of the 6 bf16 cells the fp32-math strong floor (FedBip accumulates in fp32) is above" in text
    assert "the difference is 33 % of model-level's excess" in text
    assert "1 of the 1 bf16 cells over 2× would be within it (N=8, d=1e6, bf16: 1.80×)" in text
    assert "stayed above 0.5 after all attempts in 1 of 12 cells: N=8, d=1e7, fp32 (0.90 after 3 attempts" in text
    assert "rounds 1.10, 1.80, 2.70 s: the fastest is 1.10× the strong floor, the median 1.80×" in text


def test_what_limits_us_bounds_the_pairwise_speed_up_by_the_strong_floor(tmp_path):
    source = _limits_source(tmp_path)["perf/aggregation.json"]
    layer = pp.layer_limits(source, "CPU")
    assert "Not met in 1 of 12 cells" in layer and "highest in N=128, d=1e7, fp32 (2.00×)" in layer
    lines = pp.pairwise_limits(source, "CPU")
    assert (
        "- Flattened loop, N=32, d=1e6, fp32: 6.60 s, 3.7× model-level, 6.6× the strong floor, so 20× is out of "
        "reach for any implementation against this loop." in lines
    )
    assert (
        "- Per-tensor loop, N=32, d=1e6, fp32: 40.0 s, 22.2× model-level, 40.0× the strong floor; 20× needs "
        "model-level ≤ 2.00 s, 2.00× the strong floor." in lines
    )
    assert (
        "- Flattened loop, N=32, d=1e7, fp32: 30.0 s, 16.7× model-level, 30.0× the strong floor; 20× needs "
        "model-level ≤ 1.50 s, 1.50× the strong floor." in lines
    )
    assert "- Per-tensor loop: not measured in N=32, d=1e6, bf16; N=32, d=1e7, fp32 and N=32, d=1e7, bf16." in lines
    text = pp.page(_limits_source(tmp_path), "python -m benchmarks.performance_page")
    assert text.index("## Targets") < text.index("## What limits us") < text.index("## Method")


def test_what_limits_us_says_when_a_file_has_no_strong_floor(tmp_path):
    _results(tmp_path)
    lines = pp.limits_lines(_sources(tmp_path))
    assert lines[0].startswith("**CPU: model-level ≤ 2× the strong floor.** `perf/aggregation.json` has no strong")
    assert "Loop ÷ contiguous floor (this file has no strong floor)" in "\n".join(lines)
    # per_tensor 40 s ÷ contiguous floor 1.0 s = 40×; flattened 10 s = 10×: out of reach
    assert any(
        line.startswith("- Flattened loop, N=32, d=1e6, fp32: 10.0 s") and "out of reach" in line for line in lines
    )


def test_what_limits_us_says_when_the_excess_per_tensor_grows_with_the_tensors_size(tmp_path):
    source = _limits_source(tmp_path)["perf/aggregation.json"]
    for r in source.data["records"]:
        if r["params"] > 5_000_000:
            r["tensors"] = 10  # (1.8 − 1.0) / (N × 10): 625–10,000 µs, all above d=1e6's 6.25–150 µs
    text = pp.floor_limits(source, "CPU")
    assert "625–10,000 µs at d=1e7 (10 tensors of 1,009,254 parameters on average)" in text
    assert "The excess per tensor grows with the tensors' size, so it is not a fixed per-tensor cost alone." in text
