"""The vision domain's ViT and the timm bridge: outputs equal to timm's own forward, one map
per block, refusals, checkpoints; data generators and explanations."""

import numpy as np
import pytest
import torch
from reference import reference_attention

from attnlab.core.analysis import attention_rollout
from attnlab.core.capture import record_attention
from attnlab.core.registry import create
from attnlab.domains.vision import (
    LocateScenes,
    VisibleAttention,
    ViTConfig,
    explain_grid,
    load_timm,
    make_visible,
    pointing_hits,
    read_state_dict,
    timm_layout,
)
from attnlab.domains.vision.data import SHAPES, digits_split, shape_mask

timm = pytest.importorskip("timm")

# (name, kwargs): ViT, distilled DeiT (2 prefix tokens), DeiT-III (layer scale), registers +
# GAP (4 prefix, no class token), a hybrid (ResNet stem), qk-norm, a non-square input
ARCHS = [
    ("vit_tiny_patch16_224", dict(img_size=64, depth=2)),
    ("deit_tiny_distilled_patch16_224", dict(img_size=64, depth=2)),
    ("deit3_small_patch16_224", dict(img_size=48, depth=2)),
    ("vit_medium_patch16_reg4_gap_256", dict(img_size=64, depth=2)),
    ("vit_tiny_r_s16_p8_224", dict(img_size=64, depth=2)),
    ("vit_small_patch16_224", dict(img_size=(48, 80), depth=2, qk_norm=True)),
]


def _hw(kw):
    s = kw["img_size"]
    return (s, s) if isinstance(s, int) else tuple(s)


@pytest.mark.parametrize("name,kw", ARCHS, ids=[a for a, _ in ARCHS])
def test_make_visible_matches_timm_and_records_every_block(name, kw):
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, **kw).eval()
    x = torch.randn(2, 3, *_hw(kw))
    with torch.no_grad():
        ref = model(x)
        keys = list(model.state_dict())
        assert make_visible(model) is model
        out = model(x)
        with record_attention(model) as maps:
            recorded = model(x)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(recorded, ref, atol=1e-5, rtol=1e-5)
    assert list(model.state_dict()) == keys
    depth = len(model.blocks)
    assert len(maps) == depth
    layout = timm_layout(model, _hw(kw))
    assert layout.num_prefix == model.num_prefix_tokens
    for n in maps:
        w = maps[n]
        assert w.shape[-1] == w.shape[-2] == layout.length
        torch.testing.assert_close(w.sum(-1), torch.ones_like(w.sum(-1)))


def test_visible_attention_weights_equal_float64_reference():
    torch.manual_seed(1)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32,
                              qk_norm=True).eval()  # fmt: skip
    attn = model.blocks[0].attn
    x = torch.randn(2, 5, 192)
    with torch.no_grad():
        qkv = attn.qkv(x).reshape(2, 5, 3, 3, 64).permute(2, 0, 3, 1, 4)
        q, k = attn.q_norm(qkv[0]), attn.k_norm(qkv[1])
        _, ref_w, _ = reference_attention(q, k, qkv[2])
        make_visible(model)
        with record_attention(model.blocks[0]) as maps:
            model.blocks[0].attn(x)
    torch.testing.assert_close(maps[next(iter(maps))].double(), ref_w, atol=1e-6, rtol=1e-5)


def test_make_visible_is_idempotent_and_keeps_training_flag():
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32)
    model.train()
    make_visible(model)
    make_visible(model)
    assert all(isinstance(b.attn, VisibleAttention) and b.attn.training for b in model.blocks)


@pytest.mark.parametrize(
    "name,kw",
    [
        ("eva02_tiny_patch14_224", dict(depth=1)),
        ("beit_base_patch16_224", dict(depth=1, embed_dim=64, num_heads=2)),
        ("swin_tiny_patch4_window7_224", dict(depths=(1, 1, 1, 1), embed_dim=24)),
    ],
)
def test_other_attention_layers_are_refused_by_class(name, kw):
    model = timm.create_model(name, pretrained=False, **kw)
    with pytest.raises(ValueError, match=r"(Eva|Window)?Attention") as e:
        make_visible(model)
    assert "supported: timm.layers.Attention" in str(e.value)


def test_models_without_attention_are_refused():
    with pytest.raises(ValueError, match="no timm.layers.Attention"):
        make_visible(timm.create_model("resnet18", pretrained=False))
    with pytest.raises(TypeError):
        make_visible("vit")


def test_checkpoint_files_load_into_timm_models(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(2)
    src = timm.create_model("deit_tiny_patch16_224", pretrained=False, img_size=32,
                            num_classes=7, depth=2).eval()  # fmt: skip
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        ref = src(x)
    sd = {k: v.contiguous() for k, v in src.state_dict().items()}
    save_file(sd, str(tmp_path / "m.safetensors"))
    torch.save({"model": sd}, tmp_path / "m.pth")  # a state dict, read with weights_only=True
    for f in ("m.safetensors", "m.pth"):
        m = load_timm("deit_tiny_patch16_224", tmp_path / f, img_size=32, depth=2)
        assert m.num_classes == 7
        with torch.no_grad():
            torch.testing.assert_close(m(x), ref, atol=1e-5, rtol=1e-5)
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="not a readable safetensors"):
        read_state_dict(tmp_path / "bad.safetensors")
    torch.save(torch.nn.Linear(2, 2), tmp_path / "whole.pth")  # a pickled module: refused
    with pytest.raises(ValueError, match="weights_only"):
        read_state_dict(tmp_path / "whole.pth")
    with pytest.raises(ValueError, match="does not fit"):
        load_timm("vit_small_patch16_224", tmp_path / "m.safetensors", img_size=32, depth=2)
    with pytest.raises(ValueError, match="not a timm model"):
        load_timm("no_such_model")


