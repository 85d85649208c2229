"""The README's Python examples run as written (one namespace, in order)."""

import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_examples_run():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) >= 2, "the README lost its examples"
    ns: dict = {}
    for code in blocks:
        exec(compile(code, str(README), "exec"), ns)  # noqa: S102 - our own documentation
    # what the examples claim
    assert ns["r"].weights.shape == (2, 8, 128, 128)
    torch.testing.assert_close(ns["r"].weights.sum(-1), torch.ones(2, 8, 128))
    assert ns["maps"]["blocks.2.attn"].shape == (2, 2, 128, 128)
    assert not torch.equal(ns["y"], ns["y_ablated"])
    assert ns["same"] is True
    assert ns["emb"].shape == (2, 384) and ns["weights"].shape == (6, 12, 12, 12)
    assert ns["same_music"] is True and ns["song"].tokens[:128] == ns["events"][:128]
    assert len(ns["song"].new) == 64 and ns["wav"][:4] == b"RIFF"
    assert len(ns["vit_maps"]) == 12 and ns["vision_top"][0][0] == "0"
    assert ns["heat"].shape == (8, 8)
    assert [w for w, _ in ns["true_starts"]] == ["three", "seven", "two"]
    assert len(ns["heard_words"]) == len(ns["heard"].split())
    assert all(0 <= s <= e for _, s, e in ns["heard_words"])
