"""pairwise: a judge compares each answer with production's answer to the same logged call, in both orders.

Logs have no reference answers, but they have what production answered. The judge sees the request and
two answers and names the better one (`Verdict: A|B|TIE`). Each pair is asked twice, the candidate first
and then production first: a candidate wins when the judge prefers it in both orders, loses when it
prefers production in both, and ties otherwise, so a judge that always picks the first (or the second)
answer (position bias; Zheng et al., 2023, section 3.3) makes ties, never wins. Scores are 1 (win), 0.5
(tie) and 0 (loss); production against itself is a tie without a call. The non-inferiority test on them
is the one decision engine's, the margin in win-rate points (0.1: at most 10 points below a tie).
Each record's rationale keeps both verdicts, which the analysis counts (`analysis.pairwise_tally`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from harness.config import ConfigError
from harness.datasets import PRODUCTION_OUTPUT, Item
from harness.pool import ModelPool
from harness.prompts import Messages, render_checked
from harness.records import PAIRWISE_RATIONALE
from harness.scorers._model import ScorerModel
from harness.scorers._registry import Scored, ScorerParts, scorer
from harness.scorers.judge import load_rubric

VERDICT = re.compile(r"verdict\s*[:=]\s*\**\s*(A|B|TIE)\b", re.IGNORECASE)
PAIRWISE_PARAMS = {"temperature": 0, "max_tokens": 128}
OUTCOMES = {"win": 1.0, "tie": 0.5, "loss": 0.0}


def parse_verdict(reply: str) -> str | None:
    """`A`, `B` or `TIE` from the judge's last verdict line; a bare last line of A, B or TIE counts too."""
    found = VERDICT.findall(reply) or re.findall(r"^\s*\**(A|B|TIE)\**\s*\.?\s*$", reply, re.IGNORECASE | re.MULTILINE)
    if not found:  # a small judge answering with the letter first ("A", "B.", "Answer A is better")
        found = re.findall(r"^\W*(?:answer\s+)?(A|B|TIE)\b", reply.strip(), re.IGNORECASE)[:1]
    return found[-1].upper() if found else None


def outcome(candidate_first: str, production_first: str) -> str:
    """The candidate's result from the verdict with it shown first and the one with production first."""
    if candidate_first == "A" and production_first == "B":
        return "win"
    if candidate_first == "B" and production_first == "A":
        return "loss"
    return "tie"


RUBRIC = """{% block system %}You compare two answers to the same request. Judge which one serves the request \
better; length is no merit.{% endblock %}
{% block user %}Request:
{{ input }}

Answer A:
{{ first }}

Answer B:
{{ second }}

Which answer is better? Reply with one line of reasoning, then a last line of the form "Verdict: A", \
"Verdict: B" or "Verdict: TIE".{% endblock %}"""
"""The default rubric (a project's own is `rubric: prompts/judges/FILE.j2`): it sees `input` (the logged
request's last user message), `first`, `second` and every item field."""


@scorer("pairwise")
def pairwise(
    model: str | dict[str, Any],
    rubric: str | None = None,
    params: dict[str, Any] | None = None,
    concurrency: int | None = None,
    root: Path | None = None,
) -> ScorerParts:
    """A judge prefers the answer or production's, in both orders. Example: `pairwise: {model: openai/gpt-4o}`."""
    template = load_rubric(rubric or "", root, default=RUBRIC)
    judge = ScorerModel.from_option(model, {**PAIRWISE_PARAMS, **(params or {})}, concurrency)

    def production(item: Item) -> str:
        return str(item.fields.get(PRODUCTION_OUTPUT) or item.reference or "")

    def render(first: str, second: str, item: Item) -> Messages:
        request = item.fields.get("input") or production(item)
        return render_checked(template, {**item.fields, "input": request, "first": first, "second": second}, item.id)

    def check(items: list[Item]) -> None:
        missing = [item.id for item in items if not production(item)]
        if missing:
            raise ConfigError(
                "scorers",
                "pairwise",
                f"{len(missing)} items have no production answer to compare with (first: {missing[0]})",
                "score logs (dataset: {logs: ...}) or items with a reference",
            )
        for item in items[:1]:
            render("", "", item)

    def batch(pairs: list[tuple[str, Item]], pool: ModelPool | None, advance: Any) -> list[Scored]:
        asked = [i for i, (output, item) in enumerate(pairs) if output.strip() != production(item).strip()]
        requests = []
        for i in asked:
            output, item = pairs[i]
            requests += [render(output, production(item), item), render(production(item), output, item)]
        replies = judge.run(requests, pool, lambda: None)
        results = [Scored(OUTCOMES["tie"], 0.0, "", "pairwise same answer as production: tie")] * len(pairs)
        for n, i in enumerate(asked):
            first, second = replies[2 * n], replies[2 * n + 1]
            cost = first.cost_usd + second.cost_usd
            if first.text is None or second.text is None:
                results[i] = Scored(None, cost, first.error or second.error)
                continue
            verdicts = parse_verdict(first.text), parse_verdict(second.text)
            if None in verdicts:
                reply = first.text if verdicts[0] is None else second.text
                results[i] = Scored(None, cost, f"unparseable verdict: {reply.strip()[-120:]!r}")
                continue
            result = outcome(*verdicts)  # type: ignore[arg-type]
            why = f"{PAIRWISE_RATIONALE} {verdicts[0]}; production first: {verdicts[1]} -> {result}"
            results[i] = Scored(OUTCOMES[result], cost, "", why)
        for _ in pairs:
            advance()
        return results

    def score(output: str, item: Item) -> Scored:
        return batch([(output, item)], None, lambda: None)[0]

    def worst_case(items: list[Item], output_limits: list[int], pool: ModelPool) -> tuple[int, float]:
        rendered = [render(production(item), "", item) for item in items]
        return judge.worst_case(rendered, output_limits, pool, asks=2)  # both orders

    return ScorerParts(score, batch=batch, kind="continuous", check=check, worst_case=worst_case)