# ---------------------------------------------------------------------------- our ViT
def test_vit_config_validates():
    with pytest.raises(ValueError, match="divide"):
        ViTConfig(img_size=30, patch_size=4)
    with pytest.raises(ValueError, match="class_token"):
        ViTConfig(class_token=False)
    with pytest.raises(TypeError):
        ViTConfig(embed_dim=3)


@pytest.mark.parametrize(
    "over",
    [{}, {"class_token": False, "global_pool": "avg", "reg_tokens": 2}, {"img_size": [16, 24]}],
)
def test_vit_records_one_map_per_block_and_rollout_matches_reference(over):
    torch.manual_seed(3)
    m = create("vision_test", **over).eval()
    c = m.config
    x = torch.randn(2, 3, *c.image_hw)
    with torch.no_grad():
        ref = m(x)
        with record_attention(m) as maps:
            out = m(x)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    layout = m.layout()
    assert len(maps) == c.depth and layout.length == maps.stack().shape[-1]
    assert layout.grid == c.grid and layout.num_prefix == c.num_prefix_tokens
    # rollout against a float64 product of (A + I)/2 written out here
    a = maps.stack().double().mean(2)
    r = torch.eye(layout.length, dtype=torch.float64).expand(2, -1, -1)
    for layer in a:
        h = 0.5 * layer + 0.5 * torch.eye(layout.length, dtype=torch.float64)
        r = (h / h.sum(-1, keepdim=True)) @ r
    torch.testing.assert_close(attention_rollout(maps).double(), r, atol=1e-5, rtol=1e-4)
    grid, logits = explain_grid(m, x, layout, "rollout", has_cls=c.class_token)
    assert grid.shape == (2, *c.grid)
    row = r[:, 0] if c.class_token else r[:, layout.num_prefix :].mean(1)
    torch.testing.assert_close(grid.double(), row[:, layout.num_prefix:].reshape(2, *c.grid),
                               atol=1e-5, rtol=1e-4)  # fmt: skip


def test_gradient_rollout_and_cls_attention_shapes_and_values():
    torch.manual_seed(4)
    m = create("vision_test").eval()
    x = torch.randn(3, 3, 16, 16)
    layout = m.layout()
    g, logits = explain_grid(m, x, layout, "gradient_rollout", target=1)
    assert g.shape == (3, 4, 4) and (g >= 0).all()
    assert all(p.grad is None for p in m.parameters())  # gradients are not left behind
    c, _ = explain_grid(m, x, layout, "cls_attention", layer=0, head=1)
    with torch.no_grad(), record_attention(m, layers=[0]) as maps:
        m(x)
    w = maps[next(iter(maps))][:, 1, 0, layout.num_prefix :]
    torch.testing.assert_close(c, w.reshape(3, 4, 4))
    with pytest.raises(ValueError, match="layer 5 out of range"):
        explain_grid(m, x, layout, "cls_attention", layer=5)
    with pytest.raises(ValueError, match="method must be"):
        explain_grid(m, x, layout, "saliency")


# ---------------------------------------------------------------------------- data
def test_digits_split_is_sklearns_stratified_split():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    _, _, _, yte = train_test_split(d.data, d.target, test_size=0.2, random_state=0,
                                    stratify=d.target)  # fmt: skip
    s = digits_split(16)
    assert torch.equal(s.test_y, torch.as_tensor(yte))
    assert s.train_x.shape == (1437, 1, 16, 16) and s.test_x.shape == (360, 1, 16, 16)
    assert 0 <= float(s.train_x.min()) and float(s.train_x.max()) <= 1


def test_locate_scenes_are_deterministic_with_the_target_in_its_mask():
    scenes = LocateScenes(20, "test", seed=5)
    for i in range(20):
        img, label, mask = scenes.scene(i)
        again = scenes.scene(i)
        assert np.array_equal(img, again[0]) and label == again[1]
        assert 0 <= label < len(SHAPES) and mask.sum() > 20
        # the target is the red shape: its pixels are red, and no other red shape exists
        red = (img[..., 0] > 0.7) & (img[..., 1] < 0.3) & (img[..., 2] < 0.3)
        assert red[mask].mean() > 0.9
    a = LocateScenes(5, "train", seed=5).scene(0)[0]
    assert not np.array_equal(a, scenes.scene(0)[0])
    assert shape_mask("circle", 21, 10.5, 10.5, 5).sum() == pytest.approx(np.pi * 25, rel=0.1)


def test_pointing_hits_reads_the_highest_patch_box():
    m = create("vision_test")
    layout = m.layout()  # 4x4 grid of 4-pixel patches
    scores = torch.zeros(2, 4, 4)
    scores[:, 1, 2] = 1.0
    masks = torch.zeros(2, 16, 16, dtype=torch.bool)
    masks[0, 4, 8] = True  # inside the box of patch (1, 2)
    masks[1, 0, 0] = True
    assert pointing_hits(scores, masks, layout).tolist() == [True, False]
