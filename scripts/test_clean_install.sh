#!/usr/bin/env bash
# Clean-install test (run by CI): build the wheel, install it into a fresh virtualenv, run every `hf-topo` command
# that saves something from a folder outside the checkout, and open every artefact in a NEW Python process.
#   TORCH_SPEC   torch installed into the fresh virtualenv first (default torch==2.13.0, the CPU wheel here)
#   KEEP=1       keep the work folder (printed at the start) for a look afterwards
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
WORK="$(mktemp -d -t hf-topo-clean-install.XXXXXX)"
[ "${KEEP:-0}" = 1 ] || trap 'rm -rf "$WORK"' EXIT
echo "[clean-install] work folder $WORK"
START=$SECONDS

# 1. The wheel, built from the checkout as pip would, and what it ships.
cp -r "$ROOT" "$WORK/src" && rm -rf "$WORK/src/.venv" "$WORK/src/.venv-lowest" "$WORK/src/build" "$WORK/src/outputs"
"$PYTHON" -m pip wheel --quiet --no-deps --wheel-dir "$WORK/dist" "$WORK/src" > "$WORK/build.log" 2>&1 \
    || { tail -30 "$WORK/build.log"; exit 1; }
WHEEL="$(ls "$WORK"/dist/hf_topo-*.whl)"
echo "[clean-install] built $(basename "$WHEEL")"
"$PYTHON" - "$WHEEL" <<'PY'
import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
needed = ["hf_topo/hub/templates/toponet_card.md", "hf_topo/cli/__init__.py", "hf_topo/cli/pretrain.py", "hf_topo/vision/imagenet_classes.tsv",
          "hf_topo/regularizers/csrc/sheet_cosine_cpu.cpp"]
missing = [n for n in needed if n not in names]
entry = [n for n in names if n.endswith("entry_points.txt")]
assert not missing, f"the wheel lacks {missing}"
assert entry, "the wheel has no entry_points.txt"
assert not any(n.startswith(("tests/", "scripts/", "benchmarks/")) for n in names), "the wheel ships non-package folders"
PY

# 2. A fresh virtualenv: torch first (the build for this machine), then the wheel with its dependencies.
"$PYTHON" -m venv "$WORK/venv"
VPY="$WORK/venv/bin/python"
quiet_pip() { "$VPY" -m pip install --quiet "$@" > "$WORK/pip.log" 2>&1 || { tail -30 "$WORK/pip.log"; exit 1; }; }
quiet_pip --upgrade pip
quiet_pip "$TORCH_SPEC"
quiet_pip "$WHEEL"
HF_TOPO="$WORK/venv/bin/hf-topo"
[ -x "$HF_TOPO" ] || { echo "hf-topo was not installed as a command"; exit 1; }
echo "[clean-install] installed into a fresh virtualenv ($((SECONDS - START)) s so far)"

# 3. The commands, from a folder outside the checkout, offline, on data written here.
RUN="$WORK/run"
mkdir -p "$RUN"
cd "$RUN"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export HF_HOME="$WORK/hf-home"   # no cache of the developer's: what a new user has
"$VPY" - <<'PY'
import json, random
random.seed(0)
animals, places = ["cat", "dog", "bird", "horse", "fox", "owl"], ["river", "hill", "market", "forest", "harbour"]
lines = [
    f"The {random.choice(animals)} saw {i % 13} stones near the {random.choice(places)}, and then it went home."
    for i in range(1500)
]
open("corpus.txt", "w").write("\n".join(lines) + "\n")
pairs = [
    {"sentence_good": f"The {a} sees the {p}.", "sentence_bad": f"The {a} see the {p}.", "field": "morphology",
     "linguistics_term": "subject_verb_agreement", "UID": "tiny_agreement", "pair_id": i}
    for i, (a, p) in enumerate((a, p) for a in animals for p in places)
]
import os
os.makedirs("blimp", exist_ok=True)
with open("blimp/tiny_agreement.jsonl", "w") as f:
    f.writelines(json.dumps(p) + "\n" for p in pairs)
open("recipe.yaml", "w").write(
    "train_file: corpus.txt\noutput_dir: toponet\nmodel_preset: tiny-gpt2\nconfig_overrides: n_embd=32,n_layer=2\n"
    "tokenizer_vocab_size: 320\nblock_size: 32\nmax_steps: 6\nper_device_train_batch_size: 8\n"
    "per_device_eval_batch_size: 8\ntau: 5\nreport_to: none\nsave_strategy: 'no'\nuse_cpu: true\n"
)
PY
step() { echo "[clean-install] $*"; "$@" > "$WORK/step.log" 2>&1 || { tail -40 "$WORK/step.log"; exit 1; }; }
step "$HF_TOPO" --help
# The CPU TopoLoss kernels build from the wheel's own source (a fresh extensions folder, not the developer's cache).
export TORCH_EXTENSIONS_DIR="$WORK/torch-extensions"
step "$VPY" -c "from hf_topo.regularizers.native import native_kernels_status as s; r = s(); assert r == 'loaded', r"
step "$HF_TOPO" pretrain recipe.yaml --learning_rate 5e-3
step "$HF_TOPO" analyze --model toponet --text_file corpus.txt --output_dir analysis --block_size 32 \
    --max_tokens 512 --eval_blocks 4 --batch_size 8 --sweeps downsampling --downsampling_factors 1 2 \
    --save_downsampled 2 --progress false
