"""Draw the curriculum's figures for the documentation site: docs/figures/<stem>.png.

Each example runs with its default settings and ``--out`` into a temporary
folder; its PNG is then scaled to 80 dpi (small enough for the site, readable
on a screen). ``cnn.py`` writes no figure of its own: its page shows the
first-layer filters of the trained network, drawn here.

    python tools/doc_figures.py                     # every example (minutes)
    python tools/doc_figures.py xor optimizers      # some of them
    python tools/doc_figures.py --from DIR          # only scale the PNGs already in DIR (DIR/<stem>.png)
"""

from __future__ import annotations

import argparse
import os
import pathlib
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
FIGURES = ROOT / "docs" / "figures"
DPI = 80
# the extra arguments of each example's default run (char_lm needs a text: the README)
EXAMPLES = {
    "computational_graph": [], "xor": [], "activations_compared": [], "decision_boundaries": [],
    "numerical_gradient": [], "optimizers": [], "optimizers_digits": [], "initialization": [],
    "batch_norm_scales": [], "regularization": [], "hyperparameter_search": [], "pretraining": [],
    "vanishing_exploding": [], "depth": [], "cnn": [], "cnn_insight": [], "sequence": [], "precision": [],
    "grokking": [], "char_lm": ["--text", str(ROOT / "README.md")],
}


def scale(source: pathlib.Path, target: pathlib.Path, dpi: int = DPI) -> pathlib.Path:
    """Resample a PNG saved at any dpi to ``dpi`` and save it optimised."""
    from PIL import Image

    with Image.open(source) as image:
        saved_dpi = image.info.get("dpi", (100, 100))[0]
        factor = dpi / saved_dpi
        size = (round(image.width * factor), round(image.height * factor))
        small = image.convert("RGB")
        if factor < 1:
            small = small.resize(size, Image.LANCZOS)
        small.quantize(colors=256).save(target, optimize=True, dpi=(dpi, dpi))  # a palette: a plot needs no more
    return target


def cnn_filters(out: pathlib.Path) -> None:
    """Train cnn.py's LeNet with its defaults and draw its 32 first-layer 3x3 filters."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    sys.path.insert(0, str(ROOT / "examples"))
    import cnn

    result = cnn.main(["--quiet"])
    w = np.asarray(result["params"]["conv2d"]["w"])[:, :, 0, :]  # (3, 3, 32)
    fig, axes = plt.subplots(4, 8, figsize=(8, 4.4))
    for i, ax in enumerate(axes.flat):
        ax.imshow(w[:, :, i], cmap="gray")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"cnn.py: the 32 first-layer 3x3 filters after training "
                 f"(test accuracy {result['test_accuracy']:.1%})")
    fig.tight_layout()
    fig.savefig(out, dpi=DPI)
    plt.close(fig)


def draw(stem: str, folder: pathlib.Path) -> pathlib.Path:
    out = folder / f"{stem}.png"
    if stem == "cnn":
        cnn_filters(out)
        return out
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MPLBACKEND": "Agg"}
    subprocess.run([sys.executable, str(ROOT / "examples" / f"{stem}.py"), *EXAMPLES[stem], "--out", str(out)],
                   check=True, cwd=ROOT, env=env)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stems", nargs="*", metavar="STEM",
                        help=f"the examples to draw (default all): {', '.join(EXAMPLES)}")
    parser.add_argument("--from", dest="source", type=pathlib.Path, metavar="DIR",
                        help="scale DIR/<stem>.png instead of running the examples")
    args = parser.parse_args(argv)
    unknown = [s for s in args.stems if s not in EXAMPLES]
    if unknown:
        parser.error(f"no example named {', '.join(unknown)}; choose from {', '.join(EXAMPLES)}")
    FIGURES.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for stem in args.stems or list(EXAMPLES):
            png = args.source / f"{stem}.png" if args.source else draw(stem, pathlib.Path(tmp))
            target = scale(png, FIGURES / f"{stem}.png")
            print(f"{target.relative_to(ROOT)}: {target.stat().st_size / 1024:.0f} KB")


if __name__ == "__main__":
    main()
