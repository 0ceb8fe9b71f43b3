"""The `hf-topo` command: the dispatcher, every subcommand's parser, and settings from YAML/JSON config files."""

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from _scripts import offline_env

from hf_topo.cli import COMMANDS
from hf_topo.cli.arguments import explicit_flags, parse_command_line, split_config_file
from hf_topo.pretraining import DataArguments, ModelArguments
from hf_topo.trainer import TopoTrainingArguments


def _hf_topo(*args, cwd=None) -> subprocess.CompletedProcess:
    """The installed console script (the editable install of the test environment), as a user types it."""
    command = Path(sys.executable).with_name("hf-topo")
    assert command.is_file(), f"{command} is missing: `pip install -e .` installs the hf-topo command"
    return subprocess.run([str(command), *args], env=offline_env(), capture_output=True, text=True, cwd=cwd)


def test_console_script_lists_every_command_and_its_version(tmp_path):
    result = _hf_topo("--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for name in ("pretrain", "finetune-lora", "eval-blimp", "analyze", "push", "convert-toponet", "compare-lora",
                 "compare-regularizers", "demo", "downsample", "arrange", "claims", "app"):  # fmt: skip
        assert f"\n  {name} " in result.stdout
    import hf_topo

    assert _hf_topo("--version").stdout.strip() == f"hf-topo {hf_topo.__version__}"


def test_unknown_command_is_refused_with_a_hint():
    result = _hf_topo("pretrian")
    assert result.returncode == 2
    assert "unknown command 'pretrian'" in result.stderr and "Did you mean pretrain?" in result.stderr


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_command_module_has_a_parser_with_its_example_and_config_help(name):
    module = importlib.import_module(f"hf_topo.cli.{COMMANDS[name][0]}")
    help_text = module.make_parser(prog=f"hf-topo {name}").format_help()
    assert f"hf-topo {name}" in help_text  # the usage line and the example command lines of the docstring
    assert "--config CONFIG.yaml" in help_text
    assert callable(module.main)


@pytest.mark.slow  # two fresh processes that import a command's whole stack (97 s wall at load 10)
def test_subcommand_help_runs_as_a_module_and_through_the_command():
    as_module = subprocess.run(
        [sys.executable, "-m", "hf_topo.cli.eval_blimp", "--help"], env=offline_env(), capture_output=True, text=True
    )
    assert as_module.returncode == 0 and "--blimp_dir" in as_module.stdout
    through_command = _hf_topo("eval-blimp", "--help")
    assert through_command.returncode == 0 and "usage: hf-topo eval-blimp" in through_command.stdout


PRETRAIN_TYPES = (ModelArguments, DataArguments, TopoTrainingArguments)


def _pretrain_parser():
    return importlib.import_module("hf_topo.cli.pretrain").make_parser()


def test_yaml_config_sets_every_flag_and_flags_after_it_win(tmp_path):
    config = tmp_path / "recipe.yaml"
    config.write_text("train_file: corpus.txt\noutput_dir: out\ntau: 5\nmax_steps: 300\ntopo_factor_h: 2\n")
    model_args, data_args, training_args = parse_command_line(_pretrain_parser(), [str(config), "--tau", "2"])
    assert data_args.train_file == "corpus.txt" and training_args.output_dir == "out"
    assert training_args.tau == 2.0 and training_args.max_steps == 300 and training_args.topo_factor_h == 2
    # the same through --config, with a JSON file
    config_json = tmp_path / "recipe.json"
    config_json.write_text(json.dumps({"train_file": "c.txt", "tau": 0.5, "block_size": 64}))
    model_args, data_args, training_args = parse_command_line(_pretrain_parser(), ["--config", str(config_json)])
    assert (data_args.train_file, training_args.tau, model_args.block_size) == ("c.txt", 0.5, 64)


