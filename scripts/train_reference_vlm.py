"""Train the reference thinking-with-images VLM (a small Qwen3-VL) from scratch on ZoomVQA.

SFT on generated DeepEyes-format traces: on zoom-needed questions the target model thinks,
calls ``image_zoom_in_tool`` on the target's grid cell (0..1000 frame, as Qwen3-VL does),
reads the dot's colour in the returned crop and answers; on global questions it answers from the
whole image. The traces are rendered every way the project later shows them to the model:

- the evaluator's turn-by-turn generation (crops in a user turn wrapped in ``<tool_response>``),
  with the shipped ``zoom_system`` prompt;
- TRL's multi-turn tool rollouts (tool role, the ``<tools>`` block of ``ZoomInEnvironment``
  in the system turn, DeepEyes' system prompt), as ``SCCMRewardTrainer`` runs them;
- ``Trace.to_messages`` re-rendering (the prefix an answer is regenerated from);
- the sufficiency query (only the crops, no full image, no reasoning), as the judge and the
  SCCM reward ask it;
- a direct mode (a system prompt that forbids tools), which measures what the whole view
  alone allows: the "without tools" accuracy;
- descriptions (each square's colour and grid cell), dense supervision for seeing at all.

How the recipe was found (2026-11-29/30, 2 CPU cores; each figure on ZoomVQA questions):

- Digits on the squares (the first design): a vision tower trained from step 0 collapsed
  to image-independent vectors; frozen at its random init it let the model read colours
  (global questions 0.77) but never digit shapes, even from legible crops (chance).
- Random transformer blocks average the vision tokens together: the model could tell
  which colours are present but not where, nor what a crop shows. So the blocks' residual
  branches start at zero (the tower starts as patch + position -> merger) and the position
  table at the patch embeddings' scale (std 1, not 0.02). A dot's colour replaced the
  digit (dot 48 px: a whole vision token in a one-cell crop, 6% of one in the whole view).
- In the full mixture from step 0 neither perception skill was learned in 1800 steps
  (crop -> dot colour 0.32, chance 0.25). A first stage of short perception
  conversations (``--perception-steps``: the crop alone -> the dot's colour, the whole
  image -> the target's cell and box, descriptions) is about 2x faster per step and
  learns both: crop -> dot colour 1.00 after 1200 steps, box of the asked cell 0.94.
- The model learned where every square is (descriptions list every cell right) but not
  which colour each square has (the colours it names are at chance, though a linear probe
  reads them from the vision tokens at 0.99). So zoom-needed questions name the target by
  its cell ("the square in row 2, column 3"); global ones ask about colours and counts.

The bundled model: ``--perception-steps 1200 --steps 900`` on the colour-named questions,
then ``--init-from`` that model with ``--perception-steps 200 --steps 600`` on the
cell-named ones (the commands are in its card). Its figures are in its card and
``training_meta.json``.

One command of this script from scratch reproduces it (checked 2026-11-30): ``--perception-
steps 600 --steps 600``, 16.9 min, zoom-needed 0.988 with the tool and 0.337 without (chance
0.25), global 0.766, on the same 300 test questions.

Loss is on the model's own turns only. Everything is seeded; the result, its card and the
measured figures go to ``hf_faithful/assets/reference-vlm`` (or ``--output``)::

    python scripts/train_reference_vlm.py                 # 600 + 600 steps, about 17 min
    python scripts/train_reference_vlm.py --steps 3 --output /tmp/vlm --eval-samples 8
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration  # noqa: E402

from hf_faithful.assets import PROMPTS_DIR, REFERENCE_VLM_DIR  # noqa: E402
from hf_faithful.data.zoom_vqa import (  # noqa: E402
    CANVAS,
    CHANCE,
    cell_box_1000,
    sample_stream,
)
from hf_faithful.mcot.messages import TOOL_NAME, sufficiency_query, tool_response_content  # noqa: E402
from hf_faithful.mcot.messages import tool_call_text as compact_tool_call  # noqa: E402
from hf_faithful.mcot.zoom import Box, BoxRules, normalize_box, zoom_in  # noqa: E402
from hf_faithful.models.reference_vlm import (  # noqa: E402
    DIRECT_SYSTEM_PROMPT,
    build_reference_vlm_processor,
)
from hf_faithful.models.vlm_processing import (  # noqa: E402
    TAG_TOKENS,
    byte_level_qwen_tokenizer,
    vision_token_ids,
)

RULES = BoxRules(coords="normalized_1000")


def _system_prompts() -> dict[str, str]:
    from hf_faithful.mcot.messages import DEEPEYES_SYSTEM_PROMPT

    return {
        "zoom_system": (PROMPTS_DIR / "zoom_system.txt").read_text(encoding="utf-8").strip(),
        "deepeyes": DEEPEYES_SYSTEM_PROMPT,
    }


def _sufficiency_prompts() -> list[str]:
    from hf_faithful.sccm.config import DEFAULT_SUFFICIENCY_PROMPT

    judge = (PROMPTS_DIR / "judge_sufficiency.txt").read_text(encoding="utf-8")
    return [DEFAULT_SUFFICIENCY_PROMPT, judge]


def _zoom_tools():
    from hf_faithful.sccm.environment import ZoomInEnvironment

    return [ZoomInEnvironment(rules=RULES).image_zoom_in_tool]


def _text(t: str) -> list[dict]:
    return [{"type": "text", "text": t}]


def tool_call_text(box: list[int]) -> str:
    """The tool call exactly as the Qwen3-VL template renders TRL's ``tool_calls`` (what the
    model writes; ``Trace.to_messages`` re-renders it compactly, without the newlines)."""
    call = {"name": TOOL_NAME, "arguments": {"bbox_2d": box}}
    return f"<tool_call>\n{json.dumps(call)}\n</tool_call>"


def conversation(
    sample, rng: random.Random, prompts: dict, suff_prompts: list[str], crop_query: float = 0.1
):
    """One training conversation for ``sample``: ``(messages, tools, loss_turns)``.

    ``loss_turns[i]`` says whether the i-th assistant turn is trained on.
    """
    question, answer = sample.question, sample.answer
    u = rng.random()
    if u < 0.2:  # a description: dense supervision that teaches the vision tower to see
        messages = [
            {
                "role": "user",
                "content": [{"type": "image", "image": sample.image}, *_text(DESCRIBE)],
            },
            {"role": "assistant", "content": _text(describe(sample))},
        ]
        return messages, None, [True]
    if u < 0.32:  # direct mode: what the whole view alone allows
        messages = [
            {"role": "system", "content": _text(DIRECT_SYSTEM_PROMPT)},
            {
                "role": "user",
                "content": [{"type": "image", "image": sample.image}, *_text(question)],
            },
            {"role": "assistant", "content": _text(f"<answer>{answer}</answer>")},
        ]
        return messages, None, [True]
    zoom = sample.question_type == "zoom_needed"
    row, col = sample.target_cell if zoom else (0, 0)
    if zoom:
        span = 2 if rng.random() < 0.15 else 1
        r0 = min(row, 4 - span) if span == 2 else row
        c0 = min(col, 4 - span) if span == 2 else col
        box = cell_box_1000(r0, c0, span)
        crop = zoom_in(sample.image, box, RULES)
        if rng.random() < crop_query:  # the sufficiency query: crops and question only
            messages = sufficiency_query([crop], question, rng.choice(suff_prompts))
            messages.append({"role": "assistant", "content": _text(f"<answer>{answer}</answer>")})
            return messages, None, [True]
    u = rng.random()
    style = "zoom_system" if u < 0.4 else "trl" if u < 0.75 else "deepeyes" if u < 0.85 else "none"
    tools = _zoom_tools() if style == "trl" else None
    messages = []
    if style != "none":
        key = "zoom_system" if style == "zoom_system" else "deepeyes"
        messages.append({"role": "system", "content": _text(prompts[key])})
    messages.append(
        {"role": "user", "content": [{"type": "image", "image": sample.image}, *_text(question)]}
    )
    if not zoom:
        if sample.template == "count":
            think = f"I count {sample.n_objects} squares."
        elif answer == "yes":
            think = f"I see a {sample.target_color} square."
        else:
            think = f"There is no {sample.target_color} square."
        messages.append(
            {
                "role": "assistant",
                "content": _text(f"<think>{think}</think>\n<answer>{answer}</answer>"),
            }
        )
        return messages, tools, [True]
    think1 = (
        f"The square in row {row + 1}, column {col + 1} is the one asked about. "
        "The dot is too small to see, so I zoom in."
    )
    if style == "trl":
        call = {"type": "function", "function": {"name": TOOL_NAME, "arguments": {"bbox_2d": box}}}
        messages.append(
            {
                "role": "assistant",
                "content": _text(f"<think>{think1}</think>"),
                "tool_calls": [call],
            }
        )
        messages.append(
            {"role": "tool", "name": TOOL_NAME, "content": [{"type": "image", "image": crop}]}
        )
        first_loss = True
    else:
        rerendered = rng.random() < 0.25  # Trace.to_messages' compact form: context only
        call_text = compact_tool_call(box) if rerendered else tool_call_text(box)
        messages.append(
            {"role": "assistant", "content": _text(f"<think>{think1}</think>\n{call_text}")}
        )
        messages.append({"role": "user", "content": tool_response_content(crop)})
        first_loss = not rerendered
    if rng.random() < 0.5:
        think2 = f"The zoomed view shows a {answer} dot."
    else:
        think2 = "Now the dot is clear."
    messages.append(
        {
            "role": "assistant",
            "content": _text(f"<think>{think2}</think>\n<answer>{answer}</answer>"),
        }
    )
    return messages, tools, [first_loss, True]


def perception_conversation(sample, rng: random.Random, prompts: dict, suff_prompts: list[str]):
    """Stage 1: the two perception skills alone, in short conversations (about 4x faster
    steps than full traces): the dot's colour from a crop (the sufficiency query), and
    the target's cell and box from the whole image (a trace's first turn without system
    prompt, or under the evaluator's short ``zoom_system`` prompt). Measured: in the full
    mixture from step 0 neither is learned in 1800 steps."""
    if sample.question_type != "zoom_needed":
        messages = [
            {
                "role": "user",
                "content": [{"type": "image", "image": sample.image}, *_text(DESCRIBE)],
            },
            {"role": "assistant", "content": _text(describe(sample))},
        ]
        return messages, None, [True]
    row, col = sample.target_cell
    box = cell_box_1000(row, col)
    if rng.random() < 0.5:
        crop = zoom_in(sample.image, box, RULES)
        messages = sufficiency_query([crop], sample.question, rng.choice(suff_prompts))
        messages.append(
            {"role": "assistant", "content": _text(f"<answer>{sample.answer}</answer>")}
        )
        return messages, None, [True]
    think = f"The square in row {row + 1}, column {col + 1} is the one asked about."
    messages = []
    if rng.random() < 0.5:
        messages.append({"role": "system", "content": _text(prompts["zoom_system"])})
    messages += [
        {
            "role": "user",
            "content": [{"type": "image", "image": sample.image}, *_text(sample.question)],
        },
        {"role": "assistant", "content": _text(f"<think>{think}</think>\n{tool_call_text(box)}")},
    ]
    return messages, None, [True]


DESCRIBE = "Where are the squares, and what colour is each?"


def describe(sample) -> str:
    """Every square's colour and grid cell, in reading order (dots stay unsaid: they are
    what the whole view cannot show)."""
    objects = sorted(sample.objects, key=lambda o: o["cell"])
    return " ".join(
        f"The {o['color']} square is in row {o['cell'][0] + 1}, column {o['cell'][1] + 1}."
        for o in objects
    )


def _images(messages) -> list:
    return [
        part["image"]
        for m in messages
        if isinstance(m["content"], list)
        for part in m["content"]
        if part.get("type") == "image"
    ]


def render(processor, messages, tools) -> str:
    return processor.apply_chat_template(messages, tools=tools, tokenize=False)


def assistant_mask(ids: list[int], tok, loss_turns: list[bool]) -> list[int]:
    """1 on the tokens of trained assistant turns (their text and closing <|im_end|>)."""
    start, end = tok.convert_tokens_to_ids("<|im_start|>"), tok.convert_tokens_to_ids("<|im_end|>")
    head = tok("assistant\n", add_special_tokens=False)["input_ids"]
    mask, turn, i = [0] * len(ids), 0, 0
    while i < len(ids):
        if ids[i] == start and ids[i + 1 : i + 1 + len(head)] == head:
            j = i + 1 + len(head)
            train = turn < len(loss_turns) and loss_turns[turn]
            turn += 1
            while j < len(ids) and ids[j] != end:
                mask[j] = int(train)
                j += 1
            if j < len(ids):
                mask[j] = int(train)
            i = j
        i += 1
    return mask


def train_tokenizer(texts: list[str], vocab_size: int):
    """A BPE with Qwen's pre-tokenizer trained on ``texts``: about 3x shorter sequences than
    raw bytes, which is most of the cost of training on CPU."""
    tokenizer = byte_level_qwen_tokenizer().train_new_from_iterator(texts, vocab_size=vocab_size)
    tokenizer.add_tokens([t for t in TAG_TOKENS if t not in tokenizer.get_vocab()])
    tokenizer.padding_side = "left"
    return tokenizer


def training_corpus(n: int, seed: int) -> list[str]:
    """Rendered conversations to train the BPE tokenizer on."""
    processor = build_reference_vlm_processor(byte_level_qwen_tokenizer())
    rng = random.Random(seed + 17)
    prompts, suff = _system_prompts(), _sufficiency_prompts()
    texts = []
    for _, sample in zip(range(n), sample_stream("train", seed)):
        messages, tools, _ = conversation(sample, rng, prompts, suff)
        texts.append(render(processor, messages, tools))
    return texts


def model_config(tokenizer, size: str = "reference") -> Qwen3VLConfig:
    dims = {
        "reference": dict(hidden=128, inter=384, layers=4, heads=4, kv=2, vdepth=4, vhidden=96),
        "smoke": dict(hidden=32, inter=64, layers=1, heads=2, kv=1, vdepth=1, vhidden=32),
    }[size]
    head_dim = dims["hidden"] // dims["heads"]
    third = head_dim // 2 // 4
    ids = vision_token_ids(tokenizer)
    text = {
        "vocab_size": len(tokenizer),
        "hidden_size": dims["hidden"],
        "intermediate_size": dims["inter"],
        "num_hidden_layers": dims["layers"],
        "num_attention_heads": dims["heads"],
        "num_key_value_heads": dims["kv"],
        "head_dim": head_dim,
        "max_position_embeddings": 4096,
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "bos_token_id": None,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": 10000.0,
            "mrope_section": [head_dim // 2 - 2 * third, third, third],
            "mrope_interleaved": True,
        },
    }
    vision = {
        "depth": dims["vdepth"],
        "hidden_size": dims["vhidden"],
        "intermediate_size": 2 * dims["vhidden"],
        "num_heads": 4 if dims["vhidden"] >= 64 else 2,
        "patch_size": 16,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "out_hidden_size": dims["hidden"],
        "num_position_embeddings": 64,
        "deepstack_visual_indexes": [dims["vdepth"] // 2],
    }
    return Qwen3VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=True, **ids)


def batch_inputs(processor, conversations, texts: list[str] | None = None):
    """Processor inputs of ``conversations`` (their ``texts`` when already rendered) with
    labels on the trained assistant turns only."""
    if texts is None:
        texts = [render(processor, messages, tools) for messages, tools, _ in conversations]
    images = [image for messages, _, _ in conversations for image in _images(messages)]
    flags = [loss_turns for _, _, loss_turns in conversations]
    tok = processor.tokenizer
    inputs = processor(text=texts, images=images or None, padding=True, return_tensors="pt")
    labels = inputs["input_ids"].clone()
    for b, ids in enumerate(inputs["input_ids"].tolist()):
        mask = torch.tensor(assistant_mask(ids, tok, flags[b]), dtype=torch.bool)
        labels[b][~mask] = -100
    inputs["labels"] = labels
    return inputs


def train_step(model, processor, batch, micro_batches: int) -> float:
    """Forward + backward of ``batch`` in length-sorted micro-batches (less padding: the
    tools block makes some conversations twice as long), the loss weighted by label tokens."""
    texts = [render(processor, messages, tools) for messages, tools, _ in batch]
    order = sorted(range(len(batch)), key=lambda i: len(texts[i]))
    chunks = [order[k * len(order) // micro_batches : (k + 1) * len(order) // micro_batches]
              for k in range(micro_batches)]  # fmt: skip
    prepared = [
        batch_inputs(processor, [batch[i] for i in c], [texts[i] for i in c]) for c in chunks if c
    ]
    total = sum(int((p["labels"] != -100).sum()) for p in prepared)
    value = 0.0
    for inputs in prepared:
        n = int((inputs["labels"] != -100).sum())
        loss = model(**inputs).loss * (n / total)
        loss.backward()
        value += loss.item()
    return value


def measure(model, processor, n: int, seed: int, batch_size: int = 16) -> dict:
    """Accuracy with the zoom tool (the evaluator's real rollout) and without tools (direct
    mode), per question type, with crop IoU against the target box, on the test split."""
    from hf_faithful.faithfulness.config import FaithfulnessConfig
    from hf_faithful.faithfulness.evaluator import FaithfulnessEvaluator
    from hf_faithful.mcot.answers import answers_match
    from hf_faithful.mcot.backends import LocalVLMBackend

    samples = [s for _, s in zip(range(n), sample_stream("test", seed))]
    backend = LocalVLMBackend(model, processor, batch_size=batch_size)
    config = FaithfulnessConfig(box_rules=RULES, max_turn_tokens=96, max_tool_calls=2)
    evaluator = FaithfulnessEvaluator(backend, config=config)
    rows = [{"image": s.image, "question": s.question, "reference": s.answer} for s in samples]
    traces = evaluator.generate_traces(rows)
    direct = backend.answer(
        [
            [
                {"role": "system", "content": _text(DIRECT_SYSTEM_PROMPT)},
                {
                    "role": "user",
                    "content": [{"type": "image", "image": s.image}, *_text(s.question)],
                },
            ]
            for s in samples
        ],
        16,
        stop=["</answer>"],
    )
    from hf_faithful.mcot.messages import answer_from_reply

    out: dict = {}
    for qtype in ("zoom_needed", "global"):
        idx = [i for i, s in enumerate(samples) if s.question_type == qtype]
        if not idx:
            continue
        with_tools = [
            traces[i].valid and answers_match(traces[i].answer, samples[i].answer) for i in idx
        ]
        without = [
            answers_match(answer_from_reply(direct[i] + "</answer>"), samples[i].answer)
            for i in idx
        ]
        called = [bool(traces[i].crops) for i in idx]
        ious = [
            _iou(traces[i], samples[i]) for i in idx if traces[i].crops and samples[i].target_box
        ]
        chance = (
            CHANCE["mark"]
            if qtype == "zoom_needed"
            else sum(CHANCE[samples[i].template] for i in idx) / len(idx)
        )
        out[qtype] = {
            "n": len(idx),
            "accuracy_with_tools": sum(with_tools) / len(idx),
            "accuracy_without_tools": sum(without) / len(idx),
            "chance": chance,
            "tool_call_rate": sum(called) / len(idx),
            "valid_traces": sum(traces[i].valid for i in idx) / len(idx),
            "mean_crop_iou": (sum(ious) / len(ious)) if ious else None,
        }
    return out


def _iou(trace, sample) -> float:
    """Best IoU of the trace's crops with the target box."""
    target = Box(*sample.target_box)
    return max(
        (
            normalize_box(step.bbox, (CANVAS, CANVAS), RULES).iou(target)
            for step in trace.zoom_steps
            if step.crop is not None
        ),
        default=0.0,
    )


