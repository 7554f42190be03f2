"""What the Heads tab says under its plots, written from the same library results the plots draw (``hora.coupling``'s
``Coupling`` and ``hora.knockout``'s ``Knockout``), with the numbers formatted as the plots print them: each caption
explains the view, then says what a visitor should conclude from the numbers on screen."""

from __future__ import annotations

from collections.abc import Mapping

from app.heads_figures import chance_text, metric_name
from hora.coupling import Coupling, LayerCoupling
from hora.knockout import Knockout


MEASURES = {
    "subspace": "the overlap of the column spaces of two heads' B_h: 1 when they span the same directions, "
    "0 when none are shared; unrelated factors of rank r in heads of size d overlap r/d on average",
    "cosine": "the cosine of two heads' B_h, flattened: since every head pairs its columns with the same rows of the "
    "shared A, it says whether two heads push the same A-directions the same way (−1…1; unrelated factors: 0)",
    "cka": "linear CKA of two heads' B_h, their output dimensions as samples: 1 when one factor is a rotation and "
    "scaling of the other. Its chance level, about r/(d + r), is that of random factors whose variance is spread "
    "evenly over their r columns; trained factors concentrate it in a few, and unrelated ones then score less, so "
    "a value below chance does not mean the heads avoid each other",
}
VERDICTS = {
    "above": "more alike than unrelated heads",
    "about": "no more alike than unrelated heads",
    "below": "below its chance level",
    "uninformative": "beyond what this measure can tell",
}
SIMILARITY_ABOUT = (
    "Each matrix compares the output-side factors B_h of every pair of heads (ΔW_h = s·B_h·A: A is shared by "
    "all the heads in every method here, so comparing ΔW_h would mostly compare A with itself). "
)


def _times(c: Coupling) -> str:
    """``5.1× chance`` or, for the cosine (chance 0), ``chance 0``."""
    return f"{c.times_chance:.1f}× chance" if c.times_chance is not None else "chance 0"


def _score(c: Coupling) -> str:
    """What adapters are ranked by: times chance, or the mean itself for the cosine (whose chance is 0)."""
    return f"{c.times_chance:.1f}× chance" if c.times_chance is not None else f"{c.mean_offdiagonal:.2f}"


def _joint(c: Coupling) -> str:
    heads = c.similarity.shape[0]
    return (
        f"together its {heads} heads use {c.joint_effective_rank:.1f} directions of their {c.head_dim} "
        f"(random factors of that shape: {c.joint_effective_rank_chance:.1f})"
    )


def _ranking(couplings: Mapping[str, Coupling]) -> str:
    """Which adapter's heads share the most, relative to chance (by the mean, for the cosine), among those the
    measure can judge; and a warning where their ranks, so their chance levels, differ."""
    judged = {n: c for n, c in couplings.items() if c.verdict != "uninformative"}

    def key(name: str) -> float:
        c = judged[name]
        return c.times_chance if c.times_chance is not None else c.mean_offdiagonal

    order = sorted(judged, key=key, reverse=True)
    text = ""
    if order and not [n for n in order if judged[n].verdict == "above"]:
        text = "None of these adapters' heads is more alike than unrelated heads would be."
    elif len(order) >= 2:
        shown = ", ".join(f"{n} {_score(judged[n])}" for n in order)
        text = f"**{order[0]}'s heads share the most** ({shown})."
    ranks = sorted({c.rank for c in couplings.values()})
    if len(ranks) > 1 and any(c.times_chance is not None for c in couplings.values()):
        text += (
            f" Their ranks differ (r = {', '.join(map(str, ranks))}), and so do their chance levels: compare each "
            "adapter with its own chance level, not the raw numbers with each other."
        )
    return text.strip()


