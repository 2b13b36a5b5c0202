"""Build evals/replay/production.jsonl, the replay demo's production log, from SciTLDR (evals/scitldr).

What it is: 500 SciTLDR test papers as one week of an app's calls in OpenAI format (`request`, `response`,
`timestamp`, `metadata`), two features tagged `metadata.feature`:
- `tldr` (every paper): "summarise this abstract in one sentence"; the logged answer is the paper's
  first author-written TLDR from SciTLDR;
- `title` (every third paper): "write this paper's title"; the logged answer is the paper's real title.
So the "production answers" are human-written, standing in for a model's, and the logged model is
gpt-4o-mini: the usage is counted with its tokenizer (OpenAI's format logs no spend: harness
prices the usage). Times are spread over 7 days with a fixed seed. Run from the project root:

    .venv/bin/python scripts/build_replay_log.py
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from harness.offline import apply_offline_defaults

ROOT = Path(__file__).resolve().parent.parent
START = 1_793_491_200  # 2026-11-01T00:00:00Z
SYSTEM = {
    "tldr": "You summarise scientific abstracts in one plain sentence.",
    "title": "You write the title of a scientific paper from its abstract.",
}


def main() -> None:
    apply_offline_defaults()
    import litellm

    rng = random.Random(7)
    papers = [json.loads(line) for line in (ROOT / "evals/scitldr/test.jsonl").read_text().splitlines() if line]
    lines = []
    for index, paper in enumerate(papers):
        for feature in ("tldr", "title") if index % 3 == 0 else ("tldr",):
            answer = paper["reference"] if feature == "tldr" else paper["title"]
            ask = "Summarise this abstract" if feature == "tldr" else "Write the title of this paper"
            messages = [
                {"role": "system", "content": SYSTEM[feature]},
                {"role": "user", "content": f"{ask}:\n\n{paper['document']}"},
            ]
            prompt_tokens = litellm.token_counter(model="gpt-4o-mini", messages=messages)
            completion_tokens = litellm.token_counter(model="gpt-4o-mini", text=answer, count_response_tokens=True)
            call = f"chatcmpl-{feature}-{index:04d}"
            lines.append(
                {
                    "request": {"model": "gpt-4o-mini", "messages": messages, "temperature": 0},
                    "response": {
                        "id": call,
                        "model": "gpt-4o-mini",
                        "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}}],
                        "usage": {
                            "prompt_tokens": prompt_tokens,
                            "completion_tokens": completion_tokens,
                            "total_tokens": prompt_tokens + completion_tokens,
                        },
                    },
                    "timestamp": START + rng.uniform(0, 7 * 86400),
                    "metadata": {"feature": feature},
                }
            )
    lines.sort(key=lambda line: line["timestamp"])
    out = ROOT / "evals/replay/production.jsonl"
    out.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    print(f"wrote {len(lines)} calls to {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
