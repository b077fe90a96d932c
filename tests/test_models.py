import math

import pytest
import torch

from selfvae_codec.models.config import ModelConfig, default_config, tiny_config
from selfvae_codec.models.distributions import DiscretizedLogisticMixture
from selfvae_codec.models.layers import WNConv2d, data_dependent_init
from selfvae_codec.models.priors import MixtureOfGaussiansPrior, RealNVPPrior
from selfvae_codec.models.selfvae import SelfVAE, parameter_count
from selfvae_codec.models.transforms import downscale, downscale_pyramid, keep_block_means, sketch

FAMILIES = {
    "downscale-K1": dict(levels=1),
    "downscale-K2": dict(levels=2),
    "downscale-K3": dict(levels=3),
    "sketch": dict(family="selfvae-sketch", u_stride=4),
    "vae-realnvp": dict(family="vae", u_stride=4),
    "vae-standard": dict(family="vae", u_stride=4, prior="standard"),
    "vae-mog": dict(family="vae", u_stride=4, prior="mog"),
}


def random_mixture(shape=(2, 5, 7), channels=3, mixtures=4, seed=0):
    generator = torch.Generator().manual_seed(seed)
    batch, height, width = shape
    params = torch.randn(
        batch, DiscretizedLogisticMixture.num_params(channels, mixtures), height, width, generator=generator
    )
    return DiscretizedLogisticMixture(params, channels, mixtures)


# -- distributions ---------------------------------------------------------------------


def test_probability_table_sums_to_one_and_agrees_with_log_prob():
    dist = random_mixture()
    x = torch.randint(0, 256, (2, 3, 5, 7), generator=torch.Generator().manual_seed(1))
    joint = torch.ones(2, 5, 7, dtype=torch.float64)
    for c in range(3):
        table = dist.channel_probabilities(c, x)
        assert table.shape == (2, 5, 7, 256)
        assert torch.allclose(table.sum(-1), torch.ones(2, 5, 7), atol=1e-5)
        assert (table >= 0).all()
        joint *= torch.gather(table, -1, x[:, c].unsqueeze(-1)).squeeze(-1).double()
    log_prob = dist.log_prob(x).double()
    assert torch.allclose(joint.log(), log_prob, atol=1e-3, rtol=1e-4)


def test_extreme_values_take_the_tail_mass():
    # All components centred far below 0: value 0 must get almost all the mass.
    params = torch.zeros(1, DiscretizedLogisticMixture.num_params(1, 2), 1, 1)
    params[:, 2:4] = -20.0  # means, in units of the (unit) scale
    dist = DiscretizedLogisticMixture(params, 1, 2)
    table = dist.channel_probabilities(0, torch.zeros(1, 1, 1, 1, dtype=torch.int64))
    assert table[0, 0, 0, 0] > 0.99
    assert math.isclose(
        float(dist.log_prob(torch.zeros(1, 1, 1, 1, dtype=torch.int64))),
        math.log(float(table[0, 0, 0, 0])),
        rel_tol=1e-4,
    )


def test_interval_probabilities_match_restricted_log_prob():
    dist = random_mixture(shape=(1, 4, 4))
    x = torch.randint(2, 250, (1, 3, 4, 4), generator=torch.Generator().manual_seed(3))
    lo = (x - torch.randint(0, 3, x.shape)).clamp(0, 255)
    hi = (lo + 3).clamp(max=255)
    joint = torch.ones(1, 4, 4, dtype=torch.float64)
    for c in range(3):
        probs = dist.interval_probabilities(c, x, lo, hi, 4)
        assert torch.allclose(probs.sum(-1), torch.ones(1, 4, 4), atol=1e-5)
        joint *= torch.gather(probs, -1, (x[:, c] - lo[:, c]).unsqueeze(-1)).squeeze(-1).double()
    assert torch.allclose(joint.log(), dist.log_prob(x, lo, hi).double(), atol=1e-3, rtol=1e-4)


def test_generated_values_lie_in_range_and_interval():
    dist = random_mixture()
    for method in ("mean", "mode", "sample"):
        values = dist.generate(method)
        assert values.dtype == torch.int64 and values.min() >= 0 and values.max() <= 255
    lo = torch.full((2, 3, 5, 7), 100, dtype=torch.int64)
    hi = lo + 2
    for method in ("mean", "mode", "sample"):
        values = dist.generate(method, lo, hi, 4)
        assert (values >= lo).all() and (values <= hi).all()


