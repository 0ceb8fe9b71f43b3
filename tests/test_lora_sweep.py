"""A.11 as the paper designed it (hf_topo.experiments.compare_lora): the Python-code corpus from the standard library,
and the LoRA rank sweep of a baseline and a TopoNet on two domains, compared, cached and plotted."""

import hashlib
import json
import math
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM

from hf_topo import TopoConfig, TopoRegularizer
from hf_topo.data import train_bpe_tokenizer
from hf_topo.errors import InputError
from hf_topo.experiments.compare_lora import (
    LORA_NONINFERIORITY_MARGIN,
    code_corpus_files,
    lora_rank_sweep,
    lora_sweep_measures,
    write_code_corpus,
)

STDLIB = Path(sysconfig.get_paths()["stdlib"])


@pytest.fixture(scope="module")
def tiny_stdlib(tmp_path_factory):
    """A few real standard-library files in a folder of their own: two modules, a package with a tests folder."""
    root = tmp_path_factory.mktemp("stdlib")
    for name in ("bisect.py", "heapq.py", "colorsys.py"):
        (root / name).write_text((STDLIB / name).read_text(encoding="utf-8"), encoding="utf-8")
    (root / "json" / "tests").mkdir(parents=True)
    for name in ("__init__.py", "decoder.py", "scanner.py"):
        (root / "json" / name).write_text((STDLIB / "json" / name).read_text(encoding="utf-8"), encoding="utf-8")
    (root / "json" / "tests" / "test_x.py").write_text("assert False\n")
    return root


def test_code_corpus_is_sorted_capped_and_deterministic(tiny_stdlib, tmp_path):
    modules = ["json", "heapq", "bisect", "not_a_module"]
    files = [path.relative_to(tiny_stdlib).as_posix() for path in code_corpus_files(modules, root=str(tiny_stdlib))]
    assert files == ["bisect.py", "heapq.py", "json/__init__.py", "json/decoder.py", "json/scanner.py"]

    record = write_code_corpus(tmp_path / "all.txt", modules, max_bytes=10**7, root=str(tiny_stdlib))
    expected = "".join(f"# file: {f}\n{(tiny_stdlib / f).read_text(encoding='utf-8')}\n" for f in files).encode()
    assert (tmp_path / "all.txt").read_bytes() == expected
    assert record["files"] == files and record["bytes"] == len(expected)
    assert record["sha256"] == hashlib.sha256(expected).hexdigest()
    assert json.loads((tmp_path / "all.txt.json").read_text()) == record

    # The cap stops before the first file that would pass it: the files before it, whole.
    sizes = [len(f"# file: {f}\n{(tiny_stdlib / f).read_text(encoding='utf-8')}\n".encode()) for f in files]
    cap = sum(sizes[:3]) + sizes[3] - 1
    capped = write_code_corpus(tmp_path / "capped.txt", modules, max_bytes=cap, root=str(tiny_stdlib))
    assert capped["files"] == files[:3] and capped["bytes"] == sum(sizes[:3]) <= cap
    again = write_code_corpus(tmp_path / "again.txt", modules, max_bytes=cap, root=str(tiny_stdlib))
    assert again["sha256"] == capped["sha256"]
    assert (tmp_path / "again.txt").read_bytes() == (tmp_path / "capped.txt").read_bytes()

    with pytest.raises(InputError, match="fits"):
        write_code_corpus(tmp_path / "none.txt", modules, max_bytes=10, root=str(tiny_stdlib))
    with pytest.raises(InputError, match="positive"):
        write_code_corpus(tmp_path / "none.txt", modules, max_bytes=0, root=str(tiny_stdlib))
    # Written whole, then renamed: no partial file is left behind, and a refused corpus leaves nothing.
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "again.txt", "again.txt.json", "all.txt", "all.txt.json", "capped.txt", "capped.txt.json"
    ]  # fmt: skip


def test_the_default_corpus_reads_this_pythons_standard_library(tmp_path):
    record = write_code_corpus(tmp_path / "code.txt", max_bytes=200_000)
    assert record["root"] == str(STDLIB) and 0 < record["bytes"] <= 200_000
    assert record["files"] == sorted(record["files"]) and record["files"][0].startswith("argparse")
    assert not any("/test" in f for f in record["files"])
    text = (tmp_path / "code.txt").read_text(encoding="utf-8")
    assert text.startswith("# file: argparse.py\n") and "def " in text


def test_the_margin_is_five_percent_in_perplexity():
    assert LORA_NONINFERIORITY_MARGIN == pytest.approx(math.log(1.05))


ENGLISH = (
    "the king walked slowly to the castle and spoke of love and war while the queen listened in the quiet hall "
    "of stone and the children played outside in the morning light"
).split()


@pytest.fixture(scope="module")
def sweep_inputs(tmp_path_factory, tiny_stdlib):
    """Two domains (English-like text, Python code) and a tiny τ = 0 baseline and τ = 2 TopoNet of one tokenizer."""
    root = tmp_path_factory.mktemp("sweep")
    rng = np.random.default_rng(0)
    english = root / "english.txt"
    english.write_text("\n".join(" ".join(rng.choice(ENGLISH, 12)) + "." for _ in range(400)) + "\n")
    code = root / "code.txt"
    write_code_corpus(code, ["bisect", "heapq", "json"], root=str(tiny_stdlib))
    tokenizer = train_bpe_tokenizer([english.read_text(), code.read_text()], vocab_size=400)
    from conftest import build_gpt2

    dirs = {}
    for name, tau, seed in (("baseline", 0.0, 0), ("toponet", 2.0, 1)):
        model = build_gpt2(seed=seed)
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
        TopoRegularizer(TopoConfig(tau=tau)).config_for(model).attach_to(model.config)
        model.save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
        dirs[name] = str(root / name)
    return dirs, {"english": str(english), "code": str(code)}