def similarity_caption(couplings: Mapping[str, Coupling], metric: str, where: str) -> str:
    """The similarity matrices' caption: what the measure is, then per adapter its mean, chance level, verdict and
    joint effective rank, and which adapter's heads share the most."""
    lines = [SIMILARITY_ABOUT + f"Here: {MEASURES.get(metric, metric_name(metric))}.", ""]
    lines.append(f"In {where}, the mean {metric_name(metric)} between two different heads:")
    for name, c in couplings.items():
        if c.verdict == "uninformative":
            lines.append(
                f"- **{name}** (r = {c.rank}, heads of {c.head_dim}): {c.mean_offdiagonal:.2f}, and chance "
                f"{chance_text(c.chance)}: r ≥ the head's size, so any two factors span the whole head whatever "
                "they learnt; this measure cannot tell (pick cosine or CKA)."
            )
            continue
        lines.append(
            f"- **{name}** (r = {c.rank}, heads of {c.head_dim}): {c.mean_offdiagonal:.2f} against a chance level of "
            f"{chance_text(c.chance)} ({_times(c)}): {VERDICTS[c.verdict]}; {_joint(c)}."
        )
    return "\n".join(lines) + "\n\n" + _ranking(couplings).strip()


def _span(values: list[float], digits: int = 2) -> str:
    low, high = min(values), max(values)
    return (
        f"{low:.{digits}f}" if f"{low:.{digits}f}" == f"{high:.{digits}f}" else f"{low:.{digits}f}–{high:.{digits}f}"
    )


def summary_caption(layers: Mapping[str, list[LayerCoupling]], metric: str, projection: str) -> str:
    """The per-layer summary's caption: per adapter the range of its heads' mean similarity over the layers, its
    chance level, in how many layers it is beyond chance, and the range of its joint effective rank."""
    parts = []
    for name, rows in layers.items():
        if not rows:
            continue
        first = rows[0].coupling
        means = [r.coupling.mean_offdiagonal for r in rows]
        above = sum(r.coupling.verdict == "above" for r in rows)
        verdict = (
            "this measure cannot tell at that rank"
            if first.verdict == "uninformative"
            else f"more alike than unrelated heads in {above} of {len(rows)} layers"
        )
        joint = _span([r.coupling.joint_effective_rank for r in rows], 1)
        parts.append(
            f"- **{name}**: {_span(means)} (chance {chance_text(first.chance)}): {verdict}; its heads' B together "
            f"use {joint} directions (random factors: {first.joint_effective_rank_chance:.1f})."
        )
    head = (
        f"Top: the mean {metric_name(metric)} of the heads' B_h in every adapted layer of {projection}, each adapter's "
        "chance level dotted in its colour. Middle: the joint effective rank of all the heads' B columns side by "
        "side, how many directions the heads use together (shared directions make it small; dotted: random factors "
        "of that shape). Bottom: the effective "
        "rank of each head's own update ΔW_h (mean over heads), how many directions one head uses: for LoRA and HoRA "
        "at most r (dotted); DoRA and DoRAN also rescale the rows of W0, so their ΔW = W' − W0 is not low-rank and "
        "is not bounded by r."
    )
    return head + "\n\n" + "\n".join(parts) if parts else head


def _effect(result: Knockout, value: float) -> str:
    """An effect in words, with the number as the bars print it."""
    if result.next_token:
        return f"moves the next-token distribution by {value:.3f}"
    return f"lowers its probability by {value:.3f}" if value >= 0 else f"raises its probability by {-value:.3f}"


def knockout_caption(results: Mapping[str, Knockout], references: Mapping[str, str], where: str, note: str) -> str:
    """The knock-out's caption: the measure, what each adapter predicts, which head matters the most (from the
    numbers on the bars) and what removing the whole projection's update does, for scale."""
    if not results:
        return ""
    first = next(iter(results.values()))
    what = "next token" if first.next_token else "class"
    lines = [
        f"Each bar: the {first.measure} when one head's update ΔW_h in {where} is removed (that head's rows of the "
        f"projection use the base weight W0 again), against what the whole adapter outputs; grey: every head's "
        f"update in {where} removed at once, for scale.{note}",
        "",
    ]
    for name, r in results.items():
        if not r.heads:
            continue
        top = max(r.heads, key=lambda h: abs(r.effects[h]))
        head = f"- **{name}** predicts the {what} {references[name]} (p = {r.probability:.2f}). "
        if f"{abs(r.effects[top]):.3f}" == "0.000":
            lines.append(
                head + f"No single head's update moves it measurably (every bar rounds to 0.000); "
                f"removing all of them at once {_effect(r, r.whole)}."
            )
            continue
        lines.append(
            head + f"Head {top} matters the most: removing its update {_effect(r, r.effects[top])}; removing every "
            f"head's update at once {_effect(r, r.whole)}."
        )
    return "\n".join(lines)
