"""``hf-faithful faithfulness``: measure ATE_T, ATE_V, reliability and sufficiency.

With no arguments it runs on the bundled sample traces with the tiny built-in model
(random weights: the numbers mean nothing, the pipeline is the point), fully offline.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from hf_faithful.faithfulness.backends import (
    AnswerBackend,
    CachedBackend,
    LocalVLMBackend,
    OpenAIChatBackend,
)
from hf_faithful.faithfulness.interventions import TEXT_CORRUPTIONS, VISUAL_INTERVENTIONS

SAMPLE_DIR = Path(__file__).resolve().parent.parent / "assets" / "faithfulness"
SAMPLE_TRACES = SAMPLE_DIR / "sample_traces.jsonl"
SAMPLE_QUESTIONS = SAMPLE_DIR / "sample_questions.jsonl"
_TRACE_KEYS = ("steps", "messages", "response", "completion", "output", "trace")


def _csv(choices: tuple[str, ...]):
    def parse(value: str) -> tuple[str, ...]:
        items = tuple(v.strip() for v in value.split(",") if v.strip())
        bad = [v for v in items if v not in choices]
        if bad:
            raise argparse.ArgumentTypeError(f"{bad} not among {', '.join(choices)}")
        return items

    return parse


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "faithfulness",
        help="measure the faithfulness of visual thinking (ATE_T, ATE_V, judge metrics)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--model",
        default="tiny",
        help="local model folder, 'tiny' (built-in), or the served model name with --endpoint",
    )
    parser.add_argument(
        "--endpoint",
        help="OpenAI-compatible base URL of the model under test, e.g. http://localhost:8000/v1 (API key: $OPENAI_API_KEY)",
    )
    parser.add_argument(
        "--data",
        help="JSONL/JSON of traces, or of questions (image, question, reference) to generate traces from; default: bundled sample",
    )
    parser.add_argument(
        "--image-root", help="folder image paths are relative to (default: the data file's folder)"
    )
    parser.add_argument(
        "--judge",
        help="judge model: local folder, 'tiny', 'same' (the model under test), or the served name with --judge-endpoint; default: none ('same' in the no-argument demo)",
    )
    parser.add_argument("--judge-endpoint", help="OpenAI-compatible base URL of the judge")
    parser.add_argument(
        "--rewriter",
        help="model that corrupts the reasoning for do(T): local folder or the served name with --rewriter-endpoint; default: offline corruptions",
    )
    parser.add_argument("--rewriter-endpoint", help="OpenAI-compatible base URL of the rewriter")
    parser.add_argument(
        "--visual",
        type=_csv(VISUAL_INTERVENTIONS),
        default=("noise_gaussian", "blank", "other_region", "shuffle"),
        help="visual interventions, comma-separated; the first is reported as ATE_V (default: %(default)s)",
    )
    parser.add_argument(
        "--text-corruptions",
        type=_csv(TEXT_CORRUPTIONS),
        default=TEXT_CORRUPTIONS,
        help="offline corruptions for do(T) (default: all)",
    )
    parser.add_argument(
        "--continue-final-message",
        action="store_true",
        help="the endpoint can continue a prefilled assistant turn (vLLM, SGLang)",
    )
    parser.add_argument(
        "--no-prefill-answer",
        action="store_true",
        help="do not open <answer> after the prefix (for APIs that always start a new reply)",
    )
    parser.add_argument(
        "--cache",
        help="JSONL file storing every answer as it arrives: rerun the same command to resume an interrupted run",
    )
    parser.add_argument(
        "--match",
        choices=("exact", "choice"),
        default="exact",
        help="answer matching (default: %(default)s)",
    )
    parser.add_argument(
        "--baseline",
        choices=("control", "original"),
        default="control",
        help="baseline of the ATEs (default: %(default)s)",
    )
    parser.add_argument(
        "--coords",
        choices=("absolute", "normalized_1000"),
        default="absolute",
        help="box coordinates: Qwen2.5-VL absolute pixels or Qwen3-VL 0..1000 (default: %(default)s)",
    )
    parser.add_argument(
        "--min-side",
        type=int,
        default=30,
        help="boxes need sides longer than this (default: %(default)s, as DeepEyes)",
    )
    parser.add_argument(
        "--max-tool-calls",
        type=int,
        default=4,
        help="zoom-in calls allowed per trace (default: %(default)s)",
    )
    parser.add_argument(
        "--max-new-tokens",
        type=int,
        default=32,
        help="tokens of a regenerated answer (default: %(default)s)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=8,
        help="batch size of local models (default: %(default)s)",
    )
    parser.add_argument(
        "--n-resamples", type=int, default=10_000, help="bootstrap resamples (default: %(default)s)"
    )
    parser.add_argument(
        "--confidence", type=float, default=0.95, help="interval level (default: %(default)s)"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of every random choice (default: %(default)s)"
    )
    parser.add_argument("--limit", type=int, help="use only the first N records")
    parser.add_argument(
        "--output-dir",
        default="faithfulness_report",
        help="where report.json and report.md go (default: %(default)s)",
    )
    parser.set_defaults(func=run)


def load_local_backend(name: str, batch_size: int) -> LocalVLMBackend:
    """A backend over a local model folder (vision-language or text-only), or 'tiny'."""
    if name == "tiny":
        from hf_faithful.testing.tiny_vlm import build_tiny_vlm

        model, processor = build_tiny_vlm("qwen3_vl", seed=0)
        return LocalVLMBackend(model, processor, batch_size=batch_size, show_progress=True)
    if not Path(name).is_dir():
        raise FileNotFoundError(f"model folder not found: {name} (or pass --endpoint URL)")
    from transformers import (
        AutoConfig,
        AutoModelForCausalLM,
        AutoModelForImageTextToText,
        AutoProcessor,
        AutoTokenizer,
    )
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    config = AutoConfig.from_pretrained(name)
    if config.model_type not in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES:
        model = AutoModelForCausalLM.from_pretrained(name, dtype="auto")
        return LocalVLMBackend(
            model, AutoTokenizer.from_pretrained(name), batch_size=batch_size, show_progress=True
        )
    model = AutoModelForImageTextToText.from_pretrained(name, dtype="auto")
    processor = AutoProcessor.from_pretrained(name)
    if not hasattr(processor, "image_processor"):
        # Qwen-VL processors need a video processor (torchvision); fall back to the
        # image-only variants when AutoProcessor could only build the tokenizer.
        from hf_faithful.testing.tiny_vlm import TinyQwen2_5_VLProcessor, TinyQwen3VLProcessor

        image_only = {"qwen3_vl": TinyQwen3VLProcessor, "qwen2_5_vl": TinyQwen2_5_VLProcessor}
        if config.model_type not in image_only:
            raise ValueError(f"could not load an image processor for {name} ({config.model_type})")
        processor = image_only[config.model_type].from_pretrained(name)
    return LocalVLMBackend(model, processor, batch_size=batch_size, show_progress=True)


def _backend(
    name: str | None,
    endpoint: str | None,
    batch_size: int,
    same: AnswerBackend | None = None,
    continue_final_message: bool = False,
) -> AnswerBackend | None:
    if name is None and endpoint is None:
        return None
    if endpoint is not None:
        if not name or name in ("tiny", "same"):
            raise ValueError(f"with an endpoint ({endpoint}) name the served model, not {name!r}")
        return OpenAIChatBackend(
            endpoint, name, continue_final_message=continue_final_message, show_progress=True
        )
    if name == "same":
        return same
    return load_local_backend(name, batch_size)


def _is_trace_file(path: Path) -> bool:
    text = path.read_text(encoding="utf-8")
    try:
        first = (
            json.loads(text)[0]
            if path.suffix == ".json"
            else next(json.loads(line) for line in text.splitlines() if line.strip())
        )
    except (json.JSONDecodeError, StopIteration, IndexError, KeyError, TypeError):
        return True  # let the trace loader report what is wrong, line by line
    return not isinstance(first, dict) or any(k in first for k in _TRACE_KEYS)


def run(args: argparse.Namespace) -> int:
    from hf_faithful.faithfulness.evaluator import (
        FaithfulnessConfig,
        FaithfulnessEvaluator,
        load_questions,
    )
    from hf_faithful.mcot.trace import load_traces
    from hf_faithful.mcot.zoom import BoxRules

    demo = args.model == "tiny" and args.endpoint is None and args.data is None
    data = Path(args.data) if args.data else SAMPLE_TRACES
    if not data.is_file():
        raise FileNotFoundError(f"--data file not found: {data}")
    rules = BoxRules(coords=args.coords, min_side=args.min_side)
    config = FaithfulnessConfig(
        visual_interventions=args.visual,
        text_corruptions=args.text_corruptions,
        match=args.match,
        baseline=args.baseline,
        prefill_answer=not args.no_prefill_answer,
        max_new_tokens=args.max_new_tokens,
        max_tool_calls=args.max_tool_calls,
        box_rules=rules,
        n_resamples=args.n_resamples,
        confidence=args.confidence,
        seed=args.seed,
    )
    model = _backend(
        args.model,
        args.endpoint,
        args.batch_size,
        continue_final_message=args.continue_final_message,
    )
    judge_name = (
        args.judge if args.judge is not None or args.judge_endpoint else ("same" if demo else None)
    )
    judge = _backend(judge_name, args.judge_endpoint, args.batch_size, same=model)
    rewriter = _backend(args.rewriter, args.rewriter_endpoint, args.batch_size, same=model)
    if args.cache:
        # one file, one namespace per role and model: answers never mix between them
        roles = (
            ("model", model, args.model, args.endpoint),
            ("judge", judge, judge_name, args.judge_endpoint),
            ("rewriter", rewriter, args.rewriter, args.rewriter_endpoint),
        )
        wrapped = {
            role: None
            if backend is None
            else CachedBackend(backend, args.cache, namespace=f"{role}:{endpoint or ''}:{name}")
            for role, backend, name, endpoint in roles
        }
        model, judge, rewriter = wrapped["model"], wrapped["judge"], wrapped["rewriter"]
    evaluator = FaithfulnessEvaluator(model, judge=judge, rewriter=rewriter, config=config)
    output_dir = Path(args.output_dir)
    if _is_trace_file(data):
        traces = load_traces(
            data, image_root=args.image_root, rules=rules, max_tool_calls=args.max_tool_calls
        )
        traces = traces[: args.limit] if args.limit else traces
    else:
        from hf_faithful.mcot.trace import save_traces

        questions = load_questions(data, args.image_root)
        questions = questions[: args.limit] if args.limit else questions
        traces = evaluator.generate_traces(questions)
        output_dir.mkdir(parents=True, exist_ok=True)
        save_traces(traces, output_dir / "traces.jsonl")
        print(f"generated traces: {output_dir / 'traces.jsonl'}")
    for trace in traces:
        if not trace.valid:
            print(f"invalid trace {trace.source or trace.id}: " + "; ".join(trace.errors))
    report = evaluator.evaluate(traces)
    paths = report.save(output_dir)
    print(report.to_markdown())
    if demo:
        print(
            "(demo: tiny model with random weights on the bundled sample; pass --model/--endpoint and --data for real numbers)"
        )
    print(f"report: {paths['report.json']} and {paths['report.md']}")
    return 0
