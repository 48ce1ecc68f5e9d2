"""The registries are the only lists: presets and methods agree both ways, every dataset file has its class
names and a registered layout, and each registry entry is named one way."""
from __future__ import annotations

import pytest

import sfp
from sfp.config import catalog
from sfp.data import LAYOUTS, packaged_class_names
from sfp.methods import METHODS
from sfp.models.templates import TEMPLATE_SETS

PRESETS = catalog.presets()
DATASETS = catalog.datasets()


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_names_a_registered_method(preset):
    assert PRESETS[preset].method in METHODS, f"conf/method/{preset}.yaml names no registered method"


@pytest.mark.parametrize("method", METHODS.names())
def test_every_registered_method_has_a_preset(method):
    assert method in {entry.method for entry in PRESETS.values()}, f"method {method!r} has no conf/method/ preset"


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_composes_to_its_methods_own_typed_settings(preset):
    cfg = sfp.compose([f"method={preset}"])
    assert isinstance(cfg.method, METHODS.get(PRESETS[preset].method).Settings)
    assert cfg.method.name == PRESETS[preset].method


def test_the_registries_refuse_a_second_entry_under_one_name():
    with pytest.raises(KeyError, match="registered twice"):
        METHODS.register("clip")(object)


@pytest.mark.parametrize("key", sorted(DATASETS))
def test_every_dataset_file_has_its_class_names_and_a_registered_layout(key):
    cfg = sfp.compose([f"datasets=[{key}]"])
    dataset = cfg.datasets[key]
    assert dataset.layout in LAYOUTS
    assert dataset.class_names in packaged_class_names() or dataset.class_names.endswith(".txt")


def test_every_benchmark_is_a_dataset_file():
    assert set(catalog.benchmarks()) <= set(DATASETS) and len(catalog.benchmarks()) == 8


def test_an_unknown_method_name_lists_the_registered_ones():
    from sfp.errors import ConfigError

    with pytest.raises(ConfigError, match=", ".join(METHODS.names())):
        sfp.compose(["method.name=nope"])


def test_a_knob_of_another_method_is_refused_naming_the_methods_settings():
    from sfp.errors import ConfigError

    expected = r"method.sigma is not a setting of method 'sfp' \(its settings: name, res_cls\)"
    with pytest.raises(ConfigError, match=expected):
        sfp.compose(["+method.sigma=3"])


@pytest.mark.parametrize("name", TEMPLATE_SETS.names())
def test_every_template_set_has_one_placeholder_per_template(name):
    assert all(template.count("{}") == 1 for template in TEMPLATE_SETS.get(name))
