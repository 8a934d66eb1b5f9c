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
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    p.add_argument("--workers", type=int, default=0,
                   help="DataLoader processes drawing scenes (0: draw in this process)")
    p.add_argument("--warmup", type=int, default=None,
                   help="linear warm-up steps (default: a tenth of --steps, at most 100)")
    p.add_argument("--schedule", choices=["steps", "time"], default="steps",
                   help="cosine decay over --steps, or over --max-minutes of wall time "
                        "(for hardware whose speed is not known in advance)")
    p.add_argument("--max-minutes", type=float, default=None,
                   help="stop early and save when training takes longer (steps done are "
                        "recorded in meta.json)")
    p.add_argument("--save-every-minutes", type=float, default=None,
                   help="also save the weights at this interval while training")
    p.add_argument("--eval-n", type=int, default=500, help="held-out scenes; 0 skips")
    p.add_argument("--init", type=Path, default=None,
                   help="continue from the weights of a saved model directory")
    args = p.parse_args(argv)
    if args.schedule == "time" and args.max_minutes is None:
        p.error("--schedule time needs --max-minutes")

    import open_clip
    from tqdm import tqdm

    from groundroll.zoo.openclip import WordTokenizer

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    rng = common.seed_everything(args.seed)
    hf_tok = common.build_tokenizer()
    tokenizer = WordTokenizer(hf_tok, common.CONTEXT_LENGTH)

    def batches():
        """Training batches; loader processes start here, before the model is on the GPU."""
        if args.workers:
            return iter(torch.utils.data.DataLoader(
                common.BatchStream(args.seed, args.batch_size, tokenizer), batch_size=None,
                num_workers=args.workers, pin_memory=cuda, prefetch_factor=4,
                persistent_workers=True))

        def draw():
            while True:
                images, pos, neg, _, img_sets, text_sets = common.make_batch(
                    rng, args.batch_size, normalise=False)
                yield images, tokenizer(pos + neg), common.false_negatives(img_sets, text_sets)
        return draw()

    stream = batches()
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
    warmup = args.warmup if args.warmup is not None else max(1, min(100, args.steps // 10))

    def save(steps_done: int, seconds: float) -> dict:
        meta = common.base_meta("open_clip", args, steps_done, seconds, n_params)
        meta["training"].update({"device": torch.cuda.get_device_name(device) if cuda else "cpu",
                                 "workers": args.workers, "warmup": warmup,
                                 "schedule": args.schedule})
        if args.workers:
            meta["training"]["train_seeds"] = (
                "numpy Generator([seed, worker]) streams, scenes drawn on the fly")
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
        if args.schedule == "time":
            lr = common.cosine_lr(step, args.steps, args.lr, warmup,
                                  progress=elapsed / (60 * args.max_minutes))
        else:
            lr = common.cosine_lr(step, args.steps, args.lr, warmup)
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