def test_config_file_can_give_a_required_flag(tmp_path):
    parser = importlib.import_module("hf_topo.cli.eval_blimp").make_parser()
    config = tmp_path / "blimp.yaml"
    config.write_text("model: some/model\noutput: out.json\nlimit: 10\n")
    (args,) = parse_command_line(parser, [str(config)])
    assert (args.model, args.output, args.limit) == ("some/model", "out.json", 10)


def test_config_file_errors_say_what_is_wrong(tmp_path):
    typo = tmp_path / "typo.yaml"
    typo.write_text("tau: 5\nmax_stesp: 10\n")
    with pytest.raises(ValueError, match=r"'max_stesp' \(did you mean max_steps"):
        parse_command_line(_pretrain_parser(), [str(typo)])
    not_a_mapping = tmp_path / "list.yaml"
    not_a_mapping.write_text("- tau\n- 5\n")
    with pytest.raises(ValueError, match="expected a mapping of flag names"):
        parse_command_line(_pretrain_parser(), [str(not_a_mapping)])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        parse_command_line(_pretrain_parser(), ["--config", str(tmp_path / "missing.yaml")])
    with pytest.raises(ValueError, match="one config file"):
        split_config_file(["a.yaml", "--config", "b.yaml"])


def test_explicit_flags_are_typed_and_unknown_ones_named():
    assert explicit_flags(PRETRAIN_TYPES, ["--weight_decay", "0.05", "--bf16", "true", "--block_size=64"]) == {
        "weight_decay": 0.05,
        "bf16": True,
        "block_size": 64,
    }
    with pytest.raises(ValueError, match="did you mean --learning_rate"):
        explicit_flags(PRETRAIN_TYPES, ["--learning_rte", "1e-3"])


def test_scripts_are_thin_wrappers_over_the_package():
    root = Path(__file__).resolve().parents[1]
    for script in (root / "scripts").glob("*.py"):
        source = script.read_text()
        assert "sys.path" not in source, script
        assert "from hf_topo.cli." in source and len(source.splitlines()) < 20, script
    # the package's commands never import the scripts folder
    for module in (root / "hf_topo").rglob("*.py"):
        assert "sys.path.insert" not in module.read_text(), module


def test_the_command_runs_under_its_module_name_from_any_folder(tmp_path):
    env = offline_env()
    env["PYTHONPATH"] = os.pathsep.join(p for p in env["PYTHONPATH"].split(os.pathsep) if p)  # no checkout cwd
    result = subprocess.run(
        [sys.executable, "-m", "hf_topo.cli", "--help"], env=env, capture_output=True, text=True, cwd=tmp_path
    )
    assert result.returncode == 0 and "convert-toponet" in result.stdout


@pytest.mark.slow  # a fresh process or a training run: the fast lane leaves it to CI
def test_a_library_error_names_the_parameter_and_the_command_the_flag(tmp_path):
    """The same refusal: `ranks=[0]` to a Python caller, `--ranks [0]` through `hf-topo` (hf_topo.errors)."""
    from hf_topo.errors import InputError
    from hf_topo.experiments.compare_lora import CompareLoraArguments

    with pytest.raises(InputError, match=r"^ranks=\[0\]: give LoRA ranks >= 1, e\.g\. ranks=2 4 8\.$") as err:
        CompareLoraArguments(models=["m"], ranks=[0])
    assert err.value.parameters == ["ranks"]
    result = _hf_topo("compare-lora", "--models", "m", "--ranks", "0", cwd=tmp_path)
    (line,) = result.stderr.strip().splitlines()
    assert result.returncode == 1
    assert line == "hf-topo compare-lora: error: --ranks [0]: give LoRA ranks >= 1, e.g. --ranks 2 4 8."


@pytest.mark.slow  # a fresh process or a training run: the fast lane leaves it to CI
def test_a_refused_input_is_one_error_line_not_a_traceback(tmp_path):
    result = _hf_topo("push", "--model", "no_such_model", "--repo_id", "me/x", "--dry_run", cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("hf-topo push: error: Model folder no_such_model does not exist")
    assert list(tmp_path.iterdir()) == []  # nothing written
