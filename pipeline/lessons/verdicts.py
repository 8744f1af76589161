"""One verdict per claim, computed from the measured numbers alone.

Each function takes the result dict its experiment wrote (``results/lessons/<claim>.json``)
and returns a Verdict: supported (True), contradicted (False) or inconclusive (None), with one
line that says which numbers decided. Nothing here knows what the lecture expects to see; the
thresholds are stated in each docstring and in the report.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pipeline.families import FAMILY_NAMES
from pipeline.stats import paired_interval

CLEAR_GAP = 0.02  # accuracy differences under 2 points count as no difference on these subsets
# a training choice's effect on accuracy counts from 1 point up, and only where the 95%
# interval of its paired difference over seeds clears that (claims judged on seeds)
EFFECT_MARGIN = 0.01


@dataclass(frozen=True)
class Verdict:
    supported: bool | None  # None: this run cannot tell
    text: str

    @property
    def label(self) -> str:
        return {True: "supported", False: "not supported", None: "inconclusive"}[self.supported]


def _all_of(facts: str, success: str, checks: list[tuple[bool, str]]) -> Verdict:
    """Supported when every check holds; otherwise the facts and each check that failed."""
    failed = [why for ok, why in checks if not ok]
    if not failed:
        return Verdict(True, f"{facts}: {success}")
    return Verdict(False, f"{facts}: {' and '.join(failed)}")


def clears(interval: dict, margin: float) -> bool | None:
    """True when the whole paired interval lies above ``margin``, False when it lies wholly
    below it, None (this run cannot tell) when it straddles it."""
    if interval["low"] > margin:
        return True
    if interval["high"] < margin:
        return False
    return None


def _all_clear(outcomes: list[bool | None]) -> bool | None:
    """A claim made of parts: supported when every part is, not supported when any part is
    shown against it, otherwise inconclusive."""
    if any(o is False for o in outcomes):
        return False
    return True if all(o is True for o in outcomes) else None


def _ending(verdict: bool | None, supported: str, against: str,
            unclear: str = "the intervals cannot tell") -> str:
    """What a three-valued verdict says of its claim, in the verdict's closing words."""
    return {True: supported, False: against, None: unclear}[verdict]


def describe_interval(interval: dict) -> str:
    """``+1.2 points (95% CI -0.3 to +2.7, 3 seeds)`` for an accuracy difference."""
    return (f"{100 * interval['mean']:+.1f} points (95% CI {100 * interval['low']:+.1f} to "
            f"{100 * interval['high']:+.1f}, {interval['seeds']} seeds)")


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def _diverged(loss: float, first_loss: float) -> bool:
    return not math.isfinite(loss) or loss > first_loss


RATE_REACH = 100.0  # the too-slow and the diverging rate are looked for within 2 decades


def learning_rate(r: dict) -> Verdict:
    """Too small is slow, too large diverges, both found near the best rate rather than assumed
    at the grid's ends: within 2 decades below the best rate there is one that trained (final
    loss below the loss at the start) but ends 2+ points under the best; within 2 decades
    above it there is one whose final loss is not finite or above the start. Supported when
    both are found, not supported otherwise (the reason is named)."""
    rates, acc, loss = r["rates"], r["val_accuracy"], r["final_loss"]
    best = int(np.nanargmax(acc))
    top = rates[best]
    slow = [i for i in range(best) if rates[i] * RATE_REACH >= top
            and acc[i] <= acc[best] - CLEAR_GAP and loss[i] < r["first_loss"]]
    wild = [i for i in range(best + 1, len(rates)) if rates[i] <= top * RATE_REACH
            and _diverged(loss[i], r["first_loss"])]
    found_slow = (f"rate {rates[slow[-1]]:g} trained to {_pct(acc[slow[-1]])}" if slow
                  else "no rate within 2 decades below it trained slower")
    found_wild = (f"rate {rates[wild[0]]:g} diverged (loss {loss[wild[0]]:.3g})" if wild
                  else "no rate within 2 decades above it diverged")
    facts = (f"best rate {top:g} ({_pct(acc[best])}); {found_slow}; {found_wild} (start "
             f"loss {r['first_loss']:.3g})")
    return _all_of(facts, "too small is slow, too large diverges",
                   [(bool(slow), "no too-small rate was found"),
                    (bool(wild), "no too-large rate was found")])


