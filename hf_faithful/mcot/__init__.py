"""What a multimodal chain of thought is: the ground floor that ``faithfulness/``
(measuring) and ``sccm/`` (training) both stand on.

- ``trace``: the Trace / Step data model; ``zoom``: the zoom-in tool (Box, BoxRules).
- ``parsing``: DeepEyes text, TRL messages, JSON records -> Trace; ``records``: JSON /
  JSONL files of traces and questions.
- ``messages``: the chat format (tool calls and responses, the sufficiency query, the
  answer in a reply); ``answers``: answer extraction and matching; ``images``: load, RGB,
  data URIs, size limits.
- ``backends``: "answer this multimodal prompt" with a local model or an
  OpenAI-compatible endpoint (``backend_cache``: resumable answer cache). Imported from
  its module only, so ``import hf_faithful.mcot`` stays light.
"""

from hf_faithful.mcot.answers import answers_match, extract_answer, get_matcher, normalize_answer
from hf_faithful.mcot.messages import (
    TOOL_NAME,
    answer_from_reply,
    parse_tool_call,
    sufficiency_query,
)
from hf_faithful.mcot.parsing import parse_deepeyes, parse_messages, trace_from_record
from hf_faithful.mcot.records import load_questions, load_traces, save_traces
from hf_faithful.mcot.trace import Step, Trace
from hf_faithful.mcot.zoom import Box, BoxRules, InvalidBoxError, normalize_box, zoom_in

__all__ = [
    "TOOL_NAME",
    "Box",
    "BoxRules",
    "InvalidBoxError",
    "Step",
    "Trace",
    "answer_from_reply",
    "answers_match",
    "extract_answer",
    "get_matcher",
    "load_questions",
    "load_traces",
    "normalize_answer",
    "normalize_box",
    "parse_deepeyes",
    "parse_messages",
    "parse_tool_call",
    "save_traces",
    "sufficiency_query",
    "trace_from_record",
    "zoom_in",
]
