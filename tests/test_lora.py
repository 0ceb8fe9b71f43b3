"""LoRA fine-tuning of a tiny TopoNet with real PEFT (hf_topo.lora, hf_topo.finetuning, hf-topo finetune-lora and
compare-lora)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _scripts import ACCELERATE_ONE_CPU, offline_env, run_script
from datasets import Dataset
from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments

from hf_topo import TopoConfig, TopoRegularizer
from hf_topo.cli import finetune_lora
from hf_topo.data import train_bpe_tokenizer, write_python_corpus
from hf_topo.lora import load_lora_adapter, wrap_with_lora

ROOT = Path(__file__).resolve().parents[1]


def _tiny_gpt2(vocab: int, n_embd: int = 32, seed: int = 0) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=vocab, n_positions=64, n_embd=n_embd, n_layer=2, n_head=2, bos_token_id=0, eos_token_id=0
    )
    config.resid_pdrop = config.embd_pdrop = config.attn_pdrop = 0.0
    return GPT2LMHeadModel(config)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_python_corpus(str(tmp_path_factory.mktemp("lora") / "code.txt"), max_bytes=60_000)


@pytest.fixture(scope="module")
def toponet(tmp_path_factory, corpus):
    """A tiny saved TopoNet (topography metadata with τ=2) and its tokenizer."""
    tokenizer = train_bpe_tokenizer([open(corpus).read()], vocab_size=300)
    model = _tiny_gpt2(len(tokenizer))
    TopoRegularizer(TopoConfig(tau=2.0)).config_for(model).attach_to(model.config)
    path = tmp_path_factory.mktemp("toponet")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def _finetune(toponet, corpus, out, *extra):
    argv = ["--model_name_or_path", str(toponet), "--train_file", corpus, "--dataset", "code", "--block_size", "32"]
    argv += ["--lora_r", "4"]
    argv += ["--max_steps", "12", "--per_device_train_batch_size", "8", "--use_cpu", "true", "--output_dir", str(out)]
    argv += ["--learning_rate", "5e-3", "--disable_tqdm", "true", *extra]
    return finetune_lora.main(argv)


@pytest.mark.slow  # 17 CPU s: a LoRA run, saved, reloaded and merged
def test_lora_trains_saves_reloads_and_merges(toponet, corpus, tmp_path):
    metrics = _finetune(toponet, corpus, tmp_path / "run", "--merge", "true")
    assert metrics["eval_loss_after"] < metrics["eval_loss_before"] and metrics["delta_eval_loss"] < 0
    assert metrics["topo_loss_before"] == pytest.approx(metrics["topo_loss_after"], abs=1e-7)  # LoRA on attention only

    base = AutoModelForCausalLM.from_pretrained(toponet)
    adapted = load_lora_adapter(AutoModelForCausalLM.from_pretrained(toponet), tmp_path / "run").eval()
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "merged").eval()
    ids = torch.randint(0, base.config.vocab_size, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        adapted_logits, merged_logits, base_logits = adapted(ids).logits, merged(ids).logits, base(ids).logits
    assert torch.allclose(adapted_logits, merged_logits, atol=1e-5)
    assert not torch.allclose(adapted_logits, base_logits, atol=1e-3)  # the adapter learned something

    record = json.loads((tmp_path / "run" / "merged" / "config.json").read_text())["topography"]
    assert record["tau"]["value"] == 2.0  # the TopoNet's own τ, not the fine-tuning's
    assert record["finetuning"] == [
        {
            "method": "lora",
            "tau": 0.0,
            "r": 4,
            "alpha": 16.0,
            "target_modules": ["attn.c_attn"],
            "corpus": "code",  # the preset named, and the file the text came from
            "corpus_source": os.path.abspath(corpus),
            "steps": 12,
        }
    ]
    # The adapter folder carries the same record (topography.json), and the adapter and the merged model load in a
    # new process, as a user opens them, with the logits of this process.
    code = """
import json, sys, torch
from peft import PeftModel
from transformers import AutoModelForCausalLM
from hf_topo import TopoConfig
run, base, ids = sys.argv[1], sys.argv[2], torch.tensor(json.loads(sys.argv[3]))
c = TopoConfig.from_pretrained(run)
adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), run).eval()
merged = AutoModelForCausalLM.from_pretrained(run + "/merged").eval()
with torch.no_grad():
    logits = [adapted(ids).logits[0, -1, :5].tolist(), merged(ids).logits[0, -1, :5].tolist()]
