"""Train shapes-coca: a tiny open_clip CoCa (ViT, 96 px, patch 8, 12 x 12 grid; attentional
pooler; 2-layer multimodal decoder with cross-attention to the pooled image tokens) on
synthetic shapes scenes, with contrastive + captioning loss and a word-level vocabulary.

    python training/shapes_coca.py --out groundroll/zoo/bundled/shapes-coca --steps 550 --seed 0 --max-minutes 27

Runs on a GPU with scenes drawn by loader processes as ``training/shapes_clip.py`` does
(``--device cuda --workers 14 --schedule time --max-minutes M``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import _shapes_common as common  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--steps", type=int, default=550)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--pos-embed", choices=["sin_cos_2d", "learnable"], default="sin_cos_2d",
                   help="vision position embedding (fixed 2-D sin-cos gives spatial layout "
                        "from the first step)")
    p.add_argument("--caption-weight", type=float, default=1.0)
    common.add_run_options(p)
    p.add_argument("--eval-n", type=int, default=500, help="held-out scenes; 0 skips")
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
    # Full captions only: the decoder learns to name every object.
    stream = common.batch_source(args, tokenizer, rng, subset_prob=0.0)  # loaders start here
    cfg = common.coca_config(tokenizer.vocab_size, args.pos_embed)
    model = open_clip.CoCa(**{k: v for k, v in cfg.items() if k != "custom_text"})
    # open_clip 3.3's MultimodalTransformer never initialises its text_projection (its
    # init_parameters() is not called and fails when called), so the decoder's output
    # projection starts as uninitialised memory: inf/NaN logits at random.
    decoder = model.text_decoder
    torch.nn.init.normal_(decoder.text_projection, std=decoder.width ** -0.5)
    model.to(device)
    n_params = sum(p.numel() for p in model.parameters())
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    other = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05},
                             {"params": other, "weight_decay": 0.0}], lr=args.lr,
                            betas=(0.9, 0.98))
    warmup = common.warmup_steps(args)

    def save(steps_done: int, seconds: float) -> dict:
        meta = common.run_meta(args, common.base_meta("open_clip_coca", args, steps_done,
                                                      seconds, n_params), device, warmup)
        meta["training"]["caption_weight"] = args.caption_weight
        common.save(model, cfg, hf_tok, args.out, meta)
        return meta

    timer = common.Timer()
    model.train()
    bar = tqdm(range(args.steps), desc="shapes-coca", mininterval=10)
    steps_done, last_save = 0, 0.0
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
        images, text, drop = next(stream)
        b = images.shape[0]
        images = common.normalise_images(images.to(device, non_blocking=True))
        text, drop = text.to(device, non_blocking=True), drop.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            out = model(images, text[:b])
            neg_f = model.encode_text(text[b:])
        txt_f = torch.cat([out["text_features"], neg_f]).float()
        clip_loss = common.contrastive_loss(out["image_features"].float(), txt_f,
                                            out["logit_scale"].float(), drop=drop)
        cap_loss = F.cross_entropy(out["logits"].float().permute(0, 2, 1), out["labels"],
                                   ignore_index=tokenizer.pad_token_id)
        loss = clip_loss + args.caption_weight * cap_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, 4.6052)
        steps_done = step + 1
        if step % 50 == 0:
            clip_value, cap_value = clip_loss.item(), cap_loss.item()
            bar.set_postfix(clip=f"{clip_value:.3f}", cap=f"{cap_value:.3f}", refresh=False)
            print(f"step {step} clip {clip_value:.4f} caption {cap_value:.4f} lr {lr:.2e} "
                  f"t {timer():.0f}s", flush=True)
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
