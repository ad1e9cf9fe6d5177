"""Learn the judges' weights from human verdicts (`agfsync calibrate`).

AGFSync combines its judges with fixed weights. Once people have reviewed pairs, the
mix that agrees with them can be fitted: a Bradley-Terry (logistic) model of the human
choice on the per-judge score differences of the two images,

    P(people prefer jpg_0) = sigmoid(sum_j w_j * (s_j(jpg_0) - s_j(jpg_1)) / sd_j),

with each judge's differences divided by the standard deviation of its scores (so an
L2 penalty treats the judges alike) and the weights kept non-negative (a judge may be
ignored, never inverted). The fitted weights, divided by the same deviations, are
weights on the judges' raw 0-100 scores, normalized to sum to 1: a weight preset
`agfsync generate --weights` reads.

Every mix (each judge alone, the run's weights, the fitted ones) is scored on pairs it
was not fitted on: k-fold cross-validation over prompts, the predictions of all folds
pooled, agreement with a 95% Wilson interval, overall and per category.
"""

from __future__ import annotations

import json
import math
import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from agfsync.errors import ConfigurationError
from agfsync.evaluation.metrics import wilson_interval

SCORES_SUFFIX = "_scores"
NOT_JUDGES = {"weighted"}
"""`<name>_scores` columns that are not a judge's own scores."""
DEFAULT_FOLDS = 5
DEFAULT_L2 = 1e-2
"""L2 penalty on the standardized weights: enough to keep collinear judges finite."""
MIN_PAIRS = 10
"""Fewer reviewed pairs than this cannot be fitted at all."""


@dataclass(frozen=True)
class ReviewedPair:
    prompt_id: str
    category: str
    differences: dict[str, float]
    """Per judge: its score of jpg_0 minus its score of jpg_1."""
    prefers_0: bool
    """People preferred jpg_0."""


@dataclass
class ReadPairs:
    pairs: list[ReviewedPair]
    judges: list[str]
    scales: dict[str, float]
    """Per judge: the standard deviation of its scores over every image of the pairs."""
    ignored: dict[str, int] = field(default_factory=dict)
    """Rows left out, by reason (no verdict, unresolved votes, a tie label)."""


def judges_of(columns: Sequence[str]) -> list[str]:
    return [
        column.removesuffix(SCORES_SUFFIX)
        for column in columns
        if column.endswith(SCORES_SUFFIX) and column.removesuffix(SCORES_SUFFIX) not in NOT_JUDGES
    ]


def read_reviewed_pairs(rows: Sequence[dict[str, Any]], judges: list[str]) -> ReadPairs:
    """The pairs with a human choice, from rows of an agfsync dataset: per-image judge
    scores (`<judge>_scores`, indexed by `chosen_index`/`rejected_index`, which are
    `jpg_0`/`jpg_1`) and `label_0`. Rows of `agfsync argilla pull` count only where the
    reviewers resolved the pair (`label_source = "human"`): ties, "both good", "both
    bad" and "toxic" without a majority are unresolved there, as the review binarizes
    them. Elsewhere (a Pick-a-Pic-style dataset) `label_0` 1 or 0 is the choice and 0.5
    a tie. Every row left out is counted by reason."""
    pairs: list[ReviewedPair] = []
    ignored: dict[str, int] = defaultdict(int)
    images: dict[str, list[float]] = defaultdict(list)
    for row in rows:
        source = row.get("label_source")
        if source is not None and source != "human":
            votes = sum((row.get("human_votes") or {}).values())
            ignored["no verdict" if votes == 0 else "unresolved votes"] += 1
            continue
        label = row.get("label_0")
        if label not in (0, 1, 0.0, 1.0):
            ignored["tie or no label"] += 1
            continue
        chosen, rejected = row.get("chosen_index"), row.get("rejected_index")
        differences = {}
        for judge in judges:
            scores = row.get(judge + SCORES_SUFFIX)
            if scores is None or chosen is None or rejected is None:
                break
            first, second = scores[chosen], scores[rejected]
            if (
                first is None
                or second is None
                or not (math.isfinite(first) and math.isfinite(second))
            ):
                break
            differences[judge] = float(first) - float(second)
            images[judge] += [float(first), float(second)]
        else:
            pairs.append(
                ReviewedPair(
                    prompt_id=str(row.get("prompt_id") or len(pairs)),
                    category=row.get("category") or "none",
                    differences=differences,
                    prefers_0=float(label) == 1.0,
                )
            )
            continue
        ignored["a judge score missing"] += 1
    scales = {judge: float(np.std(images[judge])) or 1.0 for judge in judges}
    return ReadPairs(pairs, judges, scales, dict(ignored))