RECIPE = dict(ranks=(2, 4), max_steps=4, max_train_tokens=3000, block_size=32, batch_size=8, learning_rate=5e-3,
              smoothness_blocks=8, device="cpu")  # fmt: skip


def _perplexity_by_hand(model, blocks: torch.Tensor) -> float:
    """exp of the mean next-token cross-entropy over every block (all blocks full, so the Trainer's mean of batch
    means is this token mean)."""
    with torch.no_grad():
        logits = model(blocks).logits[:, :-1]
    return math.exp(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), blocks[:, 1:].reshape(-1)).item())


@pytest.mark.slow  # about 60 CPU s: 8 LoRA runs, merged and measured, then a resumed sweep
def test_lora_rank_sweep_end_to_end_resumes_and_its_figure_reopens(sweep_inputs, tmp_path):
    dirs, domains = sweep_inputs
    out = tmp_path / "sweep"
    result = lora_rank_sweep(dirs["baseline"], dirs["toponet"], domains, output_dir=str(out), **RECIPE)
    assert len(result["runs"]) == 2 * 2 * 2 and len(result["comparisons"]) == 2 * 2
    assert result["margin"] == LORA_NONINFERIORITY_MARGIN

    from hf_topo.finetuning import LoraArguments, load_lora_corpus
    from hf_topo.loading import load_tokenizer
    from hf_topo.lora import load_lora_adapter

    for run in result["runs"]:
        assert run["gain"] == pytest.approx(math.log(run["perplexity_before"] / run["perplexity_after"]), rel=1e-6)
        run_dir = out / run["domain"] / f"{run['model']}-r{run['rank']}"
        args = LoraArguments(model_name_or_path=dirs[run["model"]], train_file=domains[run["domain"]],
                             max_train_tokens=3000, block_size=32)  # fmt: skip
        _, validation = load_lora_corpus(args, load_tokenizer(dirs[run["model"]]))
        blocks = torch.tensor(validation["input_ids"])
        base = AutoModelForCausalLM.from_pretrained(dirs[run["model"]]).eval()
        assert run["perplexity_before"] == pytest.approx(_perplexity_by_hand(base, blocks), rel=1e-4)
        merged = load_lora_adapter(AutoModelForCausalLM.from_pretrained(dirs[run["model"]]), run_dir)
        merged = merged.merge_and_unload().eval()
        assert run["perplexity_after"] == pytest.approx(_perplexity_by_hand(merged, blocks), rel=1e-4)
        # LoRA on attention leaves the topographic weights as they were; their responses move with their inputs.
        for name, param in base.named_parameters():
            if "mlp.c_fc" in name:
                assert torch.equal(param, merged.get_parameter(name))
        assert run["smoothness_after"]["robust_score"] != run["smoothness_before"]["robust_score"]

    for comparison in result["comparisons"]:
        pair = {r["model"]: r for r in result["runs"]
                if (r["domain"], r["rank"]) == (comparison["domain"], comparison["rank"])}  # fmt: skip
        difference = pair["toponet"]["gain"] - pair["baseline"]["gain"]
        assert comparison["gain_difference"] == pytest.approx(difference)
        assert comparison["non_inferior"] == (difference > -math.log(1.05))
        assert comparison["after_log_ratio"] == pytest.approx(
            math.log(pair["toponet"]["perplexity_after"] / pair["baseline"]["perplexity_after"])
        )
        survival = comparison["toponet_smoothness"]["score"]
        assert survival["before"] == pair["toponet"]["smoothness_before"]["score"]
        assert survival["log_ratio"] == pytest.approx(math.log(survival["after"] / survival["before"]))
    assert json.loads((out / "lora_sweep.json").read_text()) == json.loads(json.dumps(result))
    measures = lora_sweep_measures(result)
    for model in ("baseline", "toponet"):
        gains = [r["gain"] for r in result["runs"] if r["model"] == model]
        assert measures[model]["lora_gain_mean"] == pytest.approx(sum(gains) / 4)
        assert measures[model]["lora_gain_code_r4"] == next(
            r["gain"] for r in result["runs"] if (r["model"], r["domain"], r["rank"]) == (model, "code", 4)
        )

    # Resume: every run is read back; a run without its result is removed and run again, alone.
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("*/*/sweep_run.json")}
    redo = out / "code" / "toponet-r4"
    (redo / "sweep_run.json").unlink()
    again = lora_rank_sweep(dirs["baseline"], dirs["toponet"], domains, output_dir=str(out), **RECIPE)
    for path, stamp in stamps.items():
        assert (path.stat().st_mtime_ns == stamp) == (path.parent != redo), path
    strip = lambda runs: [{k: v for k, v in r.items() if k != "wall_time_s"} for r in runs]  # noqa: E731
    assert strip(again["runs"]) == strip(result["runs"])  # the same seed gives the same run

    probe = (
        "import sys; from PIL import Image; im = Image.open(sys.argv[1]); im.load(); "
        "print(im.size[0], im.size[1], len(set(im.convert('RGB').getdata())))"
    )
    width, height, colours = map(int, subprocess.check_output([sys.executable, "-c", probe, result["figure"]]).split())
    assert os.path.dirname(result["figure"]) == str(out) and width > 500 and height > 400 and colours > 20

    with pytest.raises(InputError, match="ranks"):
        lora_rank_sweep(dirs["baseline"], dirs["toponet"], domains, ranks=(0,), output_dir=str(out))
    with pytest.raises(InputError, match="domains"):
        lora_rank_sweep(dirs["baseline"], dirs["toponet"], {}, output_dir=str(out))
