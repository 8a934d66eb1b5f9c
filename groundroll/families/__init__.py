"""Model families: everything groundroll knows about a family of models, one module
each.

A family's module (``groundroll/families/<family>.py``) holds its record
(:class:`Family`): the matching rule, the capture sites (:class:`Adapter`, or None when
they are derived from the model's own declarations), the composition chains, the
grounding hooks (:class:`Grounding`: input size, normalisation, embeddings, pooling
target, cross-attention run, LeGrad lens, Grad-CAM layer, dense-rewrite tower, tokenizer
conventions), generation keywords and the loader. Adding a family is one new module and
one :func:`register_family` call (see ``tests/test_families.py``).

=============================  =================================================
module                         family
=============================  =================================================
``open_clip``                  open_clip ``CLIP`` / ``CustomTextCLIP``
``open_clip_coca``             open_clip ``CoCa``
``hf_clip``                    transformers CLIP
``hf_siglip``                  transformers SigLIP
``hf_blip``                    transformers BLIP retrieval
``hf_blip_captioner``          transformers BLIP captioner
``hf_marian``                  transformers Marian
``hf_bart``                    transformers BART / mBART / M2M100 / Pegasus
``hf_t5``                      transformers T5 / mT5
``hf_bert``                    transformers BERT-style text encoders
``hf_vit``                     transformers ViT / DeiT
``hf_vision_encoder_decoder``  transformers ``VisionEncoderDecoderModel`` captioners
``hf_pix2struct``              transformers Pix2Struct (captioner over flattened
                               patches with their rows and columns)
``hf_llava``                   transformers LLaVA / VipLLaVA / DeepSeek-VL / Pixtral
                               (decoder-only VLMs)
``hf_llava_next``              transformers LLaVA-NeXT / -NeXT-Video / -OneVision
                               (LLaVA with tiled images)
``hf_paligemma``               transformers PaliGemma (decoder-only VLM)
``hf_gemma3``                  transformers Gemma 3 / ShieldGemma 2 (decoder-only VLM,
                               pooled grid)
``hf_qwen2_vl``                transformers Qwen2-VL / Qwen2.5-VL / Qwen3-VL / GLM-4V /
                               Omni thinkers (decoder-only VLMs)
``hf_git``                     transformers GIT (image tokens before the text)
``hf_idefics3``                transformers Idefics3 / SmolVLM (decoder-only VLMs)
``hf_aya_vision``              transformers Aya Vision (decoder-only VLM, merged grid)
``hf_internvl``                transformers InternVL (decoder-only VLM, merged grid)
``hf_cohere2_vision``          transformers Cohere2-Vision (decoder-only VLM, merged
                               grid)
``hf_mistral3``                transformers Mistral 3 (Pixtral tower, merged grid,
                               a break token after each row)
``hf_llama4``                  transformers Llama 4 (decoder-only VLM, merged grid)
``hf_mllama``                  transformers Llama 3.2 Vision (cross-attention layers
                               among the language model's self-attention layers)
``hf_fuyu``                    transformers Fuyu (decoder-only VLM, patches projected
                               straight in, a newline token after each row)
``hf_got_ocr2``                transformers GOT-OCR 2.0 (decoder-only OCR model, grid
                               shrunk by convolutions)
``hf_blip_2``                  transformers BLIP-2 / InstructBLIP (captions through
                               the Q-Former's queries; Flan-T5 variants refused)
``hf_kosmos_2``                transformers Kosmos-2 / Kosmos-2.5 (captions refused:
                               resampler)
``hf_aria``                    transformers Aria (captions refused: projector queries)
``hf_idefics2``                transformers Idefics / Idefics2 (captions refused:
                               perceiver resampler)
``hf_florence2``               transformers Florence-2 (captions refused: windowed
                               tower)
``hf_qwen3_5``                 transformers Qwen3.5 (captions refused: linear-attention
                               layers)
``hf_lfm2_vl``                 transformers LFM2-VL / LFM3-VL (captions refused:
                               convolution layers)
``derived``                    any other Hugging Face model with attention: sites
                               from its declarations or from what it returns
=============================  =================================================

:func:`family_for` finds the record of a model and :func:`adapter_for` its capture
sites.

Examples
--------
>>> from groundroll.families import family_named
>>> family_named("hf_siglip").grounding.vision_target
'pool_queries'
"""

from __future__ import annotations

from . import (hf_aria, hf_aya_vision, hf_bart, hf_bert, hf_blip, hf_blip_2, hf_blip_captioner,
               hf_clip, hf_cohere2_vision, hf_florence2, hf_fuyu, hf_gemma3, hf_git, hf_got_ocr2,
               hf_idefics2, hf_idefics3, hf_internvl, hf_kosmos_2, hf_lfm2_vl, hf_llama4, hf_llava,
               hf_llava_next, hf_marian, hf_mistral3, hf_mllama, hf_paligemma, hf_pix2struct,
               hf_qwen2_vl, hf_qwen3_5, hf_siglip, hf_t5, hf_vision_encoder_decoder, hf_vit,
               open_clip, open_clip_coca)
from .derive import (declared_attention, derive_adapter, refusal, returned_adapter,
                     writes_text_from_images)
from .record import (Captioning, CrossRun, Family, Grounding, HFLoader, Queries,
                     class_names, model_type)
from .registry import (adapter_for, families, family_for, family_named, hf_loader,
                       register_adapter, register_family, supported_models,
                       unregister_family)
from .sites import Adapter, Site, TokenSource, UnsupportedModelError

__all__ = ["Family", "Grounding", "CrossRun", "Captioning", "Queries", "HFLoader",
           "Adapter", "Site", "TokenSource", "UnsupportedModelError", "register_family",
           "register_adapter", "unregister_family", "family_for",
           "family_named", "families", "adapter_for", "supported_models", "hf_loader",
           "derive_adapter", "declared_attention", "refusal", "returned_adapter",
           "writes_text_from_images",
           "model_type", "class_names"]

for _module in (open_clip_coca, open_clip, hf_clip, hf_siglip, hf_blip_captioner, hf_blip,
                hf_marian, hf_bart, hf_t5, hf_bert, hf_vit, hf_vision_encoder_decoder,
                hf_llava, hf_llava_next, hf_paligemma, hf_gemma3, hf_qwen2_vl, hf_git,
                hf_idefics3, hf_aya_vision, hf_internvl, hf_cohere2_vision, hf_mistral3, hf_fuyu,
                hf_got_ocr2, hf_pix2struct, hf_llama4, hf_mllama,
                hf_blip_2, hf_kosmos_2, hf_idefics2, hf_florence2, hf_qwen3_5, hf_lfm2_vl,
                hf_aria):
    register_family(_module.FAMILY, first=False)
del _module
