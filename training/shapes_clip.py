"""Train shapes-clip: a tiny open_clip CLIP (ViT, 96 px, patch 8, 12 x 12 grid) on synthetic
shapes scenes with a word-level vocabulary.

    # CPU, scenes drawn in the training process
    python training/shapes_clip.py --out groundroll/zoo/bundled/shapes-clip --steps 600 --seed 0 --max-minutes 31
    # one GPU, scenes drawn by 14 loader processes, cosine schedule over a time budget
    python training/shapes_clip.py --out DIR --device cuda --workers 14 --batch-size 256 \
        --lr 1e-3 --warmup 500 --steps 1000000 --max-minutes 8.5 --schedule time
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import _shapes_common as common  # noqa: E402


def main(argv=None):
    p = common.recipe_parser(__doc__.splitlines()[0], steps=600, batch_size=48)
    p.add_argument("--init", type=Path, default=None,
                   help="continue from the weights of a saved model directory")
    args = common.parse_recipe_args(p, argv)

    import open_clip

    run = common.start(args)  # loader processes start here
    cfg = common.clip_config(run.tokenizer.vocab_size, args.pos_embed)
    model = open_clip.CLIP(**cfg)
    if args.init is not None:
        from safetensors.torch import load_file

        state = load_file(str(args.init / "open_clip_model.safetensors"))
        model.load_state_dict({k: v.float() for k, v in state.items()})
    model.to(run.device)
    n_params = sum(p.numel() for p in model.parameters())
    opt = common.make_optimizer(model, args.lr)

    def save(steps_done: int, seconds: float) -> dict:
        meta = common.run_meta(run, common.base_meta("open_clip", args, steps_done, seconds,
                                                     n_params))
        common.save(model, cfg, run.hf_tokenizer, args.out, meta)
        return meta

    def losses(images, text, drop):
        img_f, txt_f, scale = model(images, text)
        return {"loss": common.contrastive_loss(img_f, txt_f, scale, drop=drop)}

    meta, seconds = common.train(run, model, opt, losses, save, desc="shapes-clip")
    common.evaluate_saved(args, meta)
    print(f"saved {args.out} ({n_params} params, {seconds:.0f}s)", flush=True)


if __name__ == "__main__":
    main()
