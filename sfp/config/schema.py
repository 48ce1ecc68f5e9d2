"""Typed settings for every knob, each default written here once.

Hydra validates keys and types against these dataclasses at composition; `sfp.assembly.to_run_config` turns
the composed config into these objects once, and each `validate(prefix)` checks the ranges that types
cannot express. The group files in conf/ hold only values that differ from these defaults.

A method's own knobs are not here: each method module declares its settings class (`MethodSettings`
subclass), which types the `method` node.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any, ClassVar, Dict, List, Optional, Tuple

from omegaconf import MISSING

from ..errors import ConfigError
from .checks import at_least, check, in_range, optional_at_least, optional_sha256, positive


class Precision(str, Enum):
    float32 = "float32"
    float16 = "float16"
    bfloat16 = "bfloat16"


class Detector(str, Enum):
    som = "som"
    l2 = "l2"
    lof = "lof"


class NoNeighbour(str, Enum):
    keep = "keep"
    zero = "zero"


class EnhancerSimilarity(str, Enum):
    thresholded = "thresholded"  # M from S_pre (after the beta cut): SFP
    raw = "raw"  # M from the plain cosine matrix: SC-CLIP


class EnhancerMix(str, Enum):
    sfp = "sfp"  # branch A: (qq + kk + M) / 3, branch B: M
    sc_clip = "sc_clip"  # both branches: (M + kk) / 2


class IntegratorSource(str, Enum):
    features = "features"
    attention_maps = "attention_maps"


class TrackerBackend(str, Enum):
    wandb = "wandb"
    none = "none"


class WandbMode(str, Enum):
    auto = "auto"  # online when an API key is configured, offline otherwise
    online = "online"
    offline = "offline"
    disabled = "disabled"


class CheckpointFormat(str, Enum):
    auto = "auto"
    open_clip = "open_clip"
    openai = "openai"


@dataclass
class ProtocolOverride:
    """Per-backbone replacement of a dataset's protocol values (None keeps the dataset's value)."""

    short_side: Optional[int] = None
    logit_scale: Optional[float] = None
    prob_thd: Optional[float] = None
    area_thd: Optional[float] = None
    # per method, values its release tuned for this dataset on this backbone (win over the dataset's)
    method_values: Dict[str, Dict[str, Any]] = field(default_factory=dict)

    def validate(self, prefix: str) -> None:
        if self.short_side is not None:
            at_least(f"{prefix}.short_side", self.short_side, 1)
        if self.logit_scale is not None:
            positive(f"{prefix}.logit_scale", self.logit_scale)
        for name in ("prob_thd", "area_thd"):
            if getattr(self, name) is not None:
                in_range(f"{prefix}.{name}", getattr(self, name), 0, 1)


@dataclass
class LayerIndices:
    """Block indices read by methods that use intermediate blocks (SFP); None: the method's default for the
    backbone's depth."""

    detect: Optional[int] = None
    ref: Optional[int] = None
    aux: Optional[int] = None
    integrate: Optional[List[int]] = None


@dataclass
class BackboneConfig:
    name: str = MISSING  # the option's name (vit_b16, custom, ...), recorded with every result
    label: Optional[str] = None  # display name in tables (e.g. ViT-B/16); None: the name
    model: Optional[str] = None  # open_clip architecture name; None: infer it from the checkpoint
    pretrained: Optional[str] = None  # open_clip pretrained tag; None with checkpoint=None: random weights
    checkpoint: Optional[str] = None  # local weights file; takes precedence over `pretrained`
    checkpoint_format: CheckpointFormat = CheckpointFormat.auto
    weights_cache_dir: Optional[str] = None  # where open_clip keeps downloaded weights (None: the HF cache)
    checkpoint_sha256: Optional[str] = None  # when set, the checkpoint file must have this SHA-256
    tokenizer: Optional[str] = None  # BPE merges file (open_clip's .txt.gz format); None: the standard CLIP BPE
    head_width: int = 64  # attention head width, used when the architecture is inferred from a checkpoint
    quick_gelu: bool = True  # the OpenAI weights were trained with QuickGELU
    is_real_clip: bool = True  # False for the embedded demo / test models: printed beside every number
    layers: LayerIndices = field(default_factory=LayerIndices)
    dataset_overrides: Dict[str, ProtocolOverride] = field(default_factory=dict)

    def validate(self, prefix: str = "backbone") -> None:
        at_least(f"{prefix}.head_width", self.head_width, 1)
        optional_sha256(f"{prefix}.checkpoint_sha256", self.checkpoint_sha256)
        if self.name == "custom" and not self.checkpoint:
            raise ConfigError("config error: backbone=custom needs backbone.checkpoint=/path/to/weights.pt")
        for key, override in self.dataset_overrides.items():
            override.validate(f"{prefix}.dataset_overrides.{key}")


