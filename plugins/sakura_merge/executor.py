"""The native streaming executor.

Tensor by tensor: reader threads ``pread`` each input tensor straight from the safetensors files (no mmap,
so untouched weights never count against memory), the main thread moves them to the compute device and
calls the method's tensor function, a writer thread copies results back and streams them into
safetensors shards whose headers were computed before the first tensor was read. At most a bounded window
of tensors is in flight, so peak host memory does not grow with the model.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Optional

from sakura_merge.config import MergeConfig, parse_size
from sakura_merge.errors import MergeInputError
from sakura_merge.inputs import ITEMSIZE, ST_CODES, Layout, OutTensor, TensorInfo
from sakura_merge.contract import MergeCall, MergeMethod
from sakura_merge.params import build_options, parameter_names, resolve

PREFETCH_BYTES = 192 * 2**20  # input bytes read ahead of the computation
PREFETCH_TENSORS = 16
WRITE_QUEUE_BYTES = 256 * 2**20  # results (on the compute device) waiting for the writer thread
# the files mergekit copies from the donor model when it copies a tokenizer (mergekit.merge._copy_tokenizer)
TOKENIZER_FILES = (
    "tokenizer_config.json", "special_tokens_map.json", "tokenizer.json", "tokenizer.model", "added_tokens.json",
    "merges.txt", "chat_template.jinja", "generation_config.json", "chat_template.json",
    "video_preprocessor_config.json",
)


# -- reading ----------------------------------------------------------------------------------------
class Reader:
    """Reads tensors with positional reads on shared file descriptors (thread-safe, GIL released)."""

    def __init__(self, pin: bool):
        self._fds: dict[Path, int] = {}
        self._lock = threading.Lock()
        self.pin = pin

    def _fd(self, path: Path) -> int:
        with self._lock:
            if path not in self._fds:
                self._fds[path] = os.open(path, os.O_RDONLY)
            return self._fds[path]

    def read(self, info: TensorInfo):
        import torch

        buffer = torch.empty(info.nbytes, dtype=torch.uint8, pin_memory=self.pin)
        view = memoryview(buffer.numpy()) if info.nbytes else memoryview(b"")
        fd = self._fd(info.file)
        done = 0
        while done < info.nbytes:
            n = os.preadv(fd, [view[done:]], info.offset + done)
            if n <= 0:
                raise MergeInputError(f"{info.file}: unexpected end of file reading {info.name}")
            done += n
        dtype = getattr(torch, info.dtype)
        return buffer.view(dtype).reshape(info.shape)

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


# -- writing ----------------------------------------------------------------------------------------
class ShardWriter:
    """Streams tensors, in plan order, into safetensors shards with precomputed headers."""

    def __init__(self, out_dir: Path, entries: list[tuple[str, str, tuple[int, ...]]], shard_size: int):
        self.out_dir = out_dir
        shards: list[list[int]] = [[]]
        size = 0
        for i, (_, dtype, shape) in enumerate(entries):
            nbytes = _numel(shape) * ITEMSIZE[dtype]
            if shards[-1] and size + nbytes > shard_size:
                shards.append([])
                size = 0
            shards[-1].append(i)
            size += nbytes
        count = len(shards)
        self.files: list[str] = (
            ["model.safetensors"] if count == 1 else [f"model-{k + 1:05d}-of-{count:05d}.safetensors" for k in range(count)]
        )
        self.shard_of: dict[int, int] = {}
        self.headers: list[bytes] = []
        self.remaining: list[int] = []
        self.total_size = 0
        self.weight_map: dict[str, str] = {}
        for k, members in enumerate(shards):
            header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
            offset = 0
            for i in members:
                name, dtype, shape = entries[i]
                nbytes = _numel(shape) * ITEMSIZE[dtype]
                header[name] = {"dtype": ST_CODES[dtype], "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
                offset += nbytes
                self.shard_of[i] = k
                self.weight_map[name] = self.files[k]
            self.total_size += offset
            raw = json.dumps(header, separators=(",", ":")).encode()
            raw += b" " * (-len(raw) % 8)
            self.headers.append(len(raw).to_bytes(8, "little") + raw)
            self.remaining.append(len(members))
        self.expected = entries
        self._file = None
        self._current = -1

    def write(self, index: int, tensor: Any) -> None:
        import torch

        name, dtype, shape = self.expected[index]
        if tuple(tensor.shape) != tuple(shape) or str(tensor.dtype) != f"torch.{dtype}":
            raise RuntimeError(f"tensor {name}: produced {tensor.dtype} {list(tensor.shape)}, planned {dtype} {list(shape)}")
        shard = self.shard_of[index]
        if shard != self._current:
            if self._file is not None:
                self._file.close()
            self._file = open(self.out_dir / self.files[shard], "wb")  # noqa: SIM115 - kept open across calls, closed in close()
            self._file.write(self.headers[shard])
            self._current = shard
        data = tensor.detach().contiguous().reshape(-1).view(torch.uint8)
        if data.numel():
            self._file.write(memoryview(data.numpy()))
        self.remaining[shard] -= 1

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if len(self.files) > 1:
            index = {"metadata": {"total_size": self.total_size}, "weight_map": dict(sorted(self.weight_map.items()))}
            (self.out_dir / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


class BackgroundWriter:
    """Runs ``ShardWriter.write`` on its own thread (device-to-host copies and disk writes overlap compute).

    At most ``max_bytes`` of results wait in the queue (one larger result may wait alone), so host memory
    stays bounded whatever the model size.
    """

    def __init__(self, writer: ShardWriter, max_bytes: int = WRITE_QUEUE_BYTES):
        self.writer = writer
        self.max_bytes = max_bytes
        self.items: list = []
        self.queued = 0
        self.cond = threading.Condition()
        self.error: Optional[BaseException] = None
        self.closed = False
        self.thread = threading.Thread(target=self._loop, name="sakura-merge-writer", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while True:
            with self.cond:
                while not self.items and not self.closed:
                    self.cond.wait()
                if not self.items:
                    return
                index, tensor, nbytes = self.items.pop(0)
            try:
                if self.error is None:
                    self.writer.write(index, tensor.to("cpu") if tensor.device.type != "cpu" else tensor)
            except BaseException as exc:  # noqa: BLE001 - re-raised on the main thread
                self.error = exc
            del tensor
            with self.cond:
                self.queued -= nbytes
                self.cond.notify_all()

    def put(self, index: int, tensor: Any) -> None:
        nbytes = tensor.numel() * tensor.element_size()
        with self.cond:
            while self.queued and self.queued + nbytes > self.max_bytes and self.error is None:
                self.cond.wait()
            if self.error is not None:
                raise self.error
            self.items.append((index, tensor, nbytes))
            self.queued += nbytes
            self.cond.notify_all()

    def _stop(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()
        self.thread.join()

    def finish(self) -> None:
        self._stop()
        if self.error is not None:
            raise self.error
        self.writer.close()

    def abort(self) -> None:
        with self.cond:
            self.items.clear()
        self._stop()
        if self.writer._file is not None:
            self.writer._file.close()


# -- the merge --------------------------------------------------------------------------------------
FLOAT_DTYPES = ("float64", "float32", "float16", "bfloat16")


def promote(dtypes: list[str]) -> str:
    import torch

    result = getattr(torch, dtypes[0])
    for d in dtypes[1:]:
        result = torch.promote_types(result, getattr(torch, d))
    return str(result).removeprefix("torch.")


def tensor_dtypes(config: MergeConfig, tensor: OutTensor) -> tuple[str, str]:
    """(compute dtype, output dtype) of one output tensor, as mergekit chooses them."""
    if not all(d in FLOAT_DTYPES for d in tensor.in_dtypes):
        return tensor.in_dtypes[0], tensor.in_dtypes[0]
    compute = config.compute_dtype or promote(tensor.in_dtypes)
    return compute, config.output_dtype or compute


class ParameterBinder:
    """Resolves a method's parameters for each output tensor (filters, gradients, scopes) and validates them."""

    def __init__(self, config: MergeConfig, method: MergeMethod, layout: Layout):
        self.config = config
        self.method = method
        self.layout = layout
        names = parameter_names(method)
        self.per_model = [n for n in names if n in method.per_model or _field(method, n) in method.per_model]
        self.shared = [n for n in names if n not in self.per_model]
        self._cache: dict[Any, Any] = {}

    def _options(self, values: dict[str, Any], where: str) -> Any:
        key = tuple(sorted(values.items()))
        if key not in self._cache:
            self._cache[key] = build_options(self.method, values, where)
        return self._cache[key]

    def bind(self, tensor: OutTensor) -> tuple[Any, list[Any], Optional[int]]:
        slice_ = self.layout.slices[tensor.slice_index]
        scopes = [slice_.parameters, slice_.module_parameters, self.config.parameters]
        shared = {}
        for pname in self.shared:
            value = resolve(pname, scopes, tensor.name, tensor.t)
            if value is not None:
                shared[pname] = value
            elif pname in self.method.required:
                raise MergeInputError(f"tensor {tensor.name}: no value for parameter {pname} (no filter matches it)")
        params = self._options(shared, f"tensor {tensor.name}")
        base = slice_.base
        model_names = [m for m, _ in tensor.inputs]
        base_index = model_names.index(base) if base in model_names else None
        model_params = []
        for model, in_name in tensor.inputs:
            values: dict[str, Any] = {}
            if not (self.method.per_model_scope == "non_base" and model == base):
                own = [p for (m, _, _), p in zip(slice_.sources, slice_.source_parameters) if m == model]
                for pname in self.per_model:
                    value = resolve(pname, [*own, *scopes], in_name, tensor.t)
                    if value is not None:
                        values[pname] = value
                    elif pname in self.method.required:
                        raise MergeInputError(
                            f"tensor {in_name} of model {model}: no value for parameter {pname} (no filter matches it)"
                        )
            model_params.append(self._options(values, f"tensor {in_name} of model {model}"))
        return params, model_params, base_index


