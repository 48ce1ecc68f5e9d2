"""Test-time registers (docs/methods.md, "Test-time registers"): register neurons found on calibration images,
and the extra token they are moved into at test time.

Search: per calibration image, the tokens whose output norm at `detect_layer` exceeds `norm_threshold` are the
high-norm tokens; a neuron (an MLP hidden unit after the activation, any block) scores its mean |activation| at
those tokens, kept only when it is sparse (at least `sparsity_fraction` of the tokens below
`sparsity_activation`); scores are averaged over the images that have high-norm tokens, ranked, and the first
`top_k` of blocks <= `highest_layer` are the register neurons.

Intervention: `count` zero tokens are appended after the positional embedding (they get none) and pass ln_pre
and every block; in each block holding register neurons, those neurons' activations on the patch tokens become
0 and on the register tokens the signed maximum (over all tokens and that block's neurons, per image).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Tuple

import torch


@dataclass(frozen=True)
class RegisterNeurons:
    """The register neurons of one backbone: (block, neuron) pairs in rank order, with their scores."""

    neurons: Tuple[Tuple[int, int], ...]
    scores: Tuple[float, ...] = ()
    images_used: int = 0  # calibration images that had high-norm tokens

    @property
    def by_layer(self) -> Dict[int, List[int]]:
        layers: Dict[int, List[int]] = {}
        for layer, neuron in self.neurons:
            layers.setdefault(layer, []).append(neuron)
        return layers

    def as_dict(self) -> Dict:
        return {"neurons": [list(pair) for pair in self.neurons], "scores": list(self.scores),
                "images_used": self.images_used}


@dataclass(frozen=True)
class TestTimeRegisters:
    """What a trunk needs to run with registers: the neurons and the number of register tokens."""

    __test__ = False  # not a pytest test class

    neurons: RegisterNeurons
    count: int = 1
    key: Tuple = field(default=(), compare=False)  # names the neurons, for sharing blocks between plans

    @property
    def layers(self) -> Dict[int, List[int]]:
        return self.neurons.by_layer

    def edit_activations(self, j: int, hidden: torch.Tensor) -> torch.Tensor:
        """Block j's MLP activations (B, T, hidden) with its register neurons moved to the register tokens."""
        index = self.layers.get(j)
        if not index:
            return hidden
        index_t = torch.tensor(index, device=hidden.device)
        selected = hidden[:, :, index_t]  # (B, T, k)
        flat = selected.reshape(selected.shape[0], -1)
        high, low = flat.amax(dim=1), flat.amin(dim=1)
        signed_max = torch.where(high.abs() > low.abs(), high, low)  # per image
        edited = hidden.clone()
        r = self.count
        values = edited[:, :, index_t]
        values[:, 1:-r] = 0  # the patch tokens; the class token keeps its activations
        values[:, -r:] = signed_max.view(-1, 1, 1).to(values.dtype)
        edited[:, :, index_t] = values
        return edited


@torch.no_grad()
def neuron_scores(tower, images: Iterable[torch.Tensor], detect_layer: int, norm_threshold: float,
                  sparsity: bool, sparsity_fraction: float, sparsity_activation: float
                  ) -> Tuple[torch.Tensor, int]:
    """(depth, hidden) mean scores over the calibration images with high-norm tokens, and how many had them.

    `images` yields CLIP-normalised (1, 3, H, W) crops; every image is its own forward pass."""
    total, used = None, 0
    for image in images:
        x, _ = tower.embed(image)
        hidden: List[torch.Tensor] = []
        outputs: List[torch.Tensor] = []
        for j in range(tower.depth):
            x, _, h = tower.block_hidden(j, x)
            hidden.append(h[0])
            outputs.append(x[0])
        norms = outputs[detect_layer].norm(dim=-1)  # every token, the class token included
        locations = norms > norm_threshold
        if not bool(locations.any()):
            continue
        acts = torch.stack(hidden)  # (depth, T, hidden)
        score = acts[:, locations].abs().mean(dim=1)  # (depth, hidden)
        if sparsity:
            sparse = (acts < sparsity_activation).sum(dim=1) >= sparsity_fraction * acts.shape[1]
            score = score * sparse
        total = score if total is None else total + score
        used += 1
    if total is None:
        return torch.zeros(tower.depth, 0), 0
    return total / used, used


def rank_neurons(scores: torch.Tensor, used: int, highest_layer: int, top_k: int) -> RegisterNeurons:
    """The first `top_k` neurons of blocks <= highest_layer by descending score (ties: lower index first)."""
    if used == 0:
        return RegisterNeurons((), (), 0)
    width = scores.shape[1]
    flat = scores[: highest_layer + 1].flatten()
    order = torch.sort(flat, descending=True, stable=True).indices[:top_k]
    neurons = tuple((int(i) // width, int(i) % width) for i in order)
    return RegisterNeurons(neurons, tuple(float(flat[i]) for i in order), used)
