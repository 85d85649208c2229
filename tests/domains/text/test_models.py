"""The text domain's own models: data generators, CausalLM, KV-cache sampling, recipes and the
shipped weights (induction heads, agreement, characters)."""

import json

import pytest
import torch

import attnlab
from attnlab.cli import main
from attnlab.core.registry import list_weights, read_card, weights_dir
from attnlab.core.train_config import TrainConfig
from attnlab.domains.text.data import (
    AGREEMENT_VOCAB,
    IGNORE,
    NOUNS,
    PLACES,
    VERBS,
    CharWindows,
    Vocab,
    agreement_task,
    char_corpus,
    default_text,
    held_out_pair,
    induction_task,
    read_text_file,
)
from attnlab.domains.text.generate import filter_logits, generate
from attnlab.domains.text.model import TextConfig
from attnlab.domains.text.train import (
    agreement_metrics,
    attention_stack,
    induction_scores,
)


# ---------------------------------------------------------------------------- data
def test_induction_repeats_are_exact_and_tokens_distinct():
    task = induction_task(64, seq_len=40, min_period=4, max_period=20, vocab_size=48, seed=3)
    L = task.seq_len
    for toks, tg, n in zip(task.tokens, task.targets, task.period.tolist(), strict=True):
        assert torch.equal(toks[L - n :], toks[L - 2 * n : L - n])
        assert len(set(toks[: L - n].tolist())) == L - n  # one earlier occurrence each
        scored = (tg != IGNORE).nonzero().flatten().tolist()
        assert scored == list(range(L - n, L - 1))
        assert torch.equal(tg[L - n : L - 1], toks[L - n + 1 :])
    again = induction_task(64, seq_len=40, min_period=4, max_period=20, vocab_size=48, seed=3)
    assert torch.equal(again.tokens, task.tokens)
    assert not torch.equal(induction_task(64, 40, 4, 20, 48, seed=4).tokens, task.tokens)
    assert set(task.period.tolist()) > {4, 20} or len(set(task.period.tolist())) > 5


def test_induction_rejects_impossible_settings():
    with pytest.raises(ValueError, match="seq_len"):
        induction_task(4, seq_len=20, max_period=12)
    with pytest.raises(ValueError, match="vocab_size"):
        induction_task(4, seq_len=64, vocab_size=32)


NOUN_PLURAL = {w: i == 1 for pair in NOUNS + PLACES for i, w in enumerate(pair)}
VERB_PLURAL = {w: i == 1 for pair in VERBS for i, w in enumerate(pair)}


def test_agreement_labels_are_right():
    task = agreement_task(300, "train", seed=1)
    words = task.vocab.tokens
    assert 0 < task.verbs[:, 5].sum() < len(task.verbs)  # with and without attractors
    for sample, v, s, right, wrong, attractor in task.verbs.tolist():
        toks = [words[t] for t in task.tokens[sample].tolist()]
        assert toks[v] == words[right]
        assert {words[right], words[wrong]} in [set(p) for p in VERBS]
        plural = NOUN_PLURAL[toks[s]]
        assert VERB_PLURAL[words[right]] == plural != VERB_PLURAL[words[wrong]]
        between = [NOUN_PLURAL[w] for w in toks[s + 1 : v] if w in NOUN_PLURAL]
        assert bool(attractor) == ((not plural) in between)
    ids = task.tokens[0]  # next-word targets, padding ignored
    n = int((ids != 0).sum())
    assert torch.equal(task.targets[0, : n - 1], ids[1:n])
    assert (task.targets[0, n - 1 :] == IGNORE).all()


def test_agreement_held_out_split_is_disjoint():
    train = agreement_task(2000, "train", seed=0)
    test = agreement_task(300, "test", seed=0)
    assert not set(train.sentences) & set(test.sentences)

    def pairs(task):
        out = []
        for sample, _, s, right, _, _ in task.verbs.tolist():
            subj = task.vocab.tokens[int(task.tokens[sample, s])]
            verb = task.vocab.tokens[right]
            noun = next(i for i, p in enumerate(NOUNS) if subj in p)
            lemma = next(i for i, p in enumerate(VERBS) if verb in p)
            out.append((noun, lemma))
        return out

    assert not any(held_out_pair(*p) for p in pairs(train))
    assert all(held_out_pair(*p) for p in pairs(test))
    assert len(set(pairs(test))) > 10  # many unseen combinations, not a handful
    assert torch.equal(agreement_task(50, "test", seed=0).tokens, test.tokens[:50])