def _field(method: MergeMethod, name: str) -> str:
    from sakura_merge.params import field_name

    return field_name(method, name) or name


def check_method_inputs(method: MergeMethod, method_name: str, layout: Layout) -> None:
    for i, s in enumerate(layout.slices):
        names = [m for m, _, _ in s.sources]
        where = f"slices[{i}]" if len(layout.slices) > 1 or i else "models"
        if method.base == "required" and s.base not in names:
            if s.base is None:
                raise MergeInputError(f"{method_name} needs a base_model")
            raise MergeInputError(f"{where}: base model {s.base} is not among the models merged")
        if len(names) < method.min_models:
            raise MergeInputError(f"{where}: {method_name} needs at least {method.min_models} models, got {len(names)}")
        if method.max_models is not None and len(names) > method.max_models:
            raise MergeInputError(f"{where}: {method_name} takes at most {method.max_models} models, got {len(names)}")


Plan = tuple[OutTensor, str, str, tuple[Any, list[Any], Optional[int]]]  # tensor, compute and output dtypes, parameters


def bind_parameters(config: MergeConfig, method: MergeMethod, layout: Layout) -> list[Plan]:
    """Every output tensor with its dtypes and its parameters, resolved and validated (a value a parameter
    cannot take is an error naming the tensor): before any tensor is read, whichever executor merges."""
    binder = ParameterBinder(config, method, layout)
    plans = []
    for tensor in layout.tensors:
        compute, out = tensor_dtypes(config, tensor)
        plans.append((tensor, compute, out, binder.bind(tensor)))
    return plans


