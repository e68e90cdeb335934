"""The reduced paper files are in the official formats, resolve through the registry, and load as the real ones do
(what differs from the real files: conftest.py)."""
import json

import open_clip
import pytest
import torch
from safetensors import safe_open
from segment_anything.build_sam import _build_sam

from paper_files import PaperFiles, write_llava  # benchmarks/paper_files.py
from samllava.assets import weights
from samllava.cli import main
from samllava.coarse.clip_model import architecture_name
from samllava.core.config import load_profile
from samllava.describe.build import build_describer
from samllava.core.config import SamConfig
from samllava.sam.build import build_sam_vit_h, check_state_dict, global_blocks


def test_full_size_files_need_no_profile_change_and_reduced_ones_only_depths():
    paper = load_profile("paper").to_dict()
    assert PaperFiles().profile().to_dict() == paper
    reduced = PaperFiles.reduced(sam_image_size=256).profile().to_dict()
    changed = {f"{s}.{k}" for s, fields in paper.items() if isinstance(fields, dict)
               for k, v in fields.items() if reduced[s][k] != v}
    assert changed == {"clip.depth", "clip.layers", "fewshot.layers", "sam.depth", "sam.image_size"}
    assert reduced["clip"]["layers"] == reduced["fewshot"]["layers"] == (1, 2, 3)


def test_sam_file_is_what_segment_anything_loads(paper_files):
    """segment_anything's own builder and loader (at 2 blocks, global attention in the last) take the file, and
    samllava's vit_h at depth 2 has exactly its keys and shapes."""
    sam = _build_sam(encoder_embed_dim=1280, encoder_depth=2, encoder_num_heads=16, encoder_global_attn_indexes=[1],
                     checkpoint=str(paper_files["sam"]))
    official = {k: v.shape for k, v in sam.state_dict().items()}
    with torch.device("meta"):
        ours = {k: v.shape for k, v in build_sam_vit_h(depth=2).state_dict().items()}
    assert ours == official
    state = torch.load(paper_files["sam"], map_location="cpu", weights_only=True)
    assert {k: v.shape for k, v in state.items()} == official


def test_global_attention_blocks_are_segment_anythings_at_every_official_depth():
    # segment_anything.build_sam: vit_h (7, 15, 23, 31), vit_l (5, 11, 17, 23), vit_b (2, 5, 8, 11)
    assert [global_blocks(d) for d in (32, 24, 12)] == [(7, 15, 23, 31), (5, 11, 17, 23), (2, 5, 8, 11)]
    assert global_blocks(2) == (1,) and global_blocks(1) == (0,)


def test_reduced_sam_file_for_the_full_profile_is_named_with_its_depth(paper_files):
    state = torch.load(paper_files["sam"], map_location="cpu", weights_only=True)
    with pytest.raises(ValueError, match=r"is this sam_vit_h \(image_size 1024, depth 2\)\?"):
        check_state_dict(state, SamConfig(), "sam.pth")
    check_state_dict(state, SamConfig(depth=2), "sam.pth")


def test_clip_file_is_what_open_clip_loads_through_pretrained(paper_files):
    """open_clip's own loader (``pretrained=`` a file: unwraps, strips ``module.``, resizes the positional
    embedding from 224 to 240 px, strict) takes the file."""
    cfg = PaperFiles.reduced().profile().clip
    model = open_clip.create_model(architecture_name(cfg), pretrained=str(paper_files["clip"]),
                                   force_image_size=cfg.image_size)
    assert len(model.visual.transformer.resblocks) == 3 and model.visual.grid_size == (15, 15)
    state = torch.load(paper_files["clip"], map_location="cpu", weights_only=True)
    assert set(state) == {"epoch", "name", "state_dict"}
    assert state["state_dict"]["module.positional_embedding"].shape == (77, 512)
    assert state["state_dict"]["module.visual.positional_embedding"].shape == (197, 768)  # 224 px, as published


def _tensors(folder):
    index = json.loads((folder / "model.safetensors.index.json").read_text())["weight_map"]
    out = {}
    for shard in sorted(set(index.values())):
        with safe_open(str(folder / shard), "pt") as f:
            out.update({k: (tuple(f.get_slice(k).get_shape()), f.get_slice(k).get_dtype()) for k in f.keys()})
    assert set(out) == set(index)
    return out


def test_shard_writer_writes_what_save_pretrained_writes(tmp_path):
    """The paper-size benchmark's writer (meta device, one shard at a time) and ``save_pretrained`` give the same
    files, key names, shapes, dtypes and configuration."""
    files = PaperFiles.tiny()
    a = write_llava(files, tmp_path / "shards", shard_bytes=200_000)
    b = write_llava(files, tmp_path / "saved", shard_bytes=200_000, save_pretrained=True)
    assert sorted(p.name for p in a.iterdir()) == sorted(p.name for p in b.iterdir())
    assert _tensors(a) == _tensors(b)
    assert any(k.startswith("language_model.model.layers.0.") for k in _tensors(a))  # the checkpoint's names
    config_a, config_b = (json.loads((f / "config.json").read_text()) for f in (a, b))
    assert config_a == config_b and config_a["dtype"] == "float16"


def test_files_resolve_from_the_weights_folder_they_were_fetched_into(paper_weights, profiles, capsys):
    for wid, name in (("clip_vit_b16_laion400m", "vit_b_16-laion400m_e32.pt"), ("sam_vit_h", "sam_vit_h_4b8939.pth"),
                      ("llava_1_5_7b", "llava-1.5-7b-hf")):
        assert weights.resolve(wid) == paper_weights / name
    folder = paper_weights / "llava-1.5-7b-hf"
    assert not weights.hf_folder_missing(folder)
    assert len(json.loads((folder / "model.safetensors.index.json").read_text())["weight_map"]) > 0
    assert main(["fetch-weights", "--profile", str(profiles["1024"]), "--quiet"]) == 0  # all there: nothing fetched
    out = capsys.readouterr().out
    assert out.count(str(paper_weights)) == 3


def test_llava_weights_reach_float32_unchanged(paper_weights):
    """On the CPU the float16 checkpoint is read straight into float32 (through bfloat16 it would lose bits)."""
    profile = PaperFiles.reduced().profile()
    describer = build_describer(profile, dtype=torch.float32)
    folder = paper_weights / "llava-1.5-7b-hf"
    key = "language_model.model.layers.0.self_attn.q_proj.weight"
    shard = json.loads((folder / "model.safetensors.index.json").read_text())["weight_map"][key]
    with safe_open(str(folder / shard), "pt") as f:
        want = f.get_tensor(key)
    got = describer.llava.model.language_model.layers[0].self_attn.q_proj.weight
    assert got.dtype == torch.float32 and want.dtype == torch.float16
    assert torch.equal(got, want.float())
    assert describer.llava.config.text_config.hidden_size == 4096
