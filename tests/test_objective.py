"""The training objective: its targets, weights and loss, against independent references."""

import copy
import math
from dataclasses import replace

import pytest
import torch
from conftest import TINY_MODEL

from ddpm_lib.objective import NoiseFromVelocity, Objective, diffusion_loss
from ddpm_lib.schedule import NoiseSchedule
from ddpm_lib.unet import SimpleUNet


def test_min_snr_weight_matches_its_definition_at_every_t():
    schedule = NoiseSchedule("linear", 1000)
    t = torch.arange(1000)
    weight = Objective(weighting="min_snr", min_snr_gamma=5.0).weight(schedule, t)
    for k in (0, 10, 100, 300, 999):
        ab = math.prod(1 - (1e-4 + (0.02 - 1e-4) * i / 999) for i in range(k + 1))  # alpha_bar from the betas by hand
        snr = ab / (1 - ab)
        assert weight[k].item() == pytest.approx(min(snr, 5.0) / snr, rel=1e-4)
    assert weight[-1] == 1 and weight[0] < 0.01  # noisy steps keep weight 1; nearly clean ones are capped


def test_v_weight_counts_the_same_eps_error_as_the_eps_weight():
    # For one model error, the v-loss with its weight equals the eps-loss with the eps weight.
    schedule = NoiseSchedule("linear", 1000)
    t = torch.tensor([5, 200, 900])
    x0, noise, wrong = torch.randn(3, 1, 28, 28), torch.randn(3, 1, 28, 28), torch.randn(3, 1, 28, 28)
    x_t = schedule.q_sample(x0, t, noise)
    ab = schedule.alpha_bars[t].view(-1, 1, 1, 1)
    eps_hat = noise + 0.1 * wrong  # an imperfect noise guess and the x0 and v it implies
    x0_hat = (x_t - (1 - ab).sqrt() * eps_hat) / ab.sqrt()
    v, v_hat = ab.sqrt() * noise - (1 - ab).sqrt() * x0, ab.sqrt() * eps_hat - (1 - ab).sqrt() * x0_hat
    eps_loss = Objective("eps", "min_snr").weight(schedule, t) * (eps_hat - noise).pow(2).mean(dim=(1, 2, 3))
    v_loss = Objective("v", "min_snr").weight(schedule, t) * (v_hat - v).pow(2).mean(dim=(1, 2, 3))
    torch.testing.assert_close(v_loss, eps_loss, rtol=1e-3, atol=1e-6)
    torch.testing.assert_close(Objective("v").target(schedule, x0, t, noise), v)


def test_a_perfect_v_network_is_a_perfect_noise_predictor():
    schedule = NoiseSchedule("cosine", 1000)
    x0, noise = torch.randn(4, 1, 28, 28), torch.randn(4, 1, 28, 28)
    t = torch.tensor([0, 100, 500, 999])

    class Oracle(torch.nn.Module):  # answers the true v for these very inputs
        def forward(self, x_t, t, labels=None):
            ab = schedule.alpha_bars[t].view(-1, 1, 1, 1)
            return ab.sqrt() * noise - (1 - ab).sqrt() * x0

    wrapped = NoiseFromVelocity(Oracle(), schedule)
    torch.testing.assert_close(wrapped(schedule.q_sample(x0, t, noise), t), noise, atol=1e-4, rtol=1e-4)


def test_the_noise_predictor_of_a_v_network_shows_that_network():
    network = SimpleUNet(replace(TINY_MODEL, num_classes=10))
    wrapped = NoiseFromVelocity(network, NoiseSchedule("cosine", 1000))
    assert wrapped.label_emb is network.label_emb and wrapped.config is network.config  # what notebook 4 inspects
    assert wrapped.conditional and wrapped.null_label == 10
    assert list(wrapped.parameters()) == list(network.parameters())
    with pytest.raises(AttributeError, match="no_such_thing"):
        _ = wrapped.no_such_thing
    assert copy.deepcopy(wrapped).label_emb is not network.label_emb  # copies, as the EMA does, without recursing


def test_uniform_eps_loss_is_plain_mse():
    schedule, model = NoiseSchedule(), SimpleUNet(TINY_MODEL)
    torch.nn.init.normal_(model.conv_out.weight, std=0.1)
    x0, noise, t = torch.randn(4, 1, 28, 28), torch.randn(4, 1, 28, 28), torch.tensor([1, 50, 500, 999])
    expected = torch.nn.functional.mse_loss(model(schedule.q_sample(x0, t, noise), t), noise)
    torch.testing.assert_close(diffusion_loss(model, schedule, x0, t, noise), expected)


def test_the_loss_label_names_what_the_trainer_logs():
    # With min-SNR both targets log the same eps-terms quantity (test_v_weight_counts_the_same_eps_error_as_the_eps_weight),
    # so they share one label.
    assert Objective("eps", "min_snr").loss_label() == Objective("v", "min_snr").loss_label()
    assert "SNR" in Objective("v", "min_snr").loss_label() and "5" in Objective("v", "min_snr").loss_label()
    assert "v -" in Objective("v").loss_label() and "SNR" not in Objective("eps").loss_label()
