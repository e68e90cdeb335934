"""``samllava export``'s work: a model with its support set -> two ONNX graphs and a JSON beside them.

:func:`export_detector` writes, for ``--out model.onnx``:

* ``model.onnx``: :class:`~samllava.export.graphs.DetectGraph` (images -> decision map, score, SAM
  embedding, and the leave-one-out calibration scores where that rule judges);
* ``model.fine.onnx``: :class:`~samllava.export.graphs.FineGraph` (SAM embedding, M'_coarse -> mask logits);
* ``model.json``: what the runner needs between and around them (input side and range, the verdict's rule
  and thresholds, the graphs' input and output names) and what the export came from (profile, category,
  support, memory size and cap, the terms, the commit).

The graphs are traced (``torch.onnx.export`` with ``dynamo=False``; the dynamo exporter needs onnxscript)
with a dynamic batch. The antialiased bilinear resize that the backbones' preprocessing applies has no ONNX
operator that reproduces it (ONNX Resize's antialias weights differ from torch's), so while exporting it is
traced as two products with the constant weight matrices of :func:`~samllava.export.numpy_steps.resize_matrix`.
"""
from __future__ import annotations

import warnings
from contextlib import contextmanager
from pathlib import Path

import torch
from torch.onnx import symbolic_helper

from samllava.core.provenance import provenance
from samllava.core.results import write_json
from samllava.export.coreset import SupportTables, support_tables
from samllava.export.graphs import DetectGraph, FineGraph, LeaveOneOut
from samllava.export.numpy_steps import resize_matrix
from samllava.export.spec import (DETECT_INPUTS, DETECT_OUTPUTS, FINE_INPUTS, FINE_OUTPUTS, FORMAT, MEMORY_CAP,
                                  NOT_EXPORTED, OPSET, model_files)
from samllava.model.sam_llava import SamLlava


@contextmanager
def antialias_as_products(opset: int = OPSET):
    """While exporting: torch's antialiased bilinear resize (B, C, H, W) -> (B, C, h, w) as
    ``rows @ x @ cols`` with the constant (h, H) and (W, w) weights of :func:`resize_matrix`."""
    def symbolic(g, x, output_size, align_corners, scale_factors):
        _, _, h_in, w_in = symbolic_helper._get_tensor_sizes(x)
        h_out, w_out = symbolic_helper._maybe_get_const(output_size, "is")
        rows = g.op("Constant", value_t=torch.from_numpy(resize_matrix(h_in, h_out)))
        cols = g.op("Constant", value_t=torch.from_numpy(resize_matrix(w_in, w_out).T.copy()))
        return g.op("MatMul", rows, g.op("MatMul", x, cols))

    torch.onnx.register_custom_op_symbolic("aten::_upsample_bilinear2d_aa", symbolic, opset)
    try:
        yield
    finally:
        torch.onnx.unregister_custom_op_symbolic("aten::_upsample_bilinear2d_aa", opset)


def _trace(module: torch.nn.Module, args: tuple, path: Path, inputs: list[str], outputs: list[str],
           opset: int) -> None:
    """``torch.onnx.export`` of ``module`` with every input and output's first axis dynamic (the batch)."""
    axes = {name: {0: "batch"} for name in [*inputs, *outputs]}
    fastpath = torch.backends.mha.get_fastpath_enabled()
    # nn.MultiheadAttention's fused inference kernel (CLIP's blocks) has no ONNX form; its plain path does
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with warnings.catch_warnings():
            # the tracer warns where a shape or a check's value becomes a constant: the side S, the channel
            # counts and the range checks of the inputs are constants of an export by design
            warnings.simplefilter("ignore")
            torch.onnx.export(module, args, str(path), dynamo=False, opset_version=opset, input_names=inputs,
                              output_names=outputs, dynamic_axes=axes, do_constant_folding=True)
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)


def build_graphs(model: SamLlava, tables: SupportTables, text_feats: torch.Tensor | None
                 ) -> tuple[DetectGraph, FineGraph]:
    """The two graphs of ``model`` (on the CPU) with a support's ``tables``."""
    side = model.profile.data.image_size
    loo = None
    if tables.features is not None:
        loo = LeaveOneOut(tables.held, tables.features, tables.scales, side, tables.term)
    detect = DetectGraph(coarse=model.coarse, cascade=model.cascade, memory=tables.memory, scales=tables.scales,
                         side=side, text_feats=text_feats, leave_one_out=loo)
    return detect.eval(), FineGraph(model.cascade, side).eval()


