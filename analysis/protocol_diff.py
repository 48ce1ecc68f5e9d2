"""Why two runs (or a run and a published figure) may differ: every recorded fact that can move a number, side
by side.

    python -m analysis diff outputs/run-a outputs/run-b                  # two runs
    python -m analysis diff outputs/run-a --published SFP --source "evaluation log"
    python -m analysis diff outputs/run-a/results.json outputs/run-b --json

Two runs are compared fact by fact (`protocol_facts`), in the categories of `CATEGORIES`: the resolved config
(without the settings that cannot change numbers: `analysis.variants.is_ignored`, plus the locations of the
dataset folders and weight caches), the effective per-dataset protocol, the class-name files, the prompt
templates, the weights, the package and code versions, and the evaluated images. A fact a record lacks (it was
written before the fact was recorded) shows as "not recorded"; two records that both lack it do not differ in it.

A run is compared with a published row (`analysis/data/published_results.csv`) on what the row states: the
window (`crop/stride`, or `whole image`), the short side per dataset (`*=336;cityscapes=560`), the
post-processing (`none`, `PAMR`) and the weights (free text), and the backbone label. Empty cells are listed
as "not stated by the source", never as differences.

The weights are free text, so they are judged only when clearly comparable (`judge_weights`): a run without
pretrained CLIP weights (random-init, not a real CLIP) differs from any stated weights; an architecture
(ViT-B/16 ...) named on both sides that differs is a difference; an OpenAI tag (`open_clip:<model>:openai`)
against a text naming OpenAI with the same architecture is the same; an OpenAI tag against a text naming
another provider (LAION, DataComp, MetaCLIP, DFN, EVA, SigLIP), or another tag against a text naming OpenAI, is
a difference. Everything else (local checkpoint files, other tags, texts naming no provider) is shown side by
side as "compare by eye".
"""
from __future__ import annotations

import argparse
import json
import math
import re
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from sfp.errors import SFPError
from sfp.tracking.results_store import RESULTS_FILENAME, flatten_config, to_jsonable

from .names import backbone_label, order_datasets, published_method
from .intervals import read_run
from .published import load_published, parse_per_dataset, published_label
from .variants import is_ignored, normalise

__all__ = [
    "CATEGORIES", "NOT_RECORDED", "NOT_STATED", "DIFFERS", "UNJUDGED", "Difference", "protocol_facts",
    "diff_runs", "diff_published", "judge_weights", "format_differences", "find_published_row",
    "load_run", "add_diff_parser", "run_diff", "main",
]

CATEGORIES = ("config", "protocol", "class files", "templates", "weights", "versions", "images")
NOT_RECORDED = "not recorded"
NOT_STATED = "not stated by the source"

# Difference.kind
DIFFERS = "differs"          # the two sides differ
UNJUDGED = "compare by eye"  # free text beside a recorded fact; not judged either way
NOT_STATED_KIND = "not stated"  # the published row leaves this empty

VERSION_KEYS = ("python", "torch", "open_clip", "hydra", "omegaconf", "wandb", "numpy", "pandas", "code_version")
TEMPLATE_KEYS = ("name", "count", "sha256")
PROTOCOL_FIELDS = ("short_side", "max_long_side", "crop", "stride", "logit_scale", "prob_thd", "area_thd",
                   "pamr_steps", "pamr_dilations", "method_values")
# Config fields that only say where files live (the dataset folder, a download cache): never a difference.
LOCATION_FIELDS = ("root", "weights_cache_dir")


@dataclass(frozen=True)
class Difference:
    """One fact: `a` (first run) and `b` (second run or the published row). `kind` is DIFFERS, UNJUDGED (free
    text shown beside the run's fact) or NOT_STATED_KIND (the published cell is empty); `note` explains."""

    category: str
    key: str
    a: Any
    b: Any
    kind: str = DIFFERS
    note: str = ""

    def as_json(self) -> Dict[str, Any]:
        return to_jsonable(asdict(self))


# --------------------------------------------------------------------------- facts of a run


