"""Post-hoc regularizer values (hf_topo.analysis.regularizers) on tiny real models."""

import pytest
import torch

from hf_topo import TopoConfig, TopoRegularizer
from hf_topo.analysis import collect_activations, regularizer_values, topographic_layers
from hf_topo.regularizers import registered_regularizers
from hf_topo.regularizers.similarity import neighbour_distance_loss


def _layers_and_activations(model):
    layers = topographic_layers(model, TopoConfig())
    tokens = torch.randint(0, 64, (4, 16), generator=torch.Generator().manual_seed(0))
    return layers, collect_activations(model, tokens, layers, progress=False)


@pytest.mark.parametrize("fixture", ["tiny_gpt2", "tiny_neox"])
def test_weight_losses_equal_the_training_regularizer(fixture, request):
    model = request.getfixturevalue(fixture)
    config = {"tiny_gpt2": TopoConfig(), "tiny_neox": TopoConfig(target_modules=["mlp.dense_h_to_4h"])}[fixture]
    layers = topographic_layers(model, config)
    values = regularizer_values(layers, losses=["laplacian_pyramid", "weight_similarity"])
    for loss in ("laplacian_pyramid", "weight_similarity"):
        topo = TopoRegularizer(TopoConfig(target_modules=config.target_modules, loss=loss))
        mean, per_layer = topo.compute(model, with_grad=False)
        assert values[loss].mean == pytest.approx(mean.item(), rel=1e-6)
        assert values[loss].per_layer == pytest.approx({n: v.item() for n, v in per_layer.items()}, rel=1e-6)


def test_activation_similarity_is_the_neighbour_distance_of_the_given_responses(tiny_gpt2):
    layers, activations = _layers_and_activations(tiny_gpt2)
    values = regularizer_values(layers, activations, settings=TopoConfig(distance="cosine", neighbourhood=2))
    assert list(values) == list(registered_regularizers())
    for layer in layers:
        sheet = activations[layer.name].T.reshape(layer.sheet.height, layer.sheet.width, -1)
        expected = neighbour_distance_loss(sheet, "cosine", radius=2)
        assert values["activation_similarity"].per_layer[layer.name] == pytest.approx(expected.item(), rel=1e-6)
    assert values["activation_similarity"].settings == {"distance": "cosine", "neighbourhood": 2}
    assert values["laplacian_pyramid"].settings["factor_h"] == 3.0


def test_smooth_weights_score_lower_than_random_ones(tiny_gpt2):
    layers = topographic_layers(tiny_gpt2, TopoConfig())
    before = regularizer_values(layers, losses=["laplacian_pyramid", "weight_similarity"])
    with torch.no_grad():
        for layer in layers:  # every unit gets the same incoming weights: perfectly smooth on the sheet
            weight = layer.module.weight  # Conv1D: (depth, n_units)
            weight.copy_(weight[:, :1].expand_as(weight) + 1e-3 * torch.arange(weight.shape[0])[:, None])
    after = regularizer_values(layers, losses=["laplacian_pyramid", "weight_similarity"])
    assert before["weight_similarity"].mean == pytest.approx(1.0, abs=0.15)
    assert after["weight_similarity"].mean == pytest.approx(0.0, abs=1e-5)
    assert after["laplacian_pyramid"].mean < 1e-4 < before["laplacian_pyramid"].mean


def test_missing_activations_and_unknown_losses_are_refused(tiny_gpt2):
    layers = topographic_layers(tiny_gpt2, TopoConfig())
    with pytest.raises(ValueError, match="needs the activations"):
        regularizer_values(layers)
    with pytest.raises(ValueError, match="Unknown regularizers"):
        regularizer_values(layers, losses=["l2"])
    with pytest.raises(ValueError, match="No topographic layer"):
        regularizer_values([])
