"""Test-time registers: the neuron search finds planted register neurons, the intervention removes the high-norm
tokens, the result is cached and recorded, and `registers=on` composes with any method in one pass."""
from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

import sfp
from sfp.calibration import build_registers
from sfp.errors import ConfigError
from sfp.models.registers import TestTimeRegisters, neuron_scores, rank_neurons
from analysis.runs import load_runs
from analysis.tables import components_table
from sfp.runner import run_job, run_jobs

from .helpers import tiny_overrides
from .wandb_records import read_offline_run

PLANTED = [(3, 5), (3, 9), (4, 17)]  # (block, neuron), strongest first


def _tiny(tmp_path, *overrides):
    return sfp.build_model(sfp.compose(tiny_overrides(tmp_path) + ["method=clip", "stats.enabled=false",
                                                                   *overrides]), device="cpu")


def _calibration(n=6, seed=0):
    """Blocky random crops at the tiny model's 64-pixel resolution."""
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.interpolate(torch.randn(n, 3, 8, 8, generator=g), size=(64, 64), mode="nearest")


@torch.no_grad()
def plant(tower, images):
    """Make a few neurons fire hard on a few tokens and write into the residual stream with a large output weight,
    so those tokens become high-norm outliers downstream: two co-firing neurons of block 3 (one random direction
    of ln_2's output, top 3 % of the tokens) and one of block 4 that detects what block 3 wrote there."""
    g = torch.Generator().manual_seed(3)
    fired = None
    for (layer, neuron), strength in zip(PLANTED, (20.0, 14.0, 10.0)):
        h = _ln_2_input(tower, images, layer)
        if fired is None:
            direction = torch.nn.functional.normalize(torch.randn(h.shape[-1], generator=g), dim=0)
        elif layer != PLANTED[0][0]:
            direction = torch.nn.functional.normalize(h[fired].mean(0) - h[~fired].mean(0), dim=0)
        z = h @ direction
        threshold = torch.quantile(z[:, 1:].flatten(), 0.97)
        if fired is None:
            fired = z > threshold
        block = tower.blocks[layer]
        block.mlp.c_fc.weight[neuron] = strength * direction
        block.mlp.c_fc.bias[neuron] = -strength * threshold
        out = torch.randn(block.mlp.c_proj.weight.shape[0], generator=g)
        block.mlp.c_proj.weight[:, neuron] = 10 * out / out.norm()


def _ln_2_input(tower, images, layer):
    """ln_2's output in block `layer` (after its attention), (B, T, C)."""
    x, _ = tower.embed(images)
    for j in range(layer):
        x = tower.blocks[j](x)
    block = tower.blocks[layer]
    q, k, v = tower.qkv(layer, tower.ln_1(layer, x))
    probs = torch.softmax((q * tower.head_dim ** -0.5) @ k.transpose(-2, -1), dim=-1)
    return block.ln_2(x + tower.out_proj(layer, probs @ v))


@torch.no_grad()
def last_norms(tower, images, registers=None):
    plan = sfp.models.vit.TrunkPlan(tower.depth, registers=registers)
    return tower.run_plans(images, [plan])[0].tokens[-1][:, 1:].norm(dim=-1)


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    model = _tiny(tmp_path_factory.mktemp("planted"))
    images = _calibration()
    plant(model.tower, images)
    norms = last_norms(model.tower, images)
    threshold = float(norms.median()) * 3
    return model, images, threshold


def test_the_search_ranks_the_planted_neurons_first(planted):
    model, images, threshold = planted
    assert (last_norms(model.tower, images) > threshold).any()  # the planting made high-norm tokens
    scores, used = neuron_scores(model.tower, [images[i:i + 1] for i in range(len(images))], -1, threshold,
                                 True, 0.5, 0.5)
    assert used >= 1
    found = rank_neurons(scores, used, highest_layer=5, top_k=3)
    assert set(found.neurons) == set(PLANTED)
    assert found.scores == tuple(sorted(found.scores, reverse=True))


def test_moving_the_planted_neurons_into_a_register_removes_the_high_norm_tokens(planted):
    model, images, threshold = planted
    scores, used = neuron_scores(model.tower, [images[i:i + 1] for i in range(len(images))], -1, threshold,
                                 True, 0.5, 0.5)
    registers = TestTimeRegisters(rank_neurons(scores, used, 5, 3), 1, key=("planted",))
    before, after = last_norms(model.tower, images), last_norms(model.tower, images, registers)
    assert after.shape == before.shape  # the register is not among the image tokens
    assert float(after.max()) < threshold < float(before.max())


def test_registers_are_batch_invariant_and_move_activations_as_released():
    hidden = torch.tensor([[[1.0, 2.0], [3.0, -9.0], [0.5, 4.0], [0.0, 0.0]]])  # CLS, 2 patches, 1 register
    neurons = sfp.models.registers.RegisterNeurons(((0, 1),))
    edited = TestTimeRegisters(neurons, 1).edit_activations(0, hidden)
    assert edited[0, :, 0].tolist() == [1.0, 3.0, 0.5, 0.0]  # other neurons untouched
    assert edited[0, :, 1].tolist() == [2.0, 0.0, 0.0, -9.0]  # CLS kept, patches 0, register = signed max
    both = TestTimeRegisters(neurons, 1).edit_activations(0, torch.cat([hidden, -hidden]))
    assert both[1, -1, 1] == 9.0  # per image


