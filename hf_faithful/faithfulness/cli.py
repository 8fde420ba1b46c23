"""``hf-faithful faithfulness``: measure ATE_T, ATE_V, reliability and sufficiency.

With no arguments it runs fully offline on the bundled reference VLM (a small Qwen3-VL
trained here to zoom, see ``hf_faithful.models.reference_vlm``): it generates traces for
the bundled ZoomVQA test questions, intervenes on them and lets the model itself answer
the sufficiency query. ``--model tiny`` is the random-weight pipeline check on the bundled
sample traces.
Every FaithfulnessConfig field and every BoxRules field is an option (``--field-name``),
with the config's default; ``--preset deepeyes`` sets DeepEyes' own prompts, turn length
and crop handling as defaults (options given win). Text options (``--system-prompt``,
``--user-template``, ``--tool-response``, ...) read a file when given as ``@path``.

With an endpoint the answer is asked for in a fresh user turn unless
``--continue-final-message`` says the server continues a prefilled ``<answer>`` (vLLM,
SGLang). Exit status: 0 with a report, 1 when no trace is valid (the report still lists
why), 2 when the endpoint cannot be reached or refuses a judge or rewriter request.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

from hf_faithful.assets import FAITHFULNESS_DIR
from hf_faithful.cli_utils import add_dataclass_arguments, dataclass_from_args, option_name
from hf_faithful.faithfulness.config import JUDGE_METRICS, FaithfulnessConfig
from hf_faithful.faithfulness.interventions import TEXT_CORRUPTIONS, VISUAL_INTERVENTIONS
from hf_faithful.faithfulness.presets import (
    PRESETS,
    REFERENCE_MODEL,
    model_fields,
    preset_fields,
)
from hf_faithful.faithfulness.report import data_provenance
from hf_faithful.mcot.backend_cache import CachedBackend
from hf_faithful.mcot.backends import AnswerBackend, BackendError, build_backend
from hf_faithful.mcot.images import DEFAULT_MAX_IMAGE_PIXELS
from hf_faithful.mcot.zoom import BoxRules

SAMPLE_DIR = FAITHFULNESS_DIR
SAMPLE_TRACES = SAMPLE_DIR / "sample_traces.jsonl"
SAMPLE_QUESTIONS = SAMPLE_DIR / "sample_questions.jsonl"
# The first 96 ZoomVQA test questions (export_questions), the reference VLM's default data.
ZOOMVQA_QUESTIONS = SAMPLE_DIR / "zoomvqa" / "questions.jsonl"
REFERENCE = REFERENCE_MODEL

# FaithfulnessConfig fields given as comma-separated lists: field -> (choices, old flag)
_CSV_FIELDS = {
    "visual_interventions": (VISUAL_INTERVENTIONS, "--visual"),
    "text_corruptions": (TEXT_CORRUPTIONS, None),
    "judge_metrics": (JUDGE_METRICS, None),
}
_MATCH_MODES = ("exact", "choice")
# set from other options (box_rules) or through their own parser (match: a mode or a callable)
_NOT_OPTIONS = ("box_rules", "match", *_CSV_FIELDS)
# text options that read a file when given as @path (prompts are long and multi-line)
_TEXT_OPTIONS = ("system_prompt", "user_template", "tool_response", "tool_error", "answer_prompt")


def _tracked(base: type[argparse.Action]) -> type[argparse.Action]:
    """``base`` that also notes its ``dest`` in ``namespace._explicit`` when the option is
    given, so a preset fills in only what the user left at its default."""

    class Tracked(base):  # type: ignore[misc, valid-type]
        def __call__(self, parser, namespace, values, option_string=None):
            explicit = getattr(namespace, "_explicit", None)
            if explicit is None:
                explicit = set()
                namespace._explicit = explicit
            explicit.add(self.dest)
            super().__call__(parser, namespace, values, option_string)

    Tracked.__name__ = f"Tracked{base.__name__}"
    return Tracked


def _track_explicit(parser: argparse.ArgumentParser) -> None:
    classes: dict[type, type] = {}
    for action in parser._actions:  # argparse has no public hook for "was it given?"
        if action.dest in (argparse.SUPPRESS, "help") or not action.option_strings:
            continue
        base = type(action)
        action.__class__ = classes.setdefault(base, _tracked(base))


def _csv(choices: tuple[str, ...]):
    def parse(value: str) -> tuple[str, ...]:
        items = tuple(v.strip() for v in value.split(",") if v.strip())
        bad = [v for v in items if v not in choices]
        if bad:
            raise argparse.ArgumentTypeError(f"{bad} not among {', '.join(choices)}")
        return items

    return parse


def _config_field(name: str) -> dataclasses.Field:
    return next(f for f in dataclasses.fields(FaithfulnessConfig) if f.name == name)


def _add_config_options(parser: argparse.ArgumentParser) -> None:
    """Options of FaithfulnessConfig (defaults and help read from its fields)."""
    group = parser.add_argument_group("measurement (FaithfulnessConfig)")
    for name, (choices, old_flag) in _CSV_FIELDS.items():
        field = _config_field(name)
        flags = [option_name(name)] + ([old_flag] if old_flag else [])
        group.add_argument(
            *flags,
            dest=name,
            type=_csv(choices),
            default=field.default,
            help=field.metadata["help"] + " (default: %(default)s)",
        )
    match = _config_field("match")
    group.add_argument(
        "--match",
        choices=_MATCH_MODES,
        default=match.default,
        help=match.metadata["help"].split(" or a callable")[0] + " (default: %(default)s)",
    )
    add_dataclass_arguments(group, FaithfulnessConfig, exclude=_NOT_OPTIONS)
    add_dataclass_arguments(parser.add_argument_group("zoom-in boxes (BoxRules)"), BoxRules)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "faithfulness",
        help="measure the faithfulness of visual thinking (ATE_T, ATE_V, judge metrics)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--model",
        default=REFERENCE,
        help="'reference' (the bundled reference VLM, default), 'tiny' (random weights, a pipeline check), a local model folder, or the served model name with --endpoint",
    )
    parser.add_argument(
        "--endpoint",
        help="OpenAI-compatible base URL of the model under test, e.g. http://localhost:8000/v1 (API key: $OPENAI_API_KEY)",
    )
    parser.add_argument(
        "--data",
        help="JSONL/JSON of traces, or of questions (image, question, reference) to generate traces from; default: bundled ZoomVQA test questions (reference model) or sample traces",
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
        "--choice-judge",
        help="multiple choice: model that says which option a free-form reply chooses when "
        "neither its letter nor an option's text can be read: 'judge' (the --judge), 'same' "
        "(the model under test), a local folder, 'tiny', or the served name with "
        "--choice-judge-endpoint; default: none (such replies count as wrong)",
    )
    parser.add_argument(
        "--choice-judge-endpoint", help="OpenAI-compatible base URL of the choice judge"
    )
    parser.add_argument(
        "--continue-final-message",
        action="store_true",
        help="the endpoint can continue a prefilled assistant turn (vLLM, SGLang): answers "
        "are then prefilled with <answer>; without it they are asked for in a fresh user turn",
    )
    parser.add_argument(
        "--cache",
        help="JSONL file storing every answer as it arrives: rerun the same command to resume an interrupted run",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=8,
        help="batch size of local models (default: %(default)s)",
    )
    parser.add_argument("--limit", type=int, help="use only the first N records")
    parser.add_argument(
        "--output-dir",
        default="faithfulness_report",
        help="where report.json and report.md go (default: %(default)s)",
    )
    parser.add_argument(
        "--max-image-pixels",
        type=int,
        default=DEFAULT_MAX_IMAGE_PIXELS,
        help="images (and crops) over this many pixels are a per-record error; 0 = no limit "
        "(default: PIL's limit, %(default)s)",
    )
    parser.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        help="a model's own prompt format and tool rules as defaults: 'deepeyes' = "
        "DeepEyes' system prompt with its <tools> block, its user suffix (also inside "
        "every tool response), 10240 tokens per turn, tiny boxes enlarged to 28 px and "
        "crops smart_resized (options given win)",
    )
    _add_config_options(parser)
    _track_explicit(parser)
    parser.set_defaults(func=run)


def _backend(
    name: str | None,
    endpoint: str | None,
    batch_size: int,
    same: AnswerBackend | None = None,
    continue_final_message: bool = False,
) -> AnswerBackend | None:
    """The backend of one role (model, judge, rewriter); 'same' reuses the model's."""
    if name is None and endpoint is None:
        return None
    if name == "same":
        if endpoint is not None:
            raise ValueError(f"with an endpoint ({endpoint}) name the served model, not 'same'")
        return same
    if endpoint is None and name not in ("tiny", REFERENCE) and not Path(name).is_dir():
        raise FileNotFoundError(f"model folder not found: {name} (or pass --endpoint URL)")
    return build_backend(
        name,
        endpoint,
        continue_final_message=continue_final_message,
        batch_size=batch_size,
        show_progress=True,
    )