def mergekit_order(plans: list[Plan], ask_mergekit: Callable[[], list[str]]) -> list[Plan]:
    """The plans in the order mergekit's executor computes their tensors, the order a seeded randomized method
    draws in. mergekit sorts its task graph lexicographically by each task's group label, the largest name
    among the tensor's inputs (compared as strings: layer 10 before layer 2). Two tensors with the same label
    (a slice repeating another's layers) are ordered by the numbering of its graph's nodes, which follows
    Python's set iteration over task indices: only then is mergekit's own planner asked (``ask_mergekit``:
    the output tensors' names in its order)."""

    def label(plan: Plan) -> str:
        return max(name for _, name in plan[0].inputs)

    ordered = sorted(plans, key=label)
    labels = [label(plan) for plan in ordered]
    if len(set(labels)) == len(labels):
        return ordered
    position = {name: i for i, name in enumerate(ask_mergekit())}
    return sorted(plans, key=lambda plan: position.get(plan[0].name, len(position)))


class RandomStream:
    """The generators a randomized method draws from: one stream for the whole merge (``mergekit``: seeded once
    and drawn in mergekit's order, as ``mergekit-yaml --random-seed`` does with torch's global generator), or
    one per tensor seeded from the seed and its name (``per_tensor``); none without a seed (torch's global,
    unseeded generator: a different draw each run, as mergekit without a seed)."""

    def __init__(self, config: MergeConfig, method: MergeMethod, device: str):
        self.seed = config.seed if method.randomized else None
        self.per_tensor = config.random_stream == "per_tensor"
        self.device = device
        self.shared = None if self.seed is None or self.per_tensor else self._generator(self.seed)

    def _generator(self, seed: int) -> Any:
        import torch

        return torch.Generator(device=self.device).manual_seed(seed)

    def for_tensor(self, name: str) -> Any:
        if self.seed is None or not self.per_tensor:
            return self.shared
        return self._generator(_tensor_seed(self.seed, name))