def test_flow_inverse_undoes_forward_and_log_det_matches_autograd():
    torch.manual_seed(0)
    flow = RealNVPPrior(channels=4, layers=4, hidden=8)
    for coupling in flow.couplings:  # leave the identity start: random last layers
        torch.nn.init.normal_(coupling.net[-1].weight, std=0.3)
    v = torch.randn(1, 4, 2, 2)
    u = flow.from_base(v)
    back, log_det = flow.inverse_with_log_det(u)
    assert torch.allclose(back, v, atol=1e-5)

    def inverse_flat(flat):
        return flow.to_base(flat.view(1, 4, 2, 2)).flatten()

    jacobian = torch.autograd.functional.jacobian(inverse_flat, u.flatten())
    assert torch.allclose(torch.linalg.slogdet(jacobian).logabsdet, log_det[0], atol=1e-4)


def test_flow_density_integrates_to_one():
    """Integrate exp(log_prob) of a 2-channel RealNVP prior (one position) over a grid
    wide enough to hold its mass: a density must integrate to one."""
    torch.manual_seed(1)
    flow = RealNVPPrior(channels=2, layers=2, hidden=4)
    for coupling in flow.couplings:
        torch.nn.init.normal_(coupling.net[-1].weight, std=0.3)
    axis = torch.linspace(-9, 9, 721, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(axis, axis, indexing="ij"), dim=-1).reshape(-1, 2, 1, 1)
    with torch.no_grad():
        density = torch.exp(flow.double().log_prob(grid))
    cell = float(axis[1] - axis[0]) ** 2
    assert abs(float(density.sum()) * cell - 1.0) < 2e-3


def test_mog_prior_log_prob_normalises():
    prior = MixtureOfGaussiansPrior(channels=1, components=3)
    grid = torch.linspace(-12, 12, 4001).view(1, 1, 1, -1)
    density = torch.exp(prior.log_prob(grid.permute(3, 1, 2, 0).reshape(-1, 1, 1, 1)))
    assert abs(float(density.detach().sum() * (24 / 4000)) - 1.0) < 1e-3


# -- layers --------------------------------------------------------------------------


def test_data_dependent_init_normalises_outputs():
    torch.manual_seed(0)
    conv = WNConv2d(3, 8, 3)
    x = torch.randn(16, 3, 10, 10) * 5 + 2
    with data_dependent_init(conv):
        conv(x)
    out = conv(x)
    assert int(conv.initialized) == 1
    assert torch.allclose(out.mean(dim=(0, 2, 3)), torch.zeros(8), atol=1e-4)
    assert torch.allclose(out.std(dim=(0, 2, 3)), torch.ones(8), atol=1e-3)


# -- transforms ----------------------------------------------------------------------


def test_downscale_is_discrete_deterministic_and_bounds_block_sums():
    x = torch.randint(0, 256, (2, 3, 9, 14), generator=torch.Generator().manual_seed(0))
    y = downscale(x)
    assert y.shape == (2, 3, 5, 7)
    assert y.dtype == torch.int64 and y.min() >= 0 and y.max() <= 255
    assert torch.equal(y, downscale(x.clone()))
    even = x[..., :8, :14].to(torch.int64)
    sums = even[..., 0::2, 0::2] + even[..., 0::2, 1::2] + even[..., 1::2, 0::2] + even[..., 1::2, 1::2]
    y_even = downscale(even)
    assert ((sums >= 4 * y_even - 2) & (sums <= 4 * y_even + 1)).all()
    assert torch.equal(downscale(torch.full((1, 1, 2, 2), 255)), torch.full((1, 1, 1, 1), 255))


def test_pyramid_sizes_are_ceil_halvings():
    pyramid = downscale_pyramid(torch.randint(0, 256, (1, 3, 75, 50)), 3)
    assert [tuple(p.shape[-2:]) for p in pyramid] == [(10, 7), (19, 13), (38, 25), (75, 50)]


