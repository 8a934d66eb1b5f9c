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
    common.add_run_options(p)
    p.add_argument("--eval-n", type=int, default=500, help="held-out scenes; 0 skips")
    p.add_argument("--init", type=Path, default=None,
                   help="continue from the weights of a saved model directory")
    args = p.parse_args(argv)
    common.check_run_options(p, args)

    import open_clip
    from tqdm import tqdm

    from groundroll.zoo.openclip import WordTokenizer

    device = common.setup_device(args)
    cuda = device.type == "cuda"
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
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    other = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05},
                             {"params": other, "weight_decay": 0.0}], lr=args.lr,
                            betas=(0.9, 0.98))
    warmup = common.warmup_steps(args)

    def save(steps_done: int, seconds: float) -> dict:
        meta = common.run_meta(args, common.base_meta("open_clip", args, steps_done, seconds,
                                                      n_params), device, warmup)
        common.save(model, cfg, hf_tok, args.out, meta)
        return meta

    timer = common.Timer()
    model.train()
    bar = tqdm(range(args.steps), desc="shapes-clip", mininterval=10)
    steps_done, waited, last_save = 0, 0.0, 0.0
    for step in bar:
        elapsed = timer()
        if args.max_minutes is not None and elapsed > 60 * args.max_minutes:
            print(f"time limit reached after {step} steps", flush=True)
            break
        if args.save_every_minutes and elapsed - last_save > 60 * args.save_every_minutes:
            save(steps_done, elapsed)
            last_save = elapsed
        lr = common.learning_rate(args, step, elapsed, warmup)
        for g in opt.param_groups:
            g["lr"] = lr
        t0 = timer()
        images, text, drop = next(stream)
        waited += timer() - t0
        images = common.normalise_images(images.to(device, non_blocking=True))
        text, drop = text.to(device, non_blocking=True), drop.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            img_f, txt_f, scale = model(images, text)
        loss = common.contrastive_loss(img_f.float(), txt_f.float(), scale.float(), drop=drop)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, 4.6052)
        steps_done = step + 1
        if step % 50 == 0:
            value = loss.item()
            bar.set_postfix(loss=f"{value:.3f}", refresh=False)
            print(f"step {step} loss {value:.4f} lr {lr:.2e} t {timer():.0f}s "
                  f"waiting for data {waited:.0f}s", flush=True)
    seconds = timer()
    model.eval()
    model.cpu()
    meta = save(steps_done, seconds)
    del stream  # stops the loader processes before the evaluation
    if args.eval_n:
        from groundroll.zoo.openclip import load_open_clip_dir

        b = load_open_clip_dir(args.out)
        meta["held_out"] = common.zero_shot(b.model, b.preprocess, b.tokenizer, n=args.eval_n)
        meta["held_out"]["command"] = f"python training/eval_shapes.py {args.out} --n {args.eval_n}"
        common.write_meta(args.out, meta)
        print(json.dumps(meta["held_out"]), flush=True)
    print(f"saved {args.out} ({n_params} params, {seconds:.0f}s)", flush=True)


if __name__ == "__main__":
    main()
