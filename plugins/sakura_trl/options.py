"""Options of ``kind = "train"`` stages (cheap to import: pydantic only)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from sakura_core.options import Options


class LoraOptions(Options):
    """The ``lora`` table: a peft ``LoraConfig``; with LoRA the DPO reference is the policy with the adapter off."""

    r: int = Field(16, ge=1)
    """Rank of the low-rank update matrices (peft ``r``)."""
    alpha: float = Field(16, gt=0)
    """Scale of the update (peft ``lora_alpha``): it is multiplied by alpha / r."""
    dropout: float = Field(0.05, ge=0, lt=1)
    """Dropout probability on the LoRA branch's input during training (peft ``lora_dropout``)."""
    target_modules: list[str] | Literal["all-linear"] = "all-linear"
    """Modules to adapt, by name (``["q_proj", "v_proj"]``, matched as name suffixes), or ``"all-linear"``:
    every linear layer except the output head."""
    bias: Literal["none", "all", "lora_only"] = "none"
    """Biases trained along with the adapter (peft ``bias``): none, all, or those of the adapted modules."""
    quantize: Literal["4bit"] | None = None
    """``"4bit"``: QLoRA, the base weights loaded in 4-bit NF4 with double quantization (needs CUDA and
    bitsandbytes); unset: the base weights in their own dtype."""


class LauncherOptions(Options):
    """The ``launcher`` table: run the stage under ``accelerate launch``."""

    num_processes: int = Field(1, ge=1)
    """Training processes (``--num_processes``), on all machines together: one per GPU, data parallel; without
    CUDA they run DDP on the CPU (gloo). With 1 and no ``config_file`` the stage trains in sakura's own
    process. With a ``config_file`` and this unset, the file's value applies."""
    config_file: str | None = None
    """An accelerate config file (DDP, DeepSpeed ZeRO, FSDP, multi-node), relative to the recipe's directory;
    its content is part of the fingerprint. What the file sets is not overridden, except by the keys here
    that the recipe sets."""
    num_machines: int | None = Field(None, ge=1)
    """Machines the training spans (``--num_machines``); unset: the config file's, else 1. More than 1 needs
    ``main_process_ip`` (or a config file holding it) and either ``srun`` or ``machine_rank``."""
    machine_rank: int | None = Field(None, ge=0)
    """This machine's rank among ``num_machines`` (``--machine_rank``), 0 on the machine whose sakura run
    writes the artifact; the other machines start their launchers themselves (see docs/scaling.md). Unset
    with ``srun``: each node's ``$SLURM_NODEID``."""
    main_process_ip: str | None = None
    """Address of the machine of rank 0, where the processes meet (``--main_process_ip``)."""
    main_process_port: int | None = Field(None, ge=1, le=65535)
    """TCP port the processes meet on (``--main_process_port``, which wins over the config file's); unset: a
    free port found at launch on one machine, 29500 across machines."""
    srun: bool = False
    """Inside a SLURM allocation: start the launcher on every node with ``srun`` (one task per node, each
    with ``$SLURM_NODEID`` as its machine rank), so one ``sakura run`` trains across the allocation."""


class TrainOptions(Options):
    """``kind = "train"``: fine-tunes a model on a dataset stage's rows with a trl trainer, with or without
    LoRA; the artifact is the whole model (the adapter merged in) with its tokenizer and chat template, the
    adapter in ``adapter/``, and the training metrics. A stage killed midway resumes from its last
    checkpoint."""

    trainer: str = "dpo"
    """Trainer to run (see Trainers below); it names the trl config class that ``args`` is checked against."""
    model: str
    """Model to fine-tune (for DPO also the reference): a model alias or a stage that produces a model."""
    dataset: str
    """Dataset stage whose rows to train on."""
    lora: LoraOptions | None = None
    """Train a LoRA adapter through peft (the keys below); unset: every weight is trained."""
    # trl's own config fields (DPOConfig / SFTConfig), checked against a snapshot of trl's config class.
    args: dict[str, Any] = Field(default_factory=dict)
    """Fields of the trainer's trl config class (``DPOConfig``, ``SFTConfig``), checked by name and value
    kind against trl's own fields before any work; they win over sakura's defaults (see Trainers)."""
    chat_template: str | None = None
    """Jinja chat template set on the tokenizer for training and saved with the artifact; unset: the model
    tokenizer's own, which must exist."""
    ref_cache: bool = True
    """DPO: keep the reference log-probs in the store, keyed by reference model, data and tokenization, so a
    variant with the same ones skips the reference pass (off with ``args.precompute_ref_log_probs = false``
    or ``args.sync_ref_model = true``)."""
    train_split: str = "train"
    """Split of the dataset to train on."""
    eval_split: str | None = None
    """Split to evaluate on (e.g. ``test``, made by the dataset stage's ``test_size``); evaluation runs when
    ``args.eval_strategy`` is ``"steps"`` or ``"epoch"``. Unset: no evaluation."""
    launcher: LauncherOptions | None = None
    """Run the training under ``accelerate launch`` (the keys below); unset: in sakura's own process."""
    save_dtype: Literal["float32", "bfloat16", "float16"] | None = None
    """dtype of the saved model (the adapter merged in); unset: the input model's, whatever the training ran
    in (a float16 model trained in float32 on a CPU is saved in float16, as large as it came)."""
