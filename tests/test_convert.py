"""nanoGPT → GPT2LMHeadModel conversion (hf_topo.convert.nanogpt, hf-topo convert-toponet on a nanoGPT checkpoint).

The reference is a minimal nanoGPT-layout GPT written here from the architecture (pre-LayerNorm blocks, fused
c_attn, exact GELU MLP, tied wte/lm_head, LayerNorm with optional bias, explicit causal softmax attention), saved
as a train.py-style checkpoint with torch.compile's `_orig_mod.` prefixes.
"""

import logging
import math
import os
import re
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from _scripts import run_script
from torch import nn
from transformers import AutoModelForCausalLM, GPT2LMHeadModel

from hf_topo import TopoConfig
from hf_topo.convert import (
    CONVERSION_KEY,
    attach_tokenizer,
    checkpoint_filename,
    convert_nanogpt,
    load_checkpoint,
    resolve_checkpoint_file,
    tau_from_filename,
)

# ---- a nanoGPT-layout reference model ------------------------------------------------------------------------------


class RefLayerNorm(nn.Module):
    def __init__(self, ndim: int, bias: bool):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))
        self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None

    def forward(self, x):
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, 1e-5)


class RefSelfAttention(nn.Module):
    def __init__(self, n_embd: int, n_head: int, block_size: int, bias: bool):
        super().__init__()
        self.n_head = n_head
        self.c_attn = nn.Linear(n_embd, 3 * n_embd, bias=bias)
        self.c_proj = nn.Linear(n_embd, n_embd, bias=bias)
        # nanoGPT's non-flash path keeps the causal mask as a (persistent) buffer named "bias"
        self.register_buffer("bias", torch.tril(torch.ones(block_size, block_size)).view(1, 1, block_size, block_size))

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))  # (B, nh, T, hs)
        att = (q @ k.transpose(-2, -1)) / math.sqrt(k.size(-1))  # (B, nh, T, T)
        att = att.masked_fill(self.bias[:, :, :T, :T] == 0, float("-inf")).softmax(dim=-1)
        y = (att @ v).transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C)
        return self.c_proj(y)


class RefMLP(nn.Module):
    def __init__(self, n_embd: int, bias: bool):
        super().__init__()
        self.c_fc = nn.Linear(n_embd, 4 * n_embd, bias=bias)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * n_embd, n_embd, bias=bias)

    def forward(self, x):
        return self.c_proj(self.gelu(self.c_fc(x)))


class RefBlock(nn.Module):
    def __init__(self, n_embd, n_head, block_size, bias):
        super().__init__()
        self.ln_1 = RefLayerNorm(n_embd, bias)
        self.attn = RefSelfAttention(n_embd, n_head, block_size, bias)
        self.ln_2 = RefLayerNorm(n_embd, bias)
        self.mlp = RefMLP(n_embd, bias)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class RefGPT(nn.Module):
    def __init__(self, n_layer, n_head, n_embd, block_size, vocab_size, bias):
        super().__init__()
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(vocab_size, n_embd),
                wpe=nn.Embedding(block_size, n_embd),
                h=nn.ModuleList([RefBlock(n_embd, n_head, block_size, bias) for _ in range(n_layer)]),
                ln_f=RefLayerNorm(n_embd, bias),
            )
        )
        self.lm_head = nn.Linear(n_embd, vocab_size, bias=False)
        self.transformer.wte.weight = self.lm_head.weight  # tied, as in nanoGPT

    def forward(self, idx):
        positions = torch.arange(idx.shape[1])
        x = self.transformer.wte(idx) + self.transformer.wpe(positions)  # (B, T, C)
        for block in self.transformer.h:
            x = block(x)
        return self.lm_head(self.transformer.ln_f(x))  # (B, T, vocab)


def make_reference(bias: bool, vocab_size: int, n_layer=2, n_head=2, n_embd=32, block_size=16, seed=0):
    torch.manual_seed(seed)
    model = RefGPT(n_layer, n_head, n_embd, block_size, vocab_size, bias)
    with torch.no_grad():  # random everything (LayerNorm gains and biases too) so that any mapping error shows
        for name, param in model.named_parameters():
            gain = 1.0 if "ln_" in name and name.endswith("weight") else 0.0
            param.copy_(torch.randn_like(param) * (0.3 if "ln_" in name else 0.1) + gain)
    model_args = dict(
        n_layer=n_layer,
        n_head=n_head,
        n_embd=n_embd,
        block_size=block_size,
        bias=bias,
        vocab_size=vocab_size,
        dropout=0.0,
    )
    return model.eval(), model_args


