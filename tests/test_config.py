"""TopoConfig (hf_topo.config): validation, the "topography" record of config.json, and stored-metadata checks."""

import json

import pytest
from transformers import AutoConfig, AutoModelForCausalLM

from hf_topo import TOPOGRAPHY_KEY, CorticalSheet, TauSchedule, TopoConfig, TopoRegularizer, __version__
from hf_topo.config import SCHEMA_VERSION

C_FC = ["transformer.h.0.mlp.c_fc", "transformer.h.1.mlp.c_fc"]


def _full_config():
    return TopoConfig(
        target_modules=["mlp.c_fc"],
        tau=3.0,
        factor_h=2.0,
        factor_w=2.5,
        interpolation="bicubic",
        sheet_shape=(4, 32),
        watch_modules=["attn.c_proj"],
        tau_schedule="warmup:10,cosine:20:0.1",
        layers={
            "transformer.h.0.mlp.c_fc": CorticalSheet("transformer.h.0.mlp.c_fc", "Conv1D", 4, 32, 32),
            "transformer.h.0.attn.c_proj": CorticalSheet("transformer.h.0.attn.c_proj", "Conv1D", 4, 8, 32),
        },
    )


def test_defaults():
    config = TopoConfig()
    assert config.target_modules == ["mlp.c_fc"] and config.tau == 1.0
    assert (config.factor_h, config.factor_w, config.interpolation) == (3.0, 3.0, "bilinear")
    assert config.tau_schedule == TauSchedule() and config.layers is None and config.watch_modules is None
    assert TopoConfig(target_modules=("a", "b")).target_modules == ["a", "b"]
    assert TopoConfig(watch_modules=[]).watch_modules is None
    # A list of the single entry "re:REGEX" is the regex, as on the command line.
    assert TopoConfig(target_modules=[r"re:.*\.c_fc"]).target_modules == r".*\.c_fc"
    assert TopoConfig(watch_modules=(r"re:h\.1\..*",)).watch_modules == r"h\.1\..*"
    assert TopoConfig(target_modules=["re:x", "c_fc"]).target_modules == ["re:x", "c_fc"]  # suffixes, as listed
    assert TopoConfig(tau=2, factor_h=2).tau == 2.0 and isinstance(TopoConfig(factor_h=2).factor_h, float)


def test_dict_round_trip_with_schedule_and_layers():
    config = _full_config()
    data = json.loads(json.dumps(config.to_dict(step=5)))  # what config.json holds
    assert data["schema_version"] == SCHEMA_VERSION == 3
    assert data["library"] == "hf_topo" and data["library_version"] == __version__
    assert data["tau"] == {
        "value": 3.0,
        "schedule": [
            {"kind": "linear", "steps": 10, "start": 0.0, "end": 1.0},
            {"kind": "cosine", "steps": 20, "start": 1.0, "end": 0.1},
        ],
        "current": 1.5,  # 3.0 · 5/10 at step 5
        "at_step": 5,
    }
    assert data["sheet_shape"] == [4, 32]
    assert data["layers"]["transformer.h.0.mlp.c_fc"] == {
        "layer_type": "Conv1D",
        "height": 4,
        "width": 32,
        "depth": 32,
        "units": "output",
        "role": "target",
    }
    assert data["layers"]["transformer.h.0.attn.c_proj"]["role"] == "watch"
    back = TopoConfig.from_dict(data)
    assert back == config
    assert back.tau_schedule.multiplier(20) == config.tau_schedule.multiplier(20)
    assert back.sheet_shape == (4, 32)
    assert TopoConfig.from_dict(TopoConfig().to_dict()) == TopoConfig()


def test_from_dict_of_constructor_arguments():
    config = TopoConfig.from_dict({"target_modules": r".*\.c_fc", "tau": 2, "tau_schedule": "warmup:3"})
    assert config.target_modules == r".*\.c_fc" and config.tau == 2.0
    assert config.tau_at(1) == pytest.approx(2 / 3)
    listed = TopoConfig.from_dict({"tau_schedule": [{"kind": "linear", "steps": 2, "start": 0.0, "end": 1.0}]})
    assert listed.tau_schedule == TauSchedule.parse("warmup:2")