def _describe(config) -> str:
    t, v = config.text_config, config.vision_config
    return (
        f"{t.num_hidden_layers} layers, hidden {t.hidden_size}, MLP {t.intermediate_size}, "
        f"{t.num_attention_heads} query / {t.num_key_value_heads} KV heads; vision: "
        f"{v.depth} blocks, hidden {v.hidden_size}, patch 16, merge 2; tied embeddings"
    )


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _stages(meta: dict) -> str:
    """Card rows of the runs a continued model started from (``--init-from``)."""
    rows = []
    for stage in meta.get("previous_stages", []):
        rows.append(
            f"| started from | `{stage['command']}` ({stage['train_minutes']} min): "
            f"{stage['note']} |\n"
        )
    return "".join(rows)


def write_card(folder: Path, meta: dict) -> None:
    """The model card: data, command, seed, and the measured figures beside chance."""
    from huggingface_hub import ModelCard

    rows = []
    for qtype, f in meta.get("test_figures", {}).items():
        rows.append(
            f"| {qtype} | {f['n']} | **{_fmt(f['accuracy_with_tools'])}** | "
            f"{_fmt(f['accuracy_without_tools'])} | {_fmt(f['chance'])} | "
            f"{_fmt(f['tool_call_rate'])} | {_fmt(f['mean_crop_iou'])} |"
        )
    figures = "\n".join(rows) or "| (not measured) | | | | | | |"
    card = f"""---
library_name: transformers
license: apache-2.0
pipeline_tag: image-text-to-text
tags:
- qwen3_vl
- hf-faithful
- reference-model
- thinking-with-images
- zoom-in
---

# hf-faithful reference VLM: a Qwen3-VL that learned to zoom ({meta["parameters"] / 1e6:.2f}M parameters)

A `Qwen3VLForConditionalGeneration` trained from scratch on CPU to "think with images" on
ZoomVQA (`hf_faithful.data.zoom_vqa`): it writes DeepEyes-format traces (`<think>`, a
`<tool_call>` to `image_zoom_in_tool` with a box in Qwen3-VL's 0..1000 frame, the crop
back in `<tool_response>`, then `<answer>`). It is the default subject of hf-faithful's
faithfulness half, so every figure there comes from a model whose tool use is learned,
not scripted.

| | |
|---|---|
| architecture | Qwen3-VL, text: {meta["config"]} |
| image processor | every image (whole view and crops) at most 128x128 px: 16 vision tokens |
| tokenizer | byte-level BPE with Qwen's pre-tokenizer, vocabulary {meta["vocab_size"]}, trained on the rendered traces |
| data | ZoomVQA train stream, seed {meta["seed"]}: 768x768 canvases, 3-6 squares on a 4x4 grid, a small dot of one of 4 colours on each |
| training | SFT: {meta.get("perception_steps", 0)} steps of short perception conversations, then {meta["steps"]} steps of full traces, {meta["batch_size"]} conversations a step, AdamW lr {meta["lr"]} (vision lr {meta.get("vision_lr")}), warm-up + cosine, seed {meta["seed"]}; loss on the model's own turns; {meta["train_minutes"]} min on {meta["machine"]} |
{_stages(meta)}| final training loss | {meta["final_loss"]:.4f} |

Conversations are rendered every way hf-faithful shows them to a model: the evaluator's
turn-by-turn rollout (shipped `zoom_system` prompt), TRL's tool rollouts (DeepEyes' system
prompt with the `<tools>` block), `Trace.to_messages` prefixes, the sufficiency query
(crops only), and a direct mode without tools (system prompt
`hf_faithful.models.reference_vlm.DIRECT_SYSTEM_PROMPT`).

## Measured on the ZoomVQA test split ({meta.get("eval_samples", 0)} questions)

With tools: the evaluator's real rollout (`FaithfulnessEvaluator.generate_traces`, greedy,
at most 2 zoom-ins). Without tools: the direct-mode prompt, whole image only.

| questions | n | accuracy with tools | accuracy without tools | chance | tool-call rate | crop IoU with target |
|---|---|---|---|---|---|---|
{figures}

Chance: zoom-needed questions ask for one of 4 dot colours; global questions are a count of
3-6 squares (0.25) or yes/no (0.5), averaged over the split.

Reproduce: {"run the 'started from' command, then " if meta.get("previous_stages") else ""}`{meta["command"]}` (
measured by `{meta.get("measure_command", "the same run")}` in {meta.get("eval_minutes", "?")} min).

Load it: `hf_faithful.load_reference_vlm()`.

Limitations: a toy model for tests, demos and the SCCM experiment; it knows ZoomVQA only.
"""
    ModelCard(card).save(folder / "README.md")