class VFMFamily(str, Enum):
    none = "none"  # no vision foundation model
    dino = "dino"  # facebookresearch/dino ViTs
    dinov2 = "dinov2"  # facebookresearch/dinov2 ViTs (with or without registers)
    clip = "clip"  # a CLIP image tower used as the VFM (the embedded demo's)


@dataclass
class VFMArch:
    """Replacements of the timm architecture's sizes (None keeps the architecture's own), e.g. a tiny test VFM
    or a checkpoint of another width."""

    embed_dim: Optional[int] = None
    depth: Optional[int] = None
    num_heads: Optional[int] = None
    img_size: Optional[int] = None  # the resolution of the stored positional embedding

    def kwargs(self) -> Dict[str, int]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    def validate(self, prefix: str) -> None:
        for key, value in asdict(self).items():
            optional_at_least(f"{prefix}.{key}", value, 1)


@dataclass
class VFMConfig:
    """A vision foundation model beside CLIP (for methods that read one), built from timm's model definitions.

    The crop CLIP sees is re-normalised with `mean`/`std` and fed to the VFM at the same resolution; the
    positional embedding is resized as the family's release does (`pos_offset`, `pos_antialias`)."""

    name: str = "none"  # the option's name (none, dino_b8, dinov2_b14, custom, ...), recorded with every result
    label: Optional[str] = None  # display name in tables; None: the name
    family: VFMFamily = VFMFamily.none
    model: Optional[str] = None  # timm architecture name, e.g. vit_base_patch8_224
    pretrained: Optional[str] = None  # timm pretrained tag, e.g. dino; None with checkpoint=None: random weights
    checkpoint: Optional[str] = None  # local weights file (the release's or timm's key format); wins over pretrained
    checkpoint_sha256: Optional[str] = None  # when set, the checkpoint file must have this SHA-256
    weights_cache_dir: Optional[str] = None  # where timm keeps downloaded weights (None: the HF cache)
    arch: VFMArch = field(default_factory=VFMArch)
    mean: List[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])  # the VFM's input normalisation
    std: List[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])
    pos_offset: float = 0.1  # added to the target grid before bicubic resizing (DINO's release; 0: resize by size)
    pos_antialias: bool = False  # antialiased bicubic resizing of the positional embedding (DINOv2 with registers)

    @property
    def enabled(self) -> bool:
        return self.family is not VFMFamily.none

    def validate(self, prefix: str = "vfm") -> None:
        if self.name == "custom" and not self.checkpoint:
            raise ConfigError("config error: vfm=custom needs vfm.checkpoint=/path/to/weights.pth and vfm.model")
        if self.enabled and not self.model:
            raise ConfigError(f"config error: {prefix}.model is null: a {self.family.value} VFM needs a timm "
                              "architecture name, e.g. vit_base_patch8_224")
        optional_sha256(f"{prefix}.checkpoint_sha256", self.checkpoint_sha256)
        for key in ("mean", "std"):
            values = getattr(self, key)
            check(len(values) == 3 and all(isinstance(v, (int, float)) for v in values), f"{prefix}.{key}",
                  list(values), "three numbers (R, G, B)")
        check(all(v > 0 for v in self.std), f"{prefix}.std", list(self.std), "three numbers > 0")
        in_range(f"{prefix}.pos_offset", self.pos_offset, 0, 1)
        self.arch.validate(f"{prefix}.arch")


