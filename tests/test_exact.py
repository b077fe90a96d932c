"""The exact (integer) models: fixed-point functions, integer convolutions, integer
probability tables, the conversion from float, and identical bytes and pixels across
CPU vector levels, oneDNN ISAs, thread counts and devices."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from selfvae_codec.codec.api import Codec
from selfvae_codec.models import fixed_point as fp
from selfvae_codec.models.config import tiny_config
from selfvae_codec.models.exact import to_exact
from selfvae_codec.models.exact_distributions import (
    BIN_VALUES,
    BINS,
    LATENT_SCALES,
    ExactLogisticMixture,
    coder_counts,
    latent_log_stds,
    latent_scale_index,
    latent_symbol_range,
    latent_table,
)
from selfvae_codec.models.layers import DenseBlock, WNConv2d
from selfvae_codec.models.pretrained import load_pretrained
from selfvae_codec.models.selfvae import SelfVAE

DATA = Path(__file__).parent / "data"


# -- fixed-point functions ---------------------------------------------------------
def test_function_tables_follow_the_float_functions():
    x = torch.arange(-16 * fp.ACT_ONE, 8 * fp.ACT_ONE, 7)
    value = x.double() / fp.ACT_ONE
    assert (fp.sigmoid(x, fp.ACT_BITS).double() / 2**30 - torch.sigmoid(value)).abs().max() < 2e-7
    assert (fp.tanh(x, 15).double() / 2**15 - torch.tanh(value)).abs().max() < 1e-4
    assert (fp.elu(x) - torch.round(F.elu(value) * fp.ACT_ONE)).abs().max() <= 1
    positive = value > -3
    relative = (fp.exp(x).double() / 2**16 - torch.exp(value)) / torch.exp(value)
    assert relative[positive].abs().max() < 5e-4
    fine = torch.arange(-15 << 16, 15 << 16, 997)
    nearest = fp.sigmoid_nearest_(fine.clone(), 16)
    assert (nearest.double() / 2**30 - torch.sigmoid(fine.double() / 2**16)).abs().max() < 1e-4


def test_the_function_tables_are_monotone_and_saturate_exactly():
    assert (torch.diff(fp.SIGMOID_TABLE) >= 0).all() and (torch.diff(fp.EXP_NEG_TABLE) <= 0).all()
    assert fp.FINE_SIGMOID_TABLE[0] == 0 and fp.FINE_SIGMOID_TABLE[-1] == fp.ONE_Q30
    assert (torch.diff(fp.FINE_SIGMOID_TABLE) >= 0).all()


def test_pixels_map_onto_the_networks_input_scale():
    pixels = torch.arange(256)
    expected = torch.round((pixels.double() / 127.5 - 1.0) * fp.ACT_ONE).to(torch.int64)
    assert torch.equal(fp.pixels_to_activations(2 * pixels), expected)


# -- integer convolutions ------------------------------------------------------------
def _integer_conv_reference(x: torch.Tensor, layer: fp.ExactConv) -> torch.Tensor:
    """The same convolution in int64 arithmetic only (unfold and an integer matmul)."""
    out_channels, _, kernel, _ = layer.weight.shape
    columns = F.unfold(x.double(), kernel, padding=layer.padding, stride=layer.stride).to(torch.int64)
    acc = layer.weight.to(torch.int64).reshape(out_channels, -1) @ columns
    height = (x.shape[2] + 2 * layer.padding - kernel) // layer.stride + 1
    acc = acc.reshape(x.shape[0], out_channels, height, -1)
    out = (acc + layer.bias.view(1, -1, 1, 1)) >> layer.shift.view(1, -1, 1, 1)
    return out.clamp(-fp.ACT_LIMIT, fp.ACT_LIMIT)


@pytest.mark.parametrize("block_columns", [fp.GEMM_BLOCK_COLUMNS, 64])  # 64: several blocks, the last one short
@pytest.mark.parametrize("kernel, stride, padding", [(3, 1, 1), (3, 2, 1), (1, 1, 0), (4, 2, 1), (3, 3, 0)])
def test_an_exact_convolution_equals_integer_arithmetic_at_any_thread_count(
    kernel, stride, padding, block_columns, monkeypatch
):
    monkeypatch.setattr(fp, "GEMM_BLOCK_COLUMNS", block_columns)
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(24, 40, kernel, kernel, generator=generator) * 0.3
    layer = fp.ExactConv.from_float(weight, torch.randn(24, generator=generator), stride, padding, False)
    assert layer.weight.abs().max() <= 1 << fp.WEIGHT_BITS
    # Activations at the saturation limit: the largest sums an exact model can meet.
    x = torch.randint(-fp.ACT_LIMIT, fp.ACT_LIMIT + 1, (2, 40, 19, 23), generator=generator)
    expected = _integer_conv_reference(x, layer)
    previous = torch.get_num_threads()
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            assert torch.equal(layer(x), expected)
    finally:
        torch.set_num_threads(previous)


def test_an_exact_dense_block_equals_the_elu_of_each_concatenation():
    """The exact dense block computes each feature's ELU once; the numbers must be those
    of the float form, ELU(concatenation of all features so far) before each layer."""
    generator = torch.Generator().manual_seed(1)
    block = DenseBlock(width=8, growth=4, layers=3)
    for name, layer in list(block.named_modules()):
        if isinstance(layer, (WNConv2d, torch.nn.Conv2d)):
            weight = torch.randn(layer.weight_v.shape if isinstance(layer, WNConv2d) else layer.weight.shape) * 0.3
            exact = fp.ExactConv.from_float(weight, torch.randn(weight.shape[0]) * 0.1, 1, weight.shape[-1] // 2, False)
            parent, _, child = name.rpartition(".")
            setattr(block.get_submodule(parent) if parent else block, child, exact)
    x = torch.randint(-4 * fp.ACT_ONE, 4 * fp.ACT_ONE, (1, 8, 9, 11), generator=generator)
    features = [x]
    for layer in block.layers:
        features.append(layer(fp.elu(torch.cat(features, dim=1))))
    expected = x + block.attention(block.transition(fp.elu(torch.cat(features, dim=1))))
    assert torch.equal(block(x), expected)


def test_quantised_weights_keep_the_float_convolution():
    weight = torch.randn(8, 16, 3, 3) * 0.1
    bias = torch.randn(8) * 0.1
    layer = fp.ExactConv.from_float(weight, bias, 1, 1, False)
    x = torch.randn(1, 16, 12, 12)
    exact = layer(torch.round(x * fp.ACT_ONE).to(torch.int64)).double() / fp.ACT_ONE
    assert (exact - F.conv2d(x.double(), weight.double(), bias.double(), 1, 1)).abs().max() < 2e-3


# -- integer probability tables ------------------------------------------------------
def _random_mixture(seed: int, height=5, width=6) -> ExactLogisticMixture:
    generator = torch.Generator().manual_seed(seed)
    params = torch.randn(1, 5 * 10, height, width, generator=generator, dtype=torch.float64) * 2
    return ExactLogisticMixture(torch.round(params * fp.ACT_ONE).to(torch.int64), 3, 5)


def test_mixture_tables_are_nonnegative_with_mass_and_restricted_to_their_interval():
    mixture = _random_mixture(0)
    x = torch.randint(0, 256, (1, 3, 5, 6))
    for c in range(3):
        table = mixture.channel_table(c, x)
        assert table.shape == (1, 5, 6, 256) and (table >= 0).all() and (table.sum(-1) > 0).all()
    lo = (x - 1).clamp(0, 255)
    hi = (x + 2).clamp(0, 255)
    table = mixture.interval_table(2, x, lo, hi, 4)
    values = lo[:, 2].unsqueeze(-1) + torch.arange(4)
    outside = values > hi[:, 2].unsqueeze(-1)
    assert (table[outside] == 0).all() and (table.sum(-1) > 0).all()


def test_tables_over_the_values_with_mass_equal_the_whole_computation():
    """channel_table computes each position over the values that can have mass only;
    the counts are exactly those of all 256 values, sharp and wide components alike."""
    from selfvae_codec.models.exact_distributions import BIN_EDGES

    generator = torch.Generator().manual_seed(3)
    params = torch.randn(1, 50, 16, 16, generator=generator, dtype=torch.float64) * 2
    log_scales = params[:, 5 + 15 : 5 + 30].view(1, 3, 5, 16, 16)
    log_scales[:, :, :2] = -7.0  # the sharpest components the model has, beside wide ones
    log_scales[:, :, 4] = 7.0  # and the widest
    mixture = ExactLogisticMixture(torch.round(params * fp.ACT_ONE).to(torch.int64), 3, 5)
    x = torch.randint(0, 256, (1, 3, 16, 16), generator=generator)
    for c in range(3):
        windowed = mixture.channel_table(c, x).reshape(-1, 256)

        def rows(t):
            return t.permute(0, 2, 3, 1).reshape(-1, t.shape[1])

        weights, mean = rows(mixture._weights_for(c, x)), rows(mixture._channel_mean(c, x))
        mixed = mixture._mixed_cdf(mean, rows(mixture.inv_scales[:, c]), weights, BIN_EDGES.expand(mean.shape[0], 257))
        assert torch.equal(windowed, mixed[:, 1:] - mixed[:, :-1])


def test_the_two_step_tables_split_the_whole_table_exactly():
    """Coding a value in two steps (format version 3): the bins' counts are the sums of
    the whole table's counts over each bin, and the second step's counts are the
    whole table's within the bin; a bin without mass gets a uniform second table."""
    generator = torch.Generator().manual_seed(4)
    params = torch.randn(1, 50, 16, 16, generator=generator, dtype=torch.float64) * 2
    params[:, 5 + 15 : 5 + 30].view(1, 3, 5, 16, 16)[:, :, :3] = -7.0  # sharp components: bins without mass
    mixture = ExactLogisticMixture(torch.round(params * fp.ACT_ONE).to(torch.int64), 3, 5)
    x = torch.randint(0, 256, (1, 3, 16, 16), generator=generator)
    for c in range(3):
        whole = mixture.channel_table(c, x).reshape(-1, BINS, BIN_VALUES)
        parameters = mixture.channel_parameters(c, x)
        assert torch.equal(ExactLogisticMixture.bin_table(*parameters), whole.sum(-1))
        every_bin = torch.arange(BINS).repeat_interleave(256)
        second = ExactLogisticMixture.value_in_bin_table(*[t.repeat(BINS, 1) for t in parameters], every_bin)
        within = whole.transpose(0, 1).reshape(-1, BIN_VALUES)  # row (bin, position)
        with_mass = within.sum(-1) > 0
        assert torch.equal(second[with_mass], within[with_mass])
        assert (~with_mass).any() and (second[~with_mass] == 1).all()


