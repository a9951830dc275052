"""The encoder as an int8 ONNX Runtime graph (``EncoderConfig(precision="onnx-int8")``), built once per model.

How the graph is made (BENCHMARKS.md "ONNX Runtime int8" has the figures of each step):

1. ``torch.onnx.export`` of the local Hugging Face encoder (eager attention, dynamic batch and length) returning
   the last hidden state; pooling and normalisation stay in :class:`fractal_core.embedding.encoder.Encoder`, one code for
   every backend.
2. Every linear layer (constant-weight MatMul) gets two rescalings that are exact in float:
   - SmoothQuant: the input is divided per channel by ``s = max|x|^0.5 / max|W row|^0.5`` and the weight rows
     multiplied by it, so the few outlier channels (up to 15x the median one in MiniLM) move their range into
     the weights, which are quantised per output channel; ``max|x|`` comes from calibration batches (the bundled
     demo sentences, so the build needs no user data and gives the same graph everywhere);
   - every token's row is divided by its largest absolute value and the product multiplied back by it, so one
     dynamic activation scale per batch no longer costs short or quiet tokens their precision.
3. ``onnxruntime.quantization.quantize_dynamic``: 8-bit weights per output channel (signed with VNNI, unsigned
   without: :func:`int8_weight_type`), 8-bit activations per batch, on the linear layers only (attention's score
   products stay float).

Plain dynamic int8 (step 3 alone) kept min cosine 0.967 to float32 over 3,000 ProcessBench and DelucionQA
sentences; with step 2, 0.995.

The graph is written to ``<cache dir>/onnx/<encoder id>/model.onnx`` through a temporary file that is renamed into
place, so concurrent processes and crashes never leave a half-written model; the export runs offline from the
model directory. The encoder id (``...-onnx-int8``) keeps its vectors apart from float ones in the cache.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

_OPSET = 17
CALIBRATION_TEXTS = 512
"""How many bundled demo sentences calibrate the smoothing."""
CALIBRATION_BATCH_TOKENS = 4096
"""Their batches' token budget, fixed so that the graph does not depend on the encoder's batch setting."""
SMOOTHING_ALPHA = 0.5
"""SmoothQuant's migration strength (0.3 and 0.75 kept a lower mean or min cosine, BENCHMARKS.md)."""


def int8_weight_type(cpuinfo: str | None = None) -> str:
    """``"qint8"`` (signed int8 weights) on a CPU with VNNI int8 dot products, else ``"quint8"``.

    ONNX Runtime multiplies uint8 activations by int8 weights with VNNI where the CPU has it; without it (plain
    AVX2) that product goes through 16-bit pair sums that saturate, and the graph's vectors fell to min cosine
    0.980 to float32 (0.989 with ``reduce_range``), below the 0.99 a faster encoder must keep. uint8 weights
    take the path without saturation: 0.995 there, at the same speed within 2-10% (BENCHMARKS.md, "ONNX
    Runtime int8"). ``cpuinfo``: the text of /proc/cpuinfo (read when None; unreadable counts as no VNNI).
    """
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    flags = set(cpuinfo.split())
    return "qint8" if flags & {"avx512_vnni", "avx_vnni", "amx_int8"} else "quint8"


def onnx_recipe() -> str:
    """What the graph is built from besides the model files; hashed into the encoder id, so a changed build (or
    the weight type another CPU gets, :func:`int8_weight_type`) never serves vectors cached by another one."""
    return (
        f"onnx-int8:smoothquant={SMOOTHING_ALPHA};rows=max-abs;calibration=demo[:{CALIBRATION_TEXTS}]"
        f"@{CALIBRATION_BATCH_TOKENS};opset={_OPSET};weights={int8_weight_type()}-per-channel"
    )


def onnx_model_path(cache_root: Path, encoder_id: str) -> Path:
    """Where the int8 graph of the encoder with ``encoder_id`` lives under ``cache_root``."""
    return cache_root / "onnx" / encoder_id / "model.onnx"