step "$HF_TOPO" finetune-lora --model_name_or_path toponet --train_file corpus.txt --max_train_tokens 4000 \
    --block_size 32 --lora_r 2 --max_steps 3 --per_device_train_batch_size 8 --tau 1 --output_dir adapter \
    --use_cpu true
step "$HF_TOPO" eval-blimp --model toponet --blimp_dir blimp --output blimp.json
"$VPY" - <<'PY'
# a nanoGPT checkpoint as nanoGPT's train.py saves it: {"model": state dict, "model_args": ...}, GPT-2 layout, no bias
import torch
V, C, T, L = 320, 32, 32, 2
g = torch.Generator().manual_seed(0)
r = lambda *shape: torch.randn(*shape, generator=g) * 0.02
state = {"transformer.wte.weight": r(V, C), "transformer.wpe.weight": r(T, C), "transformer.ln_f.weight": torch.ones(C)}
for i in range(L):
    p = f"transformer.h.{i}."
    state |= {p + "ln_1.weight": torch.ones(C), p + "attn.c_attn.weight": r(3 * C, C), p + "attn.c_proj.weight": r(C, C),
              p + "ln_2.weight": torch.ones(C), p + "mlp.c_fc.weight": r(4 * C, C), p + "mlp.c_proj.weight": r(C, 4 * C)}
state["lm_head.weight"] = state["transformer.wte.weight"]
args = dict(n_layer=L, n_head=2, n_embd=C, block_size=T, bias=False, vocab_size=V, dropout=0.0)
torch.save({"model": {"_orig_mod." + k: v for k, v in state.items()}, "model_args": args, "iter_num": 10}, "tau_3.0.pt")
PY
step "$HF_TOPO" convert-toponet tau_3.0.pt --output_dir converted --tokenizer_name toponet

# Vision: two classes of small images (PIL only), a TopoNet and its twin trained on them, the TopoNet's convolutions
# downsampled; the authors' ResNet-18 (bare state dict, blur-pool) and ViT (a dict with "model" and a pickled
# Namespace) file formats, written with the architectures restated in tests/_torchvision_models.py, converted.
"$VPY" - "$ROOT/tests" <<'PY'
import argparse, os, random, sys
import torch
from PIL import Image
sys.path.insert(0, sys.argv[1])
from _torchvision_models import VisionTransformer, apply_blurpool, randomize_batchnorm, randomize_vit, resnet18
random.seed(0)
for name, color in (("red", (200, 40, 40)), ("blue", (40, 40, 200))):
    os.makedirs(f"images/{name}", exist_ok=True)
    for i in range(12):
        pixel = tuple(max(0, min(255, c + random.randint(-40, 40))) for c in color)
        Image.new("RGB", (20, 16), pixel).save(f"images/{name}/{i}.png")
torch.manual_seed(0)
torch.save(randomize_batchnorm(apply_blurpool(resnet18(num_classes=1000, width=16))).state_dict(), "all_topo_tau_10.0.pt")
vit = randomize_vit(VisionTransformer(image_size=64, patch_size=16, num_layers=2, num_heads=4, hidden_dim=32, mlp_dim=64))
torch.save({"model": vit.state_dict(), "epoch": 299, "args": argparse.Namespace(model="vit_b_32")}, "tau_10.0.pt")
PY
VISION_RUN=(--train_dir images --image_size 16 --model_preset tiny-resnet --max_steps 3 --per_device_train_batch_size 8
    --report_to none --save_strategy no --use_cpu true)
step "$HF_TOPO" pretrain "${VISION_RUN[@]}" --tau 5 --output_dir vision_toponet
step "$HF_TOPO" pretrain "${VISION_RUN[@]}" --tau 0 --output_dir vision_twin
step "$HF_TOPO" downsample --model vision_toponet --factor 2 --output_dir vision_small
step "$HF_TOPO" convert-toponet all_topo_tau_10.0.pt --output_dir resnet18_tau10
step "$HF_TOPO" convert-toponet tau_10.0.pt --n_head 4 --output_dir vit_tau10

