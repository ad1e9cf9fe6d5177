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

import hashlib
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

from agfsync.dataset.run_info import WeightsInfo
from agfsync.errors import ConfigurationError
from agfsync.evaluation.metrics import bootstrap_mean_difference, wilson_interval
from agfsync.input_files import decode_utf8, parse_yaml

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


SHOWN_AI_CHOICE = "reviewers saw the AI's choice"
"""Why a pull's row with `ai_choice_shown` is left out: agreeing with a choice one was
shown says little, so those verdicts would pull the fit towards the current weights."""


def read_reviewed_pairs(rows: Sequence[dict[str, Any]], judges: list[str]) -> ReadPairs:
    """The pairs with a human choice, from rows of an agfsync dataset: per-image judge
    scores (`<judge>_scores`, indexed by `chosen_index`/`rejected_index`, which are
    `jpg_0`/`jpg_1`) and `label_0`. Rows of `agfsync argilla pull` count only where the
    reviewers resolved the pair (`label_source = "human"`) without being shown the AI's
    choice: ties, "both good", "both bad" and "toxic" without a majority are unresolved
    there, as the review binarizes them. Elsewhere (a Pick-a-Pic-style dataset: two
    scores per judge, no indices) `label_0` 1 or 0 is the choice and 0.5 a tie. Pairs
    are grouped by `prompt_id`, else by `caption`. Every row left out is counted by
    reason."""
    pairs: list[ReviewedPair] = []
    ignored: dict[str, int] = defaultdict(int)
    images: dict[str, list[float]] = defaultdict(list)
    for row in rows:
        reason = _left_out(row)
        differences = None if reason else _differences(row, judges)
        if reason or differences is None:
            ignored[reason or "a judge score missing"] += 1
            continue
        for judge, (first, second) in differences.items():
            images[judge] += [first, second]
        pairs.append(
            ReviewedPair(
                prompt_id=str(row.get("prompt_id") or row.get("caption") or len(pairs)),
                category=row.get("category") or "none",
                differences={
                    judge: first - second for judge, (first, second) in differences.items()
                },
                prefers_0=float(row["label_0"]) == 1.0,
            )
        )
    scales = {judge: float(np.std(images[judge])) if images[judge] else 1.0 for judge in judges}
    return ReadPairs(
        pairs,
        judges,
        {j: scale or 1.0 for j, scale in scales.items()},
        dict(sorted(ignored.items())),
    )


def _left_out(row: dict[str, Any]) -> str | None:
    """Why a row has no usable human choice, or None."""
    source = row.get("label_source")
    if source is not None and source != "human":
        votes = sum((row.get("human_votes") or {}).values())
        return "no verdict" if votes == 0 else "unresolved votes"
    if row.get("ai_choice_shown"):
        return SHOWN_AI_CHOICE
    if row.get("label_0") not in (0, 1, 0.0, 1.0) or isinstance(row.get("label_0"), bool):
        return "tie or no label"
    return None


def _differences(row: dict[str, Any], judges: list[str]) -> dict[str, tuple[float, float]] | None:
    """Per judge, its scores of jpg_0 and jpg_1; None when one is missing."""
    chosen, rejected = row.get("chosen_index"), row.get("rejected_index")
    scores_of = {}
    for judge in judges:
        scores = row.get(judge + SCORES_SUFFIX)
        if not isinstance(scores, list | tuple):
            return None
        first_index, second_index = (
            (0, 1) if chosen is None and rejected is None else (chosen, rejected)
        )
        if not (
            isinstance(first_index, int)
            and isinstance(second_index, int)
            and max(first_index, second_index) < len(scores)
            and (chosen is not None or len(scores) == 2)
        ):
            return None
        first, second = scores[first_index], scores[second_index]
        if not all(isinstance(v, int | float) and math.isfinite(v) for v in (first, second)):
            return None
        scores_of[judge] = (float(first), float(second))
    return scores_of


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


