"""Text queries: synonyms become queries, templates are averaged, embeddings are cached by content."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import sfp
from sfp.models.templates import get_templates
from sfp.models.text import encode_queries

from tests.helpers import tiny_overrides


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return sfp.build_model(sfp.compose(tiny_overrides(tmp_path_factory.mktemp("text"))), device="cpu")


def test_template_sets_hold_the_documented_prompts():
    assert len(get_templates("imagenet80")) == 80 and get_templates("imagenet80")[0] == "a bad photo of a {}."
    assert len(get_templates("sfp15")) == 15 and get_templates("sfp15")[0] == "a clean origami {}."


def test_each_synonym_is_one_query_mapped_to_its_class(model):
    queries = model.encode_queries([["sky", "wall"], ["cat"], ["people", "person", "body"]], "single")
    assert queries.query_to_class.tolist() == [0, 0, 1, 2, 2, 2]
    assert queries.num_classes == 3
    torch.testing.assert_close(queries.embeddings.norm(dim=-1), torch.ones(6))


def test_a_query_is_the_normalised_mean_of_normalised_template_embeddings(model):
    templates = ["a photo of a {}.", "a {} in the scene."]
    queries = model.encode_queries([["cat"]], templates)
    with torch.no_grad():
        per_template = F.normalize(model.clip.encode_text(model.tokenizer([t.format("cat") for t in templates])), dim=-1)
    torch.testing.assert_close(queries.embeddings[0], F.normalize(per_template.mean(0), dim=0))


def test_embeddings_are_cached_on_disk_keyed_by_model_classes_and_templates(model, tmp_path, monkeypatch):
    first = encode_queries(model.clip, model.tokenizer, [["cat"], ["dog"]], ["a {}."], cache_dir=tmp_path)
    files = list((tmp_path / "text_embeddings").glob("*.pt"))
    assert len(files) == 1

    def fail(*args, **kwargs):
        raise AssertionError("the text tower ran although the embeddings were cached")

    monkeypatch.setattr(model.clip, "encode_text", fail)
    again = encode_queries(model.clip, model.tokenizer, [["cat"], ["dog"]], ["a {}."], cache_dir=tmp_path)
    torch.testing.assert_close(first.embeddings, again.embeddings)
    monkeypatch.undo()
    encode_queries(model.clip, model.tokenizer, [["cat"], ["dog"]], ["the {}."], cache_dir=tmp_path)
    encode_queries(model.clip, model.tokenizer, [["cat"], ["dog", "puppy"]], ["a {}."], cache_dir=tmp_path)
    assert len(list((tmp_path / "text_embeddings").glob("*.pt"))) == 3
