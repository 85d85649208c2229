"""Vision demo: a Gradio tab to see where a Vision Transformer looks, on any image.

- Pick a model: the shipped ``vision/digits`` and ``vision/locate``, or any timm ViT by name
  (ViT, DeiT, DeiT-III, registers, GAP, hybrids; random weights, or a checkpoint file you
  upload: safetensors or a ``.pth`` state dict, never downloaded).
- Upload an image (any mode: greyscale, RGBA, palette, 16-bit) or pick an example: the top-k
  classes; an overlay of attention rollout (Abnar & Zuidema 2020), gradient rollout for a
  chosen class (Chefer et al. 2021) or the class token's attention in a chosen layer/head, with
  an alpha slider; every head of that layer as a grid; the mean attention distance per head
  and layer (ViT paper, fig. 7).
- Click a patch on the overlay to see what it attends to in the chosen layer/head.
- Ablate heads ("layer.head" list) and see the prediction change (Michel et al. 2019).

Prefix tokens (class, distillation, registers) and non-square grids come from the model's
``PatchLayout``. Handlers are plain functions of form values; every refusal is a ``gr.Error``
sentence. Loading a model (timm building, checkpoints) runs on its own queue; the views share
the model queue (recording changes modules, so one request at a time per model).
"""

from __future__ import annotations

from typing import Any

import gradio as gr
import numpy as np
import torch

from attnlab.apps import guard
from attnlab.apps import vision_lab as lab
from attnlab.apps.guard import as_choice, as_float, as_int, refuse, user_errors
from attnlab.apps.views import image_overlay
from attnlab.apps.views.patches import display_image, distance_plot, head_grid, mark_box
from attnlab.apps.vision_lab import (
    CONCURRENCY,
    DISPLAY,
    EXAMPLES,
    LIMITS,
    MAX_CHECKPOINT,
    METHODS,
    ImageInput,
)
from attnlab.core.analysis import mean_attention_distance
from attnlab.core.capture import ablate_heads, attention_modules
from attnlab.domains.vision import load_classifier
from attnlab.domains.vision.data import LocateScenes, digits_split

__all__ = ["load_model", "analyse", "refresh", "attend_patch", "ablate", "pick_example", "build",
           "CONCURRENCY", "EXAMPLES", "METHODS"]  # fmt: skip


# ------------------------------------------------------------------------------------------
# inputs
# ------------------------------------------------------------------------------------------
# ------------------------------------------------------------------------------------------
# handlers
# ------------------------------------------------------------------------------------------
@user_errors
def load_model(name: Any, checkpoint: Any = None):
    """Load (and cache) a model; its description and its classes for the class picker."""
    clf = lab.classifier(name, checkpoint)
    labels = ["predicted"] + list(clf.labels[:1000])
    return (
        lab.describe(clf, lab.checkpoint_path(checkpoint)),
        gr.update(choices=labels, value="predicted"),
        gr.update(maximum=clf.depth - 1, value=clf.depth - 1),
        gr.update(choices=["mean", *range(clf.num_heads)], value="mean"),
    )


@user_errors
def pick_example(name: Any) -> np.ndarray:
    """An example image: a held-out digit (dark ink on white, as people write) or a held-out
    generated scene."""
    name = as_choice(name, "Example", EXAMPLES)
    kind, i = name.split()
    if kind == "digit":
        split = digits_split(16)
        first = int((split.test_y == int(i)).nonzero()[0, 0])  # the first held-out "i"
        x = split.test_x[first, 0].numpy()
        return (255 * (1 - x)).round().astype(np.uint8)  # (16, 16) greyscale
    img, _, _ = LocateScenes(10, "test", seed=0).scene(int(i))
    return (img * 255).round().astype(np.uint8)


