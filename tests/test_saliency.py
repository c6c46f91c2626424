"""Input-x-gradient saliency of one component (paper Fig. 24): against closed forms and plain autograd."""
import numpy as np
import pytest
import torch

from coar.components import component_set
from coar.errors import CoarError
from coar.paper.models import build_model
from coar.paper.models.cifar import MLP
from coar.saliency import component_outputs, component_saliency, region_share


def test_first_layer_neuron_saliency_is_input_times_its_weight_row():
    torch.manual_seed(0)
    model = MLP(in_features=16, hidden=8, num_classes=3).eval()
    cset = component_set(model, "mlp")
    x = torch.randn(5, 1, 4, 4)  # images; the MLP flattens them
    got = component_saliency(model, cset, 3, x)
    want = (x[:, 0] * model.fc1.weight[3].detach().reshape(4, 4)).numpy()
    assert got.shape == (5, 4, 4)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_conv_filter_saliency_matches_autograd_of_its_summed_channel():
    torch.manual_seed(1)
    model = build_model("resnet_tiny", in_channels=1, image_size=28).eval()
    cset = component_set(model, "resnet_tiny")
    c = cset.size // 2
    g, unit = cset.locate(c)
    module = model.get_submodule(cset.groups[g].module)
    x = torch.randn(3, 1, 28, 28, requires_grad=True)
    out = {}
    h = module.register_forward_hook(lambda m, a, o: out.__setitem__("o", o))
    model(x)
    h.remove()
    grad, = torch.autograd.grad(out["o"][:, unit].sum(), x)
    want = (x * grad).sum(1).detach().numpy()
    got = component_saliency(model, cset, c, x.detach(), batch_size=2)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    assert not model.training


def test_region_share_and_bad_inputs():
    s = np.zeros((2, 6, 6))
    s[0, 1:3, 1:3] = -1.0  # all mass inside
    s[1] = 1.0  # uniform: the square's area share
    np.testing.assert_allclose(region_share(s, slice(1, 3), slice(1, 3)), [1.0, 4 / 36])
    model = MLP(in_features=4, hidden=2, num_classes=2)
    with pytest.raises(CoarError, match="image inputs"):
        component_saliency(model, component_set(model, "mlp"), 0, torch.zeros(2, 4))


def test_component_outputs_are_the_summed_feature_maps():
    torch.manual_seed(2)
    model = build_model("resnet_tiny", in_channels=1, image_size=28).eval()
    cset = component_set(model, "resnet_tiny")
    picks = [0, 5, cset.size - 1, 7]  # two from the first conv, in any order
    x = torch.randn(5, 1, 28, 28)
    got = component_outputs(model, cset, picks, x, batch_size=2)
    for j, c in enumerate(picks):
        g, unit = cset.locate(c)
        out = {}
        h = model.get_submodule(cset.groups[g].module).register_forward_hook(lambda m, a, o: out.__setitem__("o", o))
        with torch.no_grad():
            model(x)
        h.remove()
        np.testing.assert_allclose(got[:, j], out["o"][:, unit].sum((1, 2)).numpy(), rtol=1e-5, atol=1e-5)
