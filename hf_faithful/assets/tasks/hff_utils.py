"""Dataset loaders for hf-faithful's bundled offline lm-eval tasks.

Self-contained (standard library + datasets) so that lm-eval's own CLI can use the
tasks with ``--include_path`` whether or not hf_faithful is importable.
"""

import json
import re
from pathlib import Path

import datasets

HERE = Path(__file__).resolve().parent
WIKITEXT2_TEST = HERE.parent / "data" / "wikitext-2" / "test.txt"
_TITLE = re.compile(r"^ = [^=].* = $")


def wikitext2_pages(text: str) -> list[str]:
    """Split raw WikiText-2 into articles at their top-level " = Title = " lines."""
    pages: list[list[str]] = []
    for line in text.splitlines(keepends=True):
        if _TITLE.match(line.rstrip("\n")) or not pages:
            pages.append([])
        pages[-1].append(line)
    return ["".join(p) for p in pages if "".join(p).strip()]


def wikitext2_test(**kwargs) -> dict:
    text = WIKITEXT2_TEST.read_text(encoding="utf-8")
    return {"test": datasets.Dataset.from_list([{"page": p} for p in wikitext2_pages(text)])}


def cloze(**kwargs) -> dict:
    rows = [json.loads(line) for line in (HERE / "hff_cloze.jsonl").read_text().splitlines()]
    return {"test": datasets.Dataset.from_list(rows)}


def wikitext_process_results(doc, results):
    """Same accounting as lm-eval's wikitext task: words and bytes of the raw page."""
    (loglikelihood,) = results
    words = len(re.split(r"\s+", doc["page"]))
    n_bytes = len(doc["page"].encode("utf-8"))
    return {
        "word_perplexity": (loglikelihood, words),
        "byte_perplexity": (loglikelihood, n_bytes),
        "bits_per_byte": (loglikelihood, n_bytes),
    }