def roughness(curve) -> float:
    """How much a per-step loss curve zigzags: the mean absolute second difference, relative
    to the curve's mean level (0 for a straight line)."""
    curve = np.asarray(curve, dtype=float)
    curve = curve[np.isfinite(curve)]
    if len(curve) < 3:
        return float("nan")
    return float(np.mean(np.abs(np.diff(curve, 2))) / max(np.mean(np.abs(curve)), 1e-12))


def end_loss(curve) -> float:
    """Where a per-step loss curve ended: the mean of its last fifth of the steps."""
    curve = np.asarray(curve, dtype=float)
    return float(np.mean(curve[-max(1, len(curve) // 5):]))


MOMENTUM_MARGINS = {"end_loss": 0.02, "roughness": 0.05}  # relative reductions


def momentum(r: dict) -> Verdict:
    """Momentum speeds progress and damps oscillation, both against one baseline: plain SGD
    taking steps of the same size (rate / (1 - momentum); at the same rate SGD's steps are ten
    times shorter, and both halves would measure step size), paired over seeds. Faster: the end
    training loss (``end_loss``) lower by more than 2% of SGD's; smoother: the curve's
    ``roughness`` lower by more than 5% of SGD's; for momentum and Nesterov alike. Supported
    when all four 95% intervals clear their margins, not supported when one lies below its
    margin, otherwise inconclusive."""
    base = r["variants"]["sgd_same_step"]
    outcomes, facts = [], []
    for name in ("momentum", "nesterov"):
        variant = r["variants"][name]
        for key, margin in MOMENTUM_MARGINS.items():
            reductions = [(b - a) / b for a, b in zip(variant[key], base[key], strict=True)]
            interval = paired_interval([0.0] * len(reductions), reductions)
            outcomes.append(clears(interval, margin))
            facts.append(f"{name} {key.replace('_', ' ')} {100 * interval['mean']:+.0f}% "
                         f"lower (95% CI {100 * interval['low']:+.0f} to "
                         f"{100 * interval['high']:+.0f}%)")
    verdict = _all_clear(outcomes)
    ending = _ending(verdict, "momentum is faster and smoother than SGD at its step size",
                     "momentum is not both faster and smoother than SGD at its step size")
    return Verdict(verdict, f"against SGD at lr {base['learning_rate']:g}, "
                            f"{len(base['end_loss'])} seeds: {'; '.join(facts)}: {ending}")


def _spearman(x, y) -> float:
    """scipy's rank correlation (ties share their mean rank); 0 where a side is constant."""
    from scipy.stats import spearmanr

    if len(set(x)) < 2 or len(set(y)) < 2:
        return 0.0
    return float(spearmanr(x, y).statistic)


def batch_size(r: dict) -> Verdict:
    """Smaller batches give noisier gradient estimates: at fixed weights the estimate's
    relative variance falls as the batch grows (rank correlation -1 over the sizes) and the
    smallest batch's is at least 4 times the largest's (sampling alone predicts their size
    ratio, 16). A loss curve's zigzag is not used: it falls with the batch size even when the
    weights do not move. Validation accuracy at equal examples and at equal steps is reported
    beside it."""
    sizes, noise = r["batch_sizes"], r["gradient_noise"]
    rho = _spearman(sizes, noise)
    ratio = noise[0] / max(noise[-1], 1e-30)
    noises = ", ".join(f"batch {b} {n:.3g}" for b, n in zip(sizes, noise, strict=True))
    by_examples = ", ".join(_pct(a) for a in r["val_accuracy"])
    by_steps = ", ".join(_pct(a) for a in r["val_accuracy_equal_steps"])
    facts = (f"gradient noise {noises} (batch {sizes[0]} / batch {sizes[-1]}: {ratio:.1f}x); "
             f"validation accuracy at equal examples {by_examples}, at {r['equal_steps']} "
             f"steps each {by_steps}")
    return _all_of(facts, "the gradient estimate's noise falls as the batch grows",
                   [(rho <= -0.99, "the noise does not fall with every larger batch"),
                    (ratio >= 4, "the smallest batch is not 4 times noisier than the largest")])


def annealing(r: dict) -> Verdict:
    """Decaying the rate beats a constant rate at the same peak and budget: per seed, the mean
    accuracy of the decaying schedules (step, cosine, linear: one contrast fixed in advance,
    not the best of three picked afterwards) minus the constant's; supported when the 95%
    interval over seeds lies above 1 point, not supported when it lies below, otherwise
    inconclusive."""
    schedules = r["schedules"]
    decaying = [k for k in schedules if k != "constant"]
    per_seed = np.mean([schedules[k] for k in decaying], axis=0)
    interval = paired_interval(schedules["constant"], per_seed)
    verdict = clears(interval, EFFECT_MARGIN)
    means = ", ".join(f"{k} {_pct(float(np.mean(v)))}" for k, v in schedules.items())
    ending = _ending(verdict, "annealing wins",
                     "annealing does not win by a point", "the interval cannot tell")
    return Verdict(verdict, f"{means}; decaying minus constant {describe_interval(interval)}: "
                            f"{ending}")


def good_band_decades(rates, accuracies, chance: float, share: float = 0.8) -> float | None:
    """Width, in decades of the learning rate, of the rates that reach ``share`` of the best
    rate's gain over chance (0: one rate); None when no rate gains 5 points over chance (it
    never trained, which is narrower than any band)."""
    gain = np.asarray(accuracies, dtype=float) - chance
    best = np.nanmax(gain)
    if not best >= 0.05:
        return None
    good = [rate for rate, g in zip(rates, gain, strict=True) if g >= share * best]
    return float(math.log10(max(good) / min(good)))


def _decades(width: float | None) -> str:
    return "none (never 5 points over chance)" if width is None else f"{width:.1f} decades"


def adam_robustness(r: dict) -> Verdict:
    """Adam is more robust to the learning rate: the band of rates that reach 80% of the
    best's gain over chance spans more decades for Adam than for SGD (same grid)."""
    chance = r.get("chance", 0.1)
    sgd = good_band_decades(r["rates"], r["sgd"], chance)
    adam = good_band_decades(r["rates"], r["adam"], chance)
    facts = (f"rates reaching 80% of the best gain over chance: Adam {_decades(adam)} "
             f"(best {_pct(max(r['adam']))}), SGD {_decades(sgd)} (best {_pct(max(r['sgd']))})")
    if adam is not None and (sgd is None or adam > sgd):
        return Verdict(True, f"{facts}: Adam tolerates a wider range")
    return Verdict(False, f"{facts}: Adam's range is not wider")


def inductive_bias(r: dict) -> Verdict:
    """The CNN beats an FC net with at least its parameters, and keeps a larger share of its
    accuracy on test images shifted by 4 pixels, paired over seeds: supported when the 95%
    interval of the accuracy gap lies above 1 point and that of the kept share's difference
    above 0; not supported when either lies below; otherwise inconclusive."""
    cnn, fc = r["cnn"], r["fc"]
    keep = {k: np.divide(r[k]["shift"]["4"], np.maximum(r[k]["shift"]["0"], 1e-12))
            for k in FAMILY_NAMES}
    better = paired_interval(fc["shift"]["0"], cnn["shift"]["0"])
    steadier = paired_interval(keep["fc"], keep["cnn"])
    verdict = _all_clear([clears(better, EFFECT_MARGIN), clears(steadier, 0.0)])
    facts = (f"CNN ({cnn['params']:,} parameters) {_pct(float(np.mean(cnn['shift']['0'])))}, "
             f"FC ({fc['params']:,}) {_pct(float(np.mean(fc['shift']['0'])))}: "
             f"{describe_interval(better)}; shifted 4 px they keep "
             f"{_pct(float(np.mean(keep['cnn'])))} and {_pct(float(np.mean(keep['fc'])))} of "
             f"it, a difference of {describe_interval(steadier)}")
    ending = _ending(verdict, "convolution's bias pays and survives shifts",
                     "the CNN is not both better and steadier under shifts")
    return Verdict(verdict, f"{facts}: {ending}")


def regularisation_gap(r: dict) -> Verdict:
    """Augmentation and dropout each narrow the gap between training and validation accuracy,
    against training with neither, without costing validation accuracy: per regulariser the
    95% interval of the gap's narrowing (paired seeds) must lie above 1 point, and the
    interval of its validation change above -1 point (a gap narrowed by underfitting does not
    count). Supported when both regularisers pass; not supported when an interval shows the
    opposite for either (the gap not narrowed by a point, or validation down by more than
    one); otherwise inconclusive."""
    settings = r["settings"]
    gap = {k: np.subtract(v["train_accuracy"], v["val_accuracy"]) for k, v in settings.items()}
    outcomes, facts = [], []
    for name in ("augmentation", "dropout"):
        narrowing = paired_interval(gap[name], gap["none"])
        validation = paired_interval(settings["none"]["val_accuracy"],
                                     settings[name]["val_accuracy"])
        narrows, holds = clears(narrowing, EFFECT_MARGIN), clears(validation, -EFFECT_MARGIN)
        outcomes.append(False if False in (narrows, holds) else
                        True if narrows and holds else None)
        facts.append(f"{name} narrows the gap by {describe_interval(narrowing)}, validation "
                     f"{describe_interval(validation)}")
    verdict = _all_clear(outcomes)
    ending = _ending(verdict, "both narrow it without costing validation accuracy",
                     "at least one does not narrow it, or costs validation accuracy")
    return Verdict(verdict, f"{'; '.join(facts)}: {ending}")


def early_stopping(r: dict) -> Verdict:
    """Early stopping pays: on the test images (a split that did not choose the epoch), the
    weights restored from the best validation-loss epoch (patience 2) beat the weights trained
    to the whole budget, paired over seeds: supported when the 95% interval of the difference
    lies above 0, not supported when it lies below 0, otherwise inconclusive (as when
    validation loss never turned up and both are the same weights)."""
    interval = paired_interval(r["full_test_accuracy"], r["restored_test_accuracy"])
    verdict = clears(interval, 0.0)
    facts = (f"restored (epochs {', '.join(str(e) for e in r['best_epoch'])} of "
             f"{r['epochs_allowed']}) minus trained to the end: test accuracy "
             f"{describe_interval(interval)}")
    ending = _ending(verdict, "stopping early generalises better",
                     "training to the end generalises better",
                     "no difference beyond the seeds' noise")
    return Verdict(verdict, f"{facts}: {ending}")


def depth_ratio(norms) -> float:
    """First-layer over last-layer gradient RMS per weight: far below 1 when gradients
    vanish."""
    return float(norms[0] / max(norms[-1], 1e-30))


def vanishing_gradients(r: dict) -> Verdict:
    """Vanishing gradients, at initialisation and in training: the deep sigmoid stack's
    first/last layer gradient ratio is 10x+ smaller than the ReLU stack's, batch norm raises
    it, and after the same steps of SGD the ReLU stack's validation accuracy is 2+ points
    above the sigmoid stack's (the gradient that reaches the first layers is what trains)."""
    configs = r["configs"]
    ratio = {k: depth_ratio(v["init"]) for k, v in configs.items()}
    accuracy = {k: v.get("val_accuracy") for k, v in configs.items()}
    facts = (f"first/last layer gradient RMS at init: "
             f"{', '.join(f'{k} {v:.2g}' for k, v in ratio.items())}; validation accuracy "
             f"after {r['steps']} steps: "
             f"{', '.join(f'{k} {_pct(v)}' for k, v in accuracy.items() if v is not None)}")
    trains = accuracy["relu"] is not None and accuracy["sigmoid"] is not None and \
        accuracy["relu"] >= accuracy["sigmoid"] + CLEAR_GAP
    return _all_of(facts, "sigmoid's gradients vanish and it trains the worse for it; ReLU "
                          "and batch norm keep them",
                   [(ratio["sigmoid"] * 10 <= ratio["relu"],
                     "sigmoid's gradients did not vanish against ReLU's"),
                    (ratio.get("sigmoid_bn", 0.0) > ratio["sigmoid"],
                     "batch norm did not lift sigmoid's"),
                    (trains, "ReLU did not train clearly better than sigmoid")])


def batch_norm(r: dict) -> Verdict:
    """Batch norm allows higher rates and deeper nets, each arm at its own best rate (chosen on
    validation from the same grid): with batch norm the chosen rate is at least as high at
    every depth; its gain over the plain net at the greatest depth has a 95% paired interval
    above 1 point; and the gain grows with depth (the interval of deep gain minus shallow gain
    lies above 0). Supported when all hold, not supported when a rate is lower or an interval
    lies below its margin, otherwise inconclusive."""
    shallow, deep = r["depths"][0], r["depths"][-1]
    acc, rate = r["val_accuracy"], r["chosen_rate"]
    higher = all(rate[f"{d}/bn"] >= rate[f"{d}/plain"] for d in r["depths"])
    gain = {d: np.subtract(acc[f"{d}/bn"], acc[f"{d}/plain"]) for d in (shallow, deep)}
    deep_gain = paired_interval(np.zeros(len(gain[deep])), gain[deep])
    growth = paired_interval(gain[shallow], gain[deep])
    outcomes = [higher, clears(deep_gain, EFFECT_MARGIN), clears(growth, 0.0)]
    verdict = _all_clear(outcomes)
    rates = ", ".join(f"{d} layers {rate[f'{d}/bn']:g} with, {rate[f'{d}/plain']:g} without"
                      for d in r["depths"])
    facts = (f"best rates {rates}; gain at {deep} layers {describe_interval(deep_gain)}; "
             f"growth from {shallow} to {deep} layers {describe_interval(growth)}")
    ending = _ending(verdict, "batch norm carries higher rates and depth",
                     "batch norm does not carry both")
    return Verdict(verdict, f"{facts}: {ending}")


SMOOTHER = 0.8  # batch norm's landscape counts as smoother from a fifth less variation


def bn_landscape(r: dict) -> Verdict:
    """Batch norm makes the loss landscape smoother: at the same depth, rate and seed, moving
    the weights along the gradient (steps of 0.5-4 times the rate) changes the loss and the
    gradient less with batch norm. Only pairs where both arms trained (validation accuracy
    2+ points above chance, and a finite landscape): a net stuck at chance sits on a plateau,
    flat without being smooth in the lecture's sense. Per pair, the log ratio (with / without)
    of ``loss_range`` and of ``gradient_change``; supported when both ratios' 95% intervals
    over the pairs lie below 0.8, not supported when either lies wholly above it, otherwise
    (or with fewer than 3 pairs kept) inconclusive."""
    def trained(arm: dict) -> bool:
        return arm["val_accuracy"] >= r["chance"] + CLEAR_GAP and all(
            math.isfinite(arm[key]) and arm[key] > 0 for key in ("loss_range", "gradient_change"))

    kept = [p for p in r["pairs"] if trained(p["bn"]) and trained(p["plain"])]
    dropped = len(r["pairs"]) - len(kept)
    note = (f" ({dropped} pair(s) left out: an arm at chance or diverged)" if dropped
            else "")
    if len(kept) < 3:
        return Verdict(None, f"{len(kept)} of {len(r['pairs'])} pairs kept{note}: too few "
                             "to tell")
    outcomes, facts = [], []
    for key, words in (("loss_range", "loss range"), ("gradient_change", "gradient change")):
        logs = [math.log(p["bn"][key] / p["plain"][key]) for p in kept]
        interval = paired_interval([0.0] * len(logs), logs)
        outcomes.append(clears({"low": -interval["high"], "high": -interval["low"]},
                               -math.log(SMOOTHER)))
        facts.append(f"{words} with / without {math.exp(interval['mean']):.2g}x (95% CI "
                     f"{math.exp(interval['low']):.2g} to {math.exp(interval['high']):.2g})")
    verdict = _all_clear(outcomes)
    ending = _ending(verdict, "the landscape is smoother with batch norm",
                     "batch norm's landscape is not a fifth smoother on both measures")
    return Verdict(verdict, f"{len(kept)} pairs (depth x rate, same seed){note}: "
                            f"{'; '.join(facts)}: {ending}")


def ablations(r: dict) -> Verdict:
    """Each part of the champion earns its place: removing it costs test accuracy, paired over
    seeds (the champion and each ablation trained from the same seeds): supported when every
    removal's 95% interval of the cost lies above 1 point; not supported when some removal's
    lies below it (that part is not shown to earn a point); otherwise inconclusive."""
    base = r["baseline_accuracy"]
    costs = {k: paired_interval(v["accuracy"], base) for k, v in r["ablations"].items()}
    verdict = _all_clear([clears(c, EFFECT_MARGIN) for c in costs.values()])
    facts = "; ".join(f"without {k} costs {describe_interval(c)}" for k, c in costs.items())
    ending = _ending(verdict, "every part counts",
                     "not every part is shown to count", "the intervals cannot tell for every part")
    width = r.get("champion", {}).get("base_filters")
    which = f"champion at {width} base filters" if width else "champion"
    return Verdict(verdict, f"{which} {_pct(float(np.mean(base)))}; {facts}: {ending}")


def depth_vs_width(r: dict) -> Verdict:
    """Depth pays where width does not, paired over seeds: the four-layer net beats the
    one-layer net of about its parameters by more than 1 point (95% interval), and that gain
    exceeds what four times the one-layer net's width buys (the interval of their difference
    lies above 0). Supported when both hold, not supported when either interval lies below,
    otherwise inconclusive."""
    nets = r["nets"]
    small, wide, deep = (nets[k] for k in ("shallow_256", "shallow_1024", "deep"))
    depth = paired_interval(small["val_accuracy"], deep["val_accuracy"])
    width = np.subtract(wide["val_accuracy"], small["val_accuracy"])
    depth_over_width = paired_interval(width, np.subtract(deep["val_accuracy"],
                                                          small["val_accuracy"]))
    verdict = _all_clear([clears(depth, EFFECT_MARGIN), clears(depth_over_width, 0.0)])
    facts = (f"1 x 256 units ({small['params']:,} parameters) "
             f"{_pct(float(np.mean(small['val_accuracy'])))}, 1 x 1024 "
             f"({wide['params']:,}) {_pct(float(np.mean(wide['val_accuracy'])))}, "
             f"{deep['layers']} x {deep['units']} ({deep['params']:,}) "
             f"{_pct(float(np.mean(deep['val_accuracy'])))}; depth at equal parameters "
             f"{describe_interval(depth)}; depth's gain minus 4x width's "
             f"{describe_interval(depth_over_width)}")
    ending = _ending(verdict, "depth pays, width much less", "depth does not beat width here")
    return Verdict(verdict, f"{facts}: {ending}")


def robustness(r: dict) -> Verdict:
    """Augmentation builds in robustness to colour and occlusion: the net trained with colour
    jitter and random erasing keeps a larger share of its clean test accuracy on the
    recoloured and on the partly hidden test images than the net trained with flip and crop
    alone, paired over seeds (each 95% interval of the kept share's difference above 0).
    Supported when both hold, not supported when either lies below 0, otherwise
    inconclusive."""
    arms = r["arms"]
    kept = {arm: {view: np.divide(scores[view], np.maximum(scores["clean"], 1e-12))
                  for view in ("colour", "occluded")} for arm, scores in arms.items()}
    differences = {view: paired_interval(kept["flip_crop"][view],
                                         kept["jitter_erasing"][view])
                   for view in ("colour", "occluded")}
    verdict = _all_clear([clears(d, 0.0) for d in differences.values()])
    facts = "; ".join(
        f"{view}: kept {_pct(float(np.mean(kept['jitter_erasing'][view])))} with jitter and "
        f"erasing, {_pct(float(np.mean(kept['flip_crop'][view])))} without, a difference of "
        f"{describe_interval(d)}" for view, d in differences.items())
    clean = {arm: _pct(float(np.mean(arms[arm]["clean"]))) for arm in arms}
    ending = _ending(verdict, "augmentation built both in", "augmentation did not build both in")
    return Verdict(verdict, f"clean test {clean['jitter_erasing']} with, {clean['flip_crop']} "
                            f"without; {facts}: {ending}")


def adam_generalisation(r: dict) -> Verdict:
    """Paired over seeds: Adam is ahead early (its validation accuracy after the first epoch
    beats Nesterov SGD's by more than 1 point), generalises worse (its train-validation gap at
    the end is more than 1 point wider than SGD's) and decoupled weight decay is the
    regularisation it needs (AdamW's gap narrower than Adam's by more than 1 point). Supported
    when all three intervals clear their margins, not supported when one lies below,
    otherwise inconclusive."""
    arms = r["arms"]
    first = {k: [curve[0] for curve in v["val_accuracy_curve"]] for k, v in arms.items()}
    gap = {k: np.subtract(v["train_accuracy"], v["val_accuracy"]) for k, v in arms.items()}
    early = paired_interval(first["nesterov"], first["adam"])
    worse = paired_interval(gap["nesterov"], gap["adam"])
    decoupled = paired_interval(gap["adamw"], gap["adam"])
    verdict = _all_clear([clears(i, EFFECT_MARGIN) for i in (early, worse, decoupled)])
    ends = ", ".join(f"{k} {_pct(float(np.mean(v['val_accuracy'])))}" for k, v in arms.items())
    facts = (f"after epoch 1 Adam minus SGD {describe_interval(early)}; train-validation gap "
             f"at the end, Adam minus SGD {describe_interval(worse)}, Adam minus AdamW "
             f"{describe_interval(decoupled)}; validation at the end {ends}")
    ending = _ending(verdict, "Adam leads early, generalises worse, and decoupled decay helps it",
                     "at least one of the three is shown against the claim")
    return Verdict(verdict, f"{facts}: {ending}")


VERDICTS = {
    "learning_rate": learning_rate, "momentum": momentum, "batch_size": batch_size,
    "annealing": annealing, "adam_robustness": adam_robustness,
    "inductive_bias": inductive_bias, "regularisation_gap": regularisation_gap,
    "early_stopping": early_stopping, "vanishing_gradients": vanishing_gradients,
    "batch_norm": batch_norm, "bn_landscape": bn_landscape, "ablations": ablations,
    "depth_vs_width": depth_vs_width,
    "robustness": robustness, "adam_generalisation": adam_generalisation,
}
