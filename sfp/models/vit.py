"""A CLIP ViT visual tower opened up for dense methods.

`VisionTower.run` executes the blocks of an open_clip `VisionTransformer` exactly as open_clip does and
returns every block's output tokens, the attention probabilities of the blocks a method asks for, and an
optional hook after each block (for methods that edit tokens mid-forward). Methods rebuild the final block
from its parts (`qkv`, `attend`, `out_proj`, `mlp`, `project`), so no method needs to touch the engine.
Tokens are batch-first: (B, 1 + N, C), CLS first, patches in row-major order.

`VisionTower.run_plans` runs the trunks of several methods at once: each method states what it needs as a
`TrunkPlan`, and a block is computed once for all plans whose computation up to and including it is the same
(the same blocks recorded with attention, the same mid-forward edits). Each plan's trace is therefore exactly
what running that plan alone gives, bit for bit.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Collection, Dict, FrozenSet, Hashable, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import WeightsError
from .registers import TestTimeRegisters

# The normalisation CLIP's crops carry (OpenAI's pixel mean and std).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
POS_MODES = ("open_clip", "offset", "bilinear_fp16")

# after_block(j, h_j, attention_j or None) -> tokens the following blocks consume
BlockHook = Callable[[int, torch.Tensor, Optional[torch.Tensor]], torch.Tensor]
# edit(j, h_j, attention_j or None, grid) -> tokens the following blocks consume
TrunkEdit = Callable[[int, torch.Tensor, Optional[torch.Tensor], Tuple[int, int]], torch.Tensor]
# embed(images, extra_tokens) -> (tokens entering block 0, grid): a method's own patch / positional embedding
TrunkEmbed = Callable[[torch.Tensor, int], Tuple[torch.Tensor, Tuple[int, int]]]


@dataclass(frozen=True)
class TrunkPlan:
    """What a method needs from the backbone: blocks 0 .. num_blocks-1, the attention probabilities of
    `attention_layers`, and an optional `edit` of the outputs of `edit_layers` (tokens filled mid-forward).

    `edit_key` names the edit: plans with equal keys must apply the same function, so they share the block
    outputs that follow it. Recording a block's attention computes that block by hand, whose output may differ
    from open_clip's fused block in the last bits, so that choice is part of what two plans must agree on."""

    num_blocks: int
    attention_layers: FrozenSet[int] = frozenset()
    edit_layers: FrozenSet[int] = frozenset()
    edit: Optional[TrunkEdit] = None
    edit_key: Hashable = None
    embed: Optional[TrunkEmbed] = None  # None: the tower's own `embed`
    embed_key: Hashable = None  # plans with equal keys embed identically (None: the tower's own)
    registers: Optional[TestTimeRegisters] = None  # run with test-time registers (stripped from the trace)

    def step(self, j: int) -> Tuple[bool, Hashable]:
        """How block j is computed for this plan: (with attention?, edit key or None)."""
        return j in self.attention_layers, self.edit_key if j in self.edit_layers else None

    @property
    def root_key(self) -> Hashable:
        """Plans with equal root keys have the same tokens entering block 0."""
        return self.embed_key, self.registers.key if self.registers is not None else None


@dataclass
class BlockTrace:
    tokens: List[torch.Tensor]  # tokens[j] = output of block j, (B, 1 + N, C)
    attention: Dict[int, torch.Tensor] = field(default_factory=dict)  # block j -> (B, heads, 1+N, 1+N)
    grid: Tuple[int, int] = (0, 0)  # (g_h, g_w) patch grid
    embedded: Optional[torch.Tensor] = None  # the tokens entering block 0, (B, 1 + N, C)
    images: Optional[torch.Tensor] = None  # the crops, (B, 3, H, W)
    # Results computed from shared tensors, shared by the traces of one `run_plans` call (e.g. statistics).
    memo: Dict[Hashable, object] = field(default_factory=dict)


