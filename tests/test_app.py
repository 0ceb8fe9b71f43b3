"""The TopoNet explorer (hf_topo.app): its maps against independent references, its bad-input messages, its API through
gradio_client, `hf-topo app`, and the Space folder of `hf-topo push --space` (its app.py run in a fresh process)."""

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from _scripts import offline_env
from transformers import GPT2Config, GPT2LMHeadModel

from hf_topo import TopoConfig, TopoRegularizer
from hf_topo.app import TopoNetExplorer, parse_stimuli, write_space_folder
from hf_topo.data import train_bpe_tokenizer

CORPUS = "".join(f"Line {i}: the quick brown fox jumps over the lazy dog {i % 7} times.\n" for i in range(300))
SHEET = (8, 16)  # 128 c_fc units of a GPT-2 with n_embd=32


@pytest.fixture(scope="module")
def tokenizer():
    return train_bpe_tokenizer([CORPUS], vocab_size=300)


def _gpt2(tokenizer, seed: int, topography: bool) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_positions=64, n_embd=32, n_layer=2, n_head=2))
    if topography:
        TopoRegularizer(TopoConfig(target_modules=["mlp.c_fc"], tau=1.0)).config_for(model).attach_to(model.config)
    return model.eval()


@pytest.fixture(scope="module")
def saved(tokenizer, tmp_path_factory):
    """A tiny GPT-2 TopoNet (sheets recorded, τ=1) and a plain GPT-2 (no topography record), saved with the tokenizer."""
    root = tmp_path_factory.mktemp("app-models")
    for name, seed, topography in (("toponet", 0, True), ("plain", 1, False)):
        _gpt2(tokenizer, seed, topography).save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
    return root


@pytest.fixture(scope="module")
def explorer(saved, tmp_path_factory):
    return TopoNetExplorer.from_pretrained(
        saved / "toponet", baseline=saved / "plain", output_dir=tmp_path_factory.mktemp("pngs")
    )


def _c_fc_outputs(model, input_ids: torch.Tensor, block: int) -> torch.Tensor:
    """The reference: block ``block``'s c_fc output, from a hook written here, ``(batch, T, 128)``."""
    captured = []
    handle = model.transformer.h[block].mlp.c_fc.register_forward_hook(lambda m, i, o: captured.append(o.detach()))
    try:
        with torch.no_grad():
            model(input_ids=input_ids)
    finally:
        handle.remove()
    return captured[0]