def test_schema_and_unknown_keys():
    data = TopoConfig().to_dict()
    with pytest.raises(ValueError, match=r"schema_version=4, newer than this hf_topo understands \(3\)"):
        TopoConfig.from_dict(data | {"schema_version": 4})
    with pytest.raises(ValueError, match="schema_version='1'"):
        TopoConfig.from_dict(data | {"schema_version": "1"})
    with pytest.raises(ValueError, match=r"Unknown topography settings \['taus'\]; expected keys among"):
        TopoConfig.from_dict(data | {"taus": 1})
    with pytest.raises(ValueError, match=r"lacks the key 'depth'"):
        TopoConfig.from_dict(data | {"layers": {"x": {"layer_type": "Linear", "height": 1, "width": 2}}})


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(tau=-1), r"tau=-1 must be a finite number >= 0"),
        (dict(tau=float("inf")), r"tau=inf must be"),
        (dict(tau="1"), r"tau='1' must be"),
        (dict(factor_h=0.9), r"factor_h=0.9 must be a finite number >= 1"),
        (dict(factor_w=float("nan")), r"factor_w=nan must be"),
        (dict(interpolation="linear"), r"interpolation='linear' is not supported; choose one of"),
        (dict(sheet_shape=(4,)), r"sheet_shape=\(4,\) must be two positive integers"),
        (dict(sheet_shape=(4, 0)), r"must be two positive integers"),
        (dict(sheet_shape=(4.0, 8.0)), r"must be two positive integers"),
        (dict(loss="mse"), r"loss='mse' is not known to this hf_topo version"),
        (dict(tau_schedule="cosine"), r"Cannot read τ schedule phase 'cosine'"),
    ],
)
def test_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TopoConfig(**kwargs)


def test_from_pretrained_needs_metadata(tmp_path, tiny_gpt2):
    tiny_gpt2.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"has no 'topography' metadata in its config, so it is not a saved TopoNet"):
        TopoConfig.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="GPT2LMHeadModel has no 'topography' metadata"):
        TopoConfig.from_pretrained(tiny_gpt2)


def test_saved_metadata_round_trip(tmp_path, tiny_gpt2):
    topo = TopoRegularizer(TopoConfig(tau=2.0, factor_w=2.0, tau_schedule="warmup:4"))
    expected = topo.config_for(tiny_gpt2)
    expected.attach_to(tiny_gpt2.config, step=2)
    tiny_gpt2.save_pretrained(tmp_path)
    stored = json.loads((tmp_path / "config.json").read_text())[TOPOGRAPHY_KEY]
    assert stored["tau"]["current"] == 1.0 and stored["tau"]["at_step"] == 2
    assert set(stored["layers"]) == set(C_FC)
    # from a directory, a PreTrainedConfig and a loaded model: all equal to what was attached
    assert TopoConfig.from_pretrained(tmp_path) == expected
    assert TopoConfig.from_pretrained(AutoConfig.from_pretrained(tmp_path)) == expected
    model = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert TopoConfig.from_pretrained(model) == expected
    assert {n: s.shape for n, s in expected.layers.items()} == {n: (8, 16, 32) for n in C_FC}


def _save_with_metadata(model, path):
    TopoRegularizer(TopoConfig()).config_for(model).attach_to(model.config)
    model.save_pretrained(path)
    return path / "config.json"


