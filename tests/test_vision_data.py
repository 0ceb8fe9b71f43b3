"""hf_topo.vision.data: image folders checked before training; every bad input refused with the file and the fix."""

import os
import re
import shutil

import numpy as np
import pytest
import torch
from _images import write_image_folder
from PIL import Image

from hf_topo.cli.arguments import run_command
from hf_topo.cli.pretrain import main as pretrain_main
from hf_topo.errors import MissingFileError
from hf_topo.vision.data import check_image_folder, collate_images, load_image_datasets, with_image_transforms


@pytest.fixture
def folder(tmp_path):
    return write_image_folder(tmp_path / "train", classes=3, per_class=6)


def _pretrain(train_dir, output_dir, *extra):
    """hf-topo pretrain in this process, on CPU, 2 steps (never reached when the input is refused)."""
    return pretrain_main(
        ["--train_dir", str(train_dir), "--output_dir", str(output_dir), "--model_preset", "tiny-resnet",
         "--image_size", "16", "--max_steps", "2", "--per_device_train_batch_size", "4", "--report_to", "none",
         "--use_cpu", "true", *extra]
    )  # fmt: skip


def _refused(tmp_path, train_dir, match, *extra):
    out = tmp_path / "run"
    with pytest.raises((ValueError, FileNotFoundError), match=match):
        _pretrain(train_dir, out, *extra)
    assert not out.exists() or not os.listdir(out)  # nothing trained, nothing written


def test_a_good_folder_is_read_with_sorted_classes_and_a_stratified_split(folder):
    summary = check_image_folder(str(folder))
    assert summary.classes == ["c0", "c1", "c2"] and summary.n_images == 18 and summary.modes == {"RGB": 18}
    datasets, classes = load_image_datasets(str(folder), validation_split_percentage=20, seed=0)
    assert classes == ["c0", "c1", "c2"]
    assert len(datasets["validation"]) == 4 and len(datasets["train"]) == 14  # round(20 % of 18)
    assert sorted(set(datasets["validation"]["label"])) == [0, 1, 2]  # every class held out at least once
    # labels are the sorted folder names: class k's images have channel k % 3 bright
    for row in datasets["train"]:
        pixels = np.asarray(row["image"], dtype=float)
        assert pixels[..., row["label"] % 3].mean() > pixels[..., (row["label"] + 1) % 3].mean() + 100
    transformed, _ = with_image_transforms(datasets, 12, [0.5] * 3, [0.5] * 3, seed=0)
    batch = collate_images([transformed["train"][i] for i in range(3)])
    again = collate_images([transformed["train"][i] for i in (2, 1, 0)])  # keyed by row: any order, same crops
    torch.testing.assert_close(again["pixel_values"], batch["pixel_values"].flip(0), rtol=0, atol=0)
    assert batch["pixel_values"].shape == (3, 3, 12, 12) and batch["labels"].dtype == torch.long


def test_missing_folder_and_folder_without_class_subfolders(tmp_path, capsys):
    _refused(tmp_path, tmp_path / "nowhere", r"^train_dir='.*nowhere' does not exist")
    with pytest.raises(MissingFileError) as err:
        check_image_folder(str(tmp_path / "nowhere"), "validation_dir")
    assert err.value.parameters == ["validation_dir"]
    # hf-topo pretrain words the parameter as its flag
    argv = ["--train_dir", str(tmp_path / "nowhere"), "--output_dir", str(tmp_path / "run")]
    assert run_command(pretrain_main, argv, prog="hf-topo pretrain") == 1
    assert re.match(r"hf-topo pretrain: error: --train_dir '.*nowhere' does not exist", capsys.readouterr().err)
    loose = tmp_path / "loose"
    loose.mkdir()
    Image.new("RGB", (8, 8)).save(loose / "a.png")
    _refused(tmp_path, loose, r"has no class subfolders \(it holds a.png\): put each class's images in a subfolder")
    (tmp_path / "empty").mkdir()
    _refused(tmp_path, tmp_path / "empty", r"has no class subfolders \(it is empty\)")
    _refused(tmp_path, loose / "a.png", r"is a file: pass a folder")


def test_one_class_only(tmp_path):
    one = write_image_folder(tmp_path / "one", classes=1)
    _refused(tmp_path, one, r"has one class only \('c0'\): a classifier needs two classes or more")


