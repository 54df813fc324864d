"""Scoring-kernel benchmark: the bundle runtime on Arrow batches against scikit-learn.

    .venv/bin/python bench/kernels.py [--batches 10] [--repeat 3]

Two models on 20 numeric features (10% missing, so the imputer works): a logistic regression
and a random forest (100 trees, depth 8). For each, the same fitted scikit-learn pipeline is
exported as a bundle; the runtime scores Arrow record batches of 100,000 rows, and
scikit-learn's `predict_proba` scores the same rows as pandas frames prepared beforehand (with
`n_jobs=1` for the forest, as the runtime uses one core per Spark task). Rows/s are the best of
`--repeat` passes over all batches. Targets on CPU: logistic regression at least 2x
scikit-learn's pipeline, the forest at least 1x. With a GPU visible to CuPy the runtime also
runs on it (target: the GPU forest at least 20x the CPU runtime).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jobs import modeling
from jobs.bundle.backends import gpu_available
from jobs.bundle.export import export_bundle
from jobs.bundle.format import read_bundle
from jobs.bundle.runtime import compile_bundle
from jobs.model_kinds import feature_layout
from precompute.contracts import Contract

FEATURES = 20
BATCH_ROWS = 100_000
TRAIN_ROWS = 50_000


def contract() -> Contract:
    return Contract.model_validate(
        {
            "name": "bench",
            "version": 1,
            "entity_id": {"name": "id", "type": "string", "nullable": False},
            "features": [{"name": f"f{i}", "type": "double"} for i in range(FEATURES)],
        }
    )


def make_table(rows: int, seed: int) -> tuple[pa.Table, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, FEATURES))
    weights = rng.normal(size=FEATURES)
    label = rng.random(rows) < 1 / (1 + np.exp(-(x @ weights) / 3))
    missing = rng.random((rows, FEATURES)) < 0.1
    columns = {"id": pa.array(np.char.add("e", np.arange(rows).astype(str)))}
    for i in range(FEATURES):
        columns[f"f{i}"] = pa.array(x[:, i], mask=missing[:, i])
    return pa.table(columns), label


def best_rate(fn: Any, batches: list[Any], repeat: int) -> float:
    fn(batches[0])  # warm-up: numba's compile or cache load, first-touch allocations
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for batch in batches:
            fn(batch)
        best = min(best, time.perf_counter() - start)
    return sum(len(b) for b in batches) / best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    spec = contract()
    layout = feature_layout(spec)
    train, label = make_table(TRAIN_ROWS, seed=1)
    data, _ = make_table(BATCH_ROWS * args.batches, seed=2)
    batches = data.to_batches(max_chunksize=BATCH_ROWS)
    frames = [modeling.features_frame(pa.Table.from_batches([b]), layout) for b in batches]
    print(
        f"{args.batches} Arrow batches of {BATCH_ROWS:,} rows, {FEATURES} features, "
        f"best of {args.repeat}; GPU: {'yes' if gpu_available() else 'none visible to CuPy'}"
    )
    print(f"{'model':<22} {'runtime rows/s':>15} {'sklearn rows/s':>15} {'ratio':>7} {'target':>7}")
    results = {}
    for kind, params, target in (
        ("logistic_regression", {}, 2.0),
        ("random_forest", {"n_estimators": 100, "max_depth": 8, "n_jobs": -1}, 1.0),
    ):
        pipeline = modeling.build_pipeline(spec, kind, "classification", params)  # type: ignore[arg-type]
        pipeline.fit(modeling.features_frame(train, layout), label)
        pipeline.named_steps["model"].set_params(**({"n_jobs": 1} if "n_jobs" in params else {}))
        with tempfile.TemporaryDirectory() as scratch:
            meta = {"task": "classification"}
            path = export_bundle(pipeline, Path(scratch) / "b.zip", kind, meta)
            bundle = read_bundle(path)
        plan = compile_bundle(bundle, "cpu", entity_id="id")
        diff = max(
            float(np.abs(plan.score(b)["score"].to_numpy() - pipeline.predict_proba(f)[:, 1]).max())
            for b, f in zip(batches[:2], frames[:2], strict=True)
        )
        ours = best_rate(plan.score, batches, args.repeat)
        # scikit-learn scores the pandas frames made from the same batches beforehand.
        theirs = best_rate(pipeline.predict_proba, frames, args.repeat)
        results[kind] = (ours, plan, bundle)
        ratio = ours / theirs
        verdict = "met" if ratio >= target else "MISSED"
        print(
            f"{kind:<22} {ours:>15,.0f} {theirs:>15,.0f} {ratio:>6.2f}x {target:>5.1f}x  {verdict}"
            f"  (max |diff| {diff:.1e})"
        )
    if gpu_available():
        for kind, (cpu_rate, _, bundle) in results.items():
            gpu_plan = compile_bundle(bundle, "gpu", entity_id="id")
            rate = best_rate(gpu_plan.score, batches, args.repeat)
            print(f"{kind:<22} GPU runtime {rate:,.0f} rows/s = {rate / cpu_rate:.1f}x CPU runtime")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
