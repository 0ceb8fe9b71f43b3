"""Shared fixtures: tiny real models built from small configs, offline, seeded.

Every model here is a real transformers model (no mocks): GPT-2 (Conv1D layers), GPT-NeoX and Llama (nn.Linear).
"""

import os

# Tests never touch the network: transformers/huggingface_hub must fail instead of downloading.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from datasets import Dataset  # noqa: E402
from transformers import (  # noqa: E402
    AutoModelForCausalLM,
    GPT2Config,
    GPT2LMHeadModel,
    GPTNeoConfig,
    GPTNeoXConfig,
    LlamaConfig,
    MistralConfig,
    Qwen2Config,
)

torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _seed_torch():
    """Every test starts from the same RNG state, whatever ran before it."""
    torch.manual_seed(0)


def build_gpt2(n_embd: int = 32, n_layer: int = 2, seed: int = 0, dropout: float = 0.0) -> GPT2LMHeadModel:
    """A tiny GPT-2: c_fc is a Conv1D with 4·n_embd units (n_embd=32 → 128 units → 8×16 sheet of depth 32).

    Dropout is off by default so that a batch split into micro-batches sees exactly the same forward.
    """
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=64,
        n_positions=32,
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=2,
        bos_token_id=0,
        eos_token_id=0,
        resid_pdrop=dropout,
        embd_pdrop=dropout,
        attn_pdrop=dropout,
    )
    return GPT2LMHeadModel(config)


@pytest.fixture
def make_gpt2():
    """Factory of tiny GPT-2 models: ``make_gpt2(n_embd=32, n_layer=2, seed=0)``."""
    return build_gpt2


@pytest.fixture
def tiny_gpt2():
    """A 2-block GPT-2 whose c_fc layers have 128 units (8×16 sheets) of depth 32."""
    return build_gpt2()


# Tiny configs of the other supported families (2 blocks, width 32, 64 tokens, 32 positions unless overridden).
_FAMILY_CONFIGS = {
    "gpt_neo": (
        GPTNeoConfig,
        dict(num_layers=2, num_heads=2, attention_types=[[["global", "local"], 1]], window_size=8),
    ),
    "gpt_neox": (GPTNeoXConfig, dict(num_hidden_layers=2, num_attention_heads=2, intermediate_size=96)),
    "llama": (
        LlamaConfig,
        dict(num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2, intermediate_size=120),
    ),
    "qwen2": (
        Qwen2Config,
        dict(num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2, intermediate_size=120),
    ),
    "mistral": (
        MistralConfig,
        dict(num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2, intermediate_size=96),
    ),
}


def build_causal_lm(family: str, seed: int = 0, **overrides):
    """A tiny, seeded causal LM of ``family`` (gpt_neo, gpt_neox, llama, qwen2, mistral); ``overrides`` change its
    config (e.g. ``hidden_size=48``)."""
    config_class, settings = _FAMILY_CONFIGS[family]
    torch.manual_seed(seed)
    config = config_class(
        **({"vocab_size": 64, "hidden_size": 32, "max_position_embeddings": 32} | settings | overrides)
    )
    return AutoModelForCausalLM.from_config(config)


@pytest.fixture
def tiny_neox():
    """A 2-block GPT-NeoX: mlp.dense_h_to_4h is nn.Linear(32 → 96), an 8×12 sheet of depth 32."""
    return build_causal_lm("gpt_neox")


@pytest.fixture
def tiny_llama():
    """A 2-block Llama: mlp.up_proj and mlp.gate_proj are nn.Linear(32 → 120), 10×12 sheets of depth 32."""
    return build_causal_lm("llama")


@pytest.fixture
def token_dataset():
    """Factory of a causal-LM ``datasets.Dataset`` of random tokens (labels = input_ids), fixed by ``seed``."""

    def make(n: int = 64, seq: int = 16, vocab: int = 64, seed: int = 1) -> Dataset:
        ids = torch.randint(0, vocab, (n, seq), generator=torch.Generator().manual_seed(seed)).tolist()
        return Dataset.from_dict({"input_ids": ids, "labels": ids})

    return make


def formula_loss_f64(
    cortical_sheet: torch.Tensor, factor_h: float, factor_w: float, mode: str = "bilinear"
) -> torch.Tensor:
    """TopoLoss of a ``(height, width, depth)`` sheet written out from the paper in float64 (eq. 1):
    ``1 − mean_u cos(C_u, up(down(C, 1/φh, 1/φw), (h, w))_u)`` with ``F.interpolate``, no reference quirks."""
    kwargs = {"align_corners": False} if mode in ("bilinear", "bicubic") else {}
    height, width, depth = cortical_sheet.shape
    grid = cortical_sheet.double().permute(2, 0, 1).unsqueeze(0)  # (1, depth, h, w)
    down = F.interpolate(grid, scale_factor=(1 / factor_h, 1 / factor_w), mode=mode, **kwargs)
    up = F.interpolate(down, size=(height, width), mode=mode, **kwargs)
    units = grid[0].reshape(depth, -1).T
    blurred = up[0].reshape(depth, -1).T
    return 1 - F.cosine_similarity(units, blurred, dim=-1).mean()


@pytest.fixture
def paper_formula():
    """``paper_formula(sheet, factor_h, factor_w, mode)``: the loss in float64 straight from F.interpolate."""
    return formula_loss_f64


def relative_max_error(ours: torch.Tensor, ref: torch.Tensor) -> float:
    """max |ours − ref| / max |ref| (gradients are compared relative to their largest entry)."""
    scale = ref.abs().max()
    assert scale > 0, "reference gradient is identically zero: the comparison would be vacuous"
    return ((ours.double() - ref.double()).abs().max() / scale.double()).item()


@pytest.fixture
def rel_err():
    return relative_max_error


#: Fixtures that train or run several models end to end (CPU seconds of their set-up, measured with a per-test
#: CPU-time plugin on the 2-core development machine): every test that uses one is in the slow lane, which the
#: fast lane `pytest -m "not slow"` leaves out.
SLOW_FIXTURES = {
    "comparison": "test_compare_regularizers.py: hf-topo compare-regularizers trains 7 models (62 CPU s)",
    "full_run": "test_analyze_script.py: hf-topo analyze end to end, downsampling and BLiMP included (59 CPU s)",
}


@pytest.hookimpl(tryfirst=True)  # before pytest's -m deselection reads the marks
def pytest_collection_modifyitems(config, items):
    for item in items:
        if SLOW_FIXTURES.keys() & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