def test_edited_sheet_metadata_is_refused(tmp_path, tiny_gpt2):
    config_file = _save_with_metadata(tiny_gpt2, tmp_path)
    data = json.loads(config_file.read_text())
    data[TOPOGRAPHY_KEY]["layers"]["transformer.h.1.mlp.c_fc"].update(height=4, width=32)
    config_file.write_text(json.dumps(data))
    assert TopoConfig.from_pretrained(tmp_path).layers["transformer.h.1.mlp.c_fc"].shape == (4, 32, 32)  # only read
    model = AutoModelForCausalLM.from_pretrained(tmp_path)
    with pytest.raises(
        ValueError,
        match=r"metadata of 'transformer.h.1.mlp.c_fc' says Conv1D sheet \(4, 32, 32\).*"
        r"but the model has Conv1D sheet \(8, 16, 32\)",
    ):
        TopoConfig.from_pretrained(model)
    data[TOPOGRAPHY_KEY]["layers"]["transformer.h.1.mlp.c_fc"].update(height=8, width=16, layer_type="Linear")
    config_file.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"'transformer.h.1.mlp.c_fc' says Linear sheet"):
        TopoConfig.from_pretrained(AutoModelForCausalLM.from_pretrained(tmp_path))


def test_metadata_of_another_model_is_refused(tmp_path, make_gpt2):
    _save_with_metadata(make_gpt2(n_embd=32), tmp_path)
    stored = TopoConfig.from_pretrained(tmp_path)
    wider = make_gpt2(n_embd=48)  # c_fc: 192 units of depth 48
    with pytest.raises(
        ValueError,
        match=r"'transformer.h.0.mlp.c_fc' says Conv1D sheet \(8, 16, 32\).*has Conv1D sheet \(12, 16, 48\)",
    ):
        TopoRegularizer(stored).layers(wider)
    with pytest.raises(ValueError, match=r"found in the model but not recorded: \['transformer.h.2.mlp.c_fc'\]"):
        TopoRegularizer(stored).layers(make_gpt2(n_layer=3))
    with pytest.raises(ValueError, match=r"recorded but not found in the model: \['transformer.h.1.mlp.c_fc'\]"):
        TopoRegularizer(stored).layers(make_gpt2(n_layer=1))
    # The same metadata on the matching model is fine.
    assert len(TopoRegularizer(stored).layers(make_gpt2(n_embd=32, seed=5))) == 2


# ---- malformed records: each says what is wrong, never that the record is missing ---------------------------------


def _record():
    return TopoConfig(tau=2.0).to_dict(step=3)


def _drop(*keys):
    return lambda r: {k: v for k, v in r.items() if k not in keys}


def _set(**changes):
    return lambda r: r | changes