@dataclass(frozen=True)
class Agreement:
    pairs: int
    agreement: float
    low: float
    high: float
    """95% Wilson interval of the agreement."""


def agreement_of(hits: Sequence[float]) -> Agreement:
    """Agreement of predictions scored 1 (agrees), 0 (disagrees) or 0.5 (a tie)."""
    count = len(hits)
    if count == 0:
        return Agreement(0, math.nan, math.nan, math.nan)
    interval = wilson_interval(sum(hits), count)
    return Agreement(count, sum(hits) / count, interval.low, interval.high)


def _design(
    pairs: Sequence[ReviewedPair], judges: list[str], scales: dict[str, float]
) -> tuple[np.ndarray, np.ndarray]:
    z = np.array(
        [[pair.differences[j] / scales[j] for j in judges] for pair in pairs], dtype=np.float64
    )
    y = np.array([1.0 if pair.prefers_0 else -1.0 for pair in pairs])
    return z.reshape(len(pairs), len(judges)), y


def fit_standardized(
    z: np.ndarray, y: np.ndarray, l2: float = DEFAULT_L2, iterations: int = 3000
) -> np.ndarray:
    """Non-negative weights minimizing the mean logistic loss of `y * (z @ w)` plus
    `l2 / 2 * |w|^2` (projected gradient descent, step from the loss's Lipschitz bound)."""
    n, d = z.shape
    weights = np.zeros(d)
    lipschitz = 0.25 * float(np.linalg.eigvalsh(z.T @ z / max(n, 1)).max(initial=0.0)) + l2
    step = 1.0 / max(lipschitz, 1e-12)
    for _ in range(iterations):
        margin = y * (z @ weights)
        gradient = -(z.T @ (y * _sigmoid(-margin))) / n + l2 * weights
        updated = np.maximum(weights - step * gradient, 0.0)
        if np.max(np.abs(updated - weights)) < 1e-10:
            weights = updated
            break
        weights = updated
    return weights


def _sigmoid(values: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * values))


def raw_weights(
    standardized: np.ndarray, judges: list[str], scales: dict[str, float]
) -> dict[str, float]:
    """Weights on the judges' raw scores, summing to 1 (all zero stays zero)."""
    raw = np.array([w / scales[j] for w, j in zip(standardized, judges, strict=True)])
    total = raw.sum()
    return {j: float(w / total) if total > 0 else 0.0 for j, w in zip(judges, raw, strict=True)}


def _hits(pairs: Sequence[ReviewedPair], weights: dict[str, float]) -> list[float]:
    hits = []
    for pair in pairs:
        combined = sum(weights.get(j, 0.0) * value for j, value in pair.differences.items())
        hits.append(0.5 if combined == 0 else float((combined > 0) == pair.prefers_0))
    return hits


def folds_by_prompt(pairs: Sequence[ReviewedPair], k: int, seed: int) -> list[list[int]]:
    """Indices of the pairs in `k` folds; all pairs of a prompt in the same fold."""
    prompts = sorted({pair.prompt_id for pair in pairs})
    random.Random(seed).shuffle(prompts)
    fold_of = {prompt: index % k for index, prompt in enumerate(prompts)}
    folds: list[list[int]] = [[] for _ in range(k)]
    for index, pair in enumerate(pairs):
        folds[fold_of[pair.prompt_id]].append(index)
    return [fold for fold in folds if fold]


@dataclass
class MixResult:
    name: str
    weights: dict[str, float]
    """For the fitted mix: fitted on all pairs (the held-out figures come from the folds)."""
    overall: Agreement
    by_category: dict[str, Agreement]