@dataclass
class DatasetConfig:
    layout: str = "voc"  # a registered layout (sfp.data.layouts): voc, context, coco_object, ...
    root: str = MISSING  # the layout's root folder (see sfp.data.layouts for what lies below it)
    split: str = "val"
    class_names: str = MISSING  # a file in sfp/data/class_names/ (by name) or a path
    label: Optional[str] = None  # display name in tables (e.g. VOC21); None: the key
    with_background: bool = False  # a background class is evaluated (tables group these datasets first)
    reduce_zero_label: bool = False
    short_side: int = 336  # resize: sf = min(max_long_side / long, short_side / short)
    logit_scale: float = 40.0
    prob_thd: float = 0.0  # 0 on datasets without background
    area_thd: float = 0.0  # voc21 only
    max_images: Optional[int] = None  # evaluate only the first N images (quick checks)
    # per method, the values its release tuned for this dataset (<method>: {<knob>: value}); read only
    # for the method's `dataset_fields` left at null
    method_values: Dict[str, Dict[str, Any]] = field(default_factory=dict)

    def validate(self, prefix: str) -> None:
        at_least(f"{prefix}.short_side", self.short_side, 1)
        positive(f"{prefix}.logit_scale", self.logit_scale)
        in_range(f"{prefix}.prob_thd", self.prob_thd, 0, 1)
        in_range(f"{prefix}.area_thd", self.area_thd, 0, 1)
        optional_at_least(f"{prefix}.max_images", self.max_images, 1)


@dataclass
class MethodSettings:
    """The `method` node: the registered method's name. Each method extends this with its own knobs.

    Knobs listed in `dataset_fields` are ones a release tunes per dataset: their default None means "the
    dataset's value" (`datasets.<key>.method_values.<method>.<knob>`), else the `fallbacks` value; a value set
    here (e.g. on the command line) wins over both. The resolved values are part of each dataset's protocol."""

    name: str = MISSING

    dataset_fields: ClassVar[Tuple[str, ...]] = ()
    fallbacks: ClassVar[Dict[str, Any]] = {}

    def validate(self, prefix: str = "method") -> None:
        """Range checks of the method's own knobs (none here)."""

    def value(self, name: str) -> Any:
        """A per-dataset knob as used: its own value, else its fallback (a model used without a dataset)."""
        current = getattr(self, name)
        return self.fallbacks[name] if current is None else current


@dataclass
class PresetInfo:
    """How tables show a method preset (set in conf/method/<preset>.yaml; not used by any computation)."""

    label: Optional[str] = None  # row label; None: the preset's name
    published: Optional[str] = None  # the method name of the published rows this preset reproduces


@dataclass
class MitigatorConfig:
    enabled: bool = True
    detector: Detector = Detector.som
    top_k: int = 10
    cls_scale: float = 1.5
    no_neighbour: NoNeighbour = NoNeighbour.keep
    layers: List[int] = field(default_factory=list)  # blocks (< detect) whose output is also filled mid-forward
    lof_neighbours: int = 30
    lof_contamination: float = 0.05

    def validate(self, prefix: str = "mitigator") -> None:
        at_least(f"{prefix}.top_k", self.top_k, 1)
        positive(f"{prefix}.cls_scale", self.cls_scale)
        at_least(f"{prefix}.lof_neighbours", self.lof_neighbours, 1)
        check(0 < self.lof_contamination < 1, f"{prefix}.lof_contamination", self.lof_contamination,
              "a fraction in (0, 1)")


@dataclass
class EnhancerConfig:
    enabled: bool = True
    temperature: float = 3.0
    similarity: EnhancerSimilarity = EnhancerSimilarity.thresholded
    mix: EnhancerMix = EnhancerMix.sfp

    def validate(self, prefix: str = "enhancer") -> None:
        positive(f"{prefix}.temperature", self.temperature)


@dataclass
class IntegratorConfig:
    enabled: bool = True
    source: IntegratorSource = IntegratorSource.features
    layers: Optional[List[int]] = None  # None: backbone.layers.integrate
    extend: int = 0  # extra blocks after the end of that range (the December 2025 code used 1)

    def validate(self, prefix: str = "integrator") -> None:
        at_least(f"{prefix}.extend", self.extend, 0)