@user_errors
def analyse(name: Any, checkpoint: Any, image: Any, method: Any = "rollout",
            target: Any = "predicted", layer: Any = -1, head: Any = "mean", alpha: Any = 0.6,
            top_k: Any = 5):  # fmt: skip
    """Top-k, the chosen explanation as an overlay, every head of the layer, the attention
    distance plot and a description."""
    clf = lab.classifier(name, checkpoint)
    method = as_choice(method, "Method", list(METHODS))
    alpha = as_float(alpha, "Alpha", 0.0, 1.0)
    k = as_int(top_k, "Top-k", 1, 20)
    if isinstance(layer, (int, float)) and not isinstance(layer, bool) and layer == -1:
        layer = clf.depth - 1
    li, hi = lab.layer_head(clf, layer, head)
    if target in (None, "", "predicted"):
        tgt = None
    elif isinstance(target, str) and target in clf.labels:
        tgt = target
    else:
        raise refuse(
            f"Class must be 'predicted' or one of the model's classes, got "
            f"{str(target)[:40]!r}: pick one from the list."
        )
    a = lab.pixels(clf, image)
    attn, probs = clf.attention(a)  # (layers, H, L, L)
    scores = clf.explain_array(a, method, target=tgt, layer=li, head=hi)
    shown = display_image(a, DISPLAY)
    lay = clf.layout
    grid = torch.nn.functional.adaptive_avg_pool2d(torch.from_numpy(scores)[None, None],
                                                   lay.grid)[0, 0].numpy()  # fmt: skip
    what = METHODS[method] + (f" for class {tgt}" if tgt is not None else "")
    if method == "cls_attention":
        what += f", layer {li}, " + ("mean of heads" if hi is None else f"head {hi}")
    overlay = image_overlay(shown, grid, alpha=alpha, show_colorbar=False).image
    row = attn[li][:, 0] if clf.has_cls else attn[li][:, lay.num_prefix :].mean(1)
    heads = row[:, lay.num_prefix :].reshape(-1, *lay.grid).numpy()
    who = "class token" if clf.has_cls else "mean of the patches"
    grid_view = head_grid(
        shown, heads, alpha=alpha, titles=[f"L{li} head {h}" for h in range(len(heads))]
    ).image
    centres = torch.tensor(
        [
            [(b[1] + b[3]) / 2, (b[0] + b[2]) / 2]
            for b in (lay.box(i) for i in range(lay.num_prefix, lay.length))
        ]
    )
    pw = attn[:, :, lay.num_prefix :, lay.num_prefix :]  # patch queries to patch keys
    pw = pw / pw.sum(-1, keepdim=True).clamp_min(1e-12)
    dist = mean_attention_distance(pw, centres).numpy()  # (layers, H)
    plot = distance_plot(dist, "input pixels", f"{clf.name}: mean attention distance").image
    info = (
        f"{what}. Heads grid: the {who}'s attention in layer {li}. Shown at "
        f"{shown.width}×{shown.height}; click a patch to see what it attends to."
    )
    return lab.top_k(probs.numpy(), clf.labels, k), overlay, grid_view, plot, info


@user_errors
def attend_patch(name: Any, checkpoint: Any, image: Any, layer: Any = 0, head: Any = "mean",
                 alpha: Any = 0.6, x: Any = 0, y: Any = 0):  # fmt: skip
    """What the patch under the displayed pixel (x, y) of the overlay attends to."""
    clf = lab.classifier(name, checkpoint)
    li, hi = lab.layer_head(clf, layer, head)
    alpha = as_float(alpha, "Alpha", 0.0, 1.0)
    a = lab.pixels(clf, image)
    shown = display_image(a, DISPLAY)
    px = as_float(x, "x", 0, shown.width - 1)
    py = as_float(y, "y", 0, shown.height - 1)
    lay = clf.layout
    r = min(lay.grid[0] - 1, int(py / shown.height * lay.grid[0]))
    c = min(lay.grid[1] - 1, int(px / shown.width * lay.grid[1]))
    q = lay.index(r, c)
    attn, _ = clf.attention(a)
    w = attn[li, :, q] if hi is None else attn[li, hi, q][None]  # (h, L)
    w = w.mean(0)
    grid = w[lay.num_prefix :].reshape(lay.grid).numpy()
    out = image_overlay(shown, grid, alpha=alpha, show_colorbar=False).image
    sy, sx = shown.height / lay.grid[0], shown.width / lay.grid[1]
    out = mark_box(out, (c * sx, r * sy, (c + 1) * sx, (r + 1) * sy), f"r{r}c{c}")
    pre = ", ".join(
        f"{n} {float(v):.2f}" for n, v in zip(lay.prefix_names, w[: lay.num_prefix], strict=True)
    )
    info = (
        f"Patch r{r}c{c} (token {q}), layer {li}, "
        + ("mean of heads" if hi is None else f"head {hi}")
        + f": {float(w[lay.num_prefix :].sum()):.0%} of its attention on patches"
        + (f"; prefix tokens: {pre}" if pre else "")
        + "."
    )
    return out, info


def refresh(name: Any, checkpoint: Any, image: Any, *rest: Any):
    """Redraw after a control changed: ``analyse``, or nothing while no image is chosen."""
    if image is None or (isinstance(image, str) and not image.strip()):
        return tuple(gr.skip() for _ in range(5))
    return analyse(name, checkpoint, image, *rest)