def _datasets(record: Mapping[str, Any]) -> List[str]:
    """Every dataset the record evaluated or configured."""
    names = set(record.get("metrics") or {}) | set(record.get("protocol") or {})
    names |= set(((record.get("config") or {}).get("datasets") or {}))
    return order_datasets(names)


def _is_location(key: str) -> bool:
    """A file location, or a dataset's display label: neither can move a number."""
    last = key.rsplit(".", 1)[-1]
    if last in ("root", "label"):
        return key.startswith("datasets.")
    return last in LOCATION_FIELDS


def _config_facts(record: Mapping[str, Any]) -> Dict[str, Any]:
    flat = flatten_config(json.loads(json.dumps(to_jsonable(record.get("config") or {}))))
    return {key: value for key, value in flat.items() if not is_ignored(key) and not _is_location(key)}


def _protocol_facts(record: Mapping[str, Any], datasets: Sequence[str]) -> Dict[str, Any]:
    facts: Dict[str, Any] = {}
    protocol = record.get("protocol") or {}
    for dataset in datasets:
        entry = protocol.get(dataset)
        if not isinstance(entry, Mapping):
            entry = {}
        for field in PROTOCOL_FIELDS:
            if field == "method_values" and isinstance(entry.get(field), Mapping):
                facts.update(flatten_config(entry[field], f"{dataset}.method_values."))
            else:
                facts[f"{dataset}.{field}"] = entry.get(field, NOT_RECORDED)
        for field, value in flatten_config({k: v for k, v in entry.items() if k not in PROTOCOL_FIELDS}).items():
            facts[f"{dataset}.{field}"] = value  # fields recorded after this module was written
    return facts


def protocol_facts(record: Mapping[str, Any]) -> Dict[str, Dict[str, Any]]:
    """The facts of one run record that can move its numbers: category (in CATEGORIES' order) -> {key: value}.
    Facts the record lacks are NOT_RECORDED."""
    datasets = _datasets(record)
    model = record.get("model") or {}
    templates = record.get("templates") or {}
    versions = record.get("versions") or {}
    class_files = record.get("class_files") or {}
    per_image = record.get("per_image") or {}
    metrics = record.get("metrics") or {}
    backbone = ((record.get("config") or {}).get("backbone") or {})

    images: Dict[str, Any] = {}
    for dataset in datasets:
        entry = per_image.get(dataset) if isinstance(per_image.get(dataset), Mapping) else {}
        counted = entry.get("n_images", (metrics.get(dataset) or {}).get("n_images", NOT_RECORDED))
        images[f"{dataset}.n_images"] = counted
        images[f"{dataset}.images_sha256"] = entry.get("images_sha256", NOT_RECORDED)

    weights = {
        "source": model.get("source", NOT_RECORDED),
        "weights_sha256": model.get("weights_sha256", NOT_RECORDED),
        "checkpoint_sha256": backbone.get("checkpoint_sha256", NOT_RECORDED),
        "vfm_source": model.get("vfm_source", NOT_RECORDED),
    }
    if "registers" in model:
        weights["registers"] = model["registers"]
    return {
        "config": _config_facts(record),
        "protocol": _protocol_facts(record, datasets),
        "class files": {dataset: class_files.get(dataset, NOT_RECORDED) for dataset in datasets},
        "templates": {key: templates.get(key, NOT_RECORDED) for key in TEMPLATE_KEYS},
        "weights": weights,
        "versions": {key: versions.get(key, NOT_RECORDED)
                     for key in list(VERSION_KEYS) + sorted(set(versions) - set(VERSION_KEYS))},
        "images": images,
    }


# --------------------------------------------------------------------------- run vs run


def _number(value: Any) -> Optional[float]:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def same(a: Any, b: Any) -> bool:
    """Equal as settings: numbers by value (336 == 336.0), lists and tuples alike, the rest as normalised text."""
    x, y = _number(a), _number(b)
    if x is not None and y is not None:
        return x == y or (math.isnan(x) and math.isnan(y))
    return normalise(a) == normalise(b)