def _set_layer(**changes):
    def edit(record):
        record["layers"] = {
            "transformer.h.0.mlp.c_fc": {"layer_type": "Conv1D", "height": 8, "width": 16, "depth": 32}
        }
        record["layers"]["transformer.h.0.mlp.c_fc"].update(changes)
        return record

    return edit


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda r: "laplacian_pyramid", r"record of .* is malformed: it is a string, expected a JSON object"),
        (lambda r: [r], r"is malformed: it is a list, expected a JSON object"),
        (lambda r: 1.0, r"is malformed: it is a number, expected a JSON object"),
        (_drop("schema_version"), r"is malformed: it has no schema_version"),
        (_drop("tau", "layers"), r"is malformed: it lacks \['tau', 'layers'\], which every schema_version 3 record"),
        (_drop("distance"), r"lacks \['distance'\], which every schema_version 3 record holds"),
        (_set(schema_version=0), r"is malformed: schema_version=0 is not a schema version of hf_topo \(1 to 3\)"),
        (_set(schema_version="2"), r"is malformed: schema_version='2' is not a schema version"),
        (_set(schema_version=True), r"is malformed: schema_version=True is not a schema version"),
        (_set(schema_version=7), r"has schema_version=7, newer than this hf_topo understands \(3\)\. Upgrade"),
        (_set(library="another_lib"), r"is malformed: it was written by library='another_lib', not hf_topo"),
        (_set(tau="2"), r"is malformed: tau is a string, expected a number or an object"),
        (_set(tau={"value": None, "schedule": []}), r"is malformed: tau.value=None is not a number"),
        (_set(tau={"value": 2.0, "schedule": "warmup:3"}), r"tau.schedule is a string, expected a list of phases"),
        (_set(tau={"value": -2.0}), r"is malformed: tau=-2.0 must be a finite number >= 0"),
        (_set(factor_h="3"), r"is malformed: factor_h is a string, expected a number"),
        (_set(factor_w=0.5), r"is malformed: factor_w=0.5 must be a finite number >= 1"),
        (_set(interpolation=None), r"is malformed: interpolation is null, expected a string"),
        (_set(neighbourhood=1.5), r"is malformed: neighbourhood is a number, expected an integer"),
        (_set(target_modules=7), r"is malformed: target_modules=7 is not a regex string or a list of name suffixes"),
        (_set(target_modules=[]), r"target_modules=\[\] is not a regex string"),
        (_set(watch_modules=[1]), r"watch_modules=\[1\] is not null, a regex string"),
        (_set(sheet_shape=8), r"is malformed: sheet_shape=8 is not null or \[height, width\]"),
        (_set(inferred="no"), r"is malformed: inferred is a string, expected a boolean"),
        (_set(finetuning={"method": "lora"}), r"is malformed: finetuning is not null or a list of objects"),
        (_set(layers=["transformer.h.0.mlp.c_fc"]), r"is malformed: layers is a list, expected an object mapping"),
        (_set_layer(height="8"), r"is malformed: layers\['transformer.h.0.mlp.c_fc'\].height='8' is not a positive"),
        (_set_layer(depth=0), r"layers\['transformer.h.0.mlp.c_fc'\].depth=0 is not a positive integer"),
        (_set_layer(role="both"), r"layers\['transformer.h.0.mlp.c_fc'\].role='both' is neither 'target' nor"),
    ],
)
def test_malformed_record_gets_its_own_error(tmp_path, tiny_gpt2, edit, message):
    tiny_gpt2.save_pretrained(tmp_path)
    config_file = tmp_path / "config.json"
    data = json.loads(config_file.read_text())
    data[TOPOGRAPHY_KEY] = edit(_record())
    config_file.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=message) as raised:
        TopoConfig.from_pretrained(tmp_path)
    assert "has no 'topography' metadata" not in str(raised.value)
    assert str(tmp_path) in str(raised.value)  # names the model it read
    with pytest.raises(ValueError, match=message):
        TopoConfig.from_pretrained(AutoConfig.from_pretrained(tmp_path))


def test_malformed_layer_without_a_sheet_key(tmp_path, tiny_gpt2):
    record = _set_layer()(_record())
    del record["layers"]["transformer.h.0.mlp.c_fc"]["width"]
    with pytest.raises(
        ValueError, match=r"is malformed: layers\['transformer.h.0.mlp.c_fc'\] lacks the key 'width' \(a sheet has"
    ):
        TopoConfig.from_dict(record, source="a model")


def test_records_of_schema_version_1_still_load():
    record = _drop("distance", "neighbourhood")(_record()) | {"schema_version": 1}
    config = TopoConfig.from_dict(record)
    assert config.tau == 2.0 and (config.distance, config.neighbourhood) == ("correlation", 1)


def test_malformed_adapter_record(tmp_path):
    from hf_topo.config import TOPOGRAPHY_FILE

    (tmp_path / TOPOGRAPHY_FILE).write_text("null")
    with pytest.raises(ValueError, match=r"topography.json is malformed: it is null, expected a JSON object"):
        TopoConfig.from_pretrained(tmp_path)
    (tmp_path / TOPOGRAPHY_FILE).write_text('{"schema_version": 2, "tau": ')
    with pytest.raises(ValueError, match=r"topography.json is not valid JSON .*re-save the adapter"):
        TopoConfig.from_pretrained(tmp_path)
    (tmp_path / TOPOGRAPHY_FILE).write_text(json.dumps(_drop("target_modules")(_record())))
    with pytest.raises(ValueError, match=r"topography.json is malformed: it lacks \['target_modules'\]"):
        TopoConfig.from_pretrained(tmp_path)