def save_checkpoint(model, model_args, path: Path, prefix="_orig_mod.", **extra) -> Path:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.zeros(1, 4, dtype=torch.long)).sum().backward()
    optimizer.step()  # a real optimizer state, as train.py saves it
    optimizer.zero_grad()
    checkpoint = {
        "model": {prefix + k: v for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "model_args": model_args,
        "iter_num": 1234,
        "best_val_loss": torch.tensor(3.21),
        "config": {
            "learning_rate": 6e-4,
            "batch_size": 12,
            "dataset": "fineweb_edu",
            "compile": True,
            "decay_lr": True,
        },
    } | extra
    torch.save(checkpoint, path)
    return path


def logits_max_diff(reference, converted, vocab_size, block_size, seed=1) -> float:
    idx = torch.randint(0, vocab_size, (3, block_size), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        expected = reference(idx)
        actual = converted(input_ids=idx).logits
    assert actual.shape == expected.shape
    return (actual - expected).abs().max().item()


# ---- exactness ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bias", [True, False])
def test_conversion_matches_nanogpt_logits(tmp_path, bias):
    vocab = 50304 if not bias else 96  # the bias-free case uses nanoGPT's padded GPT-2 vocabulary
    reference, model_args = make_reference(bias=bias, vocab_size=vocab)
    path = save_checkpoint(reference, model_args, tmp_path / "tau_3.pt")
    model = convert_nanogpt(path)

    assert isinstance(model, GPT2LMHeadModel)
    assert model.config.n_positions == 16 and model.config.vocab_size == vocab
    assert model.config.activation_function == "gelu"
    assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr()  # tied like nanoGPT
    if not bias:
        assert torch.count_nonzero(model.transformer.h[0].mlp.c_fc.bias) == 0
        assert torch.count_nonzero(model.transformer.ln_f.bias) == 0
    # Conv1D orientation: (in, out)
    assert tuple(model.transformer.h[0].mlp.c_fc.weight.shape) == (32, 128)
    assert logits_max_diff(reference, model, vocab, 16) <= 1e-4

    topo = TopoConfig.from_pretrained(model)
    assert topo.tau == 3.0 and not topo.inferred
    assert set(topo.layers) == {"transformer.h.0.mlp.c_fc", "transformer.h.1.mlp.c_fc"}
    assert topo.layers["transformer.h.0.mlp.c_fc"].shape == (8, 16, 32)
    record = getattr(model.config, CONVERSION_KEY)
    assert record["iter_num"] == 1234 and record["best_val_loss"] == pytest.approx(3.21)
    assert record["model_args"]["bias"] is bias and record["training_config"]["dataset"] == "fineweb_edu"


def test_untied_lm_head_and_bare_state_dict(tmp_path):
    reference, model_args = make_reference(bias=True, vocab_size=80)
    reference.lm_head.weight = nn.Parameter(reference.lm_head.weight.detach().clone() + 0.05)  # untie
    torch.save(reference.state_dict(), tmp_path / "bare.pt")
    with pytest.raises(ValueError, match="n_head"):
        convert_nanogpt(tmp_path / "bare.pt")
    model = convert_nanogpt(tmp_path / "bare.pt", n_head=2, tau=1.0)
    assert model.config.tie_word_embeddings is False
    assert logits_max_diff(reference, model, 80, 16) <= 1e-4


def test_saved_model_reloads_with_same_logits(tmp_path):
    reference, model_args = make_reference(bias=False, vocab_size=96)
    path = save_checkpoint(reference, model_args, tmp_path / "ckpt.pt", prefix="")
    model = convert_nanogpt(path, tau=0.5)
    model.save_pretrained(tmp_path / "hf")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "hf")
    assert logits_max_diff(reference, reloaded, 96, 16) <= 1e-4
    assert TopoConfig.from_pretrained(tmp_path / "hf").tau == 0.5
    assert TopoConfig.from_pretrained(reloaded).layers is not None  # metadata matches the reloaded weights


def test_tau_from_flag_file_name_or_inferred(tmp_path, caplog):
    assert tau_from_filename("tau_0.5.pt") == 0.5 and tau_from_filename("/x/toponet-tau50.pt") == 50.0
    assert tau_from_filename("baseline.pt") is None
    reference, model_args = make_reference(bias=True, vocab_size=64)
    path = save_checkpoint(reference, model_args, tmp_path / "tau_1.pt")
    with caplog.at_level(logging.WARNING, logger="hf_topo.convert"):
        assert TopoConfig.from_pretrained(convert_nanogpt(path, tau=50)).tau == 50.0  # the flag wins, with a warning
    assert "file name" in caplog.text
    unknown = save_checkpoint(reference, model_args, tmp_path / "baseline.pt")
    topo = TopoConfig.from_pretrained(convert_nanogpt(unknown))
    assert topo.inferred and topo.tau == 0.0


# ---- safety and bad input ------------------------------------------------------------------------------------------


class ArbitraryObject:
    """Anything that only full unpickling can restore."""

    def __init__(self):
        self.payload = "not a tensor"


def test_refuses_checkpoint_that_needs_arbitrary_unpickling(tmp_path):
    reference, model_args = make_reference(bias=True, vocab_size=64)
    path = save_checkpoint(reference, model_args, tmp_path / "tau_1.pt", config=ArbitraryObject())
    with pytest.raises(ValueError, match=r"weights_only=True") as err:
        load_checkpoint(path)
    message = str(err.value)
    assert "arbitrary code" in message and "trust" in message and "torch.save" in message
    with pytest.raises(ValueError, match="weights_only"):
        convert_nanogpt(path)


def test_bad_inputs_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="No checkpoint file at"):
        convert_nanogpt(tmp_path / "missing.pt")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(ValueError, match="not a nanoGPT checkpoint dict"):
        convert_nanogpt(tmp_path / "list.pt")
    reference, model_args = make_reference(bias=True, vocab_size=64)
    wrong = save_checkpoint(reference, model_args | {"n_layer": 3}, tmp_path / "wrong.pt")
    with pytest.raises(ValueError, match=r"transformer\.h\.2"):
        convert_nanogpt(wrong)
    extra = save_checkpoint(reference, model_args, tmp_path / "extra.pt")
    checkpoint = torch.load(extra, weights_only=True)
    checkpoint["model"]["_orig_mod.transformer.h.0.attn.rotary.inv_freq"] = torch.ones(4)
    torch.save(checkpoint, extra)
    with pytest.raises(ValueError, match="does not know"):
        convert_nanogpt(extra)