def diff_runs(record_a: Mapping[str, Any], record_b: Mapping[str, Any]) -> List[Difference]:
    """Every fact whose value differs between two run records, category by category, keys sorted within each."""
    facts_a, facts_b = protocol_facts(record_a), protocol_facts(record_b)
    differences: List[Difference] = []
    for category in CATEGORIES:
        a, b = facts_a.get(category, {}), facts_b.get(category, {})
        for key in sorted(set(a) | set(b)):
            value_a, value_b = a.get(key, NOT_RECORDED), b.get(key, NOT_RECORDED)
            if not same(value_a, value_b):
                differences.append(Difference(category, key, value_a, value_b))
    return differences


# --------------------------------------------------------------------------- run vs published row


def _cell(row: Any, column: str) -> str:
    """A published cell as stripped text; "" when empty, NaN or absent (older files lack the column)."""
    try:
        value = row[column] if column in row else None
    except TypeError:
        value = None
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value).strip()


def _has_figure(row: Any, dataset: str) -> bool:
    try:
        value = row[dataset] if dataset in row else None
    except TypeError:
        return False
    if value is None or (isinstance(value, str) and not value.strip()):
        return False
    try:
        return not math.isnan(float(value))
    except (TypeError, ValueError):
        return False


def parse_short_side(text: str) -> Dict[str, int]:
    """`*=336;cityscapes=560` -> {"*": 336, "cityscapes": 560}; a bare `336` means every dataset. Raises
    ValueError on an entry that is not a whole number of pixels."""
    sides: Dict[str, int] = {}
    for dataset, value in parse_per_dataset(text).items():
        if not value.isdigit():
            raise ValueError(f"short side {text!r}: {dataset}={value} is not a whole number of pixels")
        sides[dataset] = int(value)
    return sides


WHOLE_IMAGE = "whole image"


def parse_window(text: str) -> Union[Tuple[int, int], str]:
    """One window: `224/112` -> (224, 112); `whole image` -> WHOLE_IMAGE. Raises ValueError on other text."""
    if text.strip().lower() in (WHOLE_IMAGE, "whole", "whole-image"):
        return WHOLE_IMAGE
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match:
        raise ValueError(f"window {text!r} is neither CROP/STRIDE nor 'whole image'")
    return int(match.group(1)), int(match.group(2))


def parse_windows(text: str) -> Dict[str, Union[Tuple[int, int], str]]:
    """`*=224/112;voc21=whole image` (or one window for all) -> {"*": (224, 112), "voc21": WHOLE_IMAGE}."""
    return {dataset: parse_window(value) for dataset, value in parse_per_dataset(text).items()}


def _show_window(window: Union[Tuple[int, int], str]) -> str:
    return window if isinstance(window, str) else f"{window[0]}/{window[1]}"


def _dataset_setting(record: Mapping[str, Any], dataset: str, field: str) -> Any:
    """The effective per-dataset value: the recorded protocol, else the config, else NOT_RECORDED."""
    entry = (record.get("protocol") or {}).get(dataset)
    if isinstance(entry, Mapping) and field in entry:
        return entry[field]
    config = record.get("config") or {}
    if field == "short_side":
        return ((config.get("datasets") or {}).get(dataset) or {}).get("short_side", NOT_RECORDED)
    inference = config.get("inference") or {}
    if field == "pamr_steps" and "pamr" in inference:
        return inference.get("pamr_steps", NOT_RECORDED) if inference["pamr"] else 0
    return inference.get(field, NOT_RECORDED)


def _run_window(record: Mapping[str, Any], dataset: str) -> str:
    crop, stride = (_dataset_setting(record, dataset, f) for f in ("crop", "stride"))
    if crop == NOT_RECORDED or stride == NOT_RECORDED:
        return NOT_RECORDED
    return f"{crop}/{stride}"


def _window_matches(record: Mapping[str, Any], dataset: str, stated: Union[Tuple[int, int], str]) -> bool:
    crop, stride = (_dataset_setting(record, dataset, f) for f in ("crop", "stride"))
    if stated == WHOLE_IMAGE:
        # the run always slides windows: it is whole-image inference only when every resized image fits one crop
        longest = _dataset_setting(record, dataset, "max_long_side")
        return _number(crop) is not None and _number(longest) is not None and crop >= longest
    return same(crop, stated[0]) and same(stride, stated[1])