@dataclass
class AggregationConfig:
    enabled: bool = True
    beta: float = 0.4

    def validate(self, prefix: str = "aggregation") -> None:
        in_range(f"{prefix}.beta", self.beta, -1, 1, "a cosine threshold")


@dataclass
class CalibrationConfig:
    """The images the register-neuron search runs on (each resized to `size` on its short side and centre-cropped,
    as the release's ImageNet preprocessing)."""

    folder: Optional[str] = None  # a folder of images (searched recursively); None: the run's first dataset's
    num_images: int = 100  # a seeded sample of this many (all when fewer)
    seed: int = 0
    size: Optional[int] = None  # None: the backbone's native resolution (224 for ViT-B/16)

    def validate(self, prefix: str) -> None:
        at_least(f"{prefix}.num_images", self.num_images, 1)
        optional_at_least(f"{prefix}.size", self.size, 1)


@dataclass
class RegistersConfig:
    """Test-time registers: register neurons found on calibration images (or given), moved at test time into
    `count` extra tokens. Composes with any method (docs/methods.md, "Test-time registers")."""

    enabled: bool = False
    count: int = 1  # register tokens appended
    top_k: int = 10  # register neurons kept
    highest_layer: Optional[int] = None  # only blocks <= this; None: the depth's default (5 of 12 blocks)
    detect_layer: int = -1  # block whose output norms mark the high-norm tokens (-1: the last)
    norm_threshold: float = 30.0  # a token is high-norm above this output norm
    sparsity: bool = True  # keep only neurons below sparsity_activation on >= sparsity_fraction of the tokens
    sparsity_fraction: float = 0.5
    sparsity_activation: float = 0.5
    neurons: Optional[List[List[int]]] = None  # [block, neuron] pairs to use instead of a search
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    cache: bool = True  # keep found neurons in paths.cache_dir/registers, keyed by weights and calibration set

    def validate(self, prefix: str = "registers") -> None:
        at_least(f"{prefix}.count", self.count, 1)
        at_least(f"{prefix}.top_k", self.top_k, 1)
        optional_at_least(f"{prefix}.highest_layer", self.highest_layer, 0)
        positive(f"{prefix}.norm_threshold", self.norm_threshold)
        in_range(f"{prefix}.sparsity_fraction", self.sparsity_fraction, 0, 1)
        check(isinstance(self.sparsity_activation, (int, float)) and math.isfinite(self.sparsity_activation),
              f"{prefix}.sparsity_activation", self.sparsity_activation, "a finite number")
        if self.neurons is not None:
            check(all(len(pair) == 2 and min(pair) >= 0 for pair in self.neurons), f"{prefix}.neurons",
                  self.neurons, "a list of [block, neuron] pairs of non-negative integers")
        self.calibration.validate(f"{prefix}.calibration")


# The switchable component groups (each has `enabled`): the ablation columns of every record.
COMPONENT_GROUPS = ("mitigator", "enhancer", "integrator", "aggregation")


@dataclass
class InferenceConfig:
    crop: int = 224
    stride: int = 112
    max_long_side: int = 2048
    templates: str = "imagenet80"  # a registered template set (sfp.models.templates)
    precision: Precision = Precision.float32
    batch_size: int = 16  # crops per forward pass; windows of several images share a batch
    images_per_batch: int = 4  # images loaded and windowed together
    num_workers: int = 0  # data-loading worker processes
    device: str = "auto"  # auto: the GPU when present, else the CPU
    pamr: bool = False  # PAMR post-processing of the averaged logits (off in this protocol)
    pamr_steps: int = 10
    pamr_dilations: List[int] = field(default_factory=lambda: [8, 16])
    check_finite: bool = True  # stop on NaN/inf features or logits (false: let them through, e.g. to study them)

    def validate(self, prefix: str = "inference") -> None:
        at_least(f"{prefix}.crop", self.crop, 1)
        check(1 <= self.stride <= self.crop, f"{prefix}.stride", self.stride,
              f"an integer in [1, {prefix}.crop={self.crop}]")
        at_least(f"{prefix}.max_long_side", self.max_long_side, 1)
        at_least(f"{prefix}.batch_size", self.batch_size, 1)
        at_least(f"{prefix}.images_per_batch", self.images_per_batch, 1)
        at_least(f"{prefix}.num_workers", self.num_workers, 0)
        at_least(f"{prefix}.pamr_steps", self.pamr_steps, 1)
        check(len(self.pamr_dilations) > 0 and all(d >= 1 for d in self.pamr_dilations),
              f"{prefix}.pamr_dilations", list(self.pamr_dilations), "a non-empty list of integers >= 1")


