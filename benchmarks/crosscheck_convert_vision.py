"""The vision conversion at full size: torchvision's ResNet-18, ResNet-50 (with the authors' blur-pool wrapper) and
vit_b_32, restated in tests/_torchvision_models.py, randomly initialised and saved in the authors' file formats, then
converted with `hf-topo convert-toponet` in a subprocess each (timed) and loaded in this process with
`AutoModelForImageClassification`; prints the largest logit difference and the wall time per model.

    python benchmarks/crosscheck_convert_vision.py --work_dir /tmp/convert-vision
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from _torchvision_models import (  # noqa: E402
    VisionTransformer,
    apply_blurpool,
    image_batch,
    randomize_batchnorm,
    randomize_vit,
    resnet18,
    resnet50,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work_dir", default="convert-vision")
    args = parser.parse_args()
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    references = {
        "all_topo_tau_10.0.pt": randomize_batchnorm(apply_blurpool(resnet18())).eval(),
        "all_topo_tau_30.0.pt": randomize_batchnorm(apply_blurpool(resnet50())).eval(),
        "tau_10.0.pt": randomize_vit(VisionTransformer()).eval(),
    }
    images = image_batch(224, n=2)
    from transformers import AutoModelForImageClassification

    import hf_topo  # noqa: F401  registers the blur-pool ResNet

    print("| file | model | max abs logit difference | convert-toponet wall time |\n|---|---|---|---|")
    for name, reference in references.items():
        path = work / name
        if name.startswith("all_topo"):
            torch.save(reference.state_dict(), path)  # the authors' ResNet format: a bare state dict
        else:  # torchvision's reference script: the state dict under "model", its flags as a Namespace
            torch.save(
                {"model": reference.state_dict(), "args": argparse.Namespace(model="vit_b_32"), "epoch": 0}, path
            )
        out = work / f"converted-{path.stem}"
        start = time.perf_counter()
        command = [
            sys.executable,
            "-m",
            "hf_topo.cli.convert_toponet",
            str(path),
            "--output_dir",
            str(out),
            "--overwrite",
        ]
        subprocess.run(command, check=True, capture_output=True)
        seconds = time.perf_counter() - start
        model = AutoModelForImageClassification.from_pretrained(out).eval()
        with torch.no_grad():
            difference = (model(images).logits - reference(images)).abs().max().item()
        print(f"| `{name}` | {type(model).__name__} | {difference:.1e} | {seconds:.0f} s |")


if __name__ == "__main__":
    main()