@torch.no_grad()
def export_detector(model: SamLlava, out: str | Path, *, category: str | None = None, cap: int | None = MEMORY_CAP,
                    support: str | None = None, checkpoint: str | None = None, opset: int = OPSET) -> dict:
    """Export the detection part of ``model`` (its support set already fitted, on the CPU) for ``category``.

    ``cap``: memory patches per level (a coreset above it, :mod:`samllava.export.coreset`; None: no cap).
    ``support``, ``checkpoint``: what to record as the support folder and the weights. Returns the JSON record.
    """
    if model.device.type != "cpu":
        raise ValueError(f"export: the model must be on the CPU, it is on {model.device}")
    if model.cascade.cfg.prompt != "mask":
        raise ValueError(f"export: SAM prompt {model.cascade.cfg.prompt!r} is not exported (only 'mask': box and "
                         "point prompts come from connected components, which ONNX cannot compute)")
    side = model.profile.data.image_size
    if model.coarse.has_support and model.coarse.calibrator.support_side != side:
        raise ValueError(f"export: the support was fitted at {model.coarse.calibrator.support_side} px, the profile "
                         f"reads images at {side} px (data.image_size); fit it at that side")
    text = model.text(category)[0] if model.coarse.zero_shot_active() else None
    tables = support_tables(model.coarse, text, cap)
    detect, fine = build_graphs(model, tables, text)
    files = model_files(out)
    files["detect"].parent.mkdir(parents=True, exist_ok=True)
    # traced on two normal images: a batch of one could let the tracer fix the batch axis somewhere
    example = model.coarse.calibrator.calibration_images[:2].float().cpu()
    example = example if example.shape[0] == 2 else example[:1].expand(2, -1, -1, -1).contiguous()
    outputs = list(DETECT_OUTPUTS if tables.features is not None else DETECT_OUTPUTS[:3])
    with antialias_as_products(opset):
        _trace(detect, (example,), files["detect"], list(DETECT_INPUTS), outputs, opset)
        embedding = detect(example)[2]
        coarse = torch.zeros(example.shape[0], side, side)
        coarse[:, side // 4: side // 2, side // 4: side // 2] = 1  # any mask: the graph has no branch on it
        _trace(fine, (embedding, coarse), files["fine"], list(FINE_INPUTS), list(FINE_OUTPUTS), opset)
    record = _record(model, tables, files, outputs, opset, category, cap, support, checkpoint)
    write_json(files["json"], record, run=provenance(profile=model.profile, data={"support": support or "given"}))
    return record


def _record(model: SamLlava, tables: SupportTables, files: dict[str, Path], outputs: list[str], opset: int,
            category: str | None, cap: int | None, support: str | None, checkpoint: str | None) -> dict:
    """The JSON beside the graphs (the module docstring lists what it holds)."""
    coarse, cal, sam = model.coarse, model.coarse.calibrator, model.cascade.sam
    normalise = {"few-shot backbone": _mean_std(cal.extractor.preprocess, cal.extractor.preprocess.size)}
    if coarse.zero_shot_active():
        normalise["clip"] = _mean_std(coarse.zero_shot.preprocess, coarse.zero_shot.preprocess.size)
    if model.cascade.encoder is None:
        normalise["sam"] = {"mean": (sam.pixel_mean.flatten() / 255).tolist(),
                            "std": (sam.pixel_std.flatten() / 255).tolist(), "side": sam.image_encoder.img_size}
    verdict = {**tables.verdict.to_dict(), "held_out": list(tables.verdict.held_out)}
    return {
        "format": FORMAT, "profile": model.profile.name, "category": model.phrase(category),
        "graphs": {"detect": files["detect"].name, "fine": files["fine"].name},
        "inputs": {"detect": list(DETECT_INPUTS), "fine": list(FINE_INPUTS)},
        "outputs": {"detect": outputs, "fine": list(FINE_OUTPUTS)},
        "input": {"side": model.profile.data.image_size, "layout": "(B, 3, S, S) float32 RGB in [0, 1]",
                  "resize": "antialiased bilinear to S x S (torch's F.interpolate, antialias=True)",
                  "normalisation inside the graph": normalise},
        "verdict": verdict, "terms": coarse.terms(),
        "support": {"folder": support, "images": cal.support_size, "patches": tables.patches,
                    "memory": [m.shape[0] for m in tables.memory], "cap": cap, "coreset": tables.capped,
                    "calibration": "support images held out" if cal.left_out_calibration else
                    f"{cal.calibration_images.shape[0]} other normal images"},
        "checkpoint": checkpoint, "answer": "from the verdict", "not exported": NOT_EXPORTED, "opset": opset,
    }


def _mean_std(preprocess, side: int) -> dict:
    return {"mean": preprocess.mean.flatten().tolist(), "std": preprocess.std.flatten().tolist(), "side": side}
