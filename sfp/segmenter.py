"""`Segmenter`: image in, label map out, under one dataset's protocol. The runner and other projects use it."""
from __future__ import annotations

import copy
from typing import List, Optional, Sequence

import numpy as np
import torch

from .assembly import ConfigLike, build_model, to_run_config
from .config.protocol import Protocol, effective_protocol
from .config.schema import RunConfig
from .data import ClassNames, load_class_names
from .engine.device import resolve_dtype
from .engine.inference import AuxSink, class_probabilities, postprocess, sliding_window_logits
from .engine.preprocess import rescaled_size
from .errors import DataError
from .models.dense import DenseModel
from .models.text import QueryEmbeddings


class Segmenter:
    """Segment images with the configured backbone and method.

    `dataset` picks the protocol (short side, logit scale, thresholds) and the class names from
    `cfg.datasets[dataset]` (default: the first configured dataset); `class_names` may replace the class file.
    `queries` may pass their text embeddings when already computed (variants of one pass share them).
    """

    def __init__(self, cfg: ConfigLike, dataset: Optional[str] = None, model: Optional[DenseModel] = None,
                 class_names: Optional[str | ClassNames] = None, queries: Optional[QueryEmbeddings] = None):
        run: RunConfig = to_run_config(cfg)
        self.run = run
        self.model = model if model is not None else build_model(run)
        self.dataset = dataset or next(iter(run.datasets))
        if self.dataset not in run.datasets:
            raise DataError(f"dataset {self.dataset!r} is not configured (configured: {', '.join(run.datasets)})")
        self.protocol: Protocol = effective_protocol(run, self.dataset)
        spec = class_names if class_names is not None else run.datasets[self.dataset].class_names
        self.class_names = spec if isinstance(spec, ClassNames) else load_class_names(spec)
        self.batch_size = run.inference.batch_size
        self.check_finite = run.inference.check_finite
        self.dtype = resolve_dtype(run.inference.precision, self.model.device)
        # `queries`: the text embeddings of these class names and the run's templates, already computed
        self.queries = queries if queries is not None else self.model.encode_queries(
            self.class_names.synonyms, run.inference.templates, cache_dir=run.paths.cache_dir or None
        )
        # the method with this dataset's values of its per-dataset knobs (a release's tuned weights)
        self.method = self.model.method.for_dataset(dict(self.protocol.method_values))
        self.scores = self.method.output == "scores"
        if self.method.uses_queries:
            if self.method is self.model.method:  # bound to a copy: the model may serve other class lists
                self.method = copy.copy(self.method)
            self.method.bind_queries(self.queries, run.datasets[self.dataset].with_background)

    @property
    def num_classes(self) -> int:
        return self.class_names.num_classes

    def logits(self, images: Sequence[np.ndarray], aux_sink: Optional[AuxSink] = None,
               names: Optional[Sequence[str]] = None) -> List[torch.Tensor]:
        """Per image, (Q, H, W) query logits at the image's size; aux_sink receives each forward's aux.
        `names` (e.g. file names) only serve the error messages."""
        for index, image in enumerate(images):
            self.check_image(image, names[index] if names is not None else f"image {index}")
        return sliding_window_logits(
            self.method.dense_features, images, self.queries, self.protocol, self.method.output_patch_size,
            batch_size=self.batch_size, device=self.model.device, dtype=self.dtype,
            aux_sink=aux_sink, names=names, check_finite=self.check_finite, scores=self.scores,
        )

    def check_image(self, image: np.ndarray, name: str) -> None:
        if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise DataError(f"{name}: expected an (H, W, 3) uint8 RGB array, got "
                            f"{getattr(image, 'shape', type(image).__name__)} {getattr(image, 'dtype', '')}".rstrip())
        height, width = image.shape[:2]
        if height == 0 or width == 0:
            raise DataError(f"{name}: the image is empty ({height}x{width} pixels)")
        size = rescaled_size(height, width, self.protocol.short_side, self.protocol.max_long_side)
        patch = max(*self.model.tower.patch_size, *self.method.output_patch_size)
        if min(size) < patch:
            raise DataError(f"{name}: a {width}x{height} (WxH) image resizes to {size[1]}x{size[0]} under this "
                            f"protocol (short side {self.protocol.short_side}, long side at most "
                            f"{self.protocol.max_long_side}), thinner than one {patch}-pixel patch")

    def predict_batch(self, images: Sequence[np.ndarray], aux_sink: Optional[AuxSink] = None,
                      names: Optional[Sequence[str]] = None) -> List[np.ndarray]:
        return [
            postprocess(class_probabilities(logits, self.queries, self.scores), self.protocol.prob_thd,
                        self.protocol.area_thd)
            .cpu().numpy().astype(np.int64)
            for logits in self.logits(images, aux_sink=aux_sink, names=names)
        ]

    def predict(self, image: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 RGB -> (H, W) int64 class indices of the class-name file."""
        return self.predict_batch([image])[0]