def test_vocab_round_trips_and_names_unknown_tokens():
    chars = Vocab.from_text("hello, wörld\n")
    assert chars.decode(chars.encode("löl\n")) == "löl\n"
    with pytest.raises(ValueError, match="'z'"):
        chars.encode("zoo")
    words = Vocab(AGREEMENT_VOCAB, "words")
    s = "the cats near the old house run ."
    assert words.decode(words.encode(s)) == s
    corpus = char_corpus(seq_len=64)
    sample = default_text()[1000:1300]
    assert corpus.vocab.decode(corpus.vocab.encode(sample)) == sample
    assert len(corpus.held_out) > 0.04 * len(corpus.text)


def test_bad_text_files_raise_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        read_text_file(tmp_path / "missing.txt")
    (tmp_path / "empty.txt").write_text("  \n")
    with pytest.raises(ValueError, match="empty"):
        read_text_file(tmp_path / "empty.txt")
    (tmp_path / "latin1.txt").write_bytes("café crème".encode("latin-1"))
    with pytest.raises(ValueError, match="not UTF-8"):
        read_text_file(tmp_path / "latin1.txt")
    with pytest.raises(ValueError, match="not a file"):
        read_text_file(tmp_path)
    (tmp_path / "short.txt").write_text("abc")
    with pytest.raises(ValueError, match="too short"):
        char_corpus(tmp_path / "short.txt", seq_len=16)


def test_char_windows_shift_by_one():
    ids = torch.arange(100)
    ds = CharWindows(ids, 10, num=5, seed=0)
    item = ds[3]
    assert torch.equal(item["targets"], item["tokens"] + 1)
    assert len(CharWindows(ids, 10)) == 9


# ---------------------------------------------------------------------------- model
CONFIGS = [dict(), dict(pos="rope"), dict(pos="alibi", tie_weights=False), dict(mlp_ratio=0.0)]