def test_sketch_is_discrete_and_deterministic():
    x = torch.randint(0, 256, (2, 3, 17, 11), generator=torch.Generator().manual_seed(0))
    s = sketch(x)
    assert s.shape == (2, 1, 17, 11)
    assert s.dtype == torch.int64 and s.min() >= 0 and s.max() <= 255
    assert torch.equal(s, sketch(x))
    flat = torch.full((1, 3, 8, 8), 120)
    assert torch.equal(sketch(flat), torch.full((1, 1, 8, 8), 255))  # flat areas become white paper
    line = flat.clone()
    line[..., 4, :] = 20
    drawn = sketch(line)
    assert (drawn[..., 4, :] < 128).all() and (drawn[..., 0, :] == 255).all()  # the edge is drawn dark


# -- models --------------------------------------------------------------------------


@pytest.fixture(params=sorted(FAMILIES), ids=sorted(FAMILIES))
def model(request):
    torch.manual_seed(0)
    m = SelfVAE(tiny_config(**FAMILIES[request.param]))
    m.initialize(torch.randint(0, 256, (2, 3, 32, 32)))
    return m


def test_elbo_terms_are_finite_and_reconstructions_are_discrete_likelihoods(model):
    x = torch.randint(0, 256, (2, 3, 23, 17))
    with torch.no_grad():
        terms = model.elbo_bpd(x)
    assert all(torch.isfinite(v) for v in terms.values())
    # -log2 of probabilities of discrete symbols (at most 1), and analytic Gaussian KLs
    assert all(float(v) >= 0 for k, v in terms.items() if k.startswith(("re_", "kl_z")))
    expected = {"kl_u", "re_x"} | {f"kl_z{k + 1}" for k in range(len(model.levels))}
    expected |= {f"re_y{k + 1}" for k in range(len(model.levels))}
    assert expected | {"total"} == set(terms)


def test_every_generative_path_returns_input_size_uint8(model):
    for size in [(23, 17), (16, 16), (9, 31)]:
        x = torch.randint(0, 256, (1, 3, *size))
        for mode in ("rs1", "rs2", "conditional", "full"):
            for method in ("mean", "mode", "sample"):
                out = model.reconstruct(x, mode, method)
                assert out.shape == x.shape and out.dtype == torch.uint8, (mode, method, size)
        assert model.sample(2, size).shape == (2, 3, *size)
        y_top = model.representations(x)[0]
        out = model.generate_from_representation(y_top, size)
        assert out.shape == x.shape and out.dtype == torch.uint8


def test_rs2_with_z_at_prior_means_is_rs1(model):
    # The diagnostic of benchmarks/latent_use.py: rs1 is rs2 without the sent z's.
    x = torch.randint(0, 256, (1, 3, 21, 26))
    rs1 = model.reconstruct(x, "rs1")
    assert torch.equal(model.reconstruct(x, "rs2", z_from_prior=True), rs1)
    conditional = model.reconstruct(x, "conditional", z_from_prior=True)
    assert conditional.shape == x.shape
    if len(model.levels):  # with levels, conditional also has the true y's
        assert not torch.equal(conditional, rs1)


def test_conditional_generation_respects_block_means():
    # With y_k given, every generated 2x2 block must downscale back to y_k exactly.
    torch.manual_seed(0)
    m = SelfVAE(tiny_config(levels=2))
    x = torch.randint(0, 256, (1, 3, 16, 24))
    m.initialize(x)
    ys = m.representations(x)
    for method in ("mean", "mode", "sample"):
        out = m.reconstruct(x, "conditional", method)
        assert torch.equal(downscale(out.to(torch.int64)), ys[-2])