def _write_calibration(folder, images):
    folder.mkdir(parents=True, exist_ok=True)
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(3, 1, 1)
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(3, 1, 1)
    for i, image in enumerate(images):
        pixels = ((image * std + mean).clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
        Image.fromarray(pixels).save(folder / f"calib_{i}.png")


def test_the_search_result_is_cached_by_weights_and_calibration_set(planted, tmp_path):
    model, images, threshold = planted
    _write_calibration(tmp_path / "calib", images)
    overrides = tiny_overrides(tmp_path) + ["registers=on", f"registers.calibration.folder={tmp_path / 'calib'}",
                                            f"registers.norm_threshold={threshold}", "registers.top_k=3"]
    registers, report = build_registers(sfp.compose(overrides), model.tower)
    assert report["from_cache"] is False and report["calibration"]["num_images"] == 6
    assert set(map(tuple, report["neurons"])) == set(PLANTED)
    again, cached = build_registers(sfp.compose(overrides), model.tower)
    assert cached["from_cache"] is True and cached["neurons"] == report["neurons"]
    fewer = build_registers(sfp.compose(overrides + ["registers.calibration.num_images=2"]), model.tower)[1]
    assert fewer["from_cache"] is False  # another calibration set, another key


def test_explicit_neurons_skip_the_search_and_are_range_checked(tmp_path):
    model = _tiny(tmp_path)
    run = sfp.compose(tiny_overrides(tmp_path) + ["registers=on", "registers.neurons=[[2,7],[3,1]]"])
    registers, report = build_registers(run, model.tower)
    assert registers.layers == {2: [7], 3: [1]} and report["source"] == "registers.neurons"
    bad = sfp.compose(tiny_overrides(tmp_path) + ["registers=on", "registers.neurons=[[12,0]]"])
    with pytest.raises(ConfigError, match="registers.neurons"):
        build_registers(bad, model.tower)


@pytest.mark.parametrize("override, key", [
    ("registers.count=0", "registers.count"), ("registers.norm_threshold=-1", "registers.norm_threshold"),
    ("registers.calibration.num_images=0", "registers.calibration.num_images"),
    ("registers.neurons=[[1]]", "registers.neurons"), ("registers.sparsity_fraction=2", "registers.sparsity_fraction"),
])
def test_bad_register_settings_name_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        sfp.compose(["registers=on", override])


def test_registers_beside_the_mitigator_is_one_2x2_pass_equal_to_separate_runs(tiny_voc, tmp_path):
    """Registers (found on the first dataset's images) compose with any method: the 2 x 2 sweep of SFP's
    mitigator and registers runs as one pass, each job as it would alone, and records its neurons."""
    _, overrides = tiny_voc
    configs = [sfp.compose(overrides + ["method=sfp", f"mitigator={m}", f"registers={r}",
                                        "registers.norm_threshold=1.0", "mitigator.top_k=3"])
               for m in ("on", "off") for r in ("on", "off")]
    grouped = run_jobs(configs, [tmp_path / f"g{i}" for i in range(4)])
    separate = run_jobs(configs, [tmp_path / f"s{i}" for i in range(4)], grouped=False)
    for a, b in zip(grouped, separate):
        assert a.ok and b.ok
        assert a.record["areas"] == b.record["areas"] and a.record["evaluation"]["jobs_in_pass"] == 4
    with_registers = grouped[0].record["model"]["registers"]
    assert with_registers["calibration"]["source"] == "dataset:voc21" and len(with_registers["neurons"]) == 10
    assert "registers" not in grouped[1].record["model"]
    on_disk = json.loads((tmp_path / "g0" / "results.json").read_text())
    assert on_disk["model"]["registers"]["neurons"] == with_registers["neurons"]
    assert grouped[0].record["areas"] != grouped[1].record["areas"]  # the registers change the result
    # the analysis shows the 2 x 2 as one table: mitigator x registers, enhancer and integrator held on
    table = components_table(load_runs([tmp_path / f"g{i}" for i in range(4)]))
    assert table.values.index.names == ["mitigator", "enhancer", "integrator", "registers"]
    assert sorted(table.values.index) == [(m, "on", "on", r) for m in ("off", "on") for r in ("off", "on")]


def test_a_job_with_registers_records_its_neurons_in_the_record_and_in_wandb(tiny_voc, tmp_path):
    _, overrides = tiny_voc
    record = run_job(sfp.compose(overrides + ["method=naclip", "registers=on", "registers.neurons=[[1,2],[3,4]]",
                                              "tracker=wandb", "tracker.mode=offline"]), tmp_path / "job")
    assert record["model"]["registers"]["neurons"] == [[1, 2], [3, 4]]
    (run_dir,) = (tmp_path / "job" / "wandb").glob("offline-run-*")
    assert read_offline_run(run_dir).summary["registers/neurons"] == ["1:2", "3:4"]