class VisionTower(nn.Module):
    def __init__(self, visual: nn.Module):
        super().__init__()
        blocks = getattr(getattr(visual, "transformer", None), "resblocks", None)
        if blocks is None or not all(hasattr(b, "attn") and hasattr(b.attn, "in_proj_weight") for b in blocks):
            raise WeightsError("the visual tower is not an open_clip ViT with standard attention blocks")
        self.visual = visual
        self.blocks = blocks
        self.depth = len(blocks)
        self.width = visual.conv1.out_channels
        self.num_heads = blocks[0].attn.num_heads
        self.head_dim = self.width // self.num_heads
        self.patch_size = tuple(visual.conv1.kernel_size)
        self.native_grid = tuple(visual.grid_size)

    # ---- embedding -------------------------------------------------------------------------------------------
    def embed(self, images: torch.Tensor, pos_mode: str = "open_clip",
              extra_tokens: int = 0) -> Tuple[torch.Tensor, Tuple[int, int]]:
        """Patch embedding, CLS, positional embedding (resized for other grids, see `positional_embedding`),
        `extra_tokens` zero tokens appended last (test-time registers; no positional embedding) and ln_pre."""
        visual = self.visual
        x = visual.conv1(images)
        grid = (x.shape[-2], x.shape[-1])
        x = x.flatten(2).transpose(1, 2)
        cls = visual.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1)
        x = x + self.positional_embedding(grid, pos_mode).to(x.dtype)
        if extra_tokens:
            x = torch.cat([x, x.new_zeros(x.shape[0], extra_tokens, x.shape[2])], dim=1)
        return visual.ln_pre(x), grid

    def positional_embedding(self, grid: Tuple[int, int], mode: str = "open_clip") -> torch.Tensor:
        """(1 + N, C) positional embedding for a grid, resized as a release does:
        open_clip: bicubic to the grid's size (unchanged on the native grid);
        offset: bicubic by the scale factor (g + 0.1) / g0 (several releases; docs/methods.md);
        bilinear_fp16: bilinear to the grid's size, then rounded to float16 even on the native grid."""
        if mode not in POS_MODES:
            raise ValueError(f"positional-embedding mode {mode!r}: expected one of {', '.join(POS_MODES)}")
        pos = self.visual.positional_embedding
        if tuple(grid) == self.native_grid and mode != "bilinear_fp16":
            return pos
        gh, gw = self.native_grid
        patch_pos = pos[1:].reshape(1, gh, gw, -1).permute(0, 3, 1, 2).float()
        if mode == "offset":
            scale = ((grid[0] + 0.1) / gh, (grid[1] + 0.1) / gw)
            patch_pos = F.interpolate(patch_pos, scale_factor=scale, mode="bicubic", align_corners=False,
                                      recompute_scale_factor=False)
        else:
            patch_pos = F.interpolate(patch_pos, size=grid, mode="bicubic" if mode == "open_clip" else "bilinear",
                                      align_corners=False)
        patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(grid[0] * grid[1], -1).to(pos.dtype)
        full = torch.cat([pos[:1], patch_pos], dim=0)
        return full.half().to(pos.dtype) if mode == "bilinear_fp16" else full

    # ---- the forward pass with exposed internals ------------------------------------------------------------
    def run(
        self,
        images: torch.Tensor,
        num_blocks: Optional[int] = None,
        attention_layers: Collection[int] = (),
        after_block: Optional[BlockHook] = None,
    ) -> BlockTrace:
        """Run blocks 0 .. num_blocks-1 (default: all) and record their outputs.

        attention_layers: blocks whose head-wise attention probabilities are recorded (computed from the
        block's own q and k; other blocks keep open_clip's fused attention).
        after_block(j, h_j, attention_j) returns the tokens the following blocks consume (attention_j is None
        unless j is in attention_layers).
        """
        num_blocks = self.depth if num_blocks is None else num_blocks
        edit = None if after_block is None else lambda j, h, attention, grid: after_block(j, h, attention)
        plan = TrunkPlan(num_blocks, frozenset(attention_layers),
                         frozenset(range(num_blocks)) if edit is not None else frozenset(), edit, edit_key=object())
        return self.run_plans(images, [plan])[0]

    def run_plans(self, images: torch.Tensor, plans: Sequence[TrunkPlan]) -> List[BlockTrace]:
        """One trace per plan; blocks that several plans compute identically are computed once.

        The plans form a prefix tree over blocks, rooted at their embeddings (`TrunkPlan.embed_key`): a branch
        is a set of plans with the same tokens so far; at block j it splits by how each plan computes the block
        (with or without its attention probabilities), each part computes it once, and then by the edit each
        plan applies to the output (`TrunkPlan.step`).
        Traces share the tensors of shared blocks (read-only)."""
        memo: Dict[Hashable, object] = {}
        traces: List[Optional[BlockTrace]] = [None] * len(plans)
        branches: List[Tuple[torch.Tensor, List[int]]] = []
        by_root: Dict[Hashable, List[int]] = {}
        for i, plan in enumerate(plans):
            by_root.setdefault(plan.root_key, []).append(i)
        for members in by_root.values():
            lead = plans[members[0]]
            extra = lead.registers.count if lead.registers is not None else 0
            x, grid = self.embed(images, extra_tokens=extra) if lead.embed is None else lead.embed(images, extra)
            for i in members:
                traces[i] = BlockTrace(tokens=[], grid=grid, memo=memo, embedded=_strip(x, extra), images=images)
            branches.append((x, members))
        for j in range(max((plan.num_blocks for plan in plans), default=0)):
            split: List[Tuple[torch.Tensor, List[int]]] = []
            for tokens, members in branches:
                # Block j once per way of computing it, then each distinct edit of its output once.
                registers = plans[members[0]].registers  # shared by a branch (part of the root key)
                extra = registers.count if registers is not None else 0
                by_attention: Dict[bool, List[int]] = {}
                for i in members:
                    if plans[i].num_blocks > j:
                        by_attention.setdefault(j in plans[i].attention_layers, []).append(i)
                for with_attention, part in by_attention.items():
                    if registers is not None and j in registers.layers:
                        out, attention = self.block_with_registers(j, tokens, registers, with_attention)
                    elif with_attention:
                        out, attention = self.block_with_attention(j, tokens)
                    else:
                        out, attention = self.blocks[j](tokens), None
                    by_edit: Dict[Hashable, List[int]] = {}
                    for i in part:
                        by_edit.setdefault(plans[i].step(j)[1], []).append(i)
                    for edit_key, same in by_edit.items():
                        if edit_key is None:
                            edited = out
                        else:  # an edit sees the image tokens only; registers pass through unchanged
                            image_tokens = plans[same[0]].edit(
                                j, _strip(out, extra), _strip_attention(attention, extra), traces[same[0]].grid)
                            edited = image_tokens if not extra else torch.cat([image_tokens, out[:, -extra:]], dim=1)
                        seen, seen_attention = _strip(edited, extra), _strip_attention(attention, extra)
                        for i in same:
                            traces[i].tokens.append(seen)
                            if attention is not None:
                                traces[i].attention[j] = seen_attention
                        split.append((edited, same))
            branches = split
        return traces

    def block_with_registers(self, j: int, x: torch.Tensor, registers: TestTimeRegisters,
                             with_attention: bool) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Block j computed by hand with its register neurons moved to the register tokens (`registers`)."""
        out, probs, _ = self.block_hidden(j, x, lambda hidden: registers.edit_activations(j, hidden))
        return out, probs if with_attention else None

    def block_hidden(self, j: int, x: torch.Tensor,
                     edit: Optional[Callable[[torch.Tensor], torch.Tensor]] = None
                     ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Block j by hand, exposing its MLP's hidden activations (after the non-linearity; `edit` may replace
        them before the output projection): (output, attention probabilities, hidden activations)."""
        block = self.blocks[j]
        q, k, v = self.qkv(j, self.ln_1(j, x))
        probs = torch.softmax((q * self.head_dim**-0.5) @ k.transpose(-2, -1), dim=-1)
        x = x + block.ls_1(self.out_proj(j, probs @ v))
        hidden = block.mlp.gelu(block.mlp.c_fc(block.ln_2(x)))
        if edit is not None:
            hidden = edit(hidden)
        return x + block.ls_2(block.mlp.c_proj(hidden)), probs, hidden

    # ---- parts of a block, for methods that rebuild one -----------------------------------------------------
    def ln_1(self, j: int, x: torch.Tensor) -> torch.Tensor:
        return self.blocks[j].ln_1(x)

    def qkv(self, j: int, y: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q, k, v of block j for already-normalised tokens y (B, T, C); each (B, heads, T, head_dim)."""
        attn = self.blocks[j].attn
        qkv = F.linear(y, attn.in_proj_weight, attn.in_proj_bias)
        b, t, _ = qkv.shape
        qkv = qkv.reshape(b, t, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return qkv[0], qkv[1], qkv[2]

    def attention_probs(self, j: int, x: torch.Tensor) -> torch.Tensor:
        """softmax(q k^T / sqrt(d)) of block j for its input tokens x (before ln_1)."""
        q, k, _ = self.qkv(j, self.ln_1(j, x))
        return torch.softmax((q * self.head_dim**-0.5) @ k.transpose(-2, -1), dim=-1)

    def block_with_attention(self, j: int, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Block j computed by hand, so its attention probabilities come at no extra cost."""
        q, k, v = self.qkv(j, self.ln_1(j, x))
        probs = torch.softmax((q * self.head_dim**-0.5) @ k.transpose(-2, -1), dim=-1)
        return self.residual_mlp(j, x, self.out_proj(j, probs @ v)), probs

    def self_attention(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """softmax(a b^T / sqrt(d)) per head, e.g. q-q or k-k attention."""
        return torch.softmax((a * self.head_dim**-0.5) @ b.transpose(-2, -1), dim=-1)

    def out_proj(self, j: int, heads: torch.Tensor) -> torch.Tensor:
        """Merge heads (B, heads, T, d) -> (B, T, C) and apply block j's output projection."""
        b, h, t, d = heads.shape
        attn = self.blocks[j].attn
        return F.linear(heads.transpose(1, 2).reshape(b, t, h * d), attn.out_proj.weight, attn.out_proj.bias)

    def residual_mlp(self, j: int, x: torch.Tensor, attn_out: torch.Tensor) -> torch.Tensor:
        """The rest of block j after its attention: x + ls_1(o), then + ls_2(mlp(ln_2(.)))."""
        block = self.blocks[j]
        x = x + block.ls_1(attn_out)
        return x + block.ls_2(block.mlp(block.ln_2(x)))

    def project(self, tokens: torch.Tensor) -> torch.Tensor:
        """ln_post then the output projection, for any (B, T, C) tokens."""
        out = self.visual.ln_post(tokens)
        return out @ self.visual.proj if self.visual.proj is not None else out


def _strip(tokens: torch.Tensor, extra: int) -> torch.Tensor:
    """The class and patch tokens: the last `extra` (register) tokens left out."""
    return tokens[:, :-extra] if extra else tokens


def _strip_attention(attention: Optional[torch.Tensor], extra: int) -> Optional[torch.Tensor]:
    return attention[..., :-extra, :-extra] if extra and attention is not None else attention