def _run_postprocess(record: Mapping[str, Any], dataset: str) -> str:
    steps = _dataset_setting(record, dataset, "pamr_steps")
    if _number(steps) is None:
        return NOT_RECORDED
    if steps <= 0:
        return "none"
    dilations = _dataset_setting(record, dataset, "pamr_dilations")
    shown = ",".join(str(d) for d in dilations) if isinstance(dilations, (list, tuple)) else normalise(dilations)
    return f"PAMR ({steps} steps, dilations {shown})"


POSTPROCESS_OFF = ("none", "no", "off", "no pamr", "without pamr", "pamr off")
POSTPROCESS_ON = ("pamr", "pamr on", "with pamr")


def _per_dataset(category: str, name: str, datasets: Sequence[str], run_value, stated, judge) -> List[Difference]:
    """One entry for all datasets when the run's value, the stated value and the verdict agree on each, else one
    per dataset (`<dataset>.<name>`). `run_value(dataset)` and `stated(dataset)` are shown; `judge(dataset)` is
    True (same: nothing reported), False (DIFFERS) or None (UNJUDGED)."""
    if not datasets:
        return []
    rows = {dataset: (run_value(dataset), stated(dataset), judge(dataset)) for dataset in datasets}
    if len({(normalise(a), normalise(b), verdict) for a, b, verdict in rows.values()}) == 1:
        keyed = [(name, rows[datasets[0]])]
    else:
        keyed = [(f"{dataset}.{name}", rows[dataset]) for dataset in datasets]
    return [Difference(category, key, a, b, DIFFERS if verdict is False else UNJUDGED)
            for key, (a, b, verdict) in keyed if verdict is not True]


_ARCH = re.compile(r"vit[\s_-]*([bslhg])[\s/_-]*(\d+)", re.IGNORECASE)
# providers of CLIP weights other than OpenAI, as a source would name them ("EVA-CLIP", not "evaluation")
_OTHER_PROVIDERS = re.compile(r"\b(laion|datacomp|metaclip|dfn|siglip|commonpool|merged2b|eva(?:[-_]?\d+)?\b)")


def _arch(text: str) -> Optional[Tuple[str, int]]:
    match = _ARCH.search(text or "")
    return (match.group(1).upper(), int(match.group(2))) if match else None


def judge_weights(model: Mapping[str, Any], backbone_model: Optional[str], text: str) -> Tuple[Optional[bool], str]:
    """Whether a run's weights (`model` record, config `backbone.model`) are those a source describes in free
    text: (True, why) same, (False, why) different, (None, why) not clearly comparable. See the module text."""
    source = str(model.get("source") or "")
    lowered = text.lower()
    if source == "random-init" or model.get("is_real_clip") is False:
        return False, "the run's backbone is not pretrained CLIP (random init or a test/demo model)"
    stated_arch = _arch(text)
    tag = None
    run_arch = None
    if source.startswith("open_clip:"):
        _, name, tag = (source.split(":", 2) + ["", ""])[:3]
        run_arch = _arch(name)
    elif backbone_model:
        run_arch = _arch(backbone_model)
    if stated_arch and run_arch and stated_arch != run_arch:
        return False, "the architectures differ"
    if tag is None:
        return None, "a local checkpoint or unrecorded source: compare by eye"
    names_openai = "openai" in lowered
    names_other = bool(_OTHER_PROVIDERS.search(lowered))
    if tag.lower() == "openai":
        if names_other and not names_openai:
            return False, "the run used OpenAI weights, the source another provider's"
        if names_openai and stated_arch and run_arch:
            return True, "OpenAI weights of the same architecture"
    elif names_openai and not names_other:
        return False, f"the run used the open_clip tag {tag!r}, the source OpenAI weights"
    return None, "not clearly comparable: compare by eye"


