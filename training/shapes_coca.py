"""Train shapes-coca: a tiny open_clip CoCa (ViT, 96 px, patch 8, 12 x 12 grid; attentional
pooler; 2-layer multimodal decoder with cross-attention to the pooled image tokens) on
synthetic shapes scenes, with contrastive + captioning loss and a word-level vocabulary.

    python training/shapes_coca.py --out groundroll/zoo/bundled/shapes-coca --steps 550 --seed 0 --max-minutes 27

Runs on a GPU with scenes drawn by loader processes as ``training/shapes_clip.py`` does
(``--device cuda --workers 14 --schedule time --max-minutes M``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import _shapes_common as common  # noqa: E402


def main(argv=None):
    p = common.recipe_parser(__doc__.splitlines()[0], steps=550, batch_size=32)
    p.add_argument("--caption-weight", type=float, default=1.0)
    args = common.parse_recipe_args(p, argv)

    import open_clip

    # Full captions only: the decoder learns to name every object.
    run = common.start(args, subset_prob=0.0)  # loader processes start here
    tokenizer = run.tokenizer
    cfg = common.coca_config(tokenizer.vocab_size, args.pos_embed)
    model = open_clip.CoCa(**{k: v for k, v in cfg.items() if k != "custom_text"})
    # open_clip 3.3's MultimodalTransformer never initialises its text_projection (its
    # init_parameters() is not called and fails when called), so the decoder's output
    # projection starts as uninitialised memory: inf/NaN logits at random.
    decoder = model.text_decoder
    torch.nn.init.normal_(decoder.text_projection, std=decoder.width ** -0.5)
    model.to(run.device)
    n_params = sum(p.numel() for p in model.parameters())
    opt = common.make_optimizer(model, args.lr)

    def save(steps_done: int, seconds: float) -> dict:
        meta = common.run_meta(run, common.base_meta("open_clip_coca", args, steps_done,
                                                     seconds, n_params))
        meta["training"]["caption_weight"] = args.caption_weight
        common.save(model, cfg, run.hf_tokenizer, args.out, meta)
        return meta

    def losses(images, text, drop):
        b = images.shape[0]
        out = model(images, text[:b])
        neg_f = model.encode_text(text[b:])
        txt_f = torch.cat([out["text_features"], neg_f.to(out["text_features"].dtype)])
        clip_loss = common.contrastive_loss(out["image_features"], txt_f, out["logit_scale"],
                                            drop=drop)
        cap_loss = F.cross_entropy(out["logits"].float().permute(0, 2, 1), out["labels"],
                                   ignore_index=tokenizer.pad_token_id)
        return {"loss": clip_loss + args.caption_weight * cap_loss, "clip": clip_loss,
                "caption": cap_loss}

    meta, seconds = common.train(run, model, opt, losses, save, desc="shapes-coca")
    common.evaluate_saved(args, meta)
    print(f"saved {args.out} ({n_params} params, {seconds:.0f}s)", flush=True)


if __name__ == "__main__":
    main()
