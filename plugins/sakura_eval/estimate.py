"""Memory and time of an eval stage, for ``sakura plan``, from the evaluated model's config.json.

Memory is PyTorch's peak on one GPU: the weights in the loaded dtype, plus what one batch of requests holds
(lm-eval scores a whole batch's logits in float32 for the log-softmax; generation keeps a KV cache). Time is
rough: the work in FLOPs (2 x parameters per token of a forward pass) over an H100-class GPU at 35% of its
bf16 peak, and token-by-token generation bounded by reading every weight per step; the
``sakura_core.estimate`` constants. For the Open LLM Leaderboard preset the document counts are the
benchmarks' split sizes and the tokens per request typical few-shot prompt lengths (assumptions, stated in
``OPENLLM_WORK``); a task sakura knows nothing of gets a memory estimate only.
"""

from __future__ import annotations

from typing import Any

from sakura_core.estimate import GPU_BYTES_PER_S, GPU_FLOPS, Estimate, dtype_bytes, dtype_of

# task -> (documents in the scored split, requests per document, tokens per request (few-shot context included),
# tokens generated per request): split sizes of the datasets; token counts are typical, not measured.
OPENLLM_WORK = {
    "arc_challenge": (1172, 4, 1100, 0),   # ARC-Challenge test, 4 choices, 25 shots
    "hellaswag": (10042, 4, 850, 0),       # validation, 4 endings, 10 shots
    "mmlu": (14042, 4, 650, 0),            # test, 4 choices, 5 shots
    "truthfulqa_mc2": (817, 8, 300, 0),    # validation, ~8 true and false answers, the QA primer
    "winogrande": (1267, 2, 160, 0),       # validation, 2 options, 5 shots
    "gsm8k": (1319, 1, 900, 256),          # test, 5 shots, up to 256 generated tokens
}
DEFAULT_LENGTH = 2048  # a batch's padded length when nothing says more


def lm_eval_estimate(options: Any, config: dict[str, Any] | None) -> Estimate | None:
    from sakura_models.shapes import param_count, shape_of

    shape, params = shape_of(config), param_count(config)
    if shape is None or params is None or config is None:
        return None
    dtype = dtype_of(config) if options.dtype == "auto" else options.dtype
    weight = dtype_bytes(dtype, 2)
    batch = options.batch_size if isinstance(options.batch_size, int) else 8
    length = options.max_length or min(int(config.get("max_position_embeddings") or DEFAULT_LENGTH), 4096)
    estimate = Estimate(device="gpu")
    estimate.memory["weights"] = params * weight
    estimate.memory["logits"] = batch * length * shape.vocab * (weight + 4)  # the batch's logits and their fp32 log-softmax
    estimate.memory["activations"] = batch * length * shape.hidden * weight * 4
    tasks = options.task_fewshot()
    known = {task: OPENLLM_WORK[task] for task in tasks if task in OPENLLM_WORK}
    if known:
        seconds = 0.0
        for docs, requests, tokens, generated in known.values():
            docs = _limited(docs, options.limit)
            seconds += 2 * params * docs * requests * tokens / GPU_FLOPS
            seconds += docs / batch * generated * params * weight / GPU_BYTES_PER_S  # one weight read per new token
        estimate.seconds = seconds
        unknown = [task for task in tasks if task not in OPENLLM_WORK]
        if unknown:
            estimate.notes.append("time leaves out " + ", ".join(unknown))
    return estimate


def two_model_estimate(config: dict[str, Any] | None, batch: int, length: int) -> Estimate | None:
    """The preference evaluator: the model and its reference, and one batch of pairs' logits."""
    from sakura_models.shapes import param_count, shape_of

    shape, params = shape_of(config), param_count(config)
    if shape is None or params is None:
        return None
    weight = dtype_bytes(dtype_of(config), 4)
    estimate = Estimate(device="gpu")
    estimate.memory["model and reference"] = 2 * params * weight
    estimate.memory["logits"] = 2 * batch * length * shape.vocab * (weight + 4)
    return estimate


def generate_estimate(config: dict[str, Any] | None, prompts: int, batch: int, new_tokens: int) -> Estimate | None:
    """The generate evaluator: the weights, a batch's KV cache, and a weight read per generated token."""
    from sakura_models.shapes import param_count, shape_of

    shape, params = shape_of(config), param_count(config)
    if shape is None or params is None:
        return None
    weight = dtype_bytes(dtype_of(config), 4)
    estimate = Estimate(device="gpu")
    estimate.memory["weights"] = params * weight
    length = 512 + new_tokens  # a prompt of a few hundred tokens, then the answer
    estimate.memory["KV cache"] = batch * length * shape.layers * 2 * shape.kv_out * weight
    estimate.seconds = -(-prompts // batch) * new_tokens * params * weight / GPU_BYTES_PER_S
    return estimate


def _limited(docs: int, limit: float | None) -> int:
    if limit is None:
        return docs
    return min(docs, int(limit)) if limit >= 1 else max(1, int(docs * limit))