@dataclass
class StatsConfig:
    """Per-layer outlier statistics (needs every block's attention probabilities). Their SOM scale and
    outlier budget are their own, so every method reports statistics measured the same way."""

    enabled: bool = True
    cls_scale: float = 1.5  # weight of the CLS attention in the SOM candidate test
    top_k: int = 10  # the `outliers` statistic counts at most this many candidates

    def validate(self, prefix: str = "stats") -> None:
        positive(f"{prefix}.cls_scale", self.cls_scale)
        at_least(f"{prefix}.top_k", self.top_k, 1)


@dataclass
class TrackerConfig:
    backend: TrackerBackend = TrackerBackend.wandb
    mode: WandbMode = WandbMode.auto
    project: str = "sfp"
    entity: Optional[str] = None
    group: Optional[str] = None  # default: the sweep directory's name (multirun) or None
    num_overlays: int = 4  # prediction / ground-truth overlays logged per dataset
    tags: List[str] = field(default_factory=list)

    def validate(self, prefix: str = "tracker") -> None:
        check(0 <= self.num_overlays <= 50, f"{prefix}.num_overlays", self.num_overlays, "an integer in [0, 50]")


@dataclass
class PathsConfig:
    """Where data, caches and outputs live; the defaults (conf/paths/default.yaml) lie below `root`."""

    root: str = MISSING  # ${sfp.root:}: $SFP_ROOT, else the source checkout, else ~/sfp
    data_root: str = MISSING
    cache_dir: str = MISSING
    output_dir: str = MISSING


@dataclass
class RunConfig:
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    vfm: VFMConfig = field(default_factory=VFMConfig)
    method: Dict[str, Any] = field(default_factory=dict)  # typed by the method's own settings class
    preset: PresetInfo = field(default_factory=PresetInfo)
    mitigator: MitigatorConfig = field(default_factory=MitigatorConfig)
    enhancer: EnhancerConfig = field(default_factory=EnhancerConfig)
    integrator: IntegratorConfig = field(default_factory=IntegratorConfig)
    aggregation: AggregationConfig = field(default_factory=AggregationConfig)
    registers: RegistersConfig = field(default_factory=RegistersConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    datasets: Dict[str, DatasetConfig] = field(default_factory=dict)
    stats: StatsConfig = field(default_factory=StatsConfig)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    seed: int = 0
    save_predictions: bool = False
    resume: bool = False  # skip a job whose output dir already holds a complete record of the same config

    def validate(self) -> None:
        """Every range check, each group under its own key (raises ConfigError on the first bad value)."""
        if not self.datasets:
            raise ConfigError("config error: datasets is empty: select at least one, e.g. datasets=[voc21]")
        self.backbone.validate("backbone")
        self.vfm.validate("vfm")
        if isinstance(self.method, MethodSettings):
            self.method.validate("method")
        for name in COMPONENT_GROUPS:
            getattr(self, name).validate(name)
        self.registers.validate("registers")
        self.inference.validate("inference")
        for key, dataset in self.datasets.items():
            dataset.validate(f"datasets.{key}")
        self.stats.validate("stats")
        self.tracker.validate("tracker")


def settings_dict(settings: Any) -> Dict[str, Any]:
    """Plain JSON-ready values of a settings dataclass (enums as their names), as recorded with results."""
    return asdict(settings, dict_factory=lambda items: {k: v.value if isinstance(v, Enum) else v for k, v in items})
