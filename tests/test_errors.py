"""hf_topo.errors: a message names Python parameters (`name=`) and the command line words them as flags (`--name`)."""

import pytest

from hf_topo.errors import InputError, MissingFileError, command_line_message, parameter
from hf_topo.loading import check_data_file


def test_a_parameter_reads_as_a_keyword_in_python_and_as_a_flag_on_the_command_line():
    err = InputError(f"{parameter('max_steps', 0)} must be at least 1; or pass {parameter('tokenizer_name')} DIR.")
    assert str(err) == "max_steps=0 must be at least 1; or pass tokenizer_name= DIR."
    assert command_line_message(err) == "--max_steps 0 must be at least 1; or pass --tokenizer_name DIR."
    assert err.parameters == ["max_steps", "tokenizer_name"]
    assert isinstance(err, ValueError) and err.args == (err.args[0],)  # one raw message, rendered on demand


def test_any_other_error_is_printed_as_it_is():
    assert command_line_message(ValueError("--tau -1 must be >= 0")) == "--tau -1 must be >= 0"
    assert command_line_message(InputError("no parameter named")) == "no parameter named"
    with pytest.raises(ValueError, match="Python identifier"):
        parameter("--tau")


def test_a_missing_data_file_names_its_parameter(tmp_path):
    missing = tmp_path / "nowhere.txt"
    with pytest.raises(MissingFileError) as err:
        check_data_file(missing, "train_file")
    assert isinstance(err.value, FileNotFoundError)
    assert str(err.value) == f"train_file={str(missing)!r} does not exist."
    assert command_line_message(err.value) == f"--train_file {str(missing)!r} does not exist."
    (tmp_path / "blank.txt").write_text("  \n")
    with pytest.raises(InputError, match=r"^Text file '.*blank\.txt' is empty \(3 bytes of whitespace only\)"):
        check_data_file(tmp_path / "blank.txt", "Text file")  # not a parameter: written as it is