@dataclass(frozen=True)
class Difference:
    """Held-out agreement of the fitted mix minus another mix's, on the same pairs."""

    points: float
    low: float
    high: float
    """Paired percentile bootstrap 95% interval, resampling prompts."""


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
    rival: str
    """The mix the fitted one is judged against: the current weights, else the best
    single judge."""
    differences: dict[str, Difference]
    """Fitted minus each other mix, by mix name."""
    distinguishable: bool
    """Whether the data tells the fitted mix from the rival (see `outcome_of`)."""
    recommended: bool
    """Whether the fitted weights are worth using: not all zero and not clearly worse
    than the rival (only then is a weight preset written)."""
    verdict: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def left_out(self) -> str:
        """The rows left out, counted by reason ("none" when none was)."""
        return ", ".join(f"{reason}: {count}" for reason, count in self.ignored.items()) or "none"

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Calibration:
        """The calibration `to_json` wrote (`calibration.json`)."""
        mixes = [
            MixResult(
                mix["name"],
                mix["weights"],
                Agreement(**mix["overall"]),
                {key: Agreement(**value) for key, value in mix["by_category"].items()},
            )
            for mix in data["mixes"]
        ]
        differences = {name: Difference(**value) for name, value in data["differences"].items()}
        return cls(**(data | {"mixes": mixes, "differences": differences}))


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
    _check_settings(read, folds, l2)
    prompts = {pair.prompt_id for pair in pairs}
    k = min(folds, len(prompts))
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

    hits_of = {f"{judge} alone": _hits(pairs, {judge: 1.0}) for judge in judges}
    mixes = [result(name, {name.removesuffix(" alone"): 1.0}, hits_of[name]) for name in hits_of]
    if current:
        hits_of["current weights"] = _hits(pairs, current)
        mixes.append(result("current weights", current, hits_of["current weights"]))
    mixes.append(result("fitted weights", fitted, fitted_hits))
    differences = {
        name: paired_difference(pairs, fitted_hits, hits, seed=seed)
        for name, hits in hits_of.items()
    }
    rival = mixes[-2] if current else max(mixes[:-1], key=lambda mix: mix.overall.agreement)
    fitted_mix = mixes[-1].overall
    outcome = outcome_of(fitted_mix, rival.overall, differences[rival.name])
    recommended = any(fitted.values()) and outcome != "worse"
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
        rival=rival.name,
        differences=differences,
        distinguishable=outcome != "unclear" and any(fitted.values()),
        recommended=recommended,
        verdict=_verdict(fitted, fitted_mix, rival, differences[rival.name], outcome, len(pairs)),
    )


def _check_settings(read: ReadPairs, folds: int, l2: float) -> None:
    """Refuse what cannot be fitted or cross-validated, naming the fix."""
    if not read.judges:
        raise ConfigurationError("No judge scores (`<judge>_scores` columns) in the reviewed data.")
    if len(read.pairs) < MIN_PAIRS:
        raise ConfigurationError(
            f"Only {len(read.pairs)} reviewed pairs with a human choice (left out: "
            f"{read.ignored or 'none'}); calibration needs at least {MIN_PAIRS}."
        )
    if folds < 2:
        raise ConfigurationError(f"--folds {folds}: cross-validation needs at least 2 folds.")
    if not (math.isfinite(l2) and l2 >= 0):
        raise ConfigurationError(f"--l2 {l2}: the penalty must be a number >= 0.")
    if len({pair.prompt_id for pair in read.pairs}) < 2:
        raise ConfigurationError(
            f"All {len(read.pairs)} reviewed pairs come from one prompt; cross-validation over "
            "prompts needs pairs of at least 2 prompts (check the `prompt_id` column)."
        )


