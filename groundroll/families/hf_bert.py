"""The transformers BERT-style text encoders: BERT, RoBERTa, XLM-RoBERTa, CamemBERT,
ELECTRA."""

from __future__ import annotations

from ._hf_sites import EAGER, text_tokens
from .record import Family, HFLoader
from .sites import Adapter, Site

__all__ = ["FAMILY", "ADAPTER"]

ADAPTER = Adapter(
    name="hf_bert",
    model_types=("bert", "roberta", "xlm-roberta", "camembert", "electra"),
    sites=(Site(r"(^|\.)encoder\.layer\.\d+\.attention\.self$", "encoder",
                value="value", out="../output.dense"),),
    tokens=(text_tokens("encoder", classes=("BertModel", "RobertaModel", "XLMRobertaModel",
                                            "CamembertModel", "ElectraModel"),
                        special=("cls@first", "eos@last")),),
    switch=EAGER,
    description="transformers BERT-style text encoders",
)

FAMILY = Family("hf_bert", adapter=ADAPTER,
                loader=HFLoader("AutoModel", "tokenizer", "hf_encoder"))