def run_native(
    config: MergeConfig,
    method: MergeMethod,
    layout: Layout,
    plans: list[Plan],
    out_dir: Path,
    *,
    device: str,
    progress: Optional[Callable[[str, int], Any]] = None,
) -> dict[str, Any]:
    import torch

    randomness = RandomStream(config, method, device)
    writer = ShardWriter(out_dir, [(t.name, out, t.shape) for t, _, out, _ in plans], parse_size(config.shard_size))
    background = BackgroundWriter(writer)
    on_gpu = device.startswith("cuda")
    reader = Reader(pin=on_gpu)
    pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="sakura-merge-read")
    task = progress("merging tensors", len(plans)) if progress else None
    models = layout.models
    futures: dict[int, Future] = {}
    next_read = 0
    in_flight = 0
    read_bytes = 0

    def input_bytes(i: int) -> int:
        return sum(models[m].tensors[n].nbytes for m, n in plans[i][0].inputs)

    def read_inputs(i: int) -> list[Any]:
        tensors = [reader.read(models[m].tensors[n]) for m, n in plans[i][0].inputs]
        if not on_gpu:  # convert on the reader threads, overlapping the computation of earlier tensors
            dtype = getattr(torch, plans[i][1])
            tensors = [t.to(dtype) for t in tensors]
            if method.upcast_half and dtype in (torch.float16, torch.bfloat16):
                tensors = [t.float() for t in tensors]
        return tensors

    if on_gpu:
        torch.cuda.reset_peak_memory_stats()
    try:
        with torch.inference_mode():
            for i, (tensor, compute, out, (params, model_params, base_index)) in enumerate(plans):
                while next_read < len(plans) and (
                    next_read <= i or (in_flight < PREFETCH_BYTES and next_read - i < PREFETCH_TENSORS)
                ):
                    futures[next_read] = pool.submit(read_inputs, next_read)
                    in_flight += input_bytes(next_read)
                    next_read += 1
                raw = futures.pop(i).result()
                in_flight -= input_bytes(i)
                read_bytes += input_bytes(i)
                dtype = getattr(torch, compute)
                tensors = raw if not on_gpu else [t.to(device, non_blocking=True).to(dtype) for t in raw]
                del raw
                if compute not in FLOAT_DTYPES:
                    result = tensors[0]
                else:
                    generator = randomness.for_tensor(tensor.name)
                    call = MergeCall(tensor.name, tensors, base_index, params, model_params, generator)
                    result = method.run(call)
                    if not isinstance(result, torch.Tensor) or tuple(result.shape) != tuple(tensor.shape):
                        raise MergeInputError(
                            f"merge method {config.merge_method} returned "
                            f"{getattr(result, 'shape', type(result).__name__)} for tensor {tensor.name}, expected {list(tensor.shape)}"
                        )
                    result = result.to(dtype).to(getattr(torch, out))
                del tensors
                background.put(i, result)
                del result
                if task is not None:
                    task.advance()
        background.finish()
    except BaseException:
        background.abort()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        reader.close()
        if task is not None and hasattr(task, "close"):
            task.close()
    write_side_files(config, layout, out_dir)
    metrics: dict[str, Any] = {
        "tensors": len(plans),
        "shards": len(writer.files),
        "output_bytes": writer.total_size,
        "input_bytes_read": read_bytes,
    }
    if on_gpu:
        metrics["peak_gpu_bytes"] = int(torch.cuda.max_memory_allocated())
    return metrics


