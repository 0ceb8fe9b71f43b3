"""The one forward-output capture (hf_topo.analysis.hooks): eval mode inside, everything restored on exit."""

import pytest
import torch
from torch import nn

from hf_topo.analysis.hooks import capture_outputs


class TwoLayers(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.drop = nn.Dropout(0.5)
        self.proj = nn.Linear(4, 3)

    def forward(self, input_ids):
        return self.proj(self.drop(self.embed(input_ids)))


def test_capture_reads_outputs_in_eval_mode_without_gradients():
    torch.manual_seed(0)
    model = TwoLayers().train()
    ids = torch.tensor([[1, 2, 3], [4, 5, 0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    with capture_outputs(model, {"proj": model.proj}) as captured:
        assert not model.training
        out = model(ids)
        seen = captured.output("proj", ids)
        assert torch.equal(seen, out) and not seen.requires_grad
        real = captured.real_tokens("proj", mask)
        assert real.shape == (5, 3) and torch.equal(real[3:], out[1, :2])  # the padded position is left out
        assert torch.equal(captured.real_tokens("proj", None), out.reshape(6, 3))
        again = model(ids)
        assert torch.equal(again, out)  # eval mode: dropout is off, so two passes agree
    assert model.training and not model.proj._forward_hooks


def test_capture_restores_the_model_after_an_error_and_checks_shapes():
    model = TwoLayers().train()
    with pytest.raises(RuntimeError, match="boom"):
        with capture_outputs(model, {"proj": model.proj}):
            raise RuntimeError("boom")
    assert model.training and not model.proj._forward_hooks
    model.eval()
    with capture_outputs(model, {"proj": model.proj}) as captured:
        with pytest.raises(
            ValueError, match=r"'proj' must output \(batch, seq_len, n_units\) for every forward pass; got None"
        ):
            captured.output("proj")
        model(torch.tensor([[1, 2]]))
        with pytest.raises(ValueError, match=r"got \(1, 2, 3\) for input \(1, 3\)"):
            captured.output("proj", torch.zeros(1, 3, dtype=torch.long))
    assert not model.training  # an eval-mode model stays in eval mode