def test_elbo_falls_over_a_few_steps():
    torch.manual_seed(0)
    m = SelfVAE(tiny_config(levels=2))
    x = torch.randint(0, 256, (1, 3, 16, 16)) // 32 * 32  # structured: few distinct values
    m.initialize(x)
    optimizer = torch.optim.Adamax(m.parameters(), lr=5e-3)
    losses = []
    for _ in range(15):
        torch.manual_seed(1)  # same posterior noise each step: a fair comparison
        loss = m.elbo_bpd(x)["total"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.5


def test_bad_input_shape_is_rejected():
    m = SelfVAE(tiny_config())
    with pytest.raises(ValueError, match="expected images"):
        m.elbo_bpd(torch.zeros(1, 1, 8, 8, dtype=torch.int64))


def test_config_round_trips_through_json_and_validates():
    config = tiny_config(levels=2)
    assert ModelConfig.from_json(config.to_json()) == config
    with pytest.raises(ValueError, match="level_widths"):
        ModelConfig(levels=2, level_widths=(8,))
    with pytest.raises(ValueError, match="family"):
        ModelConfig(family="gan")
    with pytest.raises(ValueError, match="unknown model config keys"):
        ModelConfig.from_dict({"widths": 3})


def test_fingerprint_tracks_config_and_weights():
    torch.manual_seed(0)
    a = SelfVAE(tiny_config())
    b = SelfVAE(tiny_config())
    b.load_state_dict(a.state_dict())
    assert a.fingerprint() == b.fingerprint()
    with torch.no_grad():
        next(b.parameters()).view(-1)[0] += 1e-6
    assert a.fingerprint() != b.fingerprint()


def test_the_shipped_config_is_the_default_grown_by_its_trunk_blocks():
    """The README's parameter counts: the default configuration, and the shipped
    model, which is it with trunk blocks (0, 1, 2); the shipped exact model is its
    conversion."""
    from selfvae_codec.models.pretrained import load_pretrained

    shipped = load_pretrained("default-float")
    assert shipped.config == ModelConfig.from_dict({**default_config().to_dict(), "trunk_blocks": [0, 1, 2]})
    assert load_pretrained("default").config == ModelConfig.from_dict({**shipped.config.to_dict(), "exact": True})
    assert parameter_count(SelfVAE(default_config())) == 1_360_632
    assert parameter_count(shipped) == 1_517_864


@pytest.mark.parametrize("field", ["head_blocks", "trunk_blocks"])
def test_block_counts_leave_older_configs_and_fingerprints_unchanged(field):
    plain = tiny_config()
    assert field not in plain.to_dict()  # older models' config JSON, hence fingerprints
    assert tiny_config(**{field: (0, 0, 0)}) == plain
    grown = tiny_config(**{field: (0, 0, 2)})
    assert ModelConfig.from_json(grown.to_json()) == grown
    assert parameter_count(SelfVAE(grown)) > parameter_count(SelfVAE(plain))
    for wrong in ((1,), (0, 0)):
        with pytest.raises(ValueError, match=f"{field} needs one count per level"):
            tiny_config(**{field: wrong})
    with pytest.raises(ValueError, match=f"{field} counts must be >= 0"):
        tiny_config(**{field: (0, -1, 0)})


def test_z_strides_move_a_level_latent_and_leave_older_configs_unchanged():
    plain = tiny_config()
    assert "z_strides" not in plain.to_dict()
    assert tiny_config(z_strides=(4, 4, 4)) == plain
    fine = tiny_config(z_strides=(4, 4, 2))
    assert ModelConfig.from_json(fine.to_json()) == fine
    model = SelfVAE(fine)
    assert model.z_strides == [16, 8, 2]  # relative to x; the default's last is 4
    x = torch.randint(0, 256, (1, 3, 21, 30))
    ys = model.representations(x)
    assert model.levels[-1].posterior(ys[-1], ys[-2]).mean.shape[-2:] == (11, 15)  # on y_3's grid
    with pytest.raises(ValueError, match="needs one stride per level"):
        tiny_config(z_strides=(4, 2))
    with pytest.raises(ValueError, match=r"z_strides\[2\] must be a power of two of at least 2"):
        tiny_config(z_strides=(4, 4, 1))
    with pytest.raises(ValueError, match="must not be coarser than the latent above it"):
        tiny_config(z_strides=(4, 2, 8))


@pytest.mark.parametrize("size", [(8, 10), (7, 9)])
def test_keeping_block_means_moves_a_guess_onto_the_downscaled_image_and_leaves_the_truth(size):
    generator = torch.Generator().manual_seed(0)
    truth = torch.randint(0, 256, (1, 3, *size), generator=generator)
    coarse = downscale(truth)
    assert torch.equal(keep_block_means(truth, coarse), truth)
    guess = (truth + torch.randint(-60, 61, truth.shape, generator=generator)).clamp(0, 255)
    moved = keep_block_means(guess, coarse)
    assert moved.min() >= 0 and moved.max() <= 255
    whole = (size[0] // 2, size[1] // 2)  # blocks without a replicated row or column
    assert torch.equal(downscale(moved)[..., : whole[0], : whole[1]], coarse[..., : whole[0], : whole[1]])
    assert (moved - truth).square().sum() < (guess - truth).square().sum()
