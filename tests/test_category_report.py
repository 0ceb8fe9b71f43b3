"""Category stimuli folders (hf_topo.vision.stimuli), the U/B/T selectivity figures and `hf-topo analyze --stimuli_dir`
end to end (hf_topo.vision.category_report), its report.json read back in a fresh process."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from _images import write_image_folder
from PIL import Image
from safetensors.torch import load_file

from hf_topo.analysis import topographic_layers
from hf_topo.analysis.image_activations import collect_image_activations
from hf_topo.analysis.selectivity import selectivity_t
from hf_topo.config import TopoConfig
from hf_topo.errors import InputError
from hf_topo.presets import TARGET_PRESETS
from hf_topo.vision.augmentation import EvalTransform
from hf_topo.vision.category_report import plot_selectivity_rows
from hf_topo.vision.models import build_vision_model
from hf_topo.vision.stimuli import check_stimulus_folder, load_stimulus_images

COLOURS = {"faces": 0, "places": 1, "bodies": 2}


def write_stimuli(root: Path, per_folder: int = 3, size: tuple[int, int] = (28, 24), seed: int = 0) -> Path:
    """fLoc-like layout, ``<category>/<big|small>/<i>.png``: each category's images are bright in one colour channel,
    the ``big`` ones larger and brighter."""
    rng = np.random.default_rng(seed)
    width, height = size
    for category, channel in COLOURS.items():
        for sub in ("big", "small"):
            folder = root / category / sub
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_folder):
                pixels = (rng.random((height, width, 3)) * 80).astype(np.uint8)
                pixels[..., channel] += 150 if sub == "big" else 90
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


def test_stimulus_folder_nested_groups(tmp_path):
    root = write_stimuli(tmp_path / "stimuli")
    (root / "faces" / ".DS_Store").write_bytes(b"x")  # hidden: skipped
    (root / "places" / "loose.png").parent.mkdir(exist_ok=True)
    Image.new("L", (10, 12), 128).save(root / "places" / "loose.png")  # an image beside subfolders: group "places"
    stimuli = check_stimulus_folder(str(root))
    assert stimuli.categories == ["bodies", "faces", "places"]
    assert stimuli.counts == {
        "bodies/big": 3, "bodies/small": 3, "faces/big": 3, "faces/small": 3,
        "places/big": 3, "places/small": 3, "places": 1,
    }  # fmt: skip
    assert len(stimuli.files) == 19 and all(os.path.isfile(f) for f in stimuli.files)
    transform = EvalTransform(16, [0.5, 0.5, 0.5], [0.25, 0.25, 0.25])
    pixels = load_stimulus_images(stimuli, transform)
    assert pixels.shape == (19, 3, 16, 16)
    with Image.open(stimuli.files[0]) as first:
        torch.testing.assert_close(pixels[0], transform(first))
    with Image.open(stimuli.files[-1]) as gray:  # the grayscale image, as RGB
        torch.testing.assert_close(pixels[-1], transform(gray.convert("RGB")))


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda root: None, "does not exist"),
        (lambda root: root.write_text("x"), "is a file"),
        (lambda root: root.mkdir(), "no category subfolders"),
        (lambda root: (root / "faces").mkdir(parents=True), "one category only"),
        (lambda root: [(root / c).mkdir(parents=True) for c in ("a", "b")], "holds no images"),
    ],
)
def test_bad_stimulus_folders_are_refused(tmp_path, make, match):
    root = tmp_path / "stimuli"
    make(root)
    with pytest.raises((InputError, ValueError, FileNotFoundError), match=match) as info:
        check_stimulus_folder(str(root))
    if match not in ("holds no images",):
        assert "stimuli_dir" in str(info.value)


def test_bad_files_in_stimulus_folders_are_refused(tmp_path):
    root = write_stimuli(tmp_path / "s1", per_folder=1)
    (root / "notes.txt").write_text("x")
    with pytest.raises(InputError, match="beside its category subfolders"):
        check_stimulus_folder(str(root))
    root = write_stimuli(tmp_path / "s2", per_folder=1)
    (root / "faces" / "big" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="broken.png is not a readable image"):
        check_stimulus_folder(str(root))
    root = write_stimuli(tmp_path / "s3", per_folder=1)
    (root / "faces" / "big" / "data.bin").write_bytes(b"x")
    with pytest.raises(ValueError, match="data.bin is not an image file"):
        check_stimulus_folder(str(root))
    root = write_stimuli(tmp_path / "s4", per_folder=1)
    (root / "faces" / "empty").mkdir()
    with pytest.raises(ValueError, match="empty' holds no images"):
        check_stimulus_folder(str(root))


@pytest.mark.slow
def test_figure_rows_share_one_scale_per_map(tmp_path):
    maps = {
        label: {"faces": torch.randn(4, 6) * scale, "big-vs-small": torch.randn(4, 6)}
        for label, scale in (("untrained", 1.0), ("baseline", 2.0), ("TopoNet", 5.0))
    }
    path = plot_selectivity_rows(maps, tmp_path / "selectivity_x.png")
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size[0] > 200
    with pytest.raises(ValueError, match="No t-maps"):
        plot_selectivity_rows({}, tmp_path / "none.png")


def _save_tiny_resnet(path: Path, seed: int) -> None:
    torch.manual_seed(seed)
    model = build_vision_model("tiny-resnet", ["c0", "c1"], image_size=32)
    TopoConfig(target_modules=TARGET_PRESETS["resnet"], tau=1.0).attach_to(model.config)
    model.save_pretrained(path)


@pytest.mark.slow
def test_analyze_stimuli_dir_end_to_end(tmp_path):
    """`hf-topo analyze --image_dir --stimuli_dir` on saved tiny ResNets (TopoNet, baseline, untrained twin): the image
    classifier's analysis and the selectivity section in one report.json, read in a fresh process; its t-maps agree
    with eq. 2 computed here from the saved model's units."""
    stimuli = write_stimuli(tmp_path / "stimuli")
    _save_tiny_resnet(tmp_path / "topo", seed=3)
    _save_tiny_resnet(tmp_path / "base", seed=4)
    layer = "stages.0.layers.0.shortcut.convolution"
    out = tmp_path / "out"
    command = [
        sys.executable, "-m", "hf_topo.cli.analyze", "--model", str(tmp_path / "topo"), "--baseline",
        str(tmp_path / "base"), "--untrained", "--untrained_seed", "7", "--stimuli_dir", str(stimuli),
        "--contrasts", "big:small", "--layers", layer, "stages.2.layers.0.layer.1.convolution",
        "--image_size", "32", "--output_dir", str(out), "--progress", "false", "--device", "cpu",
        "--image_dir", str(write_image_folder(tmp_path / "images", classes=2, per_class=4, size=(32, 32))),
        "--sweeps", "pruning", "--pruning_fractions", "0", "0.5",
    ]  # fmt: skip
    finished = subprocess.run(
        command, capture_output=True, text=True, timeout=600, env=os.environ | {"PYTHONPATH": "."}
    )
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert "| faces |" in finished.stdout
    read = subprocess.run(
        [sys.executable, "-c", f"import json; print(json.dumps(json.load(open({str(out / 'report.json')!r}))))"],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    report = json.loads(read.stdout)
    assert report["analysis_summary"]["accuracy"] is not None  # the image classifier's analysis
    assert "sheet_maps" in report["figures"] and (out / report["figures"]["sheet_maps"]).is_file()
    section = report["selectivity"]
    assert list(section["models"]) == ["untrained", "baseline", "TopoNet"]
    assert section["maps"] == ["bodies", "faces", "places", "big-vs-small"]
    assert section["n_images"] == 18 and section["image_size"] == 32
    assert section["untrained"] == {"seed": 7, "from_config_of": str(tmp_path / "topo")}
    for name in section["layers_shown"]:
        figure = out / report["figures"][f"selectivity_{name.split('encoder.')[-1]}"]
        assert figure.is_file()
    # eq. 2 recomputed from the saved TopoNet's units, on the images as the model's eval transform gives them
    from transformers import AutoModelForImageClassification

    model = AutoModelForImageClassification.from_pretrained(tmp_path / "topo")
    layers = topographic_layers(model, None, [layer])
    found = check_stimulus_folder(str(stimuli))
    from hf_topo.vision.data import IMAGENET_MEAN, IMAGENET_STD

    pixels = load_stimulus_images(found, EvalTransform(32, IMAGENET_MEAN, IMAGENET_STD))
    responses = collect_image_activations(model, pixels, layers, progress=False)[layers[0].name]
    faces = torch.tensor([g.startswith("faces") for g in found.groups])
    expected = selectivity_t(responses[faces], responses[~faces]).view(8, 8)
    ours = section["models"]["TopoNet"]["layers"][layers[0].name]
    assert "t_maps" not in ours  # kept out of report.json: they are in the safetensors file
    saved = load_file(out / section["t_maps_file"])
    assert len(saved) == 3 * 2 * 4  # models × layers × maps
    np.testing.assert_allclose(
        saved[f"TopoNet/{layers[0].name}/faces"].numpy(), expected.numpy(), rtol=1e-4, atol=1e-6
    )
    assert ours["sheet"] == [8, 8]
    assert set(ours["patches"]["faces"]) >= {"count", "sizes", "threshold"}
    assert len(ours["relations"]) == 6
    # the three models differ (the untrained twin is a fresh initialization, not the TopoNet)
    untrained = saved[f"untrained/{layers[0].name}/faces"]
    assert not np.allclose(untrained.numpy(), expected.numpy())


def test_analyze_refuses_bad_selectivity_input_before_any_model_runs(tmp_path):
    from hf_topo.cli.analyze import main

    stimuli = write_stimuli(tmp_path / "stimuli", per_folder=1)
    base = ["--model", "not-a-model-dir/x", "--output_dir", str(tmp_path / "out")]
    with pytest.raises(InputError, match="stimuli_dir"):
        main(base + ["--stimuli_dir", str(stimuli), "--text_file", "x.txt"])
    with pytest.raises(InputError, match="not both"):
        main(base + ["--stimuli_dir", str(stimuli), "--untrained", "--untrained_model", "u"])
    with pytest.raises(ValueError, match="Contrast"):
        main(base + ["--stimuli_dir", str(stimuli), "--contrasts", "big"])
    (stimuli / "faces" / "big" / "broken.png").write_bytes(b"x")
    with pytest.raises(ValueError, match="broken.png"):  # refused even when --image_dir's analysis would run first
        main(base + ["--stimuli_dir", str(stimuli), "--image_dir", str(tmp_path / "images")])


def test_eval_transform_follows_the_saved_image_processor(tmp_path):
    from hf_topo.vision.data import IMAGENET_MEAN, IMAGENET_STD
    from hf_topo.vision.imagenet import imagenet_eval_processor
    from hf_topo.vision.stimuli import eval_transform_for

    _save_tiny_resnet(tmp_path / "m", seed=0)
    model = build_vision_model("tiny-resnet", ["a", "b"], image_size=32)
    without = eval_transform_for(model, str(tmp_path / "m"))
    assert without.size == 224 and without.mean == list(IMAGENET_MEAN)  # no processor, no config.image_size
    imagenet_eval_processor(48).save_pretrained(tmp_path / "m")
    saved = eval_transform_for(model, str(tmp_path / "m"))
    assert saved.size == 48 and saved.mean == list(IMAGENET_MEAN) and saved.std == list(IMAGENET_STD)
    assert eval_transform_for(model, str(tmp_path / "m"), image_size=40).size == 40


def test_untrained_choices_are_exclusive(tmp_path):
    from hf_topo.vision.category_report import run_category_selectivity

    with pytest.raises(InputError, match="not both"):
        run_category_selectivity("m", str(tmp_path), untrained=True, untrained_model="u")
