"""reports/lessons.md: per claim the lecture's words, this run's verdict, its figure and the
numbers behind it. Written from the results alone (no training), so it can be redrawn."""

from __future__ import annotations

from pathlib import Path

from pipeline.lessons import CLAIMS, experiments
from pipeline.lessons.training import LESSON_CNN
from pipeline.lessons.verdicts import VERDICTS, Verdict
from pipeline.training import REFRESH_IMAGES

MARK = {True: "supported", False: "**not supported**", None: "inconclusive"}


def standing(main: Verdict, confirmation: Verdict | None) -> bool | None:
    """What a claim's verdict is once a confirmation pass ran: the main pass's when both
    agree, inconclusive (unstable) when they differ."""
    if confirmation is None or confirmation.supported == main.supported:
        return main.supported
    return None


def write_report(path: Path, verdicts: dict[str, Verdict], figures: dict[str, Path],
                 failures: dict[str, str], setup: dict,
                 confirmation: dict[str, Verdict] | None = None) -> Path:
    lines = [
        "# The lecture's claims, measured",
        "",
        f"Each claim below was put to a controlled experiment: one factor changed, everything "
        f"else fixed. Data: {setup['train_images']:,} training, {setup['val_images']:,} "
        f"validation and {setup['test_images']:,} test images of {setup['dataset']} "
        f"(per-class subsets of the prepared splits), {setup['epochs']} "
        f"epoch{'s' if setup['epochs'] != 1 else ''} a run unless the claim says otherwise, "
        f"seed {setup['seed']} (a claim whose rule speaks of paired seeds trains every arm "
        f"from seeds "
        f"{setup['seed']} to {setup['seed'] + setup['seeds'] - 1} and give the 95% interval "
        f"of each paired difference); Keras backend {setup['backend']}; "
        f"{setup['runs']} trainings ({setup.get('shared_runs', 0)} more settings shared a "
        f"training another claim had run) in {setup['minutes']:.1f} minutes. The verdicts are "
        "computed from the numbers by pipeline/lessons/verdicts.py (each function states its "
        "threshold); small subsets and few epochs mean a verdict speaks for this setting, "
        "not for every network. What affords the seeds on a laptop: a small CNN "
        f"({LESSON_CNN['base_filters']} base filters), one validation per run (after its "
        "last epoch; after every epoch only where a claim reads the curve) and settings "
        "shared between claims. Before a validation, batch norm's statistics are "
        f"re-estimated on {REFRESH_IMAGES} training images at the current weights: after a "
        "lesson's few dozen steps Keras' moving averages still hold most of their initial "
        "values.",
        "",
    ]
    if confirmation is not None:
        lines += [
            f"A confirmation pass ran every claim the main pass decided (supported or not) "
            f"again on fresh seeds (from {setup['confirm_seed']}) and a fresh data subset "
            "drawn with them (`results/lessons/confirmation/`, "
            "`reports/lessons/confirmation/`). A claim whose two verdicts differ is "
            "**unstable**: its standing verdict is inconclusive. An inconclusive claim is not "
            "rerun: no second verdict could make it more than inconclusive.", "",
            "| claim | verdict | main pass | confirmation | what decided it (main pass) |",
            "|---|---|---|---|---|"]
    else:
        lines += ["| claim | verdict | what decided it |", "|---|---|---|"]
    for name in setup["claims"]:
        title = CLAIMS[name][0]
        if name in failures:
            lines.append(f"| {title} | failed | {failures[name]} |")
            continue
        verdict = verdicts[name]
        link = f"[{title}](#{_anchor(title)})"
        if confirmation is None:
            lines.append(f"| {link} | {MARK[verdict.supported]} | {verdict.text} |")
            continue
        second = confirmation.get(name)
        final = standing(verdict, second)
        unstable = " (**unstable**)" if second is not None and final != verdict.supported \
            else ""
        again = second.label if second else ("not rerun" if verdict.supported is None
                                             else "failed")
        lines.append(f"| {link} | {MARK[final]}{unstable} | {verdict.label} | {again} | "
                     f"{verdict.text} |")
    for name in setup["claims"]:
        title, claim = CLAIMS[name]
        lines += ["", f"## {title}", "", f"*Claim:* {claim}.", ""]
        if name in failures:
            lines.append(f"The experiment failed: {failures[name]}")
            continue
        verdict = verdicts[name]
        lines += [f"*How:* {_doc(getattr(experiments, name))}", "",
                  f"*Rule:* {_doc(VERDICTS[name])}", "",
                  f"*Verdict:* {MARK[verdict.supported]}: {verdict.text}.", "",
                  f"![{title}]({figures[name].relative_to(path.parent).as_posix()})", "",
                  f"Numbers: `results/lessons/{name}.json`."]
    path.write_text("\n".join(lines) + "\n")
    return path


def _doc(function) -> str:
    """A function's docstring as one paragraph: what the experiment did, what the rule is."""
    return " ".join((function.__doc__ or "").split())


def _anchor(title: str) -> str:
    return "".join(c for c in title.lower().replace(" ", "-") if c.isalnum() or c == "-")