def test_an_empty_class_folder(tmp_path, folder):
    (folder / "c3").mkdir()
    _refused(tmp_path, folder, r"The class folder '.*c3' holds no images: put that class's images in it")


@pytest.mark.parametrize("kind", ["truncated", "not_an_image", "empty_file", "image_suffix_text"])
def test_a_bad_file_is_named(tmp_path, folder, kind):
    target = folder / "c1" / "bad.png"
    if kind == "truncated":
        data = (folder / "c1" / "0.png").read_bytes()
        target.write_bytes(data[: len(data) // 2])
    elif kind == "not_an_image":
        target = folder / "c1" / "notes.txt"
        target.write_text("not a picture")
    elif kind == "empty_file":
        target.write_bytes(b"")
    else:
        target.write_text("a text file named like a PNG")
    _refused(tmp_path, folder, rf"{target.name} is not a readable image .*Remove it from the folder, or replace it")


def test_nested_folders_loose_files_and_hidden_files(tmp_path, folder):
    (folder / ".DS_Store").write_bytes(b"\x00\x01")  # hidden files are skipped
    (folder / "c0" / ".thumbs").write_bytes(b"junk")
    assert check_image_folder(str(folder)).n_images == 18
    (folder / "labels.csv").write_text("x")
    _refused(tmp_path, folder, r"holds files beside its class subfolders \(labels.csv\)")
    os.remove(folder / "labels.csv")
    shutil.copytree(folder / "c2", folder / "c0" / "inner")
    _refused(tmp_path, folder, r"inner is a folder inside the class folder")


def test_validation_classes_must_match(tmp_path, folder):
    validation = write_image_folder(tmp_path / "val", classes=4, per_class=2)
    _refused(tmp_path, folder, r"different classes \(missing from validation: none; not in training: \['c3'\]\)",
             "--validation_dir", str(validation))  # fmt: skip


def test_too_few_images_to_hold_out(tmp_path):
    single = write_image_folder(tmp_path / "single", classes=2, per_class=1)
    _refused(tmp_path, single, r"c0' holds one image: a held-out validation split")
    few = write_image_folder(tmp_path / "few", classes=3, per_class=2)
    _refused(tmp_path, few, r"too few to hold out", "--validation_split_percentage", "60")


def test_text_and_image_data_together_and_language_presets_are_refused(tmp_path, folder):
    text = tmp_path / "t.txt"
    text.write_text("hello\n" * 10)
    _refused(tmp_path, folder, r"train_dir= \(images\) and train_file= \(text\) were both given",
             "--train_file", str(text))  # fmt: skip
    out = tmp_path / "lm"
    with pytest.raises(ValueError, match=r"model_preset=tiny-llama is a language model"):
        pretrain_main(["--train_dir", str(folder), "--output_dir", str(out), "--model_preset", "tiny-llama"])


def test_mixed_modes_and_small_images_are_converted_and_scaled_up(tmp_path):
    root = tmp_path / "mixed"
    rng = np.random.default_rng(0)
    modes = ["L", "RGBA", "RGB", "P", "LA", "CMYK"]
    for k in range(2):
        (root / f"c{k}").mkdir(parents=True)
        for i, mode in enumerate(modes):
            image = Image.fromarray((rng.random((5, 7, 3)) * 255).astype(np.uint8)).convert(mode)
            image.save(root / f"c{k}" / f"{i}.{'jpg' if mode == 'CMYK' else 'png'}")
    summary = check_image_folder(str(root))
    assert set(summary.modes) == set(modes) and summary.smallest == (7, 5)
    datasets, _ = load_image_datasets(str(root), validation_split_percentage=20)
    transformed, _ = with_image_transforms(datasets, 16, [0.5] * 3, [0.5] * 3)
    for split in ("train", "validation"):
        rows = [transformed[split][i] for i in range(len(transformed[split]))]
        assert all(r["pixel_values"].shape == (3, 16, 16) for r in rows)


def test_an_image_with_a_non_image_suffix_is_named(tmp_path, folder):
    Image.new("RGB", (8, 8)).save(folder / "c0" / "odd.bin", format="PNG")
    _refused(tmp_path, folder, r"odd.bin is a PNG image whose suffix datasets' imagefolder does not read")