def test_files_of_format_versions_2_and_3_code_the_same_image_at_the_same_rate():
    """Version 3 codes an exact model's pixel values in two steps, version 2 in one;
    both decode exactly, the streams differ and the sizes agree to within 0.1%."""
    codec = Codec("default", threads=1)
    image = DATA / "astronaut_128x128.png"
    files = {v: codec.compress(image, "full", classical_tiles=False, format_version=v) for v in (2, 3)}
    for version, data in files.items():
        assert data[4] == version and np.array_equal(codec.decompress(data), np.asarray(Image.open(image)))
    assert files[2] != files[3] and abs(len(files[3]) / len(files[2]) - 1) < 1e-3
    # A truncated file keeps its version, and so its coding.
    for version, data in files.items():
        truncated = codec.truncate(data, "conditional")
        direct = codec.compress(image, "conditional", classical_tiles=False, format_version=version)
        assert truncated == direct and truncated[4] == version


def test_mixture_tables_match_the_float_distribution():
    """On values the mixture itself draws, the integer tables are the float ones to
    within a hundredth of a bit (KL divergence), channel coupling included."""
    from selfvae_codec.models.distributions import DiscretizedLogisticMixture

    torch.manual_seed(1)
    params = torch.randn(1, 50, 8, 8, dtype=torch.float64)
    params[:, 5 + 15 : 5 + 30] -= 3.0  # scales of a few pixel values
    exact = ExactLogisticMixture(torch.round(params * fp.ACT_ONE).to(torch.int64), 3, 5)
    reference = DiscretizedLogisticMixture(params, 3, 5)
    x = reference.generate("sample")
    for c in range(3):
        counts = exact.channel_table(c, x).double()
        approximate = counts / counts.sum(-1, keepdim=True)
        true = reference.channel_probabilities(c, x)
        kl_bits = (true * (torch.log2(true.clamp(min=1e-300)) - torch.log2(approximate.clamp(min=1e-300)))).sum(-1)
        assert kl_bits.mean() < 0.01