@dataclass
class Calibration:
    judges: list[str]
    scales: dict[str, float]
    pairs: int
    ignored: dict[str, int]
    folds: int
    l2: float
    mixes: list[MixResult]
    fitted: dict[str, float]
    current: dict[str, float] | None
    distinguishable: bool
    """Whether the fitted mix's interval is clear of the current (or best single) one's."""
    verdict: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def calibrate(
    read: ReadPairs,
    *,
    current: dict[str, float] | None = None,
    folds: int = DEFAULT_FOLDS,
    l2: float = DEFAULT_L2,
    seed: int = 0,
) -> Calibration:
    """Fit the weights and score every mix on held-out folds (see the module doc)."""
    pairs, judges, scales = read.pairs, read.judges, read.scales
    if not judges:
        raise ConfigurationError("No judge scores (`<judge>_scores` columns) in the reviewed data.")
    if len(pairs) < MIN_PAIRS:
        raise ConfigurationError(
            f"Only {len(pairs)} reviewed pairs with a human choice (left out: "
            f"{read.ignored or 'none'}); calibration needs at least {MIN_PAIRS}."
        )
    k = max(2, min(folds, len({pair.prompt_id for pair in pairs})))
    fitted_hits = [0.0] * len(pairs)
    for fold in folds_by_prompt(pairs, k, seed):
        held_out = set(fold)
        training = [pair for index, pair in enumerate(pairs) if index not in held_out]
        z, y = _design(training, judges, scales)
        weights = raw_weights(fit_standardized(z, y, l2), judges, scales)
        for index, hit in zip(fold, _hits([pairs[i] for i in fold], weights), strict=True):
            fitted_hits[index] = hit
    z, y = _design(pairs, judges, scales)
    fitted = raw_weights(fit_standardized(z, y, l2), judges, scales)

    def result(name: str, weights: dict[str, float], hits: list[float]) -> MixResult:
        by_category: dict[str, list[float]] = defaultdict(list)
        for pair, hit in zip(pairs, hits, strict=True):
            by_category[pair.category].append(hit)
        return MixResult(
            name,
            weights,
            agreement_of(hits),
            {key: agreement_of(value) for key, value in sorted(by_category.items())},
        )

    mixes = [result(f"{judge} alone", {judge: 1.0}, _hits(pairs, {judge: 1.0})) for judge in judges]
    if current:
        mixes.append(result("current weights", current, _hits(pairs, current)))
    mixes.append(result("fitted weights", fitted, fitted_hits))
    fitted_mix = mixes[-1].overall
    rival = mixes[-2] if current else max(mixes[:-1], key=lambda mix: mix.overall.agreement)
    distinguishable = fitted_mix.low > rival.overall.high or fitted_mix.high < rival.overall.low
    if not any(fitted.values()):
        distinguishable = False
        verdict = (
            "No judge predicts the human choices (the fitted weights are all zero): keep the "
            "current weights; no weight preset was written."
        )
        return Calibration(
            judges,
            scales,
            len(pairs),
            read.ignored,
            k,
            l2,
            mixes,
            fitted,
            current,
            distinguishable,
            verdict,
        )
    verdict = (
        f"The fitted weights agree with people on {fitted_mix.agreement:.1%} of held-out pairs "
        f"(95% interval {fitted_mix.low:.1%}-{fitted_mix.high:.1%}), against "
        f"{rival.overall.agreement:.1%} ({rival.overall.low:.1%}-{rival.overall.high:.1%}) for "
        f"{rival.name}: "
        + (
            "the difference is clear of both intervals."
            if distinguishable
            else f"the intervals overlap, so {len(pairs)} pairs cannot tell these mixes apart; "
            "review more pairs before trusting the fitted weights."
        )
    )
    return Calibration(
        judges=judges,
        scales=scales,
        pairs=len(pairs),
        ignored=read.ignored,
        folds=k,
        l2=l2,
        mixes=mixes,
        fitted=fitted,
        current=current,
        distinguishable=distinguishable,
        verdict=verdict,
    )


WEIGHTS_FILE = "weights.yaml"


def write_weight_preset(calibration: Calibration, path: Path, source: str) -> None:
    """The fitted weights as a file `agfsync generate --weights` reads, with where they
    came from and how well they agree with people."""
    fitted = calibration.mixes[-1].overall
    preset = {
        "weights": calibration.fitted,
        "source": source,
        "pairs": calibration.pairs,
        "held_out_agreement": round(fitted.agreement, 4),
        "interval_95": [round(fitted.low, 4), round(fitted.high, 4)],
    }
    path.write_text(yaml.safe_dump(preset, sort_keys=False), encoding="utf-8")


@dataclass(frozen=True)
class WeightPreset:
    weights: dict[str, float]
    source: str
    description: str
    """One line for run.json and the card: where the weights came from and their agreement."""