def paired_difference(
    pairs: Sequence[ReviewedPair], hits: Sequence[float], other: Sequence[float], *, seed: int
) -> Difference:
    """Mean over prompts of `hits - other` (each prompt's pairs averaged into one unit, so
    a prompt is never split across resamples; with one pair per prompt, the difference
    of the agreements), with its paired bootstrap 95% interval."""
    units: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for pair, mine, theirs in zip(pairs, hits, other, strict=True):
        units[pair.prompt_id].append((mine, theirs))
    tuned = [sum(m for m, _ in unit) / len(unit) for unit in units.values()]
    base = [sum(t for _, t in unit) / len(unit) for unit in units.values()]
    interval = bootstrap_mean_difference(base, tuned, seed=seed)
    points = (sum(tuned) - sum(base)) / len(tuned)  # the statistic the bootstrap resamples
    return Difference(points, interval.low, interval.high)


def outcome_of(fitted: Agreement, rival: Agreement, difference: Difference) -> str:
    """ "better", "worse" or "unclear". Worse as soon as either comparison says so (a
    preset that may lose agreement is not written); better only when both do: the
    paired difference is above zero and the two agreements' Wilson intervals are clear
    of each other (the issue's "intervals overlap" rule, and the stricter of the two)."""
    if difference.high < 0 or fitted.high < rival.low:
        return "worse"
    if difference.low > 0 and fitted.low > rival.high:
        return "better"
    return "unclear"


def _verdict(
    fitted: dict[str, float],
    fitted_mix: Agreement,
    rival: MixResult,
    difference: Difference,
    outcome: str,
    pairs: int,
) -> str:
    if not any(fitted.values()):
        return (
            "No judge predicts the human choices (the fitted weights are all zero): keep the "
            "current weights; no weight preset was written."
        )
    other = rival.overall
    head = (
        f"The fitted weights agree with people on {fitted_mix.agreement:.1%} of held-out pairs "
        f"(95% interval {fitted_mix.low:.1%}-{fitted_mix.high:.1%}), against "
        f"{other.agreement:.1%} ({other.low:.1%}-{other.high:.1%}) for {rival.name}: "
        f"{difference.points * 100:+.1f} points (paired bootstrap 95% interval "
        f"{difference.low * 100:+.1f} to {difference.high * 100:+.1f}). "
    )
    if outcome == "worse":
        return (
            head + f"The fitted weights are worse: keep {rival.name}; no weight preset was written."
        )
    if outcome == "better":
        return head + (
            "The fitted weights are better: the paired difference is above zero and the "
            "intervals are clear of each other."
        )
    return head + (
        f"The intervals overlap, so {pairs} pairs cannot tell these mixes apart; review more "
        "pairs before trusting the fitted weights."
    )


WEIGHTS_FILE = "weights.yaml"
FITTED_BY = "agfsync calibrate"
"""The `fitted_by` value of a weight preset `agfsync calibrate` wrote."""


def write_weight_preset(calibration: Calibration, path: Path, source: str) -> None:
    """The fitted weights as a file `agfsync generate --weights` reads, with where they
    came from and how well they agree with people."""
    fitted = calibration.mixes[-1].overall
    preset = {
        "weights": calibration.fitted,
        "fitted_by": FITTED_BY,
        "source": source,
        "pairs": calibration.pairs,
        "held_out_agreement": round(fitted.agreement, 4),
        "interval_95": [round(fitted.low, 4), round(fitted.high, 4)],
        "verdict": calibration.verdict,
    }
    path.write_text(yaml.safe_dump(preset, sort_keys=False, width=1000), encoding="utf-8")


@dataclass(frozen=True)
class WeightPreset:
    weights: dict[str, float]
    info: WeightsInfo

    @property
    def description(self) -> str:
        """One line for run.json and the card: where the weights came from and their
        held-out agreement."""
        return self.info.describe()


WEIGHTS_FORMAT = "expected a YAML mapping with `weights: {judge: weight}`"