def test_latent_tables_sum_to_one_and_the_scale_index_is_the_nearest():
    for index in (0, 10, 50, LATENT_SCALES - 1):
        table = latent_table(index)
        assert table.numel() == 2 * latent_symbol_range(index) + 1
        assert table.sum() == fp.ONE_Q30 and (table >= 0).all()
        assert torch.equal(table, table.flip(0))  # symmetric about 0
    stds = fp.exp(latent_log_stds(torch.arange(LATENT_SCALES)))
    step = fp.ACT_ONE  # a step of 1: each grid value picks its own index
    assert torch.equal(latent_scale_index(stds, step), torch.arange(LATENT_SCALES))
    halfway = fp.exp(latent_log_stds(torch.tensor([40])) + 10)  # just above grid value 40
    assert latent_scale_index(halfway, step).item() == 40


def test_per_channel_latent_steps_pick_each_channels_own_scale_index():
    generator = torch.Generator().manual_seed(0)
    stds = torch.randint(1 << 10, 1 << 24, (2, 3, 4, 5), generator=generator)
    steps = torch.tensor([1, 700, 9000]).view(1, 3, 1, 1)
    expected = torch.cat([latent_scale_index(stds[:, c : c + 1], int(steps[0, c])) for c in range(3)], dim=1)
    assert torch.equal(latent_scale_index(stds, steps), expected)


