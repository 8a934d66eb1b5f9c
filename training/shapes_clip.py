"""Train shapes-clip: a tiny open_clip CLIP (ViT, 96 px, patch 8, 12 x 12 grid) on synthetic
shapes scenes with a word-level vocabulary.

    # CPU, scenes drawn in the training process
    python training/shapes_clip.py --out groundroll/zoo/bundled/shapes-clip --steps 600 --seed 0 --max-minutes 31
    # one GPU, scenes drawn by 14 loader processes, cosine schedule over a time budget
    python training/shapes_clip.py --out DIR --device cuda --workers 14 --batch-size 256 \
        --lr 1e-3 --warmup 500 --steps 1000000 --max-minutes 8.5 --schedule time
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import _shapes_common as common  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=48)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--pos-embed", choices=["sin_cos_2d", "learnable"], default="sin_cos_2d",
                   help="vision position embedding (fixed 2-D sin-cos gives spatial layout "
                        "from the first step)")
    common.add_run_options(p)
    p.add_argument("--eval-n", type=int, default=500, help="held-out scenes; 0 skips")
    p.add_argument("--init", type=Path, default=None,
                   help="continue from the weights of a saved model directory")
    args = p.parse_args(argv)
    common.check_run_options(p, args)

    import open_clip
    from groundroll.zoo.openclip import WordTokenizer

    device = common.setup_device(args)
    rng = common.seed_everything(args.seed)
    hf_tok = common.build_tokenizer()
    tokenizer = WordTokenizer(hf_tok, common.CONTEXT_LENGTH)
    stream = common.batch_source(args, tokenizer, rng)  # loader processes start here
    cfg = common.clip_config(tokenizer.vocab_size, args.pos_embed)
    model = open_clip.CLIP(**cfg)
    if args.init is not None:
        from safetensors.torch import load_file

        state = load_file(str(args.init / "open_clip_model.safetensors"))
        model.load_state_dict({k: v.float() for k, v in state.items()})
    model.to(device)
    n_params = sum(p.numel() for p in model.parameters())
    opt = common.make_optimizer(model, args.lr)
    warmup = common.warmup_steps(args)

    def save(steps_done: int, seconds: float) -> dict:
        meta = common.run_meta(args, common.base_meta("open_clip", args, steps_done, seconds,
                                                      n_params), device, warmup)
        common.save(model, cfg, hf_tok, args.out, meta)
        return meta

    def losses(images, text, drop):
        img_f, txt_f, scale = model(images, text)
        return {"loss": common.contrastive_loss(img_f, txt_f, scale, drop=drop)}

    meta, seconds = common.train(args, model, opt, stream, losses, save, device=device,
                                 warmup=warmup, desc="shapes-clip")
    del stream  # stops the loader processes before the evaluation
    common.evaluate_saved(args, meta)
    print(f"saved {args.out} ({n_params} params, {seconds:.0f}s)", flush=True)


if __name__ == "__main__":
    main()