def _select(name, checkpoint, image, layer, head, alpha, evt: gr.SelectData):
    x, y = (evt.index if isinstance(evt.index, (list, tuple)) else (0, 0))[:2]
    return attend_patch(name, checkpoint, image, layer, head, alpha, x, y)


@user_errors
def ablate(name: Any, checkpoint: Any, image: Any, heads: Any = "0.0", mode: Any = "zero",
           top_k: Any = 5):  # fmt: skip
    """The top-k before and after ablating the listed heads (zero or mean)."""
    clf = lab.classifier(name, checkpoint)
    mode = as_choice(mode, "Ablation", ["zero", "mean"])
    k = as_int(top_k, "Top-k", 1, 20)
    chosen = lab.parse_heads(heads, clf)
    a = lab.pixels(clf, image)
    names = [n for n, _ in attention_modules(clf.model)]
    before = clf.probabilities(a if a.ndim == 3 else a)
    x = clf.tensor(a)
    with (
        torch.no_grad(),
        ablate_heads(clf.model, {names[li]: hs for li, hs in chosen.items()}, mode=mode),
    ):
        after = torch.softmax(clf.model(x).float(), -1)[0].numpy()
    b, c = int(before.argmax()), int(after.argmax())
    n = sum(len(v) for v in chosen.values())
    info = (
        f"Ablated {n} head(s) ({mode}): top class {clf.labels[b]} ({before[b]:.1%}) → "
        f"{clf.labels[c]} ({after[c]:.1%}); p({clf.labels[b]}) moved by "
        f"{after[b] - before[b]:+.1%}."
    )
    return lab.top_k(before, clf.labels, k), lab.top_k(after, clf.labels, k), info


