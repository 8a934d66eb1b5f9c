"""Train shapes-clip: a tiny open_clip CLIP (ViT, 96 px, patch 8, 12 x 12 grid) on synthetic
shapes scenes with a word-level vocabulary.

    python training/shapes_clip.py --out groundroll/zoo/bundled/shapes-clip --steps 600 --seed 0 --max-minutes 31
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

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
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--max-minutes", type=float, default=None,
                   help="stop early and save when training takes longer (steps done are "
                        "recorded in meta.json)")
    p.add_argument("--eval-n", type=int, default=500, help="held-out scenes; 0 skips")
    p.add_argument("--init", type=Path, default=None,
                   help="continue from the weights of a saved model directory")
    args = p.parse_args(argv)

    import open_clip
    from tqdm import tqdm

    from groundroll.zoo.openclip import WordTokenizer

    torch.set_num_threads(args.threads)
    rng = common.seed_everything(args.seed)
    hf_tok = common.build_tokenizer()
    tokenizer = WordTokenizer(hf_tok, common.CONTEXT_LENGTH)
    cfg = common.clip_config(tokenizer.vocab_size, args.pos_embed)
    model = open_clip.CLIP(**cfg)
    if args.init is not None:
        from safetensors.torch import load_file

        state = load_file(str(args.init / "open_clip_model.safetensors"))
        model.load_state_dict({k: v.float() for k, v in state.items()})
    n_params = sum(p.numel() for p in model.parameters())
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    other = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05},
                             {"params": other, "weight_decay": 0.0}], lr=args.lr,
                            betas=(0.9, 0.98))
    warmup = max(1, min(100, args.steps // 10))
    timer = common.Timer()
    model.train()
    bar = tqdm(range(args.steps), desc="shapes-clip", mininterval=10)
    steps_done = 0
    for step in bar:
        if args.max_minutes is not None and timer() > 60 * args.max_minutes:
            print(f"time limit reached after {step} steps", flush=True)
            break
        for g in opt.param_groups:
            g["lr"] = common.cosine_lr(step, args.steps, args.lr, warmup)
        images, pos, neg, _, img_sets, text_sets = common.make_batch(rng, args.batch_size)
        text = tokenizer(pos + neg)
        img_f, txt_f, scale = model(images, text)
        loss = common.contrastive_loss(img_f, txt_f, scale, img_sets, text_sets)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, 4.6052)
        bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
        steps_done = step + 1
        if step % 50 == 0:
            print(f"step {step} loss {loss.item():.4f} t {timer():.0f}s", flush=True)
    seconds = timer()
    model.eval()
    meta = common.base_meta("open_clip", args, steps_done, seconds, n_params)
    common.save(model, cfg, hf_tok, args.out, meta)
    if args.eval_n:
        from groundroll.zoo.openclip import load_open_clip_dir

        b = load_open_clip_dir(args.out)
        meta["held_out"] = common.zero_shot(b.model, b.preprocess, b.tokenizer, n=args.eval_n)
        meta["held_out"]["command"] = f"python training/eval_shapes.py {args.out} --n {args.eval_n}"
        (args.out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
        print(json.dumps(meta["held_out"]), flush=True)
    print(f"saved {args.out} ({n_params} params, {seconds:.0f}s)", flush=True)


if __name__ == "__main__":
    main()