def _cached(args: argparse.Namespace, roles: dict[str, tuple]) -> dict[str, AnswerBackend | None]:
    """One cache file, one namespace per role and model: answers never mix between them."""
    return {
        role: None
        if backend is None
        else CachedBackend(backend, args.cache, namespace=f"{role}:{endpoint or ''}:{name}")
        for role, (backend, name, endpoint) in roles.items()
    }


def _apply_preset(args: argparse.Namespace) -> None:
    """Preset values for every option the user did not give."""
    if not args.preset:
        return
    explicit = getattr(args, "_explicit", set())
    for name, value in preset_fields(args.preset).items():
        if name not in explicit:
            setattr(args, name, value)


def _apply_model_fields(args: argparse.Namespace) -> None:
    """What the model needs (:func:`~hf_faithful.faithfulness.presets.model_fields`: the
    reference VLM's 0..1000 boxes and sufficiency-only judging): its box frame always, other
    fields where the option was left at its default."""
    for name, value in model_fields(args.model, args.endpoint).items():
        if name == "coords" or getattr(args, name) == _config_field(name).default:
            setattr(args, name, value)


def _read_text_options(args: argparse.Namespace) -> None:
    """``@path`` values of the text options are read from the file."""
    for name in _TEXT_OPTIONS:
        value = getattr(args, name, None)
        if isinstance(value, str) and value.startswith("@"):
            path = Path(value[1:])
            if not path.is_file():
                raise FileNotFoundError(f"--{name.replace('_', '-')} file not found: {path}")
            setattr(args, name, path.read_text(encoding="utf-8").rstrip("\n"))