# -- the conversion --------------------------------------------------------------------
def test_a_converted_model_saves_loads_and_codes_exactly(tmp_path):
    from selfvae_codec.models.io import load_model, save_model

    torch.manual_seed(0)
    model = SelfVAE(tiny_config())
    model.initialize(torch.randint(0, 256, (2, 3, 32, 32)))
    exact = to_exact(model)
    assert all(not t.is_floating_point() for t in exact.state_dict().values())
    path = tmp_path / "exact.safetensors"
    fingerprint = save_model(exact, path)
    loaded = load_model(path)
    assert loaded.config.exact and loaded.fingerprint() == fingerprint != model.fingerprint()
    codec = Codec(loaded, threads=1)
    for mode in ("full", "conditional", "rs2", "rs1"):
        result = codec.encode(DATA / "chelsea_75x50.png", mode, classical_tiles=False)
        assert np.array_equal(codec.decompress(result.data), result.reconstruction)


def test_convert_writes_an_exact_model_from_the_command_line(tmp_path):
    from click.testing import CliRunner

    from selfvae_codec.cli.main import cli
    from selfvae_codec.models.io import load_model, save_model

    torch.manual_seed(0)
    model = SelfVAE(tiny_config())
    model.initialize(torch.randint(0, 256, (2, 3, 32, 32)))
    save_model(model, tmp_path / "float.safetensors")
    runner = CliRunner()
    arguments = ["convert", str(tmp_path / "float.safetensors"), "-o", str(tmp_path / "exact.safetensors")]
    assert runner.invoke(cli, arguments).exit_code == 0
    assert load_model(tmp_path / "exact.safetensors").config.exact
    again = runner.invoke(cli, arguments)  # no silent overwrite
    assert again.exit_code == 1 and "exists" in again.output
    encoded = runner.invoke(
        cli,
        [
            "encode",
            str(DATA / "coffee_96x64.png"),
            "-o",
            str(tmp_path / "c.svc"),
            "--model",
            str(tmp_path / "exact.safetensors"),
        ],
    )
    assert encoded.exit_code == 0, encoded.output


def test_decode_takes_any_thread_count_for_files_of_the_exact_model(tmp_path):
    from click.testing import CliRunner

    from selfvae_codec.bitstream import unpack
    from selfvae_codec.cli.main import cli

    runner = CliRunner()
    svc = tmp_path / "c.svc"
    encode = ["encode", str(DATA / "coffee_96x64.png"), "-o", str(svc), "--mode", "conditional", "--threads", "2"]
    assert runner.invoke(cli, encode).exit_code == 0
    assert unpack(svc.read_bytes()).threads == 0  # files of exact models name no thread count
    for threads in ("1", "3"):
        result = runner.invoke(cli, ["decode", str(svc), "-o", str(tmp_path / f"{threads}.png"), "--threads", threads])
        assert result.exit_code == 0, result.output
    assert (tmp_path / "1.png").read_bytes() == (tmp_path / "3.png").read_bytes()


def test_the_shipped_exact_model_codes_as_well_as_its_float_source():
    """Post-training quantisation costs under 0.5% of the lossless rate."""
    sizes = {}
    for name in ("default", "default-float"):
        codec = Codec(name, threads=2)
        sizes[name] = len(codec.compress(DATA / "astronaut_128x128.png", "full", classical_tiles=False))
    assert sizes["default"] < 1.005 * sizes["default-float"]


# -- identical bytes everywhere ----------------------------------------------------------
def _cpu_has_avx512() -> bool:
    try:
        return "avx512f" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


ENVIRONMENTS = [
    ("reference", {}, 2),
    ("no-vectors-sse41", {"ATEN_CPU_CAPABILITY": "default", "DNNL_MAX_CPU_ISA": "SSE41"}, 1),
    ("avx2", {"ATEN_CPU_CAPABILITY": "avx2"}, 3),
] + ([("avx512-sse41", {"ATEN_CPU_CAPABILITY": "avx512", "DNNL_MAX_CPU_ISA": "SSE41"}, 2)] if _cpu_has_avx512() else [])