# ------------------------------------------------------------------------------------------
# the tab
# ------------------------------------------------------------------------------------------
def build(model: str | None = None, checkpoint: str | None = None) -> gr.Blocks:
    """The Vision demo as a ``gr.Blocks``. Nothing is loaded until a button is pressed.

    Args:
        model: the model chosen at start (default the first shipped one).
        checkpoint: a checkpoint file on the server, pre-filled in the upload field.
    """
    cid = CONCURRENCY
    models = lab.model_choices()
    if model and model not in models:
        models = [model, *models]
    with gr.Blocks(title="attnlab: Vision") as demo:
        gr.Markdown(
            "### Where does the ViT look?\nChoose a model, upload an image or pick an "
            "example, press **Analyse**. Click a patch of the overlay to see what it "
            "attends to."
        )
        with gr.Row():
            with gr.Column(scale=2):
                model_box = gr.Dropdown(
                    models,
                    value=model or models[0],
                    allow_custom_value=True,
                    label="model (shipped, or any timm ViT name)",
                    elem_id="vision-model",
                )
                ckpt = gr.File(
                    value=checkpoint,
                    label="timm checkpoint (optional: .safetensors or .pth state dict)",
                    file_types=[".safetensors", ".pth", ".pt", ".bin"],
                    type="filepath",
                    elem_id="vision-checkpoint",
                )
                model_info = gr.Markdown(elem_id="vision-model-info")
            with gr.Column(scale=2):
                image = ImageInput(
                    label="image",
                    type="filepath",
                    image_mode=None,
                    sources=["upload", "clipboard"],
                    elem_id="vision-image",
                    height=240,
                )
                with gr.Row():
                    example = gr.Dropdown(
                        EXAMPLES, value=EXAMPLES[0], label="example", elem_id="vision-example"
                    )
                    use_ex = gr.Button("Use example", elem_id="vision-use-example")
                gr.Markdown(LIMITS)
        with gr.Row():
            method = gr.Radio(
                [(v, k) for k, v in METHODS.items()],
                value="rollout",
                label="explanation",
                elem_id="vision-method",
            )
            target = gr.Dropdown(
                ["predicted"],
                value="predicted",
                allow_custom_value=False,
                label="class (gradient rollout)",
                elem_id="vision-target",
            )
        with gr.Row():
            layer = guard.Slider(0, 11, 3, step=1, label="layer", elem_id="vision-layer")
            head = gr.Dropdown(
                ["mean"] + list(range(16)), value="mean", label="head", elem_id="vision-head"
            )
            alpha = guard.Slider(0.0, 1.0, 0.6, step=0.05, label="alpha", elem_id="vision-alpha")
            top_k = guard.Slider(1, 20, 5, step=1, label="top-k")
            run = gr.Button("Analyse", variant="primary", elem_id="vision-run")
        info = gr.Markdown(elem_id="vision-info")
        with gr.Row():
            label = gr.Label(label="prediction", elem_id="vision-label")
            overlay = gr.Image(
                label="overlay (click a patch)",
                type="pil",
                format="png",
                interactive=False,
                elem_id="vision-overlay",
            )
            patch = gr.Image(
                label="what the clicked patch attends to",
                type="pil",
                format="png",
                interactive=False,
                elem_id="vision-patch",
            )
        patch_info = gr.Markdown(elem_id="vision-patch-info")
        with gr.Row():
            heads_view = gr.Image(
                label="every head of the layer",
                type="pil",
                format="png",
                interactive=False,
                elem_id="vision-heads",
            )
            dist = gr.Image(
                label="mean attention distance",
                type="pil",
                format="png",
                interactive=False,
                elem_id="vision-distance",
            )
        gr.Markdown(
            "#### Ablate heads\nList `layer.head` pairs (`2.*` = every head of layer "
            "2) and compare the prediction."
        )
        with gr.Row():
            heads_txt = gr.Textbox(
                "0.0, 0.1",
                label="heads to ablate",
                max_lines=1,
                max_length=2000,
                elem_id="vision-ablate-heads",
            )
            mode = gr.Radio(["zero", "mean"], value="zero", label="ablation")
            abl = gr.Button("Ablate", elem_id="vision-ablate")
        with gr.Row():
            before = gr.Label(label="before")
            after = gr.Label(label="after", elem_id="vision-after")
        abl_info = gr.Markdown(elem_id="vision-ablate-info")

        use_ex.click(
            pick_example,
            [example],
            [image],
            api_name="vision_example",
            concurrency_id=cid["example"],
            concurrency_limit=2,
        )
        view_in = [model_box, ckpt, image, method, target, layer, head, alpha, top_k]
        view_out = [label, overlay, heads_view, dist, info]
        load_ev = run.click(
            load_model,
            [model_box, ckpt],
            [model_info, target, layer, head],
            api_name="vision_load",
            concurrency_id=cid["load"],
            concurrency_limit=1,
        )
        load_ev.success(
            analyse,
            view_in,
            view_out,
            api_name="vision_analyse",
            concurrency_id=cid["model"],
            concurrency_limit=1,
        )
        redraw = dict(fn=refresh, inputs=view_in, outputs=view_out, concurrency_id=cid["model"],
                      concurrency_limit=1, trigger_mode="always_last")  # fmt: skip
        alpha.release(api_name="vision_alpha", **redraw)
        layer.release(api_name="vision_layer", **redraw)
        method.input(api_name="vision_method", **redraw)
        head.input(api_name="vision_head", **redraw)
        target.input(api_name="vision_target", **redraw)
        overlay.select(
            _select,
            [model_box, ckpt, image, layer, head, alpha],
            [patch, patch_info],
            api_name="vision_patch",
            concurrency_id=cid["model"],
            concurrency_limit=1,
        )
        abl.click(load_model, [model_box, ckpt], [model_info, target, layer, head],
                  api_name="vision_load_for_ablation", concurrency_id=cid["load"],
                  concurrency_limit=1,
                  ).success(ablate, [model_box, ckpt, image, heads_txt, mode, top_k],
                            [before, after, abl_info], api_name="vision_ablate",
                            concurrency_id=cid["model"], concurrency_limit=1)  # fmt: skip
    return demo


# upload limits: Blocks.launch takes max_file_size; the suite and __main__ pass it
MAX_FILE_SIZE = MAX_CHECKPOINT


def main(argv: list[str] | None = None) -> None:
    """``python -m attnlab.apps.vision [--model NAME] [--checkpoint FILE] [--port N]``."""
    import argparse

    p = argparse.ArgumentParser(
        prog="python -m attnlab.apps.vision", description=__doc__.split("\n")[0]
    )
    p.add_argument("--model", help="a shipped model (vision/...) or a timm ViT name")
    p.add_argument("--checkpoint", help="a .safetensors or .pth state dict for a timm model")
    p.add_argument("--port", type=int, default=None)
    args = p.parse_args(argv)
    if args.checkpoint is not None:
        try:  # fail early, with the reason
            load_classifier(args.model or "vit_small_patch16_224", args.checkpoint)
        except ValueError as e:
            p.error(str(e))
    build(args.model, args.checkpoint).launch(
        server_name="127.0.0.1", server_port=args.port, max_file_size=MAX_FILE_SIZE
    )


if __name__ == "__main__":
    main()
