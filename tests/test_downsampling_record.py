"""The downsampling record's schema version: a record this hf_topo cannot read is refused, by name, before a model is
built from it (loading) or described from it (the model card)."""

import json

import pytest
import torch
from conftest import build_gpt2
from transformers import AutoConfig, AutoModelForCausalLM

from hf_topo.downsampling import downsample_model
from hf_topo.downsampling.record import (
    DOWNSAMPLING_KEY,
    DOWNSAMPLING_SCHEMA_VERSION,
    check_schema_version,
    downsampling_variant,
)
from hf_topo.hub.card import downsampling_sentence


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A downsampled tiny GPT-2 (with gains) saved to a folder, and its logits on a few tokens."""
    folder = tmp_path_factory.mktemp("downsampled")
    torch.manual_seed(0)
    model = downsample_model(build_gpt2().eval(), 2)
    model.save_pretrained(folder)
    ids = torch.arange(1, 9).view(1, 8)
    with torch.no_grad():
        logits = model(ids).logits
    return folder, ids, logits


def _with_version(saved, tmp_path, version):
    folder = saved[0]
    config = json.loads((folder / "config.json").read_text())
    config[DOWNSAMPLING_KEY]["schema_version"] = version
    for name in ("model.safetensors", "generation_config.json"):
        if (folder / name).exists():
            (tmp_path / name).write_bytes((folder / name).read_bytes())
    (tmp_path / "config.json").write_text(json.dumps(config))
    return tmp_path


def test_the_current_version_loads_and_computes_what_was_saved(saved, tmp_path):
    assert DOWNSAMPLING_SCHEMA_VERSION == 2
    folder = _with_version(saved, tmp_path, DOWNSAMPLING_SCHEMA_VERSION)
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    with torch.no_grad():
        torch.testing.assert_close(model(saved[1]).logits, saved[2], rtol=1e-5, atol=1e-5)


def test_a_newer_record_is_refused_when_loading_naming_the_folder_and_the_fix(saved, tmp_path):
    folder = _with_version(saved, tmp_path, DOWNSAMPLING_SCHEMA_VERSION + 1)
    with pytest.raises(ValueError) as error:
        AutoModelForCausalLM.from_pretrained(folder)
    message = str(error.value)
    assert f"'{DOWNSAMPLING_KEY}' record of {folder} has schema_version=3" in message
    assert "reads (1 to 2)" in message and "pip install -U hf_topo" in message
    # the card of such a model is refused too, not written from a record it may misread
    config = AutoConfig.from_pretrained(folder)
    with pytest.raises(ValueError, match="schema_version=3, newer than this hf_topo"):
        downsampling_sentence(config)


@pytest.mark.parametrize("version", [0, -1, True, 2.0, "2", None])
def test_a_version_that_is_not_a_schema_version_is_refused(saved, tmp_path, version):
    folder = _with_version(saved, tmp_path, version)
    with pytest.raises(ValueError, match=r"is not a schema version of hf_topo's downsampling record \(an integer"):
        AutoModelForCausalLM.from_pretrained(folder)


def test_every_known_version_is_read_and_no_other():
    assert [check_schema_version({"schema_version": v}) for v in (1, 2)] == [1, 2]
    assert downsampling_variant({"schema_version": 1}) == "paper"  # a version-1 record: the paper's layer
    assert downsampling_variant({"schema_version": 2, "variant": "gains"}) == "gains"
    for version in (3, 10):
        with pytest.raises(ValueError, match=f"schema_version={version}, newer"):
            check_schema_version({"schema_version": version}, "some/model")
        with pytest.raises(ValueError, match="newer"):
            downsampling_variant({"schema_version": version, "variant": "gains"})
