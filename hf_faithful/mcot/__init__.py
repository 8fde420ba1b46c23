"""What a multimodal chain of thought is: traces, their parsers, the zoom-in tool, answers."""

from hf_faithful.mcot.answers import answers_match, extract_answer, get_matcher, normalize_answer
from hf_faithful.mcot.trace import (
    TOOL_NAME,
    Step,
    Trace,
    crops_only_messages,
    load_traces,
    parse_deepeyes,
    parse_messages,
    save_traces,
    trace_from_record,
)
from hf_faithful.mcot.zoom import Box, BoxRules, InvalidBoxError, normalize_box, zoom_in

__all__ = [
    "TOOL_NAME",
    "Box",
    "BoxRules",
    "InvalidBoxError",
    "Step",
    "Trace",
    "answers_match",
    "crops_only_messages",
    "extract_answer",
    "get_matcher",
    "load_traces",
    "normalize_answer",
    "normalize_box",
    "parse_deepeyes",
    "parse_messages",
    "save_traces",
    "trace_from_record",
    "zoom_in",
]
