"""Typed schemas for every knob. Hydra validates keys and types against these at composition;
`sfp.config.validate` checks the ranges that types cannot express.

The schemas are plain dataclasses, so the library can be configured without Hydra too.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Dict, List, Optional


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


class Layout(str, Enum):
    """On-disk dataset layouts (see sfp.data); the names of the real benchmarks' layouts."""

    voc = "voc"
    context = "context"
    coco_object = "coco_object"
    coco_stuff = "coco_stuff"
    cityscapes = "cityscapes"
    ade20k = "ade20k"


@dataclass
class ProtocolOverride:
    """Per-backbone replacement of a dataset's protocol values (None keeps the dataset's value)."""

    short_side: Optional[int] = None
    logit_scale: Optional[float] = None
    prob_thd: Optional[float] = None
    area_thd: Optional[float] = None


@dataclass
class LayerIndices:
    """Block indices used by the SFP components; None means: derive from the depth (12 or 24 blocks)."""

    detect: Optional[int] = None
    ref: Optional[int] = None
    aux: Optional[int] = None
    integrate: Optional[List[int]] = None


@dataclass
class BackboneConfig:
    name: str = "vit_b16"
    model: Optional[str] = "ViT-B-16"  # open_clip architecture name; None: infer it from the checkpoint
    pretrained: Optional[str] = "openai"  # open_clip pretrained tag; None with checkpoint=None: random weights
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


@dataclass
class DatasetConfig:
    layout: Layout = Layout.voc
    root: str = "???"  # the layout's root folder (see sfp.data.layouts for what lies below it)
    split: str = "val"
    class_names: str = "???"  # a file in sfp/data/class_names/ (by name) or a path
    reduce_zero_label: bool = False
    short_side: int = 336  # resize: sf = min(max_long_side / long, short_side / short)
    logit_scale: float = 40.0
    prob_thd: float = 0.0  # 0 on datasets without background
    area_thd: float = 0.0  # voc21 only
    max_images: Optional[int] = None  # evaluate only the first N images (quick checks)


@dataclass
class MethodConfig:
    name: str = "clip"  # a registered method (sfp.methods)
    res_cls: float = 0.3  # weight of the CLS residual added to every patch row (SFP branches)
    naclip_sigma: float = 5.0  # NACLIP's Gaussian neighbourhood, in patches


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


@dataclass
class EnhancerConfig:
    enabled: bool = True
    temperature: float = 3.0
    similarity: EnhancerSimilarity = EnhancerSimilarity.thresholded
    mix: EnhancerMix = EnhancerMix.sfp


@dataclass
class IntegratorConfig:
    enabled: bool = True
    source: IntegratorSource = IntegratorSource.features
    layers: Optional[List[int]] = None  # None: backbone.layers.integrate
    extend: int = 0  # extra blocks after the end of that range (the December 2025 code used 1)


@dataclass
class AggregationConfig:
    enabled: bool = True
    beta: float = 0.4


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
    pamr: bool = False  # PAMR post-processing (NACLIP's release runs it; the SFP protocol does not)
    pamr_steps: int = 10
    pamr_dilations: List[int] = field(default_factory=lambda: [8, 16])


@dataclass
class StatsConfig:
    enabled: bool = True  # per-layer outlier statistics (needs every block's attention probabilities)


@dataclass
class TrackerConfig:
    backend: TrackerBackend = TrackerBackend.wandb
    mode: WandbMode = WandbMode.auto
    project: str = "sfp"
    entity: Optional[str] = None
    group: Optional[str] = None  # default: the sweep directory's name (multirun) or None
    num_overlays: int = 4  # prediction / ground-truth overlays logged per dataset
    tags: List[str] = field(default_factory=list)


@dataclass
class PathsConfig:
    data_root: str = "data"
    cache_dir: str = ".cache/sfp"
    output_dir: str = "outputs"


@dataclass
class RunConfig:
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    mitigator: MitigatorConfig = field(default_factory=MitigatorConfig)
    enhancer: EnhancerConfig = field(default_factory=EnhancerConfig)
    integrator: IntegratorConfig = field(default_factory=IntegratorConfig)
    aggregation: AggregationConfig = field(default_factory=AggregationConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    datasets: Dict[str, DatasetConfig] = field(default_factory=dict)
    stats: StatsConfig = field(default_factory=StatsConfig)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    seed: int = 0
    save_predictions: bool = False
    resume: bool = False  # skip a job whose output dir already holds a complete record of the same config
