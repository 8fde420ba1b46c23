"""Train the bundled reference model: a small Llama with grouped-query attention.

Trains a byte-level BPE tokenizer and a 4-layer Llama (8 query / 4 KV heads) from
scratch on Project Gutenberg plus the first 70% of WikiText-2 valid, then writes
safetensors, the tokenizer and a model card with the WikiText-2 test perplexity
(pruning-paper protocol) to ``hf_faithful/assets/reference-model``.

    python scripts/train_reference_model.py                 # the committed model
    python scripts/train_reference_model.py --steps 50 --output /tmp/ref   # smoke run
    python scripts/train_reference_model.py --eval-only     # re-measure, rewrite card
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from tqdm.auto import tqdm
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from hf_faithful.assets import REFERENCE_MODEL_DIR
from hf_faithful.corpora import calibration_text, wikitext2_test, wikitext2_valid_train_part

REPO = Path(__file__).resolve().parents[1]
GUTENBERG = REPO / "data" / "gutenberg"
DEFAULT_OUTPUT = REFERENCE_MODEL_DIR
EOS = "<|endoftext|>"


def training_documents() -> list[str]:
    books = sorted(GUTENBERG.glob("*.txt"))
    if not books:
        raise FileNotFoundError(f"no Gutenberg books under {GUTENBERG}")
    return [p.read_text(encoding="utf-8", errors="replace") for p in books] + [
        wikitext2_valid_train_part()
    ]


def train_tokenizer(docs: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(docs, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=EOS,
        eos_token=EOS,
        unk_token=EOS,
        pad_token=EOS,
        model_max_length=1024,
    )


def build_model(vocab_size: int, eos_id: int) -> LlamaForCausalLM:
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=256,
        intermediate_size=768,
        num_hidden_layers=4,
        num_attention_heads=8,
        num_key_value_heads=4,
        max_position_embeddings=1024,
        rope_theta=10000.0,
        tie_word_embeddings=True,
        bos_token_id=eos_id,
        eos_token_id=eos_id,
        pad_token_id=eos_id,
    )
    return LlamaForCausalLM(config)


def write_card(out: Path, meta: dict) -> None:
    from huggingface_hub import ModelCard, ModelCardData

    data = ModelCardData(
        language="en",
        license="cc-by-sa-3.0",
        library_name="transformers",
        pipeline_tag="text-generation",
        tags=["llama", "hf-faithful", "reference-model", "grouped-query-attention"],
        model_name="hf-faithful reference Llama",
    )
    body = f"""
# hf-faithful reference Llama ({meta["parameters"] / 1e6:.2f}M parameters)

A small Llama-architecture causal LM with grouped-query attention, trained from scratch
on CPU so that hf-faithful's pruning has a real, offline model to work on. It is the
default model of every `hf-faithful` command that needs one.

| | |
|---|---|
| architecture | Llama, {meta["layers"]} layers, hidden 256, MLP 768, 8 query / 4 KV heads, tied embeddings |
| tokenizer | byte-level BPE, vocabulary {meta["vocab_size"]}, trained on the same text |
| training text | 14 Project Gutenberg books (NLTK selection) + first 70% of WikiText-2 valid ({meta["train_tokens"]:,} tokens) |
| training | {meta["steps"]} steps of {meta["batch_size"]} x {meta["seq_len"]} tokens, AdamW lr {meta["lr"]}, cosine, seed {meta["seed"]}, {meta["train_minutes"]:.1f} min wall-clock on {meta["machine"]} |
| **WikiText-2 test perplexity** | **{meta["wikitext2_test_ppl"]:.2f}** (texts joined with "\\n\\n", non-overlapping 128-token chunks, exp of mean chunk loss) |
| calibration split perplexity | {meta["calibration_ppl"]:.2f} (last 30% of WikiText-2 valid, never trained on) |

Reproduce: `python scripts/train_reference_model.py` (command: `{meta["command"]}`).

Load it: `hf_faithful.load_reference_model()` or
`AutoModelForCausalLM.from_pretrained(hf_faithful.REFERENCE_MODEL_DIR)`.

Limitations: a toy-sized model for tests, demos and pruning benchmarks; it writes
fluent-looking but meaningless text. Data licenses: WikiText-2 CC BY-SA 3.0,
Gutenberg texts public domain.
"""
    card = ModelCard(f"---\n{data.to_yaml()}\n---\n{body}")
    card.save(out / "README.md")


def evaluate_and_card(out: Path, meta: dict) -> dict:
    from hf_faithful.evaluation.perplexity import perplexity

    model = LlamaForCausalLM.from_pretrained(out, dtype=torch.float32)
    tok = PreTrainedTokenizerFast.from_pretrained(out)
    meta["wikitext2_test_ppl"] = perplexity(model, tok, wikitext2_test(), seq_len=128)
    meta["calibration_ppl"] = perplexity(model, tok, calibration_text(), seq_len=128)
    meta["parameters"] = sum(p.numel() for p in model.parameters())
    (out / "training_meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    write_card(out, meta)
    return meta


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    ap.add_argument("--steps", type=int, default=1600)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--vocab-size", type=int, default=4096)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--machine", default="2-core CPU (x86_64), torch 2.13.0+cpu")
    ap.add_argument("--eval-only", action="store_true")
    args = ap.parse_args()
    out: Path = args.output
    if args.eval_only:
        meta = json.loads((out / "training_meta.json").read_text())
        print(json.dumps(evaluate_and_card(out, meta), indent=2))
        return

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    docs = training_documents()
    tok = train_tokenizer(docs, args.vocab_size)
    ids = []
    for doc in docs:
        ids.extend(tok(doc)["input_ids"] + [tok.eos_token_id])
    data = torch.tensor(ids, dtype=torch.long)
    print(f"training tokens: {len(data):,}")
    model = build_model(len(tok), tok.eos_token_id)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr,
        betas=(0.9, 0.95),
    )

    def lr_at(step: int) -> float:
        if step < args.warmup:
            return args.lr * (step + 1) / args.warmup
        t = (step - args.warmup) / max(1, args.steps - args.warmup)
        return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))

    gen = torch.Generator().manual_seed(args.seed)
    model.train()
    start = time.time()
    bar = tqdm(range(args.steps), desc="train")
    for step in bar:
        starts = torch.randint(0, len(data) - args.seq_len - 1, (args.batch_size,), generator=gen)
        batch = torch.stack([data[s : s + args.seq_len] for s in starts.tolist()])
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        loss = model(input_ids=batch, labels=batch).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 10 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{lr_at(step):.2e}")
    minutes = (time.time() - start) / 60
    out.mkdir(parents=True, exist_ok=True)
    model.eval()
    model.save_pretrained(out)
    tok.save_pretrained(out)
    meta = {
        "steps": args.steps,
        "batch_size": args.batch_size,
        "seq_len": args.seq_len,
        "lr": args.lr,
        "seed": args.seed,
        "layers": model.config.num_hidden_layers,
        "vocab_size": len(tok),
        "train_tokens": len(data),
        "train_minutes": minutes,
        "machine": args.machine,
        "command": "python scripts/train_reference_model.py",
    }
    (out / "training_meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(json.dumps(evaluate_and_card(out, meta), indent=2))


if __name__ == "__main__":
    main()