print(json.dumps({"tau": c.tau, "finetuning": c.finetuning, "layers": sorted(c.layers), "logits": logits}))
"""
    fresh = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "run"), str(toponet), json.dumps(ids.tolist())],
        capture_output=True,
        text=True,
        env=offline_env(),
    )
    assert fresh.returncode == 0, fresh.stderr[-2000:]
    adapter_record = json.loads(fresh.stdout)
    assert adapter_record["tau"] == 2.0 and adapter_record["finetuning"] == record["finetuning"]
    assert adapter_record["layers"] == ["transformer.h.0.mlp.c_fc", "transformer.h.1.mlp.c_fc"]
    for loaded in adapter_record["logits"]:
        assert torch.allclose(torch.tensor(loaded), adapted_logits[0, -1, :5], atol=1e-5)
    assert TopoConfig.from_pretrained(merged).layers.keys() == {"transformer.h.0.mlp.c_fc", "transformer.h.1.mlp.c_fc"}
    saved = json.loads((tmp_path / "run" / "lora_metrics.json").read_text())
    assert saved["perplexity_after"] < saved["perplexity_before"]


def test_only_adapter_parameters_change(toponet, corpus, tmp_path):
    model = AutoModelForCausalLM.from_pretrained(toponet)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    peft_model = wrap_with_lora(model, r=2, alpha=4, target_modules=["attn.c_attn", "mlp.c_fc"])
    ids = torch.randint(0, model.config.vocab_size, (16, 16), generator=torch.Generator().manual_seed(1)).tolist()
    args = TrainingArguments(
        output_dir=str(tmp_path / "trainer"),
        max_steps=3,
        learning_rate=1e-2,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
    )
    Trainer(model=peft_model, args=args, train_dataset=Dataset.from_dict({"input_ids": ids, "labels": ids})).train()
    for name, param in peft_model.named_parameters():
        if "lora_" in name:
            continue
        base_name = name.removeprefix("base_model.model.").replace(".base_layer", "")
        assert torch.equal(param, before[base_name]), name
    assert any(not torch.equal(p, torch.zeros_like(p)) for n, p in peft_model.named_parameters() if "lora_B" in n)


@pytest.mark.slow  # 11 CPU s: a LoRA run with τ
def test_tau_through_the_adapter_on_c_fc(toponet, corpus, tmp_path):
    metrics = _finetune(
        toponet, corpus, tmp_path / "topo", "--lora_target_modules", "attn.c_attn", "mlp.c_fc", "--tau", "20"
    )
    assert metrics["topo_loss_after"] < metrics["topo_loss_before"] - 0.01  # τ reached the sheet through B·A
    # TopoLoss of the LoRA-wrapped model equals TopoLoss of its merged weights, and its gradient reaches A and B.
    model = load_lora_adapter(AutoModelForCausalLM.from_pretrained(toponet), tmp_path / "topo", is_trainable=True)
    topo = TopoRegularizer(TopoConfig.from_pretrained(AutoModelForCausalLM.from_pretrained(toponet)))
    value = topo(model)
    value.backward()
    assert value.item() == pytest.approx(metrics["topo_loss_after"], abs=1e-6)
    lora_grads = [p.grad for n, p in model.named_parameters() if "c_fc.lora_" in n]
    assert len(lora_grads) == 4 and all(g is not None and g.abs().sum() > 0 for g in lora_grads)


@pytest.mark.slow  # 19 CPU s: a full LoRA run before the refusals
def test_bad_input(toponet, corpus, tmp_path):
    model = AutoModelForCausalLM.from_pretrained(toponet)
    with pytest.raises(ValueError, match=r"lora_target_modules=\['q_proj'\] matches no .*Candidates: 'attn.c_attn'"):
        wrap_with_lora(model, target_modules=["q_proj"])

    _finetune(toponet, corpus, tmp_path / "adapter")
    saved = {p.name: p.read_bytes() for p in (tmp_path / "adapter").iterdir() if p.is_file()}
    with pytest.raises(ValueError, match="already holds a training run .*adapter_config.json"):
        _finetune(toponet, corpus, tmp_path / "adapter")  # the same command again: refused, nothing overwritten
    assert {p.name: p.read_bytes() for p in (tmp_path / "adapter").iterdir() if p.is_file()} == saved
    (tmp_path / "pickled").mkdir()
    (tmp_path / "pickled" / "adapter_config.json").write_bytes(
        (tmp_path / "adapter" / "adapter_config.json").read_bytes()
    )
    torch.save({}, tmp_path / "pickled" / "adapter_model.bin")
    with pytest.raises(FileNotFoundError, match="adapter_model.safetensors does not exist: expected a PEFT adapter"):
        load_lora_adapter(model, tmp_path / "pickled")  # a pickled adapter is never unpickled
    wider = _tiny_gpt2(model.config.vocab_size, n_embd=48)
    with pytest.raises(
        ValueError, match=r"does not fit this base model: .*c_attn.lora_A.weight has shape \(4, 32\).*48 inputs"
    ):
        load_lora_adapter(wider, tmp_path / "adapter")

    plain = tmp_path / "plain"
    _tiny_gpt2(model.config.vocab_size).save_pretrained(plain)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        (plain / f).write_text((toponet / f).read_text())
    with pytest.raises(ValueError, match="has no topography metadata.*infer_topography=True"):
        finetune_lora.main(
            [
                "--model_name_or_path",
                str(plain),
                "--train_file",
                corpus,
                "--tau",
                "1",
                "--output_dir",
                str(tmp_path / "x"),
                "--use_cpu",
                "true",
            ]
        )
    metrics = _finetune(
        plain, corpus, tmp_path / "inferred", "--tau", "1", "--infer_topography", "true", "--merge", "true"
    )
    assert metrics["topo_loss_before"] is not None
    record = json.loads((tmp_path / "inferred" / "merged" / "config.json").read_text())["topography"]
    assert record["inferred"] is True and record["tau"]["value"] == 0.0
    with pytest.raises(ValueError, match="is offline here: pass train_file="):
        finetune_lora.main(
            ["--model_name_or_path", str(toponet), "--output_dir", str(tmp_path / "y"), "--use_cpu", "true"]
        )


def test_finetune_lora_refuses_bad_input_before_evaluating_or_writing(toponet, corpus, tmp_path):
    """A model folder without weights, a rank of 0, a training file that is missing, empty or shorter than one
    block: each an error that says what to pass, raised before the model is evaluated and before --output_dir exists."""
    weightless = tmp_path / "weightless"
    weightless.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (weightless / name).write_bytes((toponet / name).read_bytes())
    (tmp_path / "empty.txt").write_text("\n\n")
    (tmp_path / "short.txt").write_text("def f(x):\n    return x\n")
    out = tmp_path / "out"
    common = ["--output_dir", str(out), "--use_cpu", "true", "--block_size", "32", "--max_steps", "1"]
    cases = [
        (["--model_name_or_path", str(weightless), "--train_file", corpus], "has a config.json but no weights"),
        (["--model_name_or_path", str(tmp_path / "nowhere"), "--train_file", corpus], "nowhere' does not exist"),
        (["--model_name_or_path", str(toponet), "--train_file", corpus, "--lora_r", "0"], "lora_r=0: a LoRA rank"),
        (["--model_name_or_path", str(toponet), "--train_file", str(tmp_path / "missing.txt")], "does not exist"),
        (["--model_name_or_path", str(toponet), "--train_file", str(tmp_path / "empty.txt")], "is empty"),
        (
            ["--model_name_or_path", str(toponet), "--train_file", str(tmp_path / "short.txt")],
            r"The corpus \(\d+ tokens\) is too small for .* blocks of 32 tokens.*smaller block_size=",
        ),
    ]
    for argv, message in cases:
        with pytest.raises((ValueError, FileNotFoundError), match=message):
            finetune_lora.main(argv + common)
        assert not out.exists(), argv


def test_compare_lora_refuses_a_bad_model_or_rank_before_any_run(toponet, corpus, tmp_path):
    from hf_topo.cli import compare_lora

    out = tmp_path / "cmp"
    common = ["--train_file", corpus, "--max_steps", "1", "--eval_steps", "1", "--block_size", "32"]
    common += ["--output_dir", str(out)]
    cases = [
        (["--models", str(toponet), str(tmp_path / "missing"), "--ranks", "2"], "missing' does not exist"),
        (["--models", str(toponet), "--ranks", "2", "0"], r"ranks=\[2, 0\]: give LoRA ranks >= 1"),
        (["--models", str(toponet), str(toponet), "--ranks", "2"], "Several runs would be written to"),
        (["--models", str(toponet), "--train_file", str(tmp_path / "missing.txt")], "missing.txt' does not exist"),
    ]
    for argv, message in cases:
        with pytest.raises((ValueError, FileNotFoundError), match=message):
            compare_lora.main(common + argv)
        assert not out.exists(), argv  # not even the first model's run started


@pytest.mark.slow
def test_compare_lora_one_command(toponet, corpus, tmp_path):
    cmd = [sys.executable, "-m", "hf_topo.cli", "compare-lora", "--models", str(toponet), "--ranks", "2", "4"]
    cmd += ["--train_file", corpus, "--max_steps", "4", "--eval_steps", "2", "--batch_size", "4", "--block_size", "32"]
    cmd += ["--output_dir", str(tmp_path / "cmp")]
    result = subprocess.run(
        cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "HF_HUB_OFFLINE": "1"}
    )
    assert result.returncode == 0, result.stderr[-3000:]
    comparison = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    assert [(r["lora_r"], r["model_tau"]) for r in comparison["runs"]] == [(2, 2.0), (4, 2.0)]
    assert (
        f"| {toponet.name} (τ=2) |" in result.stdout
        and (tmp_path / "cmp" / "lora_comparison.png").stat().st_size > 10_000
    )


@pytest.mark.slow
def test_finetune_under_accelerate_launch(toponet, corpus, tmp_path):
    # the module form of the command, as the docs give it for several processes
    cmd = [sys.executable, *ACCELERATE_ONE_CPU, "-m", "hf_topo.cli.finetune_lora", "--train_file", corpus]
    cmd += ["--model_name_or_path", str(toponet), "--block_size", "32", "--lora_r", "2", "--max_steps", "3"]
    cmd += ["--dataset", "code"]
    result = run_script(cmd + ["--output_dir", str(tmp_path / "launched")], tmp_path)
    assert "LoRA r=2 on code: validation loss" in result.stdout
    assert json.loads((tmp_path / "launched" / "topography.json").read_text())["finetuning"][-1]["r"] == 2
    assert (tmp_path / "launched" / "adapter_model.safetensors").exists()
