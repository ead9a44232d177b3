#!/usr/bin/env python3
"""Turn criterion's estimates.json files into the markdown tables of docs/BENCHMARKS.md.

Usage: scripts/bench-table.py CRITERION_DIR [CRITERION_DIR ...]

Each CRITERION_DIR is a `target/criterion` directory (or a copy of one, one per run of
`cargo bench -p parley-proto --bench protocol`). For every benchmark the script reads
`<dir>/<group>/<bench...>/new/estimates.json` and takes `median.point_estimate` (ns), and from
`<dir>/.../new/sample.json` the fastest sample (time / iterations of the least disturbed sample), a
contention-robust companion figure. With several runs it reports the smallest median (the run
least disturbed by other load on a shared machine), the spread of the medians (largest /
smallest) and the smallest fastest-sample. Target ratios are computed from the reported medians
(and, in a second column, from the fastest samples).
"""

import json
import sys
from pathlib import Path


def medians(root: Path) -> tuple[dict[str, float], dict[str, float]]:
    med, fastest = {}, {}
    for est in root.glob("**/new/estimates.json"):
        bench_json = est.parent / "benchmark.json"
        if bench_json.exists():
            name = json.loads(bench_json.read_text())["full_id"]
        else:
            name = str(est.parent.parent.relative_to(root))
        med[name] = json.loads(est.read_text())["median"]["point_estimate"]
        sample = json.loads((est.parent / "sample.json").read_text())
        fastest[name] = min(t / i for t, i in zip(sample["times"], sample["iters"]))
    return med, fastest


def fmt(ns: float) -> str:
    if ns >= 1e6:
        return f"{ns / 1e6:.3f} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:.2f} µs"
    return f"{ns:.0f} ns"


def main() -> None:
    both = [medians(Path(d)) for d in sys.argv[1:]]
    runs = [m for m, _ in both]
    fast_runs = [f for _, f in both]
    if not runs or not runs[0]:
        sys.exit("no estimates.json found")
    names = sorted(set().union(*runs))
    best = {n: min(r[n] for r in runs if n in r) for n in names}
    spread = {n: max(r[n] for r in runs if n in r) / best[n] for n in names}
    fast = {n: min(r[n] for r in fast_runs if n in r) for n in names}

    print(f"Medians (`median.point_estimate`), best of {len(runs)} run(s):\n")
    print("| bench | median | spread of medians | fastest sample |")
    print("|---|---:|---:|---:|")
    for n in names:
        print(f"| `{n}` | {fmt(best[n])} | {spread[n]:.2f}× | {fmt(fast[n])} |")

    targets = [
        ("steady 100B: parley / floor", "steady/parley/100B", "steady/floor/100B", "≤ 1.5"),
        ("steady 1KiB: parley / floor", "steady/parley/1KiB", "steady/floor/1KiB", "≤ 1.5"),
        ("steady 100B: parley / vodozemac", "steady/parley/100B", "steady/vodozemac/100B", "≤ 0.25"),
        ("steady 1KiB: parley / vodozemac", "steady/parley/1KiB", "steady/vodozemac/1KiB", "≤ 0.25"),
        ("ping-pong: parley / floor", "pingpong/parley", "pingpong/floor", "≤ 1.2"),
        ("ping-pong: parley / vodozemac", "pingpong/parley", "pingpong/vodozemac", "< 1.0"),
        ("setup: parley / floor", "setup/parley", "setup/floor", "≤ 1.2"),
        ("setup initiator: parley / floor", "setup/parley_initiator", "setup/floor_initiator", "≤ 1.2"),
        ("setup responder: parley / floor", "setup/parley_responder", "setup/floor_responder", "≤ 1.2"),
        ("setup: parley / vodozemac", "setup/parley", "setup/vodozemac", "≤ 1.0 (aim)"),
    ]
    print("\n| ratio | median | fastest sample | target | met? (median) |")
    print("|---|---:|---:|---|---|")
    for label, a, b, target in targets:
        if a not in best or b not in best:
            continue
        r = best[a] / best[b]
        rf = fast[a] / fast[b]
        bound = float(target.split()[1])
        ok = r < bound if target.startswith("<") else r <= bound
        print(f"| {label} | {r:.2f} | {rf:.2f} | {target} | {'met' if ok else 'missed'} |")


if __name__ == "__main__":
    main()
