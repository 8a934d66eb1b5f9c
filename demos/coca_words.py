"""Ground each word of a caption in the image with the bundled CoCa (cross-attention
composed from the patches through the attentional pooler into the decoder).

    python demos/coca_words.py [--caption "a red circle and a blue star"]

Saves one heatmap per caption word as a figure.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from groundroll._atomic import atomic_write
from groundroll.grounding import caption_heatmaps, load_image
from groundroll.viz import heatmap_overlay

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "groundroll" / "data" / "examples"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="bundled:shapes-coca")
    p.add_argument("--image", type=Path, default=EXAMPLES / "shapes_scene.png")
    p.add_argument("--caption", default=None,
                   help="default: the example scene's caption")
    p.add_argument("--read", default="predict", choices=["predict", "input"])
    p.add_argument("--out", type=Path, default=Path("demo_out/coca_words.png"))
    p.add_argument("--force", action="store_true")
    args = p.parse_args(argv)

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    caption = args.caption or json.loads((EXAMPLES / "shapes_scene.json").read_text())["caption"]
    words, maps = caption_heatmaps(args.image, caption, model=args.model, read=args.read)
    image = load_image(args.image)
    fig, axes = plt.subplots(1, len(words) + 1, figsize=(2.2 * (len(words) + 1), 2.4))
    axes[0].imshow(image)
    axes[0].set_title("image", fontsize=9)
    for ax, word, heat in zip(axes[1:], words, maps):
        ax.imshow(heatmap_overlay(image, heat, alpha=0.6))
        ax.set_title(word, fontsize=9)
    for ax in axes:
        ax.axis("off")
    fig.suptitle(caption, fontsize=10)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_write(args.out, force=args.force) as f:
            fig.savefig(f, format="png", dpi=110)
    except FileExistsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{len(words)} word maps ({', '.join(words)}) -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