@pytest.mark.parametrize("kw", CONFIGS)
def test_future_does_not_change_past_logits(kw):
    torch.manual_seed(0)
    model = attnlab.create("text_test", **kw).eval()
    x = torch.randint(0, 16, (2, 20))
    y = x.clone()
    y[:, 12:] = torch.randint(0, 16, (2, 8))
    with torch.no_grad():
        a, b = model(x), model(y)
    torch.testing.assert_close(a[:, :12], b[:, :12], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(a[:, 12:], b[:, 12:])


@pytest.mark.parametrize("kw", CONFIGS)
def test_kv_cache_forward_equals_full_forward(kw):
    torch.manual_seed(1)
    model = attnlab.create("text_test", **kw).eval()
    x = torch.randint(0, 16, (2, 15))
    with torch.no_grad():
        full = model(x)
        cache = model.make_cache()
        parts = [model(x[:, :9], cache=cache)] + [model(x[:, i : i + 1], cache=cache)
                                                  for i in range(9, 15)]  # fmt: skip
    torch.testing.assert_close(torch.cat(parts, 1), full, atol=1e-5, rtol=1e-5)


def test_model_names_and_validation():
    model = attnlab.create("text_test")
    c = model.config
    assert (c.dim, c.depth) == (32, 2)
    names = {n for n, _ in model.named_modules()}
    assert {"encoder.blocks.0.attn", "encoder.blocks.1.attn", "tok_embed", "pos_embed"} <= names
    assert "head" not in names  # tied by default
    assert "encoder.blocks.0.mlp" not in {
        n for n, _ in attnlab.create("text_test", mlp_ratio=0).named_modules()
    }
    with pytest.raises(ValueError, match="token id 16 out of range"):
        model(torch.tensor([[1, 16]]))
    with pytest.raises(ValueError, match="token id -1"):
        model(torch.tensor([[-1, 2]]))
    with pytest.raises(ValueError, match="longer than max_len=64"):
        model(torch.zeros(1, 65, dtype=torch.long))
    with pytest.raises(ValueError, match="integer"):
        model(torch.zeros(1, 4))
    with pytest.raises(ValueError, match="pos must be"):
        TextConfig(pos="sinusoid")
    with pytest.raises(ValueError, match="vocab has 2 tokens"):
        TextConfig(vocab_size=3, tokenizer="chars", vocab=["a", "b"])
    with pytest.raises(ValueError, match="expected an int"):  # builders declare -> CausalLM
        TrainConfig(steps=1, model="text_test").with_overrides(["model.dim=abc"])


# ---------------------------------------------------------------------------- generation
SAMPLING = [dict(temperature=1.0), dict(temperature=0.7, top_k=5), dict(temperature=1.3, top_p=0.8),
            dict(temperature=0.9, top_k=8, top_p=0.9)]  # fmt: skip


@pytest.mark.parametrize("kw", SAMPLING)
@pytest.mark.parametrize("pos", ["learned", "rope"])
def test_cached_generation_equals_uncached(kw, pos):
    torch.manual_seed(2)
    model = attnlab.create("text_test", pos=pos)
    with torch.no_grad():  # a sharper distribution than the 0.02 initialisation gives
        model.tok_embed.weight.mul_(4)
    prompt = torch.randint(0, 16, (3, 5))
    a = generate(model, prompt, 30, seed=7, use_cache=True, **kw)
    b = generate(model, prompt, 30, seed=7, use_cache=False, **kw)
    assert torch.equal(a.ids, b.ids)
    torch.testing.assert_close(a.logprobs, b.logprobs, atol=1e-4, rtol=1e-4)
    assert a.ids.shape == (3, 35) and torch.equal(a.ids[:, :5], prompt)
    assert not torch.equal(a.ids, generate(model, prompt, 30, seed=8, **kw).ids)
    assert model.training  # restored


def test_greedy_is_argmax_and_filters_keep_the_best():
    torch.manual_seed(3)
    model = attnlab.create("text_test").eval()
    with torch.no_grad():
        model.tok_embed.weight.mul_(4)
    g = generate(model, [1, 2, 3], 10, temperature=0)
    ids = torch.tensor([[1, 2, 3]])
    for _ in range(10):
        ids = torch.cat([ids, model(ids)[:, -1:].argmax(-1)], 1)
    assert torch.equal(g.ids, ids)
    assert (g.logprobs == 0).all() and g.top_ids.shape == (1, 10, 5)
    logits = torch.tensor([[3.0, 2.0, 1.0, 0.0]])
    assert torch.isinf(filter_logits(logits, top_k=2)[0, 2:]).all()
    kept = torch.isfinite(filter_logits(logits, top_p=0.7)[0])
    assert kept.tolist() == [True, True, False, False]  # 0.64 < 0.7 <= 0.88
    assert torch.isfinite(filter_logits(logits, top_p=1e-6)[0]).sum() == 1
    with pytest.raises(ValueError, match="max_len"):
        generate(model, [1] * 60, 10)
    with pytest.raises(ValueError, match="temperature"):
        generate(model, [1], 1, temperature=-1)
    stop = int(g.ids[0, 5])
    eos = generate(model, [1, 2, 3], 20, temperature=0, eos_id=stop)
    assert eos.ids.shape[1] == 4 + g.new_ids[0].tolist().index(stop)


# ---------------------------------------------------------------------------- shipped weights
def test_shipped_induction_heads_score_on_fresh_repeats():
    model = attnlab.load("text/induction")
    card = read_card("text/induction")
    assert card["metrics"]["induction_score"] >= 0.9
    args = {k: card["data"][k] for k in ("seq_len", "min_period", "max_period", "vocab_size")}
    fresh = induction_task(128, seed=12345, **args)
    _, attn = attention_stack(model, fresh.tokens)
    scores = induction_scores(attn, fresh.period)
    assert scores.max() >= 0.9
    assert scores[0].max() < 0.5  # the first layer cannot do induction alone
    assert "attnlab train text/induction" in card["command"]


def test_eval_command_reports_the_probe_metrics(capsys):
    assert main(["eval", "text/induction"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["induction_score"] >= 0.9 and out["eval_loss"] < 0.2


def test_induction_snapshots_show_the_heads_forming():
    names = sorted(n for n in list_weights() if n.startswith("text/induction-steps/"))
    assert 4 <= len(names) <= 8
    cards = [read_card(n) for n in names]
    steps = [c["step"] for c in cards]
    assert steps == sorted(steps)
    scores = [c["metrics"]["induction_score"] for c in cards]
    assert scores[0] < 0.3 and scores[-1] >= 0.9
    assert all("probe_loss" in c["metrics"] for c in cards)
    assert len(cards[-1]["curve"]) > len(cards)
    total = sum((weights_dir() / f"{n}.safetensors").stat().st_size for n in names)
    assert total < 2_000_000
    attnlab.load(names[0])


def test_shipped_agreement_model_on_fresh_held_out_sentences():
    model = attnlab.load("text/agreement")
    card = read_card("text/agreement")
    assert card["metrics"]["agreement_acc"] >= 0.95
    fresh = agreement_task(400, "test", seed=777)
    m = agreement_metrics(model, fresh)
    assert m["agreement_acc"] >= 0.95
    assert m["agreement_acc_attractor"] >= 0.9
    assert abs(m["subject_attention"] - card["metrics"]["subject_attention"]) < 0.1
    assert model.decode(model.encode("the cat runs .")) == "the cat runs ."


def test_shipped_char_model_bits_per_char_and_sampling():
    model = attnlab.load("text/chars")
    card = read_card("text/chars")
    bpc = card["metrics"]["eval_bits_per_char"]
    assert bpc < 3.0
    L = model.config.max_len
    corpus = char_corpus(seq_len=L)
    held = CharWindows(corpus.held_out, L)
    batch = torch.stack([held[i]["tokens"] for i in range(0, len(held), 8)])
    targets = torch.stack([held[i]["targets"] for i in range(0, len(held), 8)])
    with torch.no_grad():
        loss = torch.nn.functional.cross_entropy(model(batch).flatten(0, 1), targets.flatten())
    assert abs(float(loss) / 0.6931 - bpc) < 0.3
    prompt = model.encode("The ")
    out = generate(model, prompt, 60, temperature=0.8, top_k=10, seed=0)
    text = model.decode(out.ids[0])
    assert text.startswith("The ") and len(text) == 64


# ---------------------------------------------------------------------------- recipes via CLI
@pytest.fixture
def tmp_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("ATTNLAB_WEIGHTS", str(tmp_path / "weights"))
    return tmp_path / "weights"


SMALL = {
    "text/induction": [
        "data.num_train=64",
        "data.num_eval=16",
        "data.snapshots=unit/steps",
        "data.snapshot_steps=[2]",
    ],
    "text/agreement": ["data.num_train=64", "data.num_eval=16"],
    "text/chars": [
        "data.seq_len=32",
        "data.num_train=64",
        "data.held_out_fraction=0.01",
        "model.dim=32",
        "model.depth=1",
    ],
}
PROBES = {
    "text/induction": "induction_score",
    "text/agreement": "agreement_acc",
    "text/chars": "eval_bits_per_char",
}


@pytest.mark.parametrize("recipe", sorted(SMALL))
def test_recipes_run_a_few_steps_and_card_holds_probe_metrics(recipe, tmp_path, tmp_weights,
                                                              capsys):  # fmt: skip
    args = [
        "train",
        recipe,
        "--quiet",
        "steps=3",
        "batch_size=8",
        "eval_every=2",
        f"out_dir={tmp_path}/run",
        "--save-weights",
        "unit/model",
        *SMALL[recipe],
    ]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert PROBES[recipe] in summary
    card = json.loads((tmp_weights / "unit/model.json").read_text())
    assert PROBES[recipe] in card["metrics"]
    assert card["command"].startswith(f"attnlab train {recipe}")
    model = attnlab.load("unit/model")
    assert model.config == attnlab.create(card["model"], **card["model_args"]).config
    if recipe == "text/induction":
        snaps = sorted(p.name for p in (tmp_weights / "unit/steps").glob("*.json"))
        assert snaps == ["step-00002.json", "step-00003.json"]
        assert attnlab.load("unit/steps/step-00002").config.mlp_ratio == 0


def test_chars_data_option_trains_on_a_file_and_refuses_bad_ones(tmp_path, capsys):
    text = tmp_path / "poem.txt"
    text.write_text("Tyger Tyger, burning bright,\nIn the forests of the night;\n" * 8)
    base = [
        "train",
        "text/chars",
        "--quiet",
        "steps=2",
        "batch_size=4",
        "data.seq_len=16",
        "data.num_train=16",
        f"out_dir={tmp_path}/run",
        "model.dim=32",
        "model.depth=1",
    ]
    assert main([*base, "--data", str(text)]) == 0
    cfg = json.loads((tmp_path / "run/config.json").read_text())
    assert cfg["data_args"]["path"] == str(text)
    capsys.readouterr()
    assert main([*base, "--overwrite", "--data", str(tmp_path / "nope.txt")]) == 2
    assert "does not exist" in capsys.readouterr().err
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"\xff\xfe binary \x00")
    assert main([*base, "--overwrite", "--data", str(bad)]) == 2
    assert "not UTF-8" in capsys.readouterr().err
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    assert main([*base, "--overwrite", "--data", str(empty)]) == 2
    assert "empty" in capsys.readouterr().err
