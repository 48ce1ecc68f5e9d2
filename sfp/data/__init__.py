"""Benchmark datasets: on-disk layouts, class-name files and the evaluation dataset."""
from sfp.data.class_names import ClassNames, file_sha256, load_class_names, packaged_class_names
from sfp.data.dataset import IGNORE_INDEX, SegmentationDataset, build_dataset, reduce_zero_label
from sfp.data.layouts import LAYOUTS, DatasetLayout, Item
from sfp.data.sample import Sample

__all__ = [
    "ClassNames",
    "DatasetLayout",
    "IGNORE_INDEX",
    "Item",
    "LAYOUTS",
    "SegmentationDataset",
    "Sample",
    "build_dataset",
    "file_sha256",
    "load_class_names",
    "packaged_class_names",
    "reduce_zero_label",
]