def measure_saved(folder: Path, n: int, seed: int, argv: list[str]) -> int:
    """Measure a saved model and record the figures in its ``training_meta.json``."""
    from hf_faithful.models.reference_vlm import load_reference_vlm

    started = time.time()
    model, processor = load_reference_vlm(folder)
    figures = measure(model, processor, n, seed)
    meta_path = folder / "training_meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    meta.setdefault("config", _describe(model.config))
    meta |= {"test_figures": figures, "eval_samples": n,
             "measure_command": "python scripts/train_reference_vlm.py " + " ".join(argv),
             "eval_minutes": round((time.time() - started) / 60, 1)}  # fmt: skip
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    if "parameters" in meta:
        write_card(folder, meta)
    print(json.dumps(figures, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", default=str(REFERENCE_VLM_DIR))
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--micro-batches", type=int, default=2)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--vision-lr", type=float, default=1e-3)
    parser.add_argument("--init-from", help="continue from a model saved by this script")
    parser.add_argument("--stream-offset", type=int, default=0, help="skip this many samples")
    parser.add_argument(
        "--crop-query",
        type=float,
        default=0.3,
        help="share of zoom samples asked on the crop alone",
    )
    parser.add_argument(
        "--freeze-vision",
        type=float,
        default=0.0,
        help="fraction of steps before the vision tower trains",
    )
    parser.add_argument(
        "--pos-embed-std", type=float, default=1.0, help="init std of the vision position table"
    )
    parser.add_argument(
        "--perception-steps",
        type=int,
        default=600,
        help="stage 1: steps of short perception conversations before --steps of traces",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--vocab-size", type=int, default=1024)
    parser.add_argument("--tokenizer-corpus", type=int, default=3000)
    parser.add_argument("--eval-samples", type=int, default=300)
    parser.add_argument("--size", choices=("reference", "smoke"), default="reference")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument(
        "--measure-only", action="store_true", help="only measure the model in --output"
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.measure_only:
        return measure_saved(
            Path(args.output), args.eval_samples, args.seed, sys.argv[1:] if argv is None else argv
        )
    started = time.time()
    random.seed(args.seed)
    torch.manual_seed(args.seed)
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)

    if args.init_from:  # continue training a saved model (same tokenizer and processor)
        from hf_faithful.models.reference_vlm import load_reference_vlm

        model, processor = load_reference_vlm(args.init_from)
        model.train()
    else:
        corpus = training_corpus(args.tokenizer_corpus, args.seed)
        processor = build_reference_vlm_processor(train_tokenizer(corpus, args.vocab_size))
        model = Qwen3VLForConditionalGeneration(model_config(processor.tokenizer, args.size))
        # Position embeddings at the scale of the patch embeddings (std ~1 rather than the
        # default 0.02): the frozen random tower then says *where* each patch is, which the
        # language model needs to box the target's cell.
        # And the blocks' residual branches start at zero (attention and MLP outputs), so the
        # tower starts as "patch + position -> merger": random blocks average the tokens
        # together (measured: the model could tell which colours are present but neither
        # where they are nor what a crop shows). They learn from zero once unfrozen.
        with torch.no_grad():
            model.model.visual.pos_embed.weight.normal_(0.0, args.pos_embed_std)
            for block in model.model.visual.blocks:
                for layer in (block.attn.proj, block.mlp.linear_fc2):
                    layer.weight.zero_()
                    layer.bias.zero_()
    for key in ("eos_token_id", "pad_token_id"):
        setattr(model.generation_config, key, getattr(processor.tokenizer, key))
    model.generation_config.bos_token_id = None
    n_params = sum(p.numel() for p in model.parameters())
    print(f"parameters: {n_params:,}  vocab: {len(processor.tokenizer)}", flush=True)

    # A vision tower trained from step 0 collapses to image-independent "register" vectors
    # (measured: the model then answers identically for every image). So it stays at its
    # random initialization (content-preserving features) while the language model learns
    # to read them, then trains at a lower learning rate.
    vision = [p for n, p in model.named_parameters() if n.startswith("model.visual.")]
    others = [p for n, p in model.named_parameters() if not n.startswith("model.visual.")]
    for p in vision:
        p.requires_grad_(False)
    total = args.perception_steps + args.steps
    freeze_steps = round(args.freeze_vision * total)
    optimizer = torch.optim.AdamW(
        [{"params": others, "lr": args.lr}, {"params": vision, "lr": args.vision_lr}],
        weight_decay=0.01,
    )
    warmup = max(1, total // 20)

    def lr_at(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_at)
    stream = sample_stream("train", args.seed)
    for _ in range(args.stream_offset):  # a continued run sees new samples
        next(stream)
    rng = random.Random(args.seed)
    prompts, suff = _system_prompts(), _sufficiency_prompts()
    model.train()
    losses = []
    for step in range(total):
        if step == freeze_steps:
            for p in vision:
                p.requires_grad_(True)
        if step == args.perception_steps and step:  # kept to diagnose the two stages apart
            model.save_pretrained(output / "stage1")
            processor.save_pretrained(output / "stage1")
        if step < args.perception_steps:
            batch = [
                perception_conversation(next(stream), rng, prompts, suff)
                for _ in range(args.batch_size)
            ]
        else:
            batch = [
                conversation(next(stream), rng, prompts, suff, args.crop_query)
                for _ in range(args.batch_size)
            ]
        loss = train_step(model, processor, batch, args.micro_batches)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss)
        if step % 50 == 0 or step == total - 1:
            recent = sum(losses[-50:]) / len(losses[-50:])
            print(f"step {step:5d}  loss {recent:.4f}  {time.time() - started:6.0f}s", flush=True)
    train_minutes = (time.time() - started) / 60
    model.eval()
    model.save_pretrained(output)
    processor.save_pretrained(output)
    figures = measure(model, processor, args.eval_samples, args.seed) if args.eval_samples else {}
    meta = {
        "command": "python scripts/train_reference_vlm.py " + " ".join(argv or sys.argv[1:]),
        "seed": args.seed,
        "steps": args.steps,
        "perception_steps": args.perception_steps,
        "batch_size": args.batch_size,
        "init_from": args.init_from,
        "stream_offset": args.stream_offset,
        "crop_query": args.crop_query,
        "micro_batches": args.micro_batches,
        "lr": args.lr,
        "vision_lr": args.vision_lr,
        "freeze_vision": args.freeze_vision,
        "pos_embed_std": args.pos_embed_std,
        "parameters": n_params,
        "vocab_size": len(processor.tokenizer),
        "final_loss": sum(losses[-50:]) / len(losses[-50:]),
        "train_minutes": round(train_minutes, 1),
        "total_minutes": round((time.time() - started) / 60, 1),
        "machine": f"{os.cpu_count()} CPU cores, torch {torch.__version__}, {torch.get_num_threads()} threads",
        "config": _describe(model.config),
        "test_figures": figures,
        "eval_samples": args.eval_samples,
    }
    (output / "training_meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    write_card(output, meta)
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