def _tensor_seed(seed: int, name: str) -> int:
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


# -- config, tokenizer, generation config -----------------------------------------------------------
def write_side_files(config: MergeConfig, layout: Layout, out_dir: Path) -> None:
    """The donor's config (with the output's layer count and dtype) and generation config, and the tokenizer."""
    donor = layout.origins[layout.donor]
    data = json.loads((donor / "config.json").read_text())
    group = config.single_group
    if group is not None and group.slices:
        data["num_hidden_layers"] = len(layout.output_layer_sources())
    dtype = config.output_dtype or config.compute_dtype
    if dtype:
        key = "torch_dtype" if "torch_dtype" in data and "dtype" not in data else "dtype"
        data[key] = dtype
    (out_dir / "config.json").write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    if (donor / "generation_config.json").is_file():
        shutil.copy(donor / "generation_config.json", out_dir / "generation_config.json")
    write_tokenizer(config, layout, out_dir)


def write_tokenizer(config: MergeConfig, layout: Layout, out_dir: Path) -> None:
    """mergekit's rules: with ``tokenizer_source`` the source's tokenizer (the base model's for ``base`` and, over
    one vocabulary, ``union``) is loaded and saved again; otherwise the donor's files are copied when its
    weights' directory has a tokenizer and no ``chat_template`` is set, else its tokenizer is loaded and saved
    again (with the template)."""
    weights = layout.models[layout.donor].path
    ts = config.tokenizer_source
    if ts:
        save_tokenizer(config, layout, layout.origins.get(ts, layout.origins[layout.donor]), out_dir)
    elif not config.chat_template and _has_tokenizer(weights):
        for name in TOKENIZER_FILES:
            if (weights / name).is_file():
                shutil.copy(weights / name, out_dir / name)
    else:
        save_tokenizer(config, layout, layout.origins[layout.donor], out_dir)


def _has_tokenizer(directory: Path) -> bool:
    return (directory / "tokenizer_config.json").is_file() and any(
        (directory / name).is_file() for name in ("tokenizer.json", "tokenizer.model")
    )


def save_tokenizer(config: MergeConfig, layout: Layout, source: Path, out_dir: Path) -> None:
    from transformers import AutoTokenizer

    from sakura_merge.templates import resolve_chat_template

    tokenizer = AutoTokenizer.from_pretrained(str(source), trust_remote_code=config.trust_remote_code)
    if config.chat_template:
        inputs = [layout.origins[name] for name in layout.models]
        template = resolve_chat_template(config.chat_template, inputs, config.trust_remote_code)
        if template is not None:
            tokenizer.chat_template = template
    tokenizer.save_pretrained(str(out_dir))
