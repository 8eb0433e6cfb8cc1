"""``evaluator = "generate"``: greedy completions for a list of prompts, through the model's chat template.

What the model says, kept in the artifact (``samples.jsonl``) for a person to read, the first few on the
model card. Greedy decoding, so the same model and prompts give the same text.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from sakura_core.errors import OptionError
from sakura_core.options import Options
from sakura_eval.contract import EvalJob, EvalResult, Evaluator


class GenerateOptions(Options):
    """Options of ``evaluator = "generate"``."""

    prompts: list[str] = Field(default_factory=list)
    """The prompts, each sent as one user message."""
    prompts_file: str | None = None
    """A file of more prompts, relative to the recipe's directory: one per line (``.txt``), or JSON lines with a
    ``prompt`` field (``.jsonl``); its content is part of the fingerprint."""
    system: str | None = None
    """A system message before every prompt."""
    max_new_tokens: int = Field(128, ge=1, le=8192)
    """Longest completion, in tokens."""
    batch_size: int = Field(8, ge=1)
    """Prompts generated at once."""

    @model_validator(mode="after")
    def _some_prompt(self) -> GenerateOptions:
        if not self.prompts and not self.prompts_file:
            raise ValueError("give prompts = [\"...\"] or a prompts_file")
        return self


class Generate(Evaluator):
    """Greedy completions of a list of prompts through the model's chat template, for a person to read."""

    Options = GenerateOptions
    needs_chat_template = True

    def check(self, options: GenerateOptions, env: Any) -> None:
        if options.prompts_file:
            path = _path(options.prompts_file, env.recipe_dir)
            if not path.is_file():
                raise OptionError("options.prompts_file", f"no such file: {path}")
            try:
                read_prompts(path)
            except ValueError as exc:
                raise OptionError("options.prompts_file", str(exc)) from None

    def external_inputs(self, options: GenerateOptions, env: Any) -> dict[str, Any]:
        from sakura_core.hashing import hash_path

        if not options.prompts_file:
            return {}
        path = _path(options.prompts_file, env.recipe_dir)
        return {"prompts_file": {os.path.relpath(path, env.recipe_dir): hash_path(path)}}

    def estimate(self, options: GenerateOptions, config: dict[str, Any] | None, env: Any) -> Any:
        from sakura_eval.estimate import generate_estimate

        prompts = len(options.prompts)
        if options.prompts_file:
            try:
                prompts += len(read_prompts(_path(options.prompts_file, env.recipe_dir)))
            except ValueError:
                pass  # check() reports it
        return generate_estimate(config, prompts, options.batch_size, options.max_new_tokens)

    def run(self, job: EvalJob) -> EvalResult:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from sakura_models.loading import from_pretrained

        options: GenerateOptions = job.options
        prompts = list(options.prompts)
        if options.prompts_file:
            prompts += read_prompts(_path(options.prompts_file, job.recipe_dir))
        tokenizer = from_pretrained(AutoTokenizer, job.model.path, job.model.name, padding_side="left")
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        model = from_pretrained(AutoModelForCausalLM, job.model.path, job.model.name, dtype="auto").to(job.device).eval()
        samples: list[dict[str, Any]] = []
        new_tokens = 0
        with job.progress("generating", len(prompts), "prompts") as task, torch.inference_mode():
            for start in range(0, len(prompts), options.batch_size):
                batch = prompts[start:start + options.batch_size]
                texts = [tokenizer.apply_chat_template(_messages(p, options.system), tokenize=False, add_generation_prompt=True)
                         for p in batch]
                encoded = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(job.device)
                out = model.generate(**encoded, max_new_tokens=options.max_new_tokens, do_sample=False,
                                     pad_token_id=tokenizer.pad_token_id)
                for prompt, row in zip(batch, out[:, encoded["input_ids"].shape[1]:]):
                    completion = tokenizer.decode(row, skip_special_tokens=True)
                    count = int((row != tokenizer.pad_token_id).sum())
                    new_tokens += count
                    samples.append({"prompt": prompt, "completion": completion.strip(), "new_tokens": count})
                task.advance(len(batch))
        return EvalResult(
            results={"generate": {"prompts": float(len(prompts)), "mean_new_tokens": new_tokens / max(1, len(prompts))}},
            settings={"decoding": "greedy", "max_new_tokens": options.max_new_tokens, "system": options.system,
                      "device": job.device},
            samples=samples,
        )


def _messages(prompt: str, system: str | None) -> list[dict[str, str]]:
    return ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]


def _path(entry: str, recipe_dir: Path) -> Path:
    path = Path(entry).expanduser()
    return path if path.is_absolute() else Path(recipe_dir) / path


def read_prompts(path: Path) -> list[str]:
    """A .txt file's non-empty lines, or a .jsonl file's ``prompt`` fields; a bad line names its number."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read {path}: {exc}") from None
    if path.suffix != ".jsonl":
        prompts = [line.strip() for line in text.splitlines() if line.strip()]
    else:
        prompts = []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}: line {number}: malformed JSON ({exc.msg})") from None
            if not isinstance(row, dict) or not isinstance(row.get("prompt"), str) or not row["prompt"].strip():
                raise ValueError(f"{path}: line {number}: expected an object with a non-empty \"prompt\" string")
            prompts.append(row["prompt"].strip())
    if not prompts:
        raise ValueError(f"{path} holds no prompt")
    return prompts