def read_weight_preset(path: Path) -> WeightPreset:
    """A weight preset file (`agfsync calibrate` writes one): `weights: {judge: weight}`."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise ConfigurationError(f"--weights {path}: cannot be read ({error}).") from None
    weights = data.get("weights") if isinstance(data, dict) else None
    if (
        not isinstance(weights, dict)
        or not weights
        or not all(
            isinstance(name, str) and isinstance(value, int | float) and value >= 0
            for name, value in weights.items()
        )
    ):
        raise ConfigurationError(
            f"--weights {path}: expected `weights: {{judge: non-negative number}}`, not all "
            "zero (as `agfsync calibrate` writes)."
        )
    source = str(data.get("source") or path)
    agreement = data.get("held_out_agreement")
    description = f"weights from {path.name} (calibrated on {source}"
    if agreement is not None:
        low, high = data.get("interval_95") or (math.nan, math.nan)
        description += (
            f", {data.get('pairs')} reviewed pairs, held-out agreement {agreement:.1%}, "
            f"95% interval {low:.1%}-{high:.1%}"
        )
    return WeightPreset({k: float(v) for k, v in weights.items()}, source, description + ")")


def calibration_section(calibration: Calibration) -> str:
    """Markdown: every mix's held-out agreement, its interval and the verdict."""
    lines = [
        "## Calibration of the judges' weights",
        "",
        f"{calibration.pairs} reviewed pairs with a human choice, {calibration.folds}-fold "
        "cross-validation over prompts; agreement of each mix with people on pairs it was "
        "not fitted on (95% Wilson interval). Left out: "
        + (", ".join(f"{k}: {v}" for k, v in calibration.ignored.items()) or "none")
        + ".",
        "",
        "| mix | weights | pairs | agreement | 95% interval |",
        "|---|---|---|---|---|",
    ]
    for mix in calibration.mixes:
        weights = ", ".join(f"{j} {w:.3f}" for j, w in mix.weights.items())
        overall = mix.overall
        lines.append(
            f"| {mix.name} | {weights} | {overall.pairs} | {overall.agreement:.3f} | "
            f"{overall.low:.3f}-{overall.high:.3f} |"
        )
    lines += [
        "",
        "Per category (fitted weights):",
        "",
        "| category | pairs | agreement | 95% interval |",
        "|---|---|---|---|",
    ]
    for category, value in calibration.mixes[-1].by_category.items():
        interval = f"{value.low:.3f}-{value.high:.3f}"
        lines.append(f"| {category} | {value.pairs} | {value.agreement:.3f} | {interval} |")
    return "\n".join([*lines, "", calibration.verdict, ""])


CALIBRATION_FILE = "calibration.json"
REPORT_FILE = "README.md"


def _rows_of(folder: Path) -> list[dict[str, Any]]:
    """The rows of a dataset folder without its image bytes (only what calibration reads)."""
    import pyarrow.parquet as pq

    from agfsync.dataset.folder import listed_shards

    shards = listed_shards(folder) if (folder / "README.md").is_file() else []
    shards = (
        shards or sorted((folder / "data").glob("*.parquet")) or sorted(folder.glob("*.parquet"))
    )
    if not shards:
        raise ConfigurationError(f"{folder} holds no parquet files to calibrate on.")
    names = pq.read_schema(shards[0]).names
    wanted = {
        "prompt_id",
        "category",
        "chosen_index",
        "rejected_index",
        "label_0",
        "label_source",
        "human_votes",
    }
    columns = [name for name in names if name in wanted or name.endswith(SCORES_SUFFIX)]
    return [row for shard in shards for row in pq.read_table(shard, columns=columns).to_pylist()]


def run_calibration(
    source: str,
    output: Path,
    *,
    folds: int = DEFAULT_FOLDS,
    l2: float = DEFAULT_L2,
    seed: int = 0,
    overwrite: bool = False,
) -> Calibration:
    """`agfsync calibrate`: read reviewed pairs from `source` (a dataset folder, e.g. the
    output of `agfsync argilla pull`, or a Hub dataset repo), fit and score the mixes,
    and write `output/` (an agfsync calibration folder): `calibration.json`, the weight
    preset `weights.yaml` and `README.md` with the agreement table."""
    from agfsync.dataset.run_info import RUN_INFO_FILE, RunInfo
    from agfsync.ownership import FolderKind, check_output_folder, write_folder
    from agfsync.review.argilla import resolve_source

    entries = (CALIBRATION_FILE, WEIGHTS_FILE, REPORT_FILE)
    check_output_folder(
        output, FolderKind.CALIBRATION, flag="--output", overwrite=overwrite, reserved=entries
    )
    folder = resolve_source(source)
    rows = _rows_of(folder)
    current = None
    if (folder / RUN_INFO_FILE).is_file():
        run = RunInfo.load(folder)
        current = {judge.name: judge.weight for judge in run.judges} or None
    judges = judges_of(list(rows[0]) if rows else [])
    calibration = calibrate(
        read_reviewed_pairs(rows, judges), current=current, folds=folds, l2=l2, seed=seed
    )

    def write(staging: Path) -> None:
        (staging / CALIBRATION_FILE).write_text(
            json.dumps(calibration.to_json(), indent=2) + "\n", encoding="utf-8"
        )
        if any(calibration.fitted.values()):
            write_weight_preset(calibration, staging / WEIGHTS_FILE, source=source)
        (staging / REPORT_FILE).write_text(
            f"# Judge weights calibrated on {source}\n\n" + calibration_section(calibration),
            encoding="utf-8",
        )

    write_folder(
        output,
        FolderKind.CALIBRATION,
        write,
        flag="--output",
        overwrite=overwrite,
        what="the calibration",
    )
    return calibration
