"""The one way fnn's figures reach a PNG: matplotlib on the Agg backend (no
display needed), imported only when a figure is asked for, and saved at one dpi."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["pyplot", "save"]


def pyplot(where: str) -> Any:
    """``matplotlib.pyplot`` on the Agg backend, or an ImportError naming ``where`` and the extra."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:  # pragma: no cover - matplotlib is a test dependency
        raise ImportError(f"{where} needs matplotlib: pip install 'fnn[plot]'") from err
    return plt


def save(fig: Any, path: str | Path) -> Path:
    """Write ``fig`` to ``path`` as a PNG (100 dpi), close it, and return the path."""
    import matplotlib.pyplot as plt

    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
