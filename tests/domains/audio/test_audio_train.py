"""The audio recipes on a folder of the user's labelled files: labels from folder names, every
fifth file held out, a training step that lowers the loss; the CER's edit distance."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from attnlab.core.recipes import get_recipe
from attnlab.domains.audio import synthesize
from attnlab.domains.audio.train import char_error_rate


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("mine")
    for label, text in [("yes", "yes"), ("no", "no"), ("go_left", "go left")]:
        (root / label).mkdir()
        for i, voice in enumerate(["f1", "m2", "f3", "m4", "f5"]):
            wave, sr, _ = synthesize(text, voice=voice)
            sf.write(root / label / f"{i}.{'wav' if i % 2 else 'flac'}", wave.numpy(), sr)
    (root / "notes.txt").write_text("not audio")
    return root


def test_kws_recipe_reads_a_folder_and_learns(folder):
    r = get_recipe("audio/kws")
    cfg = r.defaults.replace(model="audio_test", data_args={**r.defaults.data_args,
                                                            "path": str(folder)})  # fmt: skip
    parts = r.build(cfg)
    assert parts.model.config.labels == ["go left", "no", "yes"]
    assert len(parts.train_set) == 12 and len(parts.eval_set) == 3
    batch = torch.utils.data.default_collate([parts.train_set[i] for i in range(12)])
    opt = torch.optim.AdamW(parts.model.parameters(), lr=3e-3)
    first = None
    for _ in range(15):
        loss, _ = parts.model.loss(batch)
        first = float(loss.detach()) if first is None else first
        loss.backward()
        opt.step()
        opt.zero_grad()
    assert float(parts.model.loss(batch)[0].detach()) < first


def test_asr_recipe_reads_a_folder(folder):
    r = get_recipe("audio/asr")
    cfg = r.defaults.replace(model="audio_asr_test", data_args={**r.defaults.data_args,
                                                                "path": str(folder)})  # fmt: skip
    parts = r.build(cfg)
    batch = parts.collate_fn([parts.train_set[i] for i in range(4)])
    assert batch["spec"].shape[:2] == (4, 80)
    texts = {parts.model.decode_text(t) for t in batch["tokens"]}
    assert texts <= {"yes", "no", "go left"}
    loss, metrics = parts.model.loss(batch)
    assert torch.isfinite(loss) and "acc" in metrics


def test_empty_folder_is_refused(tmp_path):
    r = get_recipe("audio/kws")
    cfg = r.defaults.replace(data_args={**r.defaults.data_args, "path": str(tmp_path)})
    with pytest.raises(ValueError, match="no <label>/<file>"):
        r.build(cfg)


def test_char_error_rate_is_levenshtein():
    assert char_error_rate(["abc"], ["abc"]) == 0
    assert char_error_rate(["kitten"], ["sitting"]) == pytest.approx(3 / 7)
    assert char_error_rate(["", "go"], ["ab", "go"]) == pytest.approx(2 / 4)
    assert np.isfinite(char_error_rate([""], [""]))


def test_keyword_probe_counts_keywords_unknown_and_silence_apart():
    from attnlab.domains.audio import data as D
    from attnlab.domains.audio.train import keyword_probe

    labels = ("yes", "no", D.UNKNOWN, D.SILENCE)
    rng = np.random.default_rng(int(torch.randint(0, 2**31, ()).item()))
    y = rng.integers(0, 4, 50)
    guess = np.where(rng.random(50) < 0.6, y, rng.integers(0, 4, 50))

    class Data:  # items carry their own index so that the fake model can answer per item
        def __init__(self):
            self.labels = labels

        def __len__(self):
            return 50

        def __getitem__(self, i):
            return {"spec": torch.tensor([float(i)]), "label": torch.tensor(int(y[i]))}

    class Model(torch.nn.Module):
        def forward(self, spec):
            out = torch.full((len(spec), 4), -5.0)
            out[torch.arange(len(spec)), torch.as_tensor(guess)[spec[:, 0].long()]] = 5.0
            return out

    m = keyword_probe(Model(), Data(), batch=7)
    assert m["eval_acc"] == pytest.approx(float((guess == y).mean()))
    words = y < 2
    assert m["keyword_acc"] == pytest.approx(float((guess[words] == y[words]).mean()))
    for name, c in (("unknown", 2), ("silence", 3)):
        assert m[f"{name}_recall"] == pytest.approx(float((guess[y == c] == c).mean()))


def test_kws_recipe_adds_unknown_and_silence_classes_on_request():
    from attnlab.domains.audio import data as D

    r = get_recipe("audio/kws")
    assert r.defaults.data_args["unknown"] == r.defaults.data_args["silence"] == 0
    args = {**r.defaults.data_args, "num_train": 40, "num_eval": 20, "unknown": 16, "silence": 8}
    parts = r.build(r.defaults.replace(data_args=args, model_args={"dim": 32, "depth": 1}))
    labels = parts.model.config.labels
    assert labels == [*D.KEYWORDS, D.UNKNOWN, D.SILENCE]
    texts = parts.eval_set.clips.texts
    assert texts.count(D.UNKNOWN) == 12 and texts.count(D.SILENCE) == 10  # the minimums
    assert parts.train_set.clips.texts.count(D.UNKNOWN) == 16
    metrics = parts.evaluate(parts.model, None)
    assert {"eval_acc", "keyword_acc", "unknown_recall", "silence_recall"} <= set(metrics)
    plain = r.build(r.defaults.replace(data_args={**r.defaults.data_args, "num_train": 40,
                                                  "num_eval": 20}))  # fmt: skip
    assert plain.model.config.labels == list(D.KEYWORDS)
