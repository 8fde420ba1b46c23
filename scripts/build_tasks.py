"""Build the bundled multiple-choice task ``hff_cloze`` from WikiText-2 test.

Each item: the previous sentence plus the first half of a sentence as context; the
choices are its true second half and the second halves of 3 other sentences of
similar length from other articles. Deterministic (seed 0).

    python scripts/build_tasks.py
"""

from __future__ import annotations

import json
import random

from hf_faithful.assets import TASKS_DIR
from hf_faithful.corpora import wikitext2_test

OUT = TASKS_DIR / "hff_cloze.jsonl"
N_ITEMS = 500
N_CHOICES = 4


def sentences_by_article(text: str) -> list[list[str]]:
    import importlib.util

    spec = importlib.util.spec_from_file_location("hff_utils", OUT.parent / "hff_utils.py")
    utils = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(utils)
    articles = []
    for page in utils.wikitext2_pages(text):
        sents = []
        for para in page.splitlines():
            if not para.strip() or para.strip().startswith("="):
                continue
            sents.extend(s.strip() + " ." for s in para.split(" . ") if s.strip())
        articles.append(sents)
    return articles


def main() -> None:
    rng = random.Random(0)
    articles = sentences_by_article(wikitext2_test())
    candidates = []  # (article index, previous sentence, sentence)
    for a, sents in enumerate(articles):
        for i in range(1, len(sents)):
            n = len(sents[i].split())
            if 12 <= n <= 40 and "<unk>" not in sents[i]:
                candidates.append((a, sents[i - 1], sents[i]))
    rng.shuffle(candidates)

    def split(sentence: str) -> tuple[str, str]:
        words = sentence.split()
        cut = len(words) // 2
        return " ".join(words[:cut]), " " + " ".join(words[cut:])

    rows = []
    pool = candidates[N_ITEMS:]
    for a, prev, sent in candidates[:N_ITEMS]:
        head, tail = split(sent)
        n_tail = len(tail.split())
        others = [c for c in rng.sample(pool, 200) if c[0] != a]
        others.sort(key=lambda c: abs(len(split(c[2])[1].split()) - n_tail))
        distractors = [split(c[2])[1] for c in others[: N_CHOICES - 1]]
        choices = [tail, *distractors]
        rng.shuffle(choices)
        rows.append({"context": f"{prev} {head}", "choices": choices, "label": choices.index(tail)})
    OUT.write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(f"wrote {len(rows)} items to {OUT}")


if __name__ == "__main__":
    main()
