"""llm_judge: a model grades each output against a Jinja2 rubric, on a numeric scale or pass/fail.

The rubric (under `prompts/judges/`) sees the output, the reference(s) and every dataset column. The
judge should end its reply with `Score: N` (scale) or `Verdict: PASS|FAIL`; "the score is N", "rating: N"
and "N/5" are read too, the last one in the reply counting. A reply without one is a scorer error on that
record, never a 0, so a confused judge cannot drag a variant down.

Known biases and what this scorer does about them (Zheng et al., "Judging LLM-as-a-Judge with MT-Bench
and Chatbot Arena", NeurIPS 2023, section 3.3):
- position bias (preferring the first of two answers): grading is pointwise, one output at a time
  against a reference, so there is no order to prefer;
- verbosity bias (preferring longer answers): the default rubrics say length is no merit, and the
  analysis reports each scorer's rank correlation with output length so the bias is visible;
- self-preference (a model favouring its own outputs): preflight warns when the judge is also a
  candidate; use a judge from another family for decisions.
The analysis also reports the judge's rank correlation with every reference-based scorer on the same
outputs, which tells whether to trust it on this eval.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from harness.config import ConfigError, inside_project
from harness.datasets import Item
from harness.pool import ModelPool
from harness.prompts import Messages, PromptTemplate, load_template, make_environment, render_checked
from harness.scorers._model import ScorerModel
from harness.scorers._registry import Scored, ScorerParts, scorer
from harness.scorers.text import references

SCORE = re.compile(r"(?:score|rating)\s*(?:[:=]|is|of)\s*\**\s*(-?\d+(?:\.\d+)?)", re.IGNORECASE)
OUT_OF = re.compile(r"(-?\d+(?:\.\d+)?)\s*(?:/|out of)\s*(\d+(?:\.\d+)?)", re.IGNORECASE)
VERDICT = re.compile(r"verdict\s*[:=]\s*\**\s*(pass|fail)\b", re.IGNORECASE)
JUDGE_PARAMS = {"temperature": 0, "max_tokens": 256}


def parse_score(reply: str, scale: tuple[float, float] | None) -> float | None:
    """The verdict as 0..1 (scale mapped linearly; PASS 1, FAIL 0), or None when there is none in range."""
    if scale is None:
        found = VERDICT.findall(reply) or re.findall(r"^\s*(pass|fail)\s*\.?\s*$", reply, re.IGNORECASE)
        return None if not found else float(found[-1].lower() == "pass")
    low, high = scale
    found = SCORE.findall(reply) or [n for n, d in OUT_OF.findall(reply) if float(d) == high]
    found = found or re.findall(r"^\s*(-?\d+(?:\.\d+)?)\s*$", reply)
    if not found:
        return None
    value = float(found[-1])
    return (value - low) / (high - low) if low <= value <= high else None


def load_rubric(rubric: str, root: Path | None, default: str | None = None) -> PromptTemplate:
    """A judge's rubric: the project's file at `rubric` (inside the project), or the `default` text when
    `rubric` is empty; a missing or unsafe file is a ValueError the registry names as the option's."""
    try:
        if not rubric and default is not None:
            return PromptTemplate(
                "rubric", Path("rubric"), default, make_environment(root or Path.cwd()).from_string(default)
            )
        path = inside_project(rubric, root or Path.cwd(), "rubric", "rubric")
        return load_template("rubric", path, path, "rubric")
    except ConfigError as exc:
        raise ValueError(f"rubric: {exc.problem}") from None


@scorer("llm_judge")
def llm_judge(
    model: str | dict[str, Any],
    rubric: str = "prompts/judges/summary.j2",
    scale: list[float] | str = (1, 5),  # type: ignore[assignment]
    params: dict[str, Any] | None = None,
    concurrency: int | None = None,
    root: Path | None = None,
) -> ScorerParts:
    """A model grades each output with a rubric. Example: `llm_judge: {model: openai/gpt-4o-mini, scale: [1, 5]}`.

    `scale: pass_fail` makes it a binary scorer; `model` may be a mapping with `api_base` and `price`.
    """
    if scale == "pass_fail":
        bounds = None
    elif isinstance(scale, list | tuple) and len(scale) == 2 and float(scale[0]) < float(scale[1]):
        bounds = (float(scale[0]), float(scale[1]))
    else:
        raise ValueError(f"scale must be [low, high] or pass_fail, not {scale!r}")
    template = load_rubric(rubric, root)
    judge = ScorerModel.from_option(model, {**JUDGE_PARAMS, **(params or {})}, concurrency)

    def render(output: str, item: Item) -> Messages:
        refs = references(item) if item.reference or item.references else []
        variables = {**item.fields, "output": output, "reference": refs[0] if refs else "", "references": refs}
        return render_checked(template, variables, item.id)

    def check(items: list[Item]) -> None:
        for item in items:
            render("", item)

    def batch(pairs: list[tuple[str, Item]], pool: ModelPool | None, advance: Any) -> list[Scored]:
        replies = judge.run([render(output, item) for output, item in pairs], pool, advance)
        results = []
        for reply in replies:
            if reply.text is None:
                results.append(Scored(None, reply.cost_usd, reply.error))
                continue
            value = parse_score(reply.text, bounds)
            detail = "" if value is not None else f"unparseable verdict: {reply.text.strip()[-120:]!r}"
            results.append(Scored(value, reply.cost_usd, detail, reply.text.strip()[-2000:]))
        return results

    def score(output: str, item: Item) -> Scored:
        return batch([(output, item)], None, lambda: None)[0]

    def worst_case(items: list[Item], output_limits: list[int], pool: ModelPool) -> tuple[int, float]:
        return judge.worst_case([render("", item) for item in items], output_limits, pool)

    kind = "binary" if bounds is None else "continuous"
    return ScorerParts(score, batch=batch, kind=kind, check=check, worst_case=worst_case)