def diff_published(record: Mapping[str, Any], published_row: Any) -> List[Difference]:
    """What a published row states, compared with a run (`a` the run, `b` the row): window, short side per
    dataset, post-processing, weights, backbone label. Empty cells come back as kind NOT_STATED_KIND with
    b = NOT_STATED; free text that cannot be judged as kind UNJUDGED."""
    run_datasets = [d for d in _datasets(record) if d in (record.get("metrics") or {})] or _datasets(record)
    with_figure = [d for d in run_datasets if _has_figure(published_row, d)]
    compared = with_figure or run_datasets
    out: List[Difference] = []

    def not_stated(category: str, key: str, run_value: Any) -> None:
        out.append(Difference(category, key, run_value, NOT_STATED, NOT_STATED_KIND))

    def summary(value_of) -> Any:
        values = {d: value_of(d) for d in compared}
        if len({normalise(v) for v in values.values()}) <= 1:
            return next(iter(values.values()), NOT_RECORDED)
        return "; ".join(f"{d}={normalise(v)}" for d, v in values.items())

    # window, per dataset when the source states it so
    text = _cell(published_row, "window")
    if not text:
        not_stated("protocol", "window", summary(lambda d: _run_window(record, d)))
    else:
        try:
            windows = parse_windows(text)
        except ValueError as e:
            out.append(Difference("protocol", "window", summary(lambda d: _run_window(record, d)), text, UNJUDGED,
                                  str(e)))
        else:
            def stated_window(dataset: str):
                return windows.get(dataset, windows.get("*"))

            for dataset in compared:
                if stated_window(dataset) is None:
                    not_stated("protocol", f"{dataset}.window", _run_window(record, dataset))

            def window_verdict(dataset: str) -> Optional[bool]:
                if _run_window(record, dataset) == NOT_RECORDED:
                    return None
                return _window_matches(record, dataset, stated_window(dataset))

            out += _per_dataset("protocol", "window", [d for d in compared if stated_window(d) is not None],
                                lambda d: _run_window(record, d), lambda d: _show_window(stated_window(d)),
                                window_verdict)

    # short side, per dataset with a figure
    text = _cell(published_row, "short_side")
    if not text:
        not_stated("protocol", "short_side", summary(lambda d: _dataset_setting(record, d, "short_side")))
    else:
        try:
            sides = parse_short_side(text)
        except ValueError as e:
            out.append(Difference("protocol", "short_side",
                                  summary(lambda d: _dataset_setting(record, d, "short_side")), text, UNJUDGED,
                                  str(e)))
        else:
            for dataset in with_figure:
                run_side = _dataset_setting(record, dataset, "short_side")
                stated_side = sides.get(dataset, sides.get("*"))
                key = f"{dataset}.short_side"
                if stated_side is None:
                    not_stated("protocol", key, run_side)
                elif run_side == NOT_RECORDED:
                    out.append(Difference("protocol", key, run_side, stated_side, UNJUDGED))
                elif not same(run_side, stated_side):
                    out.append(Difference("protocol", key, run_side, stated_side))

    # post-processing
    text = _cell(published_row, "postprocess")
    if not text:
        not_stated("protocol", "postprocess", summary(lambda d: _run_postprocess(record, d)))
    else:
        wanted = " ".join(re.sub(r"\([^)]*\)", " ", text).lower().split())  # "none (without refinement)"
        stated_on = True if wanted in POSTPROCESS_ON else False if wanted in POSTPROCESS_OFF else None

        def postprocess_verdict(dataset: str) -> Optional[bool]:
            shown = _run_postprocess(record, dataset)
            if stated_on is None or shown == NOT_RECORDED:
                return None
            return (shown != "none") == stated_on

        out += _per_dataset("protocol", "postprocess", compared, lambda d: _run_postprocess(record, d),
                            lambda d: text, postprocess_verdict)

    # backbone label
    config = record.get("config") or {}
    choice = (record.get("choices") or {}).get("backbone") or (config.get("backbone") or {}).get("name")
    run_label = backbone_label(choice) if choice else NOT_RECORDED
    text = _cell(published_row, "backbone")
    if not text:
        not_stated("weights", "backbone", run_label)
    elif run_label == NOT_RECORDED:
        out.append(Difference("weights", "backbone", run_label, text, UNJUDGED))
    elif re.sub(r"\s", "", run_label).lower() != re.sub(r"\s", "", text).lower():
        out.append(Difference("weights", "backbone", run_label, text))

    # weights
    model = record.get("model") or {}
    text = _cell(published_row, "weights")
    source = model.get("source", NOT_RECORDED)
    if not text:
        not_stated("weights", "weights", source)
    else:
        verdict, why = judge_weights(model, (config.get("backbone") or {}).get("model"), text)
        if verdict is not True:
            out.append(Difference("weights", "weights", source, text, DIFFERS if verdict is False else UNJUDGED, why))

    order = {category: i for i, category in enumerate(CATEGORIES)}
    return sorted(out, key=lambda d: (order.get(d.category, len(order)), d.key))