def run(args: argparse.Namespace) -> int:
    """The command; an endpoint that cannot be reached (or refuses a judge or rewriter
    request) ends it with a message and status 2 instead of a traceback."""
    try:
        return _run(args)
    except BackendError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    from hf_faithful.faithfulness.evaluator import FaithfulnessEvaluator
    from hf_faithful.mcot.parsing import is_trace_record
    from hf_faithful.mcot.records import (
        questions_from_records,
        read_records,
        save_traces,
        traces_from_records,
    )

    for role in ("judge", "rewriter"):  # checked before any model loads
        endpoint = getattr(args, f"{role}_endpoint")
        if getattr(args, role) == "same" and endpoint is not None:
            raise ValueError(f"--{role}-endpoint {endpoint}: name the served model, not 'same'")
    if args.max_image_pixels is not None and args.max_image_pixels < 0:
        raise ValueError(
            f"--max-image-pixels must be >= 0 (0 = no limit), got {args.max_image_pixels}"
        )
    max_pixels = args.max_image_pixels or None
    _apply_preset(args)
    _read_text_options(args)
    local = args.endpoint is None
    reference = local and args.model == REFERENCE
    demo = local and args.model in ("tiny", REFERENCE) and args.data is None
    if args.data:
        data = Path(args.data)
    else:
        data = ZOOMVQA_QUESTIONS if reference else SAMPLE_TRACES
    if not data.is_file():
        raise FileNotFoundError(f"--data file not found: {data}")
    _apply_model_fields(args)
    judge_given = args.judge is not None or args.judge_endpoint is not None
    if args.validate_judge and not (judge_given or demo):  # before any model loads
        raise ValueError("--validate-judge needs a judge (--judge)")
    rules = dataclass_from_args(BoxRules, args)
    config = dataclass_from_args(FaithfulnessConfig, args, box_rules=rules)
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
        cached = _cached(
            args,
            {
                "model": (model, args.model, args.endpoint),
                "judge": (judge, judge_name, args.judge_endpoint),
                "rewriter": (rewriter, args.rewriter, args.rewriter_endpoint),
            },
        )
        model, judge, rewriter = cached["model"], cached["judge"], cached["rewriter"]
    evaluator = FaithfulnessEvaluator(model, judge=judge, rewriter=rewriter, config=config)
    output_dir = Path(args.output_dir)
    records = read_records(data)  # read once: traces, or questions to generate them from
    records = records[: args.limit] if args.limit else records
    base_dir = Path(args.image_root) if args.image_root else data.parent
    first = next((r for r in records if r.error is None), None)
    generated = not (first is None or is_trace_record(first.value))
    choices = None  # a ChoiceMatcher when question records carry options
    if not generated:
        traces = traces_from_records(
            records,
            base_dir=base_dir,
            rules=rules,
            max_tool_calls=config.max_tool_calls,
            max_image_pixels=max_pixels,
        )
    else:
        questions = questions_from_records(records, base_dir, max_image_pixels=max_pixels)
        questions, choices = _choices(args, config, records, questions, model, judge)
        traces = evaluator.generate_traces(questions)
        output_dir.mkdir(parents=True, exist_ok=True)
        save_traces(traces, output_dir / "traces.jsonl")
        print(f"generated traces: {output_dir / 'traces.jsonl'}")
    for trace in traces:
        if not trace.valid:
            refused = trace.refused_calls
            print(
                f"invalid trace {trace.source or trace.id}: "
                + "; ".join(trace.errors)
                + (f" (refused: {'; '.join(refused)})" if refused else "")
            )
    provenance = {
        "model": _role(args.model, args.endpoint),
        "judge": _role(judge_name, args.judge_endpoint) if judge is not None else None,
        "rewriter": _role(args.rewriter, args.rewriter_endpoint) if rewriter is not None else None,
        "data": data_provenance(
            data,
            limit=args.limit,
            image_root=str(base_dir),
            generated_traces=str(output_dir / "traces.jsonl") if generated else None,
        ),
    }
    report = evaluator.evaluate(traces, provenance=provenance)
    if generated and choices is not None:
        report.provenance["multiple_choice"] = _choice_summary(config, choices, report)
    paths = report.save(output_dir)
    print(report.to_markdown())
    if demo and args.model == "tiny":
        print(
            "(pipeline check: tiny model with random weights on the bundled sample; pass --model/--endpoint and --data for real numbers)"
        )
    elif demo:
        print(
            "(default run: the bundled reference VLM on the bundled ZoomVQA test questions; pass --model/--endpoint and --data for your model)"
        )
    print(f"report: {paths['report.json']} and {paths['report.md']}")
    for warning in report.warnings:  # again, last: they change how every figure reads
        print(f"WARNING: {warning}", file=sys.stderr)
    if report.n_valid == 0:
        print(
            f"error: none of the {report.n_traces} traces is valid (see 'invalid trace' "
            "above): nothing was measured",
            file=sys.stderr,
        )
        return 1
    return 0


