"""Family records and the user jobs on families with derived capture sites.

``gr.segment`` with relevance and rollout on an open_clip timm SigLIP / EVA trunk and on
Hugging Face SigLIP2 and OWL-ViT towers (random weights: plumbing, not quality);
``gr.align`` on PLBart- and Blenderbot-style seq2seq models; a new family registered from
one file and segmented with.
"""

from __future__ import annotations

import importlib
import importlib.util
import textwrap

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

import groundroll as gr  # noqa: E402
from groundroll.adapters import conformance  # noqa: E402
from groundroll.families import family_for, family_named  # noqa: E402
from groundroll.zoo import Bundle  # noqa: E402
from test_grounding_support import ToyHFTokenizer, ToyOpenClipTokenizer  # noqa: E402

PROMPTS = ["a red circle", "blue star"]


def _image(h=32, w=40, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _check_maps(seg, prompts=PROMPTS):
    heat = np.asarray(seg.heatmaps)
    assert heat.shape[0] == len(prompts)
    assert np.isfinite(heat).all() and (heat >= 0).all()
    assert seg.labels.shape == _image().shape[:2]


@pytest.fixture(scope="module")
def timm_siglip():
    pytest.importorskip("timm")
    model, _ = conformance.tiny_open_clip("ViT-B-16-SigLIP")
    return Bundle("tiny:ViT-B-16-SigLIP", model, "open_clip", tokenizer=ToyOpenClipTokenizer())


@pytest.mark.parametrize("method", ["relevance", "rollout"])
def test_segment_on_an_open_clip_timm_siglip(timm_siglip, method):
    seg = gr.segment(_image(), PROMPTS, model=timm_siglip, method=method)
    _check_maps(seg)
    grounding = family_for(timm_siglip.model).grounding_for(timm_siglip.model)
    assert grounding.vision_target == "pool_queries"    # through the MAP head


def test_relevance_differs_by_prompt_on_timm_siglip(timm_siglip):
    seg = gr.segment(_image(), PROMPTS, model=timm_siglip, method="relevance")
    heat = np.asarray(seg.heatmaps)
    assert not np.allclose(heat[0], heat[1])


def test_dense_sources_on_a_timm_trunk_say_what_to_use(timm_siglip):
    with pytest.raises(ValueError, match="timm trunk.*relevance"):
        gr.segment(_image(), PROMPTS, model=timm_siglip, method="maskclip")


def test_segment_on_an_open_clip_eva_trunk_reads_the_class_token():
    pytest.importorskip("timm")
    model, _ = conformance.tiny_open_clip("EVA02-B-16")
    bundle = Bundle("tiny:EVA02-B-16", model, "open_clip", tokenizer=ToyOpenClipTokenizer())
    assert family_for(model).grounding_for(model).vision_target == "vision"
    for method in ("relevance", "rollout"):
        _check_maps(gr.segment(_image(), PROMPTS, model=bundle, method=method))


def _siglip2():
    import transformers

    config = conformance.tiny_config("siglip2")
    config.vision_config.num_patches = 16
    config.text_config.max_position_embeddings = 12
    torch.manual_seed(0)
    return transformers.Siglip2Model(config).eval()


def _owlvit():
    import transformers

    config = conformance.tiny_config("owlvit")
    config.text_config.max_position_embeddings = 12
    torch.manual_seed(0)
    return transformers.OwlViTModel(config).eval()


@pytest.mark.parametrize("build, tokenizer, target", [
    (_siglip2, lambda: ToyHFTokenizer(3, 2, pad=1), "pool_queries"),
    (_owlvit, lambda: ToyHFTokenizer(1, 2), "vision"),
], ids=["siglip2", "owlvit"])
@pytest.mark.parametrize("method", ["relevance", "rollout"])
def test_segment_on_derived_hf_towers(build, tokenizer, target, method):
    model = build()
    family = family_for(model)
    assert family.adapter is None                      # sites from the declarations
    assert family.grounding_for(model).vision_target == target
    bundle = Bundle(f"tiny:{family.name}", model, family.name, tokenizer=tokenizer())
    _check_maps(gr.segment(_image(), PROMPTS, model=bundle, method=method))
    with pytest.raises(ValueError, match="open_clip ViT"):
        gr.segment(_image(), PROMPTS, model=bundle, method="maskclip")


# --------------------------------------------------------------------------- alignment

def _seq2seq(kind: str) -> Bundle:
    import transformers
    import test_align_api_models as models

    tok = models.tokenizer("bpe")
    config_cls, model_cls = {
        "plbart": (transformers.PLBartConfig, transformers.PLBartForConditionalGeneration),
        "blenderbot": (transformers.BlenderbotConfig,
                       transformers.BlenderbotForConditionalGeneration),
    }[kind]
    torch.manual_seed(0)
    config = config_cls(
        vocab_size=len(tok), d_model=32, encoder_layers=2, decoder_layers=2,
        encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=37,
        decoder_ffn_dim=37, max_position_embeddings=64, pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        decoder_start_token_id=tok.eos_token_id)
    model = model_cls(config).eval()
    model.generation_config.max_length = 12
    adapter = gr.adapters.adapter_for(model)
    return Bundle(f"tiny-{kind}", model, adapter.name, tokenizer=tok,
                  meta={"family": f"hf_{kind}", "kind": "hf_seq2seq"})


@pytest.mark.parametrize("kind", ["plbart", "blenderbot"])
def test_align_on_derived_seq2seq(kind):
    bundle = _seq2seq(kind)
    assert family_for(bundle.model).adapter is None
    src, tgt = "wa bo ka", "ta ne ko su"
    result = gr.align(src, tgt, model=bundle, method="rollout")
    one = result[0] if isinstance(result, list) else result
    matrix = np.asarray(one.matrix)
    assert matrix.shape == (len(tgt.split()), len(src.split()))
    assert np.isfinite(matrix).all() and (matrix >= 0).all()


# --------------------------------------------------------------------------- one file

FAMILY_FILE = '''
"""A made-up dual encoder and everything groundroll needs to know about it."""
import torch
from groundroll.families import Adapter, Family, Grounding, Site, TokenSource, register_family


class PairEncoder(torch.nn.Module):
    """Wraps a CLIP-like pair of towers behind encode_image / encode_text."""

    def __init__(self, clip):
        super().__init__()
        self.clip = clip

    def encode_image(self, pixels):
        return self.clip.get_image_features(pixel_values=pixels).pooler_output

    def encode_text(self, ids, mask):
        return self.clip.get_text_features(input_ids=ids, attention_mask=mask).pooler_output


FAMILY = register_family(Family(
    "pair_encoder",
    adapter=Adapter(
        name="pair_encoder", classes=(f"{__name__}.PairEncoder",), switch="hf_eager",
        sites=(Site(r"clip\\.vision_model\\.encoder\\.layers\\.\\d+\\.self_attn$", "vision"),
               Site(r"clip\\.text_model\\.encoder\\.layers\\.\\d+\\.self_attn$", "text")),
        tokens=(TokenSource("vision", pattern=r"^clip\\.vision_model$", reader="image",
                            prefix=1),)),
    grounding=Grounding(
        image_size=lambda m: (32, 32), patch_size=lambda m: (8, 8),
        mean_std=lambda m, processor: ((0.5,) * 3, (0.5,) * 3),
        context_length=lambda m, tokenizer: 12,
        image_embeddings=lambda m, pixels: m.encode_image(pixels),
        text_embeddings=lambda m, enc: m.encode_text(enc["input_ids"],
                                                     enc["attention_mask"]))))
'''


def test_a_new_family_registered_from_one_file_segments(tmp_path):
    from helpers import tiny_models as tm
    from groundroll.families import adapter_for, unregister_family

    path = tmp_path / "pair_family.py"
    path.write_text(textwrap.dedent(FAMILY_FILE))
    spec = importlib.util.spec_from_file_location("pair_family", path)
    module = importlib.util.module_from_spec(spec)
    import sys
    sys.modules["pair_family"] = module
    try:
        spec.loader.exec_module(module)
        model = module.PairEncoder(tm.build("clip").model).eval()
        assert family_for(model) is family_named("pair_encoder")
        assert adapter_for(model) is family_named("pair_encoder").adapter
        bundle = Bundle("pair", model, "pair_encoder", tokenizer=ToyHFTokenizer(62, 63))
        for method in ("relevance", "rollout"):
            _check_maps(gr.segment(_image(), PROMPTS, model=bundle, method=method))
    finally:
        sys.modules.pop("pair_family", None)
        unregister_family("pair_encoder")
    with pytest.raises(KeyError, match="pair_encoder.*registered: .*open_clip"):
        family_named("pair_encoder")


def test_records_hold_loaders_and_adapters():
    assert family_named("hf_bart").loader.model_class == "AutoModelForSeq2SeqLM"
    assert family_named("hf_siglip").adapter.name == "hf_siglip"
    assert family_named("open_clip_coca").grounding.cross.target == "decoder"
    with pytest.raises(TypeError, match="family"):
        family_for(torch.nn.Linear(2, 2))


def test_zoo_loads_a_derived_family_from_a_folder(tmp_path):
    bundle = _seq2seq("plbart")
    bundle.model.save_pretrained(tmp_path)
    bundle.tokenizer.save_pretrained(tmp_path)
    loaded = gr.load(f"hf:{tmp_path}")
    assert type(loaded.model).__name__ == "PLBartForConditionalGeneration"
    assert loaded.adapter == "hf_plbart" and loaded.meta["family"] == "hf_plbart"
    assert loaded.meta["kind"] == "hf_seq2seq"
    result = gr.align("wa bo ka", "ta ne ko su", model=loaded, method="raw")
    one = result[0] if isinstance(result, list) else result
    assert np.asarray(one.matrix).shape == (4, 3)


# --------------------------------------------------------------------------- one place

_PACKAGE = __import__("pathlib").Path(gr.__file__).parent
_MACHINERY = {"__init__", "record", "registry", "sites", "derive", "derived"}


def test_every_family_module_is_one_registered_record():
    from groundroll import families

    modules = sorted(p.stem for p in (_PACKAGE / "families").glob("*.py")
                     if not p.stem.startswith("_") and p.stem not in _MACHINERY)
    assert modules == sorted(families.families())
    for name in modules:
        record = importlib.import_module(f"groundroll.families.{name}").FAMILY
        assert family_named(name) is record
        assert record.adapter is None or record.adapter.name == name


def test_no_code_outside_families_tests_a_family_name_or_model_type():
    """A comparison of a family name or a ``config.model_type`` with a literal belongs
    in the family's module."""
    import re

    test = re.compile(r"(\.family|model_type)\s*(==|!=|\bin\b|\bnot in\b)\s*[\(\[\{\"']")
    found = []
    for path in _PACKAGE.rglob("*.py"):
        if path.parent.name == "families" or path.name == "conformance.py":
            continue                   # the sweep builds configs by model type on purpose
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if test.search(line):
                found.append(f"{path.relative_to(_PACKAGE)}:{number}: {line.strip()}")
    assert not found, "\n".join(found)
