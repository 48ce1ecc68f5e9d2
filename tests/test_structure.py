"""The structure the code promises: no import cycles, a config layer below models, methods and engine, each
default written once, and no reference to a file outside the repository."""
from __future__ import annotations

import ast
import dataclasses
import re
from pathlib import Path
from typing import Dict, Iterator, List, Set, Tuple

import pytest
from omegaconf import OmegaConf

from sfp.config import schema
from tests.helpers import REPO, group_schemas, project_files

PACKAGES = {"sfp": REPO / "sfp", "analysis": REPO / "analysis", "hydra_plugins": REPO / "hydra_plugins"}


def modules() -> Dict[str, Path]:
    found = {}
    for top, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = [top, *path.relative_to(folder).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def imports(name: str, path: Path, known: Set[str]) -> Iterator[str]:
    """Every project module `name` imports, at any depth (a function-level import still ties the two)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # `from pkg import submodule` depends on the submodule; `from pkg import name` on the package
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                yield target


def graph(collapse=lambda m: m) -> Dict[str, Set[str]]:
    known = modules()
    edges: Dict[str, Set[str]] = {}
    for name, path in known.items():
        source = collapse(name)
        edges.setdefault(source, set())
        for target in imports(name, path, set(known)):
            if collapse(target) != source:
                edges[source].add(collapse(target))
    return edges


def cycles(edges: Dict[str, Set[str]]) -> List[List[str]]:
    """Strongly connected components with more than one node (Tarjan)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    found: List[List[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in edges.get(node, ()):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def layer(module: str) -> str:
    """sfp.config.schema -> sfp.config; sfp.runner -> sfp.runner; analysis.x -> analysis."""
    parts = module.split(".")
    if parts[0] != "sfp":
        return parts[0]
    return ".".join(parts[:2])


def test_the_module_import_graph_has_no_cycle():
    assert cycles(graph()) == []


def test_the_package_import_graph_has_no_cycle():
    assert cycles(graph(layer)) == []


@pytest.mark.parametrize("upper", ["sfp.models", "sfp.methods", "sfp.engine", "sfp.data", "sfp.backbones",
                                   "sfp.runner", "sfp.assembly", "sfp.tracking", "analysis"])
def test_the_config_layer_imports_nothing_above_it(upper):
    config = {m: targets for m, targets in graph().items() if layer(m) == "sfp.config"}
    offending = {m: sorted(t for t in targets if layer(t) == upper) for m, targets in config.items()}
    assert {m: t for m, t in offending.items() if t} == {}


def test_the_cycle_finder_finds_a_planted_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


# ---- one source for every default ----------------------------------------------------------------------

def _defaults_of(cls) -> Dict[str, object]:
    return OmegaConf.to_container(OmegaConf.structured(cls), enum_to_str=True)


GROUP_SCHEMAS = {group: cls for group, cls in group_schemas().items() if group != "preset"}  # presets: below


def _leaves(node, prefix=()) -> Iterator[Tuple[Tuple[str, ...], object]]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key != "defaults":
                yield from _leaves(value, prefix + (key,))
    else:
        yield prefix, node


def _restated(values: dict, defaults: dict) -> List[str]:
    repeated = []
    for path, value in _leaves(values):
        default = defaults
        for key in path:
            default = default.get(key, KeyError) if isinstance(default, dict) else KeyError
        if default is not KeyError and not isinstance(default, dict) and default == value:
            repeated.append(".".join(path))
    return repeated


def group_files() -> Iterator[Tuple[Path, dict, dict]]:
    """(file, its values, the schema defaults they would restate) for every group option and preset."""
    from sfp.config.catalog import presets
    from sfp.methods import METHODS

    conf = REPO / "conf"
    for group, cls in GROUP_SCHEMAS.items():
        for path in sorted((conf / group).glob("*.yaml")):
            yield path, OmegaConf.to_container(OmegaConf.load(path)), _defaults_of(cls)
    for path in sorted((conf / "datasets").glob("*.yaml")):
        node = OmegaConf.to_container(OmegaConf.load(path))
        if isinstance(node.get(path.stem), dict):
            yield path, node[path.stem], _defaults_of(schema.DatasetConfig)
    run_defaults = _defaults_of(schema.RunConfig)
    for name, preset in presets().items():
        path = conf / "method" / f"{name}.yaml"
        values = OmegaConf.to_container(OmegaConf.load(path))
        # a preset file is global: it may restate neither a group default nor its method's own defaults
        run_defaults["method"] = _defaults_of(METHODS.get(preset.method).Settings)
        yield path, values, run_defaults


@pytest.mark.parametrize("path,values,defaults", [pytest.param(*case, id=case[0].stem) for case in group_files()])
def test_no_config_file_restates_a_default_of_the_schema(path, values, defaults):
    assert _restated(values, defaults) == [], f"{path.relative_to(REPO)} restates schema defaults"


def test_the_restatement_check_catches_a_planted_copy():
    assert _restated({"top_k": 10, "cls_scale": 2.0}, _defaults_of(schema.MitigatorConfig)) == ["top_k"]


def test_every_schema_field_has_one_default():
    for cls in GROUP_SCHEMAS.values():
        for field in dataclasses.fields(cls):
            assert field.default is not dataclasses.MISSING or field.default_factory is not dataclasses.MISSING, \
                f"{cls.__name__}.{field.name}"


# ---- everything cited lives in the repository ------------------------------------------------------------

FOREIGN_DOCS = re.compile(r"sfp-method\.md|(?<!docs/)\bbenchmarks\.md|pitfalls\.md|style\.md|\bshared/docs")


def text_files() -> List[Path]:
    suffixes = {".py", ".yaml", ".md", ".toml", ".ipynb", ".txt", ".cfg"}
    return [p for p in project_files() if p.suffix in suffixes and p.relative_to(REPO).parts[0] != "tests"]


def test_no_project_file_cites_a_document_outside_the_repository():
    offending = [str(p.relative_to(REPO)) for p in text_files() if FOREIGN_DOCS.search(p.read_text(errors="ignore"))]
    assert offending == []


def test_every_docs_link_of_the_readme_exists():
    for target in re.findall(r"\]\((docs/[^)#]+)", (REPO / "README.md").read_text()):
        assert (REPO / target).is_file(), target


# ---- a peer's name lives in its module and its preset only -------------------------------------------------

def _peer_methods() -> List[str]:
    """Registered methods with a module of their own name, other than the framework's core (clip, sfp)."""
    from sfp.methods import METHODS

    return [name for name in METHODS.names()
            if name not in ("clip", "sfp") and (REPO / "sfp" / "methods" / f"{name}.py").is_file()]


def code_and_config_files() -> List[Path]:
    suffixes = {".py", ".yaml", ".toml", ".ipynb", ".json", ".cfg"}
    return [p for p in project_files() if (p.suffix in suffixes or p.name == "Makefile")
            and p.relative_to(REPO).parts[0] not in ("tests", "docs")]


def _method_files() -> set:
    """Modules and presets of methods: a method may name another it builds on (ResCLIP's bases)."""
    return {str(p.relative_to(REPO)) for p in [*(REPO / "sfp" / "methods").glob("*.py"),
                                               *(REPO / "conf" / "method").glob("*.yaml")]}


def _named_only_as_tuned_values(path: Path, pattern: "re.Pattern") -> bool:
    """A dataset or backbone file may name a method as the key of the values its release tuned there."""
    if not str(path.relative_to(REPO)).startswith(("conf/datasets/", "conf/backbone/")):
        return False
    return all(re.search(r"(^\s*|\{)" + pattern.pattern + r"\s*:", line, re.IGNORECASE)
               for line in path.read_text().splitlines() if pattern.search(line))


@pytest.mark.parametrize("name", _peer_methods())
def test_a_peer_method_is_named_only_in_its_module_and_its_preset(name):
    """...or in another method's module or preset, or as the key of its tuned values in a dataset file."""
    pattern = re.compile(rf"\b{name}\b", re.IGNORECASE)
    named_in = {p for p in code_and_config_files() if pattern.search(p.read_text(errors="ignore"))}
    others = {str(p.relative_to(REPO)) for p in named_in
              if not _named_only_as_tuned_values(p, pattern)} - _method_files()
    assert others == set()
    assert {f"sfp/methods/{name}.py", f"conf/method/{name}.yaml"} <= {str(p.relative_to(REPO)) for p in named_in}
