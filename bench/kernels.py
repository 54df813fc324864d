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

Then a 5-class random forest (100 trees, depth 8) against scikit-learn's `predict_proba`
(`n_jobs=1`), and XGBoost and LightGBM boosters (500 trees, depth 6, 50 features, 10% missing)
written as bundles, against each library's own predict with one thread (`nthread=1`,
`num_threads=1`) on inputs prepared beforehand (a float32 matrix for XGBoost's
`inplace_predict`, a float64 one for LightGBM). `--boosters-only` runs just those two.
Target: ours at least 1x each.
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
from jobs.bundle.boosters import write_booster_bundle
from jobs.bundle.export import export_bundle
from jobs.bundle.format import read_bundle
from jobs.bundle.runtime import compile_bundle
from jobs.model_kinds import feature_layout
from precompute.contracts import Contract

FEATURES = 20
BOOSTER_FEATURES = 50
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


def make_table(rows: int, seed: int, features: int = FEATURES) -> tuple[pa.Table, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, features))
    weights = rng.normal(size=features)
    label = rng.random(rows) < 1 / (1 + np.exp(-(x @ weights) / 3))
    missing = rng.random((rows, features)) < 0.1
    columns = {"id": pa.array(np.char.add("e", np.arange(rows).astype(str)))}
    for i in range(features):
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
    parser.add_argument("--boosters-only", action="store_true", help="only XGBoost and LightGBM")
    args = parser.parse_args()

    if args.boosters_only:
        boosters(args.batches, args.repeat)
        return 0
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
    multiclass_forest(spec, layout, train, batches, frames, args.repeat)
    boosters(args.batches, args.repeat)
    if gpu_available():
        for kind, (cpu_rate, _, bundle) in results.items():
            gpu_plan = compile_bundle(bundle, "gpu", entity_id="id")
            rate = best_rate(gpu_plan.score, batches, args.repeat)
            print(f"{kind:<22} GPU runtime {rate:,.0f} rows/s = {rate / cpu_rate:.1f}x CPU runtime")
    return 0


def report(name: str, ours: float, theirs: float, target: float, diff: float) -> None:
    ratio = ours / theirs
    verdict = "met" if ratio >= target else "MISSED"
    print(
        f"{name:<22} {ours:>15,.0f} {theirs:>15,.0f} {ratio:>6.2f}x {target:>5.1f}x  {verdict}"
        f"  (max |diff| {diff:.1e})"
    )


def model_values(plan: Any, batch: pa.RecordBatch) -> Any:
    """The model step's value for a batch: a multiclass model's (n, K) probabilities."""
    env = {i.name: plan._input(batch, i.name, i.kind, i.nulls_allowed) for i in plan.program.inputs}
    result = None
    for position, step in enumerate(plan.program.steps):
        result = plan._run(position, step, env, np)
    return result


def multiclass_forest(
    spec: Contract, layout: Any, train: pa.Table, batches: list[Any], frames: list[Any], repeat: int
) -> None:
    """A 5-class random forest (100 trees, depth 8) against scikit-learn's predict_proba."""
    spend = train.column("f0").to_numpy(zero_copy_only=False)
    target = np.digitize(np.nan_to_num(spend), [-1.0, -0.3, 0.3, 1.0])  # 5 classes
    params = {"n_estimators": 100, "max_depth": 8, "n_jobs": -1}
    pipeline = modeling.build_pipeline(spec, "random_forest", "classification", params)
    pipeline.fit(modeling.features_frame(train, layout), target)
    pipeline.named_steps["model"].set_params(n_jobs=1)
    with tempfile.TemporaryDirectory() as scratch:
        meta = {"task": "classification"}
        bundle = read_bundle(export_bundle(pipeline, Path(scratch) / "m.zip", "forest5", meta))
    plan = compile_bundle(bundle, "cpu", entity_id="id")
    diff = float(np.abs(model_values(plan, batches[0]) - pipeline.predict_proba(frames[0])).max())
    ours = best_rate(lambda b: model_values(plan, b), batches, repeat)
    theirs = best_rate(pipeline.predict_proba, frames, repeat)
    report("random_forest 5-class", ours, theirs, 1.0, diff)


def boosters(count: int, repeat: int) -> None:
    """XGBoost and LightGBM, 500 trees of depth 6 on 50 features (10% missing): our kernel
    on Arrow batches against each library's predict with one thread on inputs prepared
    beforehand (a DMatrix; a float64 matrix)."""
    import lightgbm
    import xgboost

    train, label = make_table(TRAIN_ROWS, seed=1, features=BOOSTER_FEATURES)
    data, _ = make_table(BATCH_ROWS * count, seed=2, features=BOOSTER_FEATURES)
    batches = data.to_batches(max_chunksize=BATCH_ROWS)
    columns = [f"f{i}" for i in range(BOOSTER_FEATURES)]

    def matrix(table: Any) -> np.ndarray:
        return np.column_stack(
            [table.column(c).to_numpy(zero_copy_only=False).astype(np.float64) for c in columns]
        )

    x_train = matrix(train)
    arrays = [matrix(pa.Table.from_batches([b])) for b in batches]
    xgb = xgboost.train(
        {"objective": "binary:logistic", "max_depth": 6, "eta": 0.1, "nthread": 2},
        xgboost.DMatrix(x_train, label),
        num_boost_round=500,
    )
    xgb.set_param({"nthread": 1})
    lgb = lightgbm.train(
        {"objective": "binary", "max_depth": 6, "num_leaves": 63, "verbose": -1},
        lightgbm.Dataset(x_train, label),
        num_boost_round=500,
    )
    # inplace_predict: predict on a DMatrix would return its cached predictions when repeated.
    floats = [a.astype(np.float32) for a in arrays]
    models: list[tuple[str, Any, bytes, Any]] = [
        ("xgboost", xgb, bytes(xgb.save_raw("json")), lambda a: xgb.inplace_predict(a)),
        (
            "lightgbm",
            lgb,
            str(lgb.model_to_string()).encode(),
            lambda a: lgb.predict(a, num_threads=1),
        ),
    ]
    for kind, _, model, predict in models:
        inputs = floats if kind == "xgboost" else arrays
        with tempfile.TemporaryDirectory() as scratch:
            path = Path(scratch) / "b.zip"
            bundle = read_bundle(write_booster_bundle(kind, model, columns, path, kind, {}))  # type: ignore[arg-type]
        plan = compile_bundle(bundle, "cpu", entity_id="id")
        diff = float(np.abs(plan.score(batches[0])["score"].to_numpy() - predict(inputs[0])).max())
        ours = best_rate(plan.score, batches, repeat)
        theirs = best_rate(predict, inputs, repeat)
        report(f"{kind} 500x6", ours, theirs, 1.0, diff)


if __name__ == "__main__":
    raise SystemExit(main())