def _worker(out: Path, environment: dict, threads: int, decode_dir: Path | None = None) -> dict:
    command = [sys.executable, str(Path(__file__).parent / "portability_worker.py"), str(out), str(threads)]
    if decode_dir is not None:
        command.append(str(decode_dir))
    env = {k: v for k, v in os.environ.items() if k not in ("ATEN_CPU_CAPABILITY", "DNNL_MAX_CPU_ISA")}
    result = subprocess.run(command, env={**env, **environment}, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_files_are_identical_and_decode_exactly_across_cpu_environments(tmp_path):
    """Every environment encodes the same bytes (all four modes and near-lossless
    full, a multi-tile image with odd sides; the shipped lossy model's rs2, rs1 and conditional at two
    qualities), and decodes the reference environment's files to the pixels the
    reference encoder promised (each file's image checksum is verified)."""
    name, environment, threads = ENVIRONMENTS[0]
    _worker(tmp_path / name, environment, threads)
    reference = {path.name: path.read_bytes() for path in sorted((tmp_path / name).glob("*.svc"))}
    assert len(reference) == 22  # 2 images: 4 modes, near-lossless full, the lossy model's 3 modes at 2 qualities
    decoded = []
    for name, environment, threads in ENVIRONMENTS[1:]:
        decoded.append(_worker(tmp_path / name, environment, threads, decode_dir=tmp_path / ENVIRONMENTS[0][0]))
        for file_name, data in reference.items():
            assert (tmp_path / name / file_name).read_bytes() == data, f"{file_name} differs under {name}"
    assert all(hashes == decoded[0] and set(hashes) == set(reference) for hashes in decoded)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_encodes_the_same_bytes_as_the_cpu():
    cpu, cuda = Codec("default", device="cpu"), Codec("default", device="cuda")
    for mode in ("full", "conditional", "rs2", "rs1"):
        data = cpu.compress(DATA / "chelsea_75x50.png", mode, classical_tiles=False)
        assert cuda.compress(DATA / "chelsea_75x50.png", mode, classical_tiles=False) == data
        assert np.array_equal(cuda.decompress(data), cpu.decompress(data))


def test_the_fingerprint_covers_the_integer_weights():
    model = load_pretrained("default")
    before = model.fingerprint()
    with torch.no_grad():
        model.levels[0].context_block.transition.weight[0, 0, 0, 0] += 1
    assert model.fingerprint() != before


def test_coder_counts_shift_each_row_by_the_bits_its_total_has_above_2_to_the_23():
    """At every power of two (2^k - 1 and 2^k, k up to 62): the shift is the count of
    bits b = 23..62 with total >> b > 0, the smallest that brings the total below 2^23."""
    totals = [(1 << k) - 1 for k in range(1, 63)] + [1 << k for k in range(62)] + [0]
    table = torch.tensor(totals).unsqueeze(-1)
    expected = [sum(total >> b > 0 for b in range(23, 63)) for total in totals]
    assert coder_counts(table).squeeze(-1).tolist() == [(t >> s) + 1 for t, s in zip(totals, expected, strict=True)]
    assert all(t >> s < 1 << 23 and (s == 0 or t >> (s - 1) >= 1 << 23) for t, s in zip(totals, expected, strict=True))


def test_coder_counts_are_exact_in_float32_and_leave_no_value_impossible():
    """A table that constriction could not code a value of (a real case: a lossy
    model's last-group table, the true value 3 with no mass), and tables with large
    and small totals: reduced, every row sums below 2^24 with no zero entry, float32
    holds the counts exactly, and every value codes and decodes."""
    import constriction

    from selfvae_codec.codec.entropy import _CATEGORICAL

    tables = torch.tensor([[65212704, 18235804, 0, 0], [1 << 45, 3, 0, 1 << 40], [0, 5, 7, 0], [1, 1, 1, 1]])
    counts = coder_counts(tables)
    assert (counts > 0).all() and (counts.sum(-1) < 1 << 24).all()
    assert torch.equal(counts.to(torch.float32).to(torch.int64), counts)
    assert torch.equal(coder_counts(torch.tensor([[4, 0, 2]])), torch.tensor([[5, 1, 3]]))  # small totals: + 1
    probabilities = counts.numpy().astype(np.float32)
    for row in probabilities:
        for value in range(len(row)):
            coder = constriction.stream.stack.AnsCoder()
            coder.encode_reverse(np.array([value], dtype=np.int32), _CATEGORICAL, row[None])
            decoder = constriction.stream.stack.AnsCoder(coder.get_compressed())
            assert decoder.decode(_CATEGORICAL, row[None]).tolist() == [value]