def read_weight_preset(path: Path) -> WeightPreset:
    """A weight preset file (`agfsync calibrate` writes one): `weights: {judge: weight}`,
    and, when fitted, where from and how well the weights agree with people. Anything
    malformed is refused with the field it is about."""
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise ConfigurationError(f"--weights {path}: cannot be read ({error}).") from None
    data = parse_yaml(decode_utf8(raw, path), path, WEIGHTS_FORMAT)
    if not isinstance(data, dict):
        raise ConfigurationError(f"--weights {path}: {WEIGHTS_FORMAT}.")
    weights = data.get("weights")
    if (
        not isinstance(weights, dict)
        or not all(
            isinstance(name, str) and _is_number(v) and v >= 0 for name, v in weights.items()
        )
        or not any(weights.values())
    ):
        raise ConfigurationError(
            f"--weights {path}: expected `weights: {{judge: non-negative number}}`, not all "
            "zero (as `agfsync calibrate` writes)."
        )
    info = WeightsInfo(file=path.name, sha256=hashlib.sha256(raw).hexdigest(), fitted=False)
    agreement: Any = data.get("held_out_agreement")
    interval: Any = data.get("interval_95")
    pairs: Any = data.get("pairs")
    if data.get("fitted_by") == FITTED_BY or agreement is not None or interval is not None:
        _check_fitted_fields(path, agreement, interval, pairs)
        source, verdict = data.get("source"), data.get("verdict")
        info = info.model_copy(
            update={
                "fitted": True,
                "source": None if source is None else str(source),
                "pairs": pairs,
                "held_out_agreement": float(agreement),
                "interval_95": (float(interval[0]), float(interval[1])),
                "verdict": str(verdict) if verdict else None,
            }
        )
    return WeightPreset({k: float(v) for k, v in weights.items()}, info)


def read_weights_for(path: Path, judges: Sequence[str], whose: str) -> WeightPreset:
    """`read_weight_preset`, refused unless it weighs exactly `judges` (`whose`: who has
    them, for the message, e.g. "the preset's judges are")."""
    preset = read_weight_preset(path)
    if set(preset.weights) != set(judges):
        raise ConfigurationError(
            f"--weights {path} weighs {sorted(preset.weights)}, {whose} {sorted(judges)}; "
            "calibrate on a dataset judged by the same judges."
        )
    return preset


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _check_fitted_fields(path: Path, agreement: Any, interval: Any, pairs: Any) -> None:
    """The fields `agfsync calibrate` writes about the fit, all present and sane."""
    problems = []
    if not (_is_number(agreement) and 0 <= agreement <= 1):
        problems.append("`held_out_agreement` must be a share between 0 and 1")
    if not (
        isinstance(interval, list)
        and len(interval) == 2
        and all(_is_number(v) and 0 <= v <= 1 for v in interval)
        and interval[0] <= interval[1]
    ):
        problems.append("`interval_95` must be [low, high], shares between 0 and 1")
    if not (isinstance(pairs, int) and not isinstance(pairs, bool) and pairs > 0):
        problems.append("`pairs` must be a positive whole number")
    if problems:
        raise ConfigurationError(
            f"--weights {path}: " + "; ".join(problems) + " (as `agfsync calibrate` writes; "
            "a hand-written file needs only `weights:`)."
        )


def mix_rows(calibration: Calibration) -> list[list[str]]:
    """Per mix: name, weights, pairs, held-out agreement, its interval and the fitted
    mix's difference from it (the command's table and the report's)."""
    rows = []
    for mix in calibration.mixes:
        overall = mix.overall
        difference = calibration.differences.get(mix.name)
        rows.append(
            [
                mix.name,
                ", ".join(f"{judge} {weight:.3f}" for judge, weight in mix.weights.items()),
                str(overall.pairs),
                f"{overall.agreement:.3f}",
                f"{overall.low:.3f}-{overall.high:.3f}",
                _points(difference) if difference else "",
            ]
        )
    return rows


MIX_HEADER = ["mix", "weights", "pairs", "agreement", "95% interval", "fitted minus this"]


def _points(difference: Difference) -> str:
    return (
        f"{difference.points * 100:+.1f} pts ({difference.low * 100:+.1f} to "
        f"{difference.high * 100:+.1f})"
    )