# 4. Every artefact in a new process, as a user opens it.
fresh() { echo "[clean-install] fresh process: $1"; "$VPY" -c "$2" > "$WORK/step.log" 2>&1 || { cat "$WORK/step.log"; exit 1; }; }
fresh "the TopoNet with plain transformers" '
import sys, json, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
model, tok = AutoModelForCausalLM.from_pretrained("toponet"), AutoTokenizer.from_pretrained("toponet")
assert "hf_topo" not in sys.modules, "loading a TopoNet must not need hf_topo"
assert model.config.topography["tau"]["value"] == 5.0
ids = tok("The cat saw", return_tensors="pt").input_ids
assert torch.isfinite(model(ids).logits).all()
assert json.load(open("toponet/metrics.json"))["topo_loss"] > 0
'
fresh "the downsampled TopoNet after import hf_topo (forward and generate)" '
import hf_topo, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
model = AutoModelForCausalLM.from_pretrained("analysis/downsampled")
tok = AutoTokenizer.from_pretrained("analysis/downsampled")
assert any(type(m).__name__ == "TopoDownsampledLinear" for m in model.modules())
ids = tok("The cat saw", return_tensors="pt").input_ids
assert torch.isfinite(model(ids).logits).all()
out = model.generate(ids, max_new_tokens=5, do_sample=False, pad_token_id=tok.eos_token_id)
assert out.shape[1] == ids.shape[1] + 5
assert hf_topo.parameter_count(model) < hf_topo.parameter_count(AutoModelForCausalLM.from_pretrained("toponet"))
'
fresh "the LoRA adapter with PEFT, and its topography record" '
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM
from hf_topo import TopoConfig
base = AutoModelForCausalLM.from_pretrained("toponet")
model = PeftModel.from_pretrained(base, "adapter")
assert torch.isfinite(model(torch.tensor([[1, 2, 3]])).logits).all()
record = TopoConfig.from_pretrained("adapter")
assert record.tau == 5.0 and record.finetuning[-1]["method"] == "lora" and record.finetuning[-1]["r"] == 2
'
fresh "the BLiMP results" '
import json
r = json.load(open("blimp.json"))
assert r["n_pairs"] == {"tiny_agreement": 30} and 0 <= r["overall"] <= 1
'
fresh "the converted nanoGPT TopoNet with plain transformers" '
import sys, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
model = AutoModelForCausalLM.from_pretrained("converted")
AutoTokenizer.from_pretrained("converted")
assert "hf_topo" not in sys.modules
assert model.config.topography["tau"]["value"] == 3.0 and model.config.vocab_size == 320
assert torch.isfinite(model(torch.tensor([[1, 2, 3]])).logits).all()
'
fresh "the Hub upload folder (card template shipped in the wheel)" '
import subprocess, sys, os
subprocess.run([os.path.join(os.path.dirname(sys.executable), "hf-topo"), "push", "--model", "toponet",
                "--repo_id", "someone/toponet-tiny", "--dry_run", "--output_dir", "hub"], check=True, capture_output=True)
card = open("hub/README.md").read()
assert "topographic" in card and "someone/toponet-tiny" in card
'
fresh "the vision TopoNet and its twin with plain transformers" '
import json, sys, torch
from transformers import AutoImageProcessor, AutoModelForImageClassification
for folder, tau in (("vision_toponet", 5.0), ("vision_twin", 0.0)):
    model = AutoModelForImageClassification.from_pretrained(folder).eval()
    AutoImageProcessor.from_pretrained(folder)
    assert model.config.topography["tau"]["value"] == tau and sorted(model.config.label2id) == ["blue", "red"]
    assert torch.isfinite(model(pixel_values=torch.randn(2, 3, 16, 16)).logits).all()
    assert 0 <= json.load(open(f"{folder}/metrics.json"))["eval_accuracy"] <= 1
assert "hf_topo" not in sys.modules, "loading a vision TopoNet must not need hf_topo"
'
fresh "the downsampled vision TopoNet and the converted ResNet-18 after import hf_topo, the ViT without" '
import hf_topo, torch
from transformers import AutoModelForImageClassification
small = AutoModelForImageClassification.from_pretrained("vision_small").eval()
assert any(type(m).__name__ == "TopoDownsampledConv2d" for m in small.modules())
assert torch.isfinite(small(pixel_values=torch.randn(2, 3, 16, 16)).logits).all()
resnet = AutoModelForImageClassification.from_pretrained("resnet18_tau10").eval()
assert type(resnet).__name__ == "BlurPoolResNetForImageClassification" and resnet.config.num_labels == 1000
assert resnet.config.topography["tau"]["value"] == 10.0 and len(resnet.config.topography["layers"]) == 19
vit = AutoModelForImageClassification.from_pretrained("vit_tau10").eval()
assert torch.isfinite(vit(pixel_values=torch.randn(1, 3, 64, 64)).logits).all()
'
echo "[clean-install] passed: every command ran from $RUN and every artefact loaded in a new process ($((SECONDS - START)) s)"