Batches = Callable[[], Iterable[tuple[np.ndarray, np.ndarray]]]


def build_int8_graph(
    load_model: Callable[[], torch.nn.Module],
    target: Path,
    *,
    token_type_ids: bool,
    calibration: Batches,
    alpha: float = SMOOTHING_ALPHA,
) -> Path:
    """Export, smooth, row-scale and quantise the encoder to ``target`` unless it is already there.

    ``load_model`` returns the float encoder with eager attention (called only when the graph is built: the SDPA
    path exports extra mask code); ``token_type_ids``: whether the model takes them (zeros are fed);
    ``calibration`` yields ``(input_ids, attention_mask)`` int64 ``(batch, tokens)`` batches whose activations
    set the per-channel smoothing (``alpha``: share of the activation range moved into the weights)."""
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".build-") as scratch:
        exported = Path(scratch) / "float.onnx"
        scaled = Path(scratch) / "scaled.onnx"
        quantized = Path(scratch) / "model.onnx"
        _export_float(load_model(), exported, token_type_ids=token_type_ids)
        _smooth_and_scale_rows(exported, scaled, calibration=calibration, alpha=alpha)
        _quantize(scaled, quantized)
        quantized.replace(target)  # atomic: a reader sees the whole file or none
    return target


def _export_float(model: torch.nn.Module, path: Path, *, token_type_ids: bool) -> None:
    import warnings

    class LastHidden(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            kwargs: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask}
            if token_type_ids:
                kwargs["token_type_ids"] = torch.zeros_like(input_ids)
            return self.inner(**kwargs).last_hidden_state  # (batch, tokens, dim)

    example = torch.ones(2, 8, dtype=torch.int64)
    dynamic = {0: "batch", 1: "tokens"}
    with warnings.catch_warnings(), torch.inference_mode():
        # Tracer warnings about Python-side shape checks: the axes stay dynamic all the same.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            LastHidden(model.eval()),
            (example, example),
            str(path),
            input_names=["input_ids", "attention_mask"],
            output_names=["hidden"],
            dynamic_axes={"input_ids": dynamic, "attention_mask": dynamic, "hidden": dynamic},
            opset_version=_OPSET,
            dynamo=False,
        )