# --------------------------------------------------------------------------- report


def _show(value: Any) -> str:
    if isinstance(value, str):
        return value
    return normalise(value)


def format_differences(differences: Iterable[Difference], label_a: str, label_b: str) -> str:
    """A text report: one line `category: key: a -> b` per difference, grouped by category; then the facts to
    compare by eye and those the source does not state. "no differences that can move a number" when none."""
    differences = list(differences)
    order = {category: i for i, category in enumerate(CATEGORIES)}
    lines = [f"a: {label_a}", f"b: {label_b}"]
    differing = [d for d in differences if d.kind == DIFFERS]
    if not differing:
        lines.append("no differences that can move a number")
    else:
        lines.append(f"{len(differing)} difference(s), a -> b:")
        last = None
        for d in sorted(differing, key=lambda d: (order.get(d.category, len(order)), d.category)):
            if last is not None and d.category != last:
                lines.append("")
            last = d.category
            note = f"  ({d.note})" if d.note else ""
            lines.append(f"{d.category}: {d.key}: {_show(d.a)} -> {_show(d.b)}{note}")
    by_eye = [d for d in differences if d.kind == UNJUDGED]
    if by_eye:
        lines += ["", "not judged (compare by eye), a | b:"]
        for d in by_eye:
            note = f"  ({d.note})" if d.note else ""
            lines.append(f"{d.category}: {d.key}: {_show(d.a)} | {_show(d.b)}{note}")
    unstated = [d for d in differences if d.kind == NOT_STATED_KIND]
    if unstated:
        lines += ["", f"{NOT_STATED} (the run's value shown):"]
        for d in unstated:
            lines.append(f"{d.category}: {d.key}: {_show(d.a)}")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- command line


def load_run(path: Any) -> Tuple[Dict[str, Any], Path]:
    """A run record from a run folder or a results.json path, and the file's path."""
    folder, record = read_run(Path(path))
    return record, folder / RESULTS_FILENAME


def find_published_row(published, method: str, source: Optional[str] = None, backbone: Optional[str] = None):
    """The one published row of `method` (a published name or a preset, any case), optionally of a backbone
    label and whose source or note contains `source` (any case); raises SFPError naming the candidates when none
    or several match."""
    table = published
    wanted = {method.lower(), published_method(method).lower()}
    methods = table["method"].astype(str)
    rows = table[methods.str.lower().isin(wanted)]
    if rows.empty:
        known = ", ".join(dict.fromkeys(methods))
        raise SFPError(f"no published rows of method {method!r}; known methods: {known}")
    method = str(rows.iloc[0]["method"])

    def describe(frame) -> str:
        return "; ".join(f"{r['backbone']} | {r['source']}" + (f" | {r['note']}" if str(r["note"]).strip() else "")
                         for _, r in frame.iterrows())

    if backbone:
        chosen = rows[rows["backbone"].astype(str).str.replace(r"\s", "", regex=True).str.lower()
                      == re.sub(r"\s", "", backbone).lower()]
        if chosen.empty:
            raise SFPError(f"no published row of {method} for backbone {backbone!r} (pass --backbone LABEL); "
                           f"candidates: {describe(rows)}")
        rows = chosen
    if source:
        labels = rows["source"].astype(str) + "; " + rows["note"].astype(str)
        chosen = rows[labels.str.lower().str.contains(source.lower(), regex=False)]
        if chosen.empty:
            raise SFPError(f"no published row of {method} whose source or note contains {source!r}; candidates: "
                           f"{describe(rows)}")
        rows = chosen
    if len(rows) > 1:
        raise SFPError(f"{len(rows)} published rows of {method} match; choose one with --source TEXT (part of "
                       f"its source or note): {describe(rows)}")
    return rows.iloc[0]