def test_token_maps_are_each_units_response_at_its_place_on_the_sheet(explorer, tokenizer):
    text = "the quick brown fox jumps over"
    responses, truncated = explorer.token_responses(text, "h.1.mlp.c_fc")
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert not truncated and set(responses) == {"TopoNet", "baseline"}
    for label, model in (("TopoNet", explorer.model), ("baseline", explorer.baseline)):
        reference = _c_fc_outputs(model, torch.tensor([ids]), block=1)[0]  # (T, 128)
        maps = responses[label].maps
        assert maps.shape == (len(ids), *SHEET)
        assert responses[label].tokens == [tokenizer.decode([i]) for i in ids]
        for u in (0, 5, 17, 127):  # unit u sits at row u // width, column u % width
            torch.testing.assert_close(maps[:, u // SHEET[1], u % SHEET[1]], reference[:, u])
        torch.testing.assert_close(responses[label].mean_map.flatten(), reference.mean(dim=0))
    assert not torch.allclose(responses["TopoNet"].maps, responses["baseline"].maps)


def test_long_text_is_truncated_and_said_so(explorer):
    _, truncated = explorer.token_responses(" ".join(["fox"] * 200), "h.0.mlp.c_fc")
    assert truncated and explorer.max_tokens == 64  # the model's 64 positions


def test_a_long_running_explorer_keeps_only_its_latest_figures(explorer, monkeypatch):
    import hf_topo.app.explorer as module

    monkeypatch.setattr(module, "_KEEP_FIGURES", 2)
    maps = explorer.weight_maps("h.0.mlp.c_fc")
    paths = [explorer.plot_maps(maps, "transformer.h.0.mlp.c_fc", "weights", "PC1", symmetric=True) for _ in range(3)]
    assert [p.is_file() for p in paths] == [False, True, True]
    assert _png_pixels(paths[-1]).std() > 10


def test_weight_map_is_the_first_principal_component_of_the_units_weights(explorer):
    maps = explorer.weight_maps("transformer.h.0.mlp.c_fc")
    for label, model in (("TopoNet", explorer.model), ("baseline", explorer.baseline)):
        units = model.transformer.h[0].mlp.c_fc.weight.detach().double().numpy().T  # Conv1D (in, out): a row per unit
        centered = units - units.mean(axis=0)
        _, _, vt = np.linalg.svd(centered, full_matrices=False)
        reference = (centered @ vt[0]).reshape(SHEET)
        ours = maps[label].double().numpy()
        sign = np.sign((ours * reference).sum())  # a principal component's sign is arbitrary
        np.testing.assert_allclose(sign * ours, reference, rtol=1e-4, atol=1e-5)


def test_selectivity_is_welchs_t_of_the_mean_responses(explorer, tokenizer):
    list_a = ["the quick brown fox", "the lazy dog", "a fox jumps over"]
    list_b = ["Line 12", "3 times.", "Line 40: 5 times", "over 2 times"]
    maps = explorer.selectivity(list_a, list_b, "h.0.mlp.c_fc")

    def responses(model, stimuli):  # each stimulus alone, the mean over its tokens
        return np.stack(
            [
                _c_fc_outputs(model, torch.tensor([tokenizer(s, add_special_tokens=False)["input_ids"]]), 0)[0]
                .mean(0)
                .double()
                .numpy()
                for s in stimuli
            ]
        )

    for label, model in (("TopoNet", explorer.model), ("baseline", explorer.baseline)):
        a, b = responses(model, list_a), responses(model, list_b)
        welch = (a.mean(0) - b.mean(0)) / np.sqrt(a.var(0, ddof=1) / len(a) + b.var(0, ddof=1) / len(b))
        np.testing.assert_allclose(maps[label].numpy().reshape(-1), welch, rtol=1e-4, atol=1e-6)
        assert np.abs(welch).max() > 2  # the lists differ: some units are selective


def test_a_model_without_topography_record_gets_inferred_sheets_and_a_visible_note(saved, explorer):
    plain = TopoNetExplorer.from_pretrained(saved / "plain")
    assert plain.inferred and "Inferred sheets" in plain.note and "no topography record" in plain.note
    assert plain.layer_names == explorer.layer_names
    assert not explorer.inferred and "Inferred" not in explorer.note and "baseline" in explorer.note
    assert plain.token_responses("the fox", "h.0.mlp.c_fc")[0]["TopoNet"].maps.shape[1:] == SHEET


def test_bad_input_says_what_to_do(explorer):
    with pytest.raises(
        ValueError, match=r"'h\.7\.mlp\.c_fc' is not a topographic layer.*transformer\.h\.0\.mlp\.c_fc"
    ):
        explorer.token_responses("the fox", "h.7.mlp.c_fc")
    with pytest.raises(ValueError, match="matches several layers"):
        explorer.resolve_layer("c_fc")
    with pytest.raises(ValueError, match="Type some text first"):
        explorer.token_responses("   \n", "h.0.mlp.c_fc")
    with pytest.raises(ValueError, match="List b has 1 .*at least 2"):
        parse_stimuli("just one line\n\n", "b")
    assert parse_stimuli(" a cat \n\n the dog\n", "a") == ["a cat", "the dog"]
    with pytest.raises(ValueError, match="No analysis report loaded.*--report"):
        explorer.temporal_windows("h.0.mlp.c_fc")
    with pytest.raises(FileNotFoundError, match="report.json"):
        TopoNetExplorer(explorer.model, explorer.tokenizer, report="/nonexistent/analysis")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _png_pixels(path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        assert image.format == "PNG"
        return np.asarray(image.convert("L"), dtype=np.float64)


@pytest.mark.slow
def test_the_api_through_gradio_client(explorer):
    from gradio_client import Client

    from hf_topo.app import launch_explorer

    port = _free_port()
    demo = launch_explorer(explorer, port=port, prevent_thread_lock=True)
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        assert set(client.view_api(print_info=False, return_format="dict")["named_endpoints"]) == {
            "/responses", "/weights", "/selectivity", "/temporal",
        }  # fmt: skip
        image, download, message = client.predict("h.0.mlp.c_fc", "the quick brown fox", api_name="/responses")
        assert message.startswith("5 token(s) on transformer.h.0.mlp.c_fc") and Path(download).is_file()
        first = _png_pixels(image)
        assert first.std() > 10  # a drawn figure, not a blank image
        image, _, _ = client.predict("h.0.mlp.c_fc", "Line 3: over the lazy dog", api_name="/responses")
        second = _png_pixels(image)
        assert first.shape != second.shape or (np.abs(first - second) > 8).mean() > 0.01

        image, _, message = client.predict("h.1.mlp.c_fc", api_name="/weights")
        assert _png_pixels(image).std() > 10 and "principal component" in message
        image, _, message = client.predict(
            "h.1.mlp.c_fc", "the fox\nthe dog", "Line 1\nLine 2", api_name="/selectivity"
        )
        assert _png_pixels(image).std() > 10 and message.startswith("2 vs 2 stimuli")

        # bad input: a message, no image, no exception
        assert client.predict("h.9.mlp.c_fc", "the fox", api_name="/responses")[:2] == (None, None)
        assert "not a topographic layer" in client.predict("h.9.mlp.c_fc", "x", api_name="/responses")[2]
        assert "Type some text first" in client.predict("h.0.mlp.c_fc", "", api_name="/responses")[2]
        assert "at least 2" in client.predict("h.0.mlp.c_fc", "one", "two\nthree", api_name="/selectivity")[2]
        assert client.predict("h.0.mlp.c_fc", api_name="/temporal")[:3] == (None, None, None)
        assert "No analysis report" in client.predict("h.0.mlp.c_fc", api_name="/temporal")[3]
    finally:
        demo.close()


def _hf_topo(*args, cwd=None) -> subprocess.CompletedProcess:
    command = Path(sys.executable).with_name("hf-topo")
    return subprocess.run([str(command), *args], env=offline_env(), capture_output=True, text=True, cwd=cwd)


@pytest.mark.slow
def test_app_command_help_and_a_missing_model_refused_in_one_line(tmp_path):
    result = _hf_topo("app", "--help")
    assert result.returncode == 0 and "--baseline" in result.stdout and "--port" in result.stdout
    result = _hf_topo("app", "--model", str(tmp_path / "missing"))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("hf-topo app: error:") and "missing" in result.stderr


def _push(*args) -> int:
    """`hf-topo push ARGS` in this process (the parser, the command and its one-line errors)."""
    from hf_topo.cli.arguments import run_command
    from hf_topo.cli.push import main

    return run_command(main, list(args), prog="hf-topo push")


def test_push_space_dry_run_writes_the_space_folder(saved, tmp_path, capsys):
    from huggingface_hub import SpaceCard

    folder = tmp_path / "space"
    status = _push(
        "--space", "--model", str(saved / "toponet"), "--repo_id", "someone/toponet-tiny",
        "--space_baseline", "someone/baseline-tiny", "--dry_run", "--output_dir", str(folder),
    )  # fmt: skip
    out = capsys.readouterr()
    assert status == 0, out.err[-2000:]
    assert "Dry run: nothing uploaded" in out.out and "someone/toponet-tiny-explorer" in out.out
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "app.py", "requirements.txt"]
    import gradio

    import hf_topo

    card = SpaceCard.load(folder / "README.md").data
    assert (card.sdk, card.sdk_version, card.app_file) == ("gradio", gradio.__version__, "app.py")
    assert card.models == ["someone/toponet-tiny", "someone/baseline-tiny"]
    assert len(card.title) <= 30
    requirements = (folder / "requirements.txt").read_text().splitlines()
    assert requirements == [f"hf_topo[app]=={hf_topo.__version__}", f"gradio=={gradio.__version__}"]
    app = (folder / "app.py").read_text()
    assert "'someone/toponet-tiny'" in app and "'someone/baseline-tiny'" in app
    compile(app, "app.py", "exec")

    again = ("--space", "--model", str(saved / "toponet"), "--repo_id", "someone/toponet-tiny", "--dry_run")
    assert _push(*again, "--output_dir", str(folder)) == 1
    assert "exists and is not empty" in capsys.readouterr().err
    assert (
        _push(*again, "--output_dir", str(folder), "--overwrite", "--space_requirement", "hf_topo[app] @ git+x") == 0
    )
    assert (folder / "requirements.txt").read_text().startswith("hf_topo[app] @ git+x\n")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="other files than a Space"):
        write_space_folder(tmp_path / "other", "someone/toponet-tiny", overwrite=True)
    with pytest.raises(ValueError, match="repo_id"):
        write_space_folder(tmp_path / "bad", "not a repo id")


def test_push_space_refuses_to_upload_offline(saved, tmp_path, capsys):
    folder = tmp_path / "space"
    assert _push("--space", "--model", str(saved / "toponet"), "--repo_id", "someone/toponet-tiny",
                 "--output_dir", str(folder)) == 1  # fmt: skip
    assert "HF_HUB_OFFLINE is set" in capsys.readouterr().err
    assert not folder.exists()  # refused before anything was written
    from hf_topo.app import push_space

    write_space_folder(folder, "someone/toponet-tiny")
    with pytest.raises(ValueError, match="HF_HUB_OFFLINE is set"):
        push_space(folder, "someone/toponet-tiny-explorer")
    with pytest.raises(ValueError, match="not a Space folder"):
        push_space(tmp_path, "someone/toponet-tiny-explorer")


@pytest.mark.slow
def test_the_space_app_runs_in_a_fresh_process_and_answers_its_api(saved, tmp_path):
    """The Space's app.py as the Space runs it (`python app.py`), the model overridden with the local folder."""
    from gradio_client import Client

    folder = tmp_path / "space"
    write_space_folder(folder, "someone/toponet-tiny", baseline_id="someone/baseline-tiny")
    port = _free_port()
    env = offline_env() | {
        "HF_TOPO_SPACE_MODEL": str(saved / "toponet"),
        "HF_TOPO_SPACE_BASELINE": str(saved / "plain"),
        "GRADIO_SERVER_PORT": str(port),
        "GRADIO_SERVER_NAME": "127.0.0.1",
        "GRADIO_ANALYTICS_ENABLED": "False",
    }
    process = subprocess.Popen(
        [sys.executable, "app.py"], cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        deadline = time.monotonic() + 120
        client = None
        while client is None and time.monotonic() < deadline:
            assert process.poll() is None, process.stdout.read()[-3000:]
            try:
                client = Client(f"http://127.0.0.1:{port}/", verbose=False)
            except Exception:  # not serving yet
                time.sleep(1)
        assert client is not None, "the Space's app.py did not serve within 120 s"
        image, _, message = client.predict("h.0.mlp.c_fc", "the quick brown fox", api_name="/responses")
        assert message.startswith("5 token(s)") and _png_pixels(image).std() > 10
        _, _, message = client.predict("h.0.mlp.c_fc", "", api_name="/responses")
        assert "Type some text first" in message
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.mark.slow
def test_temporal_window_maps_from_an_analyze_report(saved, tokenizer, tmp_path):
    from transformers import AutoModelForCausalLM

    from hf_topo.analysis import AnalysisSettings, analyze_model, load_text_blocks, write_report

    text = tmp_path / "corpus.txt"
    text.write_text(CORPUS)
    model = AutoModelForCausalLM.from_pretrained(saved / "toponet")
    settings = AnalysisSettings(
        max_tokens=128, eval_blocks=2, sweeps=[], max_pairs=2000, temporal_windows=True, temporal_max_delta=4,
        temporal_max_sequences=4, temporal_sequence_words=8, temporal_yoking=False,
    )  # fmt: skip
    words = CORPUS.split()
    passages = [" ".join(words[20 * i : 20 * (i + 1)]) for i in range(6)]
    blocks = load_text_blocks(tokenizer, 32, text_file=str(text), max_blocks=8)
    analysis = analyze_model(model, tokenizer, blocks, settings, label="TopoNet", passages=passages, progress=False)
    report = write_report(analysis, tmp_path / "analysis")

    explorer = TopoNetExplorer(model, tokenizer, report=tmp_path / "analysis")
    paths, table = explorer.temporal_windows("h.1.mlp.c_fc")
    assert [p.name for p in paths] == ["temporal_maps_TopoNet_transformer.h.1.mlp.c_fc.png"]
    assert _png_pixels(paths[0]).std() > 10
    shares = report["model"]["temporal_windows"]["fits"]["layers"]["transformer.h.1.mlp.c_fc"]["fractions"]
    row = next(line for line in table.splitlines() if line.startswith("| TopoNet |"))
    assert row.split(" | ")[1:5] == [
        f"{100 * shares[k]:.0f}%" for k in ("exponential", "power_law", "neither", "delta")
    ]
    assert explorer.report_dir == tmp_path / "analysis"
    assert "temporal_windows" in json.loads((tmp_path / "analysis" / "report.json").read_text())["model"]


def test_a_topolm_model_shows_its_responses_and_says_why_it_has_no_weight_map(tokenizer, tmp_path):
    """TopoLM's sheets are module outputs (the residual stream): responses on the sheet, no weight map, a message."""
    from hf_topo import topolm_targets

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_positions=64, n_embd=36, n_layer=2, n_head=2))
    TopoRegularizer(TopoConfig(loss="spatial_correlation", radius=2, **topolm_targets(model))).config_for(
        model
    ).attach_to(model.config)
    topolm = TopoNetExplorer(model.eval(), tokenizer, output_dir=tmp_path)
    layer = topolm.layer_names[0]
    responses, _ = topolm.token_responses("the cat sat on the mat", layer)
    maps = next(iter(responses.values())).maps
    assert maps.shape[-2:] == (6, 6) and maps.std() > 0
    with pytest.raises(ValueError, match="activation sheet .* no weights to map"):
        topolm.weight_maps(layer)