def category_rows(calibration: Calibration) -> list[list[str]]:
    """Per category: its pairs and every mix's held-out agreement with its interval."""
    rows = []
    for category, fitted in calibration.mixes[-1].by_category.items():
        cells = [category, str(fitted.pairs)]
        for mix in calibration.mixes:
            value = mix.by_category[category]
            cells.append(f"{value.agreement:.2f} ({value.low:.2f}-{value.high:.2f})")
        rows.append(cells)
    return rows


def calibration_section(calibration: Calibration) -> str:
    """Markdown: every mix's held-out agreement, its interval, the fitted mix's paired
    difference from it, the same per category, and the verdict."""
    from agfsync.dataset.card import markdown_table, markdown_text

    def table(header: list[str], rows: list[list[str]]) -> list[str]:
        escaped = [[markdown_text(cell) for cell in row] for row in rows]
        return markdown_table(header, escaped).rstrip("\n").split("\n")

    lines = [
        "## Calibration of the judges' weights",
        "",
        f"{calibration.pairs} reviewed pairs with a human choice, {calibration.folds}-fold "
        "cross-validation over prompts; agreement of each mix with people on pairs it was "
        "not fitted on (95% Wilson interval), and the fitted mix's agreement minus each "
        "mix's on the same pairs (paired bootstrap 95% interval over prompts). Left out: "
        f"{calibration.left_out()}.",
        "",
        *table(MIX_HEADER, mix_rows(calibration)),
        "",
        "Per category, each mix's held-out agreement (95% interval):",
        "",
        *table(
            ["category", "pairs", *(m.name for m in calibration.mixes)], category_rows(calibration)
        ),
    ]
    return "\n".join([*lines, "", calibration.verdict, ""])


CALIBRATION_FILE = "calibration.json"
REPORT_FILE = "README.md"


def read_calibration(folder: Path) -> Calibration:
    """The calibration of an `agfsync calibrate` output folder."""
    try:
        data = json.loads((folder / CALIBRATION_FILE).read_text(encoding="utf-8"))
        return Calibration.from_json(data)
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ConfigurationError(
            f"{folder / CALIBRATION_FILE} is not a calibration `agfsync calibrate` wrote "
            f"({error}); run `agfsync calibrate` again."
        ) from None


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
        "caption",
        "ai_choice_shown",
        "category",
        "chosen_index",
        "rejected_index",
        "label_0",
        "label_source",
        "human_votes",
    }
    columns = [name for name in names if name in wanted or name.endswith(SCORES_SUFFIX)]
    return [row for shard in shards for row in pq.read_table(shard, columns=columns).to_pylist()]


def source_name(source: str) -> str:
    """How the reviewed data is named in what calibrate writes: a Hub repo by its id, a
    local folder by its name only (its path says nothing to others and may be private)."""
    path = Path(source)
    return f"the local folder {path.resolve().name}" if path.is_dir() else source


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
        if rows and "label_source" not in rows[0]:
            raise ConfigurationError(
                f"{source} is an agfsync dataset whose label_0 is the judges' choice, not "
                "people's: review it (`agfsync argilla push`, then `agfsync argilla pull`) "
                "and calibrate on the folder `pull` writes."
            )
        run = RunInfo.load(folder)
        current = {judge.name: judge.weight for judge in run.judges} or None
    judges = judges_of(list(rows[0]) if rows else [])
    calibration = calibrate(
        read_reviewed_pairs(rows, judges), current=current, folds=folds, l2=l2, seed=seed
    )
    named = source_name(source)

    def write(staging: Path) -> None:
        (staging / CALIBRATION_FILE).write_text(
            json.dumps(calibration.to_json(), indent=2) + "\n", encoding="utf-8"
        )
        if calibration.recommended:
            write_weight_preset(calibration, staging / WEIGHTS_FILE, source=named)
        (staging / REPORT_FILE).write_text(
            f"# Judge weights calibrated on {named}\n\n" + calibration_section(calibration),
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