def add_diff_parser(commands) -> argparse.ArgumentParser:
    """Adds the `diff` subcommand to an argparse subparsers object; returns its parser (its `run` default is
    `run_diff`)."""
    parser = commands.add_parser(
        "diff", help="what differs between two runs, or a run and a published figure",
        description="Lists every recorded fact that can move a number and differs: config, protocol, class "
                    "files, templates, weights, versions, evaluated images; or, with --published, what the "
                    "published row states (window, short side, post-processing, weights, backbone).")
    parser.add_argument("run_a", metavar="RUN_A", type=Path, help="a run folder or its results.json")
    parser.add_argument("run_b", metavar="RUN_B", type=Path, nargs="?", help="the run compared with RUN_A")
    parser.add_argument("--published", metavar="METHOD", help="compare RUN_A with the published row of METHOD")
    parser.add_argument("--source", metavar="TEXT", help="the published row whose source (or note) contains TEXT")
    parser.add_argument("--backbone", metavar="LABEL",
                        help="the published row of this backbone (default: RUN_A's backbone label)")
    parser.add_argument("--published-file", type=Path, metavar="CSV",
                        help="published figures (default: the project's)")
    parser.add_argument("--json", action="store_true", help="print a JSON list of {category, key, a, b, kind, note}")
    parser.set_defaults(run=run_diff)
    return parser


def run_diff(args: argparse.Namespace) -> int:
    """Prints the report (or JSON) of `diff`; 0 whether or not anything differs, 2 with `error: ...` on bad
    input."""
    try:
        record_a, path_a = load_run(args.run_a)
        if (args.run_b is None) == (args.published is None):
            raise SFPError("give RUN_B or --published METHOD (one of them)")
        for option in ("source", "backbone", "published_file"):
            if getattr(args, option, None) and args.published is None:
                raise SFPError(f"--{option.replace('_', '-')} goes with --published METHOD")
        if args.run_b is not None:
            record_b, path_b = load_run(args.run_b)
            differences = diff_runs(record_a, record_b)
            label_b = str(path_b.parent)
        else:
            config = record_a.get("config") or {}
            choice = (record_a.get("choices") or {}).get("backbone") or (config.get("backbone") or {}).get("name")
            backbone = args.backbone or (backbone_label(choice) if choice else None)
            row = find_published_row(load_published(args.published_file), args.published, args.source, backbone)
            differences = diff_published(record_a, row)
            label_b = f"{row['method']} {row['backbone']}, {published_label(row)}"
            if _cell(row, "protocol_source"):
                label_b += f" (protocol facts from {_cell(row, 'protocol_source')})"
        if args.json:
            print(json.dumps([d.as_json() for d in differences], indent=2))
        else:
            sys.stdout.write(format_differences(differences, str(path_a.parent), label_b))
        return 0
    except (SFPError, ValueError, KeyError, FileNotFoundError) as e:
        message = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"error: {message}", file=sys.stderr)
        return 2


def main(argv: Optional[List[str]] = None) -> int:
    """`python -m analysis.protocol_diff RUN_A [RUN_B] [--published METHOD ...]` (the `diff` subcommand alone)."""
    parser = argparse.ArgumentParser(prog="python -m analysis.protocol_diff")
    commands = parser.add_subparsers(dest="command")
    add_diff_parser(commands)
    return run_diff(parser.parse_args(["diff", *(sys.argv[1:] if argv is None else argv)]))


if __name__ == "__main__":
    raise SystemExit(main())