def _choices(
    args: argparse.Namespace,
    config: FaithfulnessConfig,
    records: list,
    questions: list[dict[str, Any]],
    model: AnswerBackend | None,
    judge: AnswerBackend | None,
) -> tuple[list[dict[str, Any]], Any]:
    """Multiple-choice questions (records with ``options``): options shown shuffled, and
    ``config.match`` set to a ChoiceMatcher (the configured mode stays its fallback)."""
    from hf_faithful.faithfulness.benchmark import ChoiceMatcher, choice_questions

    raw = {r.source: r.value for r in records if r.error is None and isinstance(r.value, dict)}
    questions, items = choice_questions(
        questions, raw, seed=config.seed, shuffle=config.shuffle_options
    )
    if not items:
        if args.choice_judge or args.choice_judge_endpoint:
            raise ValueError("--choice-judge: no question record has 'options'")
        return questions, None
    name, endpoint = args.choice_judge, args.choice_judge_endpoint
    if name == "judge":
        if judge is None:
            raise ValueError("--choice-judge judge needs a judge (--judge)")
        chooser = judge
    else:
        chooser = _backend(name, endpoint, args.batch_size, same=model)
        if args.cache and chooser is not None and name != "same":
            chooser = CachedBackend(
                chooser, args.cache, namespace=f"choice_judge:{endpoint or ''}:{name}"
            )
    config.match = ChoiceMatcher(items, judge=chooser, fallback=config.match)
    return questions, config.match


def _choice_summary(config: FaithfulnessConfig, matcher: Any, report: Any) -> dict[str, Any]:
    """What the multiple-choice scoring did: shuffling, the judge's decisions, and the
    accuracy per shown position of the right option (position bias)."""
    from hf_faithful.faithfulness.benchmark import position_accuracy

    summary = {
        "n_questions": len(matcher.items),
        "shuffled": config.shuffle_options,
        "n_judged": matcher.n_judged if matcher.judge is not None else None,
        "n_judge_undecided": matcher.n_undecided if matcher.judge is not None else None,
        "accuracy_by_position": position_accuracy(report.samples),
    }
    if report.control_accuracy is not None:
        summary["control_accuracy_by_position"] = position_accuracy(report.samples, "control")
    return summary


def _role(name: str | None, endpoint: str | None) -> dict[str, str | None]:
    """A role's model as the user named it (the evaluator adds what the backend knows)."""
    return {"name": name, "endpoint": endpoint}