def test_truncated_or_non_checkpoint_files_are_named_as_such(tmp_path):
    reference, model_args = make_reference(bias=False, vocab_size=64)
    good = save_checkpoint(reference, model_args, tmp_path / "tau_1.pt")
    data = good.read_bytes()
    for fraction in (0.999, 0.5, 0.01):  # an interrupted download: the zip archive's end is missing
        cut = tmp_path / f"cut_{fraction}.pt"
        cut.write_bytes(data[: int(len(data) * fraction)])
        with pytest.raises(ValueError, match=rf"cut_{fraction}\.pt is truncated or not a PyTorch checkpoint"):
            convert_nanogpt(cut)
    legacy = tmp_path / "legacy.pt"  # the pre-1.6 format (a pickle stream) still converts ...
    torch.save(torch.load(good, weights_only=True), legacy, _use_new_zipfile_serialization=False)
    assert logits_max_diff(reference, convert_nanogpt(legacy, tau=1.0), 64, 16) <= 1e-4
    legacy_cut = tmp_path / "legacy_cut.pt"  # ... and is refused cut short
    legacy_cut.write_bytes(legacy.read_bytes()[: legacy.stat().st_size // 2])
    with pytest.raises(ValueError, match="legacy_cut.pt is truncated or not a PyTorch checkpoint"):
        load_checkpoint(legacy_cut)
    page = tmp_path / "page.pt"  # e.g. an error page saved under the checkpoint's name
    page.write_text("<!DOCTYPE html><html><body>404</body></html>")
    with pytest.raises(ValueError, match=r"page\.pt is truncated or not a PyTorch checkpoint \(it starts with"):
        load_checkpoint(page)
    pointer = tmp_path / "lfs.pt"
    pointer.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:0123\nsize 497000000\n")
    with pytest.raises(ValueError, match="Git LFS pointer"):
        load_checkpoint(pointer)
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty\.pt is empty"):
        load_checkpoint(tmp_path / "empty.pt")


# ---- where a checkpoint comes from: a file, a folder, the Hub --------------------------------------------------------

AUTHORS_REPO = "murtylab/topo-nanogpt-fineweb10B"
AUTHORS_TAUS = (0.5, 1.0, 3.0, 50.0)


def test_checkpoint_file_names_are_those_of_the_authors_repo():
    assert [checkpoint_filename(t, "nanogpt") for t in (0.5, 1, 3, 50)] == [
        "tau_0.5.pt",
        "tau_1.0.pt",
        "tau_3.0.pt",
        "tau_50.0.pt",
    ]
    assert all(tau_from_filename(checkpoint_filename(t, "nanogpt")) == t for t in AUTHORS_TAUS + (0.25, 12.5))


@pytest.fixture(scope="module")
def nanogpt_folder(tmp_path_factory):
    """A folder laid out like the authors' repo: tau_0.5.pt, tau_1.0.pt, tau_3.0.pt, tau_50.0.pt (tiny models)."""
    folder = tmp_path_factory.mktemp("toponets")
    references = {}
    for seed, tau in enumerate(AUTHORS_TAUS):
        reference, model_args = make_reference(bias=False, vocab_size=96, seed=seed)
        save_checkpoint(reference, model_args, folder / checkpoint_filename(tau, "nanogpt"))
        references[tau] = reference
    return folder, references


def test_resolve_a_local_file_or_folder(nanogpt_folder, tmp_path):
    folder, references = nanogpt_folder
    path, tau = resolve_checkpoint_file(str(folder), tau=50)
    assert path == str(folder / "tau_50.0.pt") and tau == 50
    assert resolve_checkpoint_file(folder / "tau_0.5.pt") == (str(folder / "tau_0.5.pt"), 0.5)  # τ from the name
    assert resolve_checkpoint_file(folder, filename="tau_3.0.pt") == (str(folder / "tau_3.0.pt"), 3.0)
    model = convert_nanogpt(*resolve_checkpoint_file(folder, tau=3))
    assert logits_max_diff(references[3.0], model, 96, 16) <= 1e-4 and TopoConfig.from_pretrained(model).tau == 3.0

    with pytest.raises(
        ValueError, match=r"4 checkpoints \(tau_0\.5\.pt, tau_1\.0\.pt, tau_3\.0\.pt, tau_50\.0\.pt\).*tau="
    ):
        resolve_checkpoint_file(folder)
    with pytest.raises(ValueError, match=r"no checkpoint\(s\) for tau=7.*tau_0\.5\.pt, tau_1\.0\.pt"):
        resolve_checkpoint_file(folder, tau=7)
    with pytest.raises(FileNotFoundError, match="^filename='ckpt.pt': .* has no such file"):
        resolve_checkpoint_file(folder, filename="ckpt.pt")
    with pytest.raises(ValueError, match="finite τ >= 0"):
        resolve_checkpoint_file(folder, tau=-1)
    single = tmp_path / "single"
    single.mkdir()
    os.symlink(folder / "tau_1.0.pt", single / "ckpt.pt")
    assert resolve_checkpoint_file(single) == (str(single / "ckpt.pt"), None)  # its only checkpoint; τ unknown
    assert resolve_checkpoint_file(single, tau=1)[1] == 1
    os.symlink(folder / "tau_3.0.pt", tmp_path / "tau_3.0.pt")
    with pytest.raises(ValueError, match="no checkpoint"):  # the only file, but its name says another τ
        resolve_checkpoint_file(tmp_path, tau=50)
    for missing in (str(tmp_path / "nowhere.pt"), "./tau_1.0.pt", "tau_1.0.pt", "~/nowhere"):
        with pytest.raises(FileNotFoundError, match="not an existing file or folder, nor a Hub repo id"):
            resolve_checkpoint_file(missing, tau=1)


def test_resolve_from_the_hub_offline_is_a_clear_error_not_a_hang(tmp_path):
    start = time.monotonic()
    with pytest.raises(
        ValueError,
        match=r"Cannot fetch tau_50\.0\.pt of the Hub repo someone/no-such-toponets.*cannot be reached.*hf download",
    ):
        resolve_checkpoint_file("someone/no-such-toponets", tau=50, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="Which checkpoint of someone/no-such-toponets.*tau="):
        resolve_checkpoint_file("someone/no-such-toponets", cache_dir=tmp_path)
    assert time.monotonic() - start < 30


def _hub_cache_with(
    cache: Path, repo_id: str, files: dict[str, Path], commit: str = "0123456789abcdef" * 2 + "01234567"
):
    """huggingface_hub's cache layout (blobs, a snapshot of symlinks, refs/main), as a download leaves it."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "blobs").mkdir()
    for name, source in files.items():
        blob = repo / "blobs" / f"blob-of-{name}"
        blob.write_bytes(source.read_bytes())
        os.symlink(os.path.relpath(blob, snapshot), snapshot / name)
    return commit


def test_resolve_from_the_hub_uses_hf_hub_download_and_its_cache(nanogpt_folder, tmp_path):
    folder, references = nanogpt_folder
    commit = _hub_cache_with(tmp_path, AUTHORS_REPO, {"tau_50.0.pt": folder / "tau_50.0.pt"})
    path, tau = resolve_checkpoint_file(AUTHORS_REPO, tau=50, cache_dir=tmp_path)  # offline: served by the cache
    assert Path(path) == tmp_path / f"models--murtylab--topo-nanogpt-fineweb10B/snapshots/{commit}/tau_50.0.pt"
    assert tau == 50
    assert resolve_checkpoint_file(AUTHORS_REPO, tau=50, revision=commit, cache_dir=tmp_path)[0] == path
    model = convert_nanogpt(path, tau=tau, source=AUTHORS_REPO)
    assert logits_max_diff(references[50.0], model, 96, 16) <= 1e-4
    assert getattr(model.config, CONVERSION_KEY)["source"] == AUTHORS_REPO
    assert getattr(model.config, CONVERSION_KEY)["checkpoint"] == "tau_50.0.pt"
    assert resolve_checkpoint_file(AUTHORS_REPO, filename="tau_50.0.pt", cache_dir=tmp_path) == (path, 50.0)
    with pytest.raises(
        ValueError, match=r"Cannot fetch tau_3\.0\.pt of the Hub repo murtylab/topo-nanogpt-fineweb10B"
    ):
        resolve_checkpoint_file(AUTHORS_REPO, tau=3, cache_dir=tmp_path)  # not in the cache, and offline


# ---- tokenizer and the script ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def local_tokenizer(tmp_path_factory):
    from hf_topo.data import train_bpe_tokenizer

    tokenizer = train_bpe_tokenizer(["def f(x): return x + 1\n" * 50, "the cat sat on the mat\n" * 50], vocab_size=300)
    path = tmp_path_factory.mktemp("tok")
    tokenizer.save_pretrained(path)
    return path, len(tokenizer)


def test_tokenizer_attached_or_clearly_missing(tmp_path, local_tokenizer):
    tok_path, tok_size = local_tokenizer
    reference, model_args = make_reference(bias=False, vocab_size=320)
    model = convert_nanogpt(save_checkpoint(reference, model_args, tmp_path / "tau_1.pt"))
    assert attach_tokenizer(model, tmp_path / "out", str(tok_path)) is not None
    record = getattr(model.config, CONVERSION_KEY)
    assert record["tokenizer_vocab_size"] == tok_size and model.config.vocab_size == 320  # vocab kept, size recorded
    assert (tmp_path / "out" / "tokenizer.json").is_file()
    # offline, the default GPT-2 tokenizer cannot be fetched: a clear error that names the way out
    with pytest.raises(ValueError, match=r"Cannot load a tokenizer from 'openai-community/gpt2'.*tokenizer_name="):
        attach_tokenizer(model, tmp_path / "out2")
    assert not (tmp_path / "out2").exists()
    # a tokenizer object (loaded before the conversion, as the command does) is saved as it is
    from hf_topo.loading import load_tokenizer

    assert attach_tokenizer(model, tmp_path / "out4", load_tokenizer(tok_path)) is not None
    assert (tmp_path / "out4" / "tokenizer.json").is_file()
    with pytest.raises(ValueError, match="has no tokenizer"):  # a folder without tokenizer files
        attach_tokenizer(model, tmp_path / "out5", tmp_path / "out4" / "..")
    small = convert_nanogpt(save_checkpoint(*make_reference(bias=False, vocab_size=64), tmp_path / "tau_2.pt"))
    with pytest.raises(ValueError, match="not the tokenizer.*tokenizer_name"):
        attach_tokenizer(small, tmp_path / "out3", str(tok_path))


@pytest.mark.slow
def test_convert_script_end_to_end(tmp_path, local_tokenizer):
    reference, model_args = make_reference(bias=False, vocab_size=320)
    path = save_checkpoint(reference, model_args, tmp_path / "tau_0.5.pt")
    out = tmp_path / "hf"
    result = run_script(  # the module form, in a fresh process; the command form is the same code
        [
            sys.executable,
            "-m",
            "hf_topo.cli.convert_toponet",
            str(path),
            "--output_dir",
            str(out),
            "--tokenizer_name",
            str(local_tokenizer[0]),
        ]
    )
    assert "τ=0.5" in result.stdout and "tokenizer:" in result.stdout
    model = AutoModelForCausalLM.from_pretrained(out)
    assert logits_max_diff(reference, model, 320, 16) <= 1e-4
    assert TopoConfig.from_pretrained(out).tau == 0.5
    assert (out / "tokenizer.json").is_file()


def test_convert_script_without_reachable_tokenizer(tmp_path, capsys):
    from hf_topo.cli import convert_toponet

    reference, model_args = make_reference(bias=True, vocab_size=64)
    path = save_checkpoint(reference, model_args, tmp_path / "tau_5.pt")
    out = tmp_path / "no_tok"
    with pytest.raises(ValueError, match="openai-community/gpt2.*tokenizer_name="):  # the default, offline
        convert_toponet.main([str(path), "--output_dir", str(out)])
    assert not out.exists()  # refused before anything was written
    convert_toponet.main([str(path), "--output_dir", str(out), "--no_tokenizer"])
    assert "none attached" in capsys.readouterr().out  # converted without one on request, and said so
    assert (out / "model.safetensors").is_file() and not (out / "tokenizer.json").exists()
    with pytest.raises(ValueError, match="not empty"):
        convert_toponet.main([str(path), "--output_dir", str(out), "--no_tokenizer"])
    with pytest.raises(ValueError, match="weights_only"):
        bad = save_checkpoint(reference, model_args, tmp_path / "bad.pt", config=ArbitraryObject())
        convert_toponet.main([str(bad), "--output_dir", str(tmp_path / "bad"), "--no_tokenizer"])


def test_convert_command_says_which_checkpoints_a_folder_holds(nanogpt_folder, tmp_path, capsys):
    """`hf-topo convert-toponet FOLDER` of several tau_<τ>.pt files without --tau, or with a τ that none has: an error
    that lists the files and the flags to choose with, before anything is written."""
    from hf_topo.cli import convert_toponet
    from hf_topo.cli.arguments import run_command

    folder, _ = nanogpt_folder
    out = tmp_path / "converted"
    listing = r"tau_0\.5\.pt, tau_1\.0\.pt, tau_3\.0\.pt, tau_50\.0\.pt"
    argv = [str(folder), "--output_dir", str(out), "--no_tokenizer"]
    with pytest.raises(ValueError, match=rf"holds 4 checkpoints \({listing}\): say which with tau= "):
        convert_toponet.main(argv)
    assert run_command(convert_toponet.main, argv, prog="hf-topo convert-toponet") == 1  # the command's wording:
    error = capsys.readouterr().err
    assert re.search(rf"holds 4 checkpoints \({listing}\): say which with --tau \(.*, --filename NAME, or", error)
    with pytest.raises(ValueError, match=rf"no checkpoint\(s\) for tau=2\b.*its checkpoints: {listing}"):
        convert_toponet.main([str(folder), "--tau", "2", "--output_dir", str(out), "--no_tokenizer"])
    assert not out.exists()
    convert_toponet.main([str(folder), "--tau", "50", "--output_dir", str(out), "--no_tokenizer"])
    assert TopoConfig.from_pretrained(out).tau == 50.0  # the flag that the error names picks the file