def _channel_max(path: Path, tensors: list[str], calibration: Batches) -> dict[str, np.ndarray]:
    """Largest |activation| per channel (last axis) of each of ``tensors`` over the real tokens of the
    calibration batches, from the float graph at ``path``."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    model = onnx.load(str(path))
    model.graph.output.extend(
        helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in tensors
    )
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    found: dict[str, np.ndarray] = {}
    for input_ids, mask in calibration():
        outputs = session.run(tensors, {"input_ids": input_ids, "attention_mask": mask})
        real = mask.astype(bool)  # (batch, tokens)
        for name, value in zip(tensors, outputs, strict=True):
            peak = np.abs(value[real]).max(axis=0)  # (channels,)
            found[name] = np.maximum(found[name], peak) if name in found else peak
    if not found:
        raise ValueError("the calibration yielded no batch")
    return found


def _smooth_and_scale_rows(source: Path, target: Path, *, calibration: Batches, alpha: float) -> None:
    """Rewrite each constant-weight MatMul (the linear layers) as
    ``MatMul(x' / r, diag(s) W) * r`` with ``x' = x / s`` and ``r`` = max |x'| over the last axis.

    ``s`` per input channel is SmoothQuant's ``max|x|^alpha / max|W row|^(1 - alpha)`` (``max|x|`` from the
    calibration batches): it moves the few outlier channels' range into the weights, which are quantised per
    output channel; ``r`` gives every token its own range. Both are exact in float."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(source))
    graph = model.graph
    weights = {tensor.name: tensor for tensor in graph.initializer}
    chosen = [node for node in graph.node if node.op_type == "MatMul" and node.input[1] in weights]
    if not chosen:
        raise ValueError(f"{source.name} has no linear layer (constant-weight MatMul) to quantise")
    inputs = list(dict.fromkeys(node.input[0] for node in chosen))
    activation_max = _channel_max(source, inputs, calibration)
    weight_max: dict[str, np.ndarray] = {}
    for node in chosen:
        row_max = np.abs(numpy_helper.to_array(weights[node.input[1]])).max(axis=1)  # (in,) W is (in, out)
        previous = weight_max.get(node.input[0])
        weight_max[node.input[0]] = row_max if previous is None else np.maximum(previous, row_max)
    smooth = {
        name: np.clip(activation_max[name], 1e-5, None) ** alpha
        / np.clip(weight_max[name], 1e-5, None) ** (1 - alpha)
        for name in inputs
    }  # (in,) per input tensor
    for node in chosen:
        matrix = numpy_helper.to_array(weights[node.input[1]])
        weights[node.input[1]].CopyFrom(
            numpy_helper.from_array(
                (matrix * smooth[node.input[0]][:, None]).astype(np.float32), node.input[1]
            )
        )
    eps = "row_scale_eps"
    chosen_names = {node.name for node in chosen}
    nodes: list[Any] = []
    scaled: dict[str, tuple[str, str]] = {}  # input tensor -> (scaled input, row max)
    for node in graph.node:
        if node.name not in chosen_names:
            nodes.append(node)
            continue
        source_name = node.input[0]
        if source_name not in scaled:
            absolute, row_max, safe = (
                f"{source_name}_abs",
                f"{source_name}_rowmax",
                f"{source_name}_rowsafe",
            )
            rows, inverse, smoothed = (
                f"{source_name}_rows",
                f"{source_name}_inv_smooth",
                f"{source_name}_smooth",
            )
            graph.initializer.append(
                numpy_helper.from_array((1.0 / smooth[source_name]).astype(np.float32), inverse)
            )
            nodes += [
                helper.make_node("Mul", [source_name, inverse], [smoothed]),
                helper.make_node("Abs", [smoothed], [absolute]),
                helper.make_node("ReduceMax", [absolute], [row_max], axes=[-1], keepdims=1),
                helper.make_node("Max", [row_max, eps], [safe]),  # an all-zero row stays zero, not NaN
                helper.make_node("Div", [smoothed, safe], [rows]),
            ]
            scaled[source_name] = (rows, safe)
        rows, safe = scaled[source_name]
        product = f"{node.output[0]}_rows"
        nodes.append(helper.make_node("MatMul", [rows, node.input[1]], [product], name=node.name))
        nodes.append(helper.make_node("Mul", [product, safe], [node.output[0]], name=f"{node.name}_rescale"))
    graph.initializer.append(numpy_helper.from_array(np.array(1e-6, dtype=np.float32), eps))
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.save(model, str(target))


def _quantize(source: Path, target: Path) -> None:
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    quiet = logging.getLogger()  # the quantiser logs a pre-processing hint at WARNING on the root logger
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        quantize_dynamic(
            str(source),
            str(target),
            weight_type=QuantType.QInt8 if int8_weight_type() == "qint8" else QuantType.QUInt8,
            per_channel=True,
            op_types_to_quantize=["MatMul"],
            extra_options={"MatMulConstBOnly": True},
        )
    finally:
        quiet.setLevel(level)


class OnnxHidden:
    """Runs the int8 graph: ``(input_ids, attention_mask)`` int64 ``(batch, tokens)`` -> last hidden state
    ``(batch, tokens, dim)`` float32, on as many threads as torch uses (``torch.get_num_threads()``)."""

    def __init__(self, path: Path) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # errors only
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        feeds = {"input_ids": input_ids, "attention_mask": attention_mask}
        return self.session.run(["hidden"], feeds)[0]
