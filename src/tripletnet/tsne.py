"""2-D t-SNE maps of embeddings, for looking at how the classes separate.

openTSNE is used because its FFT-accelerated gradient is linear in the number of points: a
10,000 x 64 test set maps in 15-40 s on 2 CPU cores with the default 250 + 500 iterations.
scikit-learn's Barnes-Hut t-SNE is the fallback only when openTSNE cannot be imported.
"""

from __future__ import annotations

import time

import numpy as np

__all__ = ["tsne_2d"]

# From this many points the FFT gradient is used, below it Barnes-Hut. The FFT's interpolation
# grid costs about 12 s whatever the size; measured on 2 cores (openTSNE 1.0.4), FFT against
# Barnes-Hut: 90 points 12.2 / 0.2 s, 2,000 27.4 / 6.3 s, 5,000 28.6 / 23.0 s, 10,000 36.7 / 56.5 s.
FFT_FROM_POINTS = 5000


def _effective_perplexity(n: int, perplexity: float) -> float:
    # Each point needs about 3 * perplexity neighbours; tiny sets would otherwise warn or fail.
    return float(max(1.0, min(perplexity, (n - 1) / 3.0)))


def tsne_2d(
    embeddings: np.ndarray, seed: int = 0, n_jobs: int = 2, perplexity: float = 30.0
) -> tuple[np.ndarray, float]:
    """Map ``embeddings`` (n, d) to 2-D with t-SNE; return the (n, 2) points and the seconds taken.

    ``seed`` fixes the initialisation and the neighbour search. ``perplexity`` is lowered for
    very small inputs (below 3 * perplexity + 1 points) so that they still work.
    """
    x = np.asarray(embeddings, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be a 2-D array (n, d), got shape {x.shape}")
    if len(x) < 4:
        raise ValueError(f"t-SNE needs at least 4 points, got {len(x)}")
    if not np.isfinite(x).all():
        raise ValueError("embeddings contain NaN or infinity")
    perplexity = _effective_perplexity(len(x), perplexity)

    started = time.perf_counter()
    try:
        from openTSNE import TSNE as OpenTSNE
    except ImportError:
        from sklearn.manifold import TSNE as SklearnTSNE

        points = SklearnTSNE(
            n_components=2, perplexity=perplexity, init="pca", random_state=seed, n_jobs=n_jobs
        ).fit_transform(x)
    else:
        points = OpenTSNE(
            n_components=2,
            perplexity=perplexity,
            # Explicitly: openTSNE's "auto" keeps Barnes-Hut up to 10,000 points, past the crossover.
            negative_gradient_method="fft" if len(x) >= FFT_FROM_POINTS else "bh",
            n_jobs=n_jobs,
            random_state=seed,
            verbose=False,
        ).fit(x)
    seconds = time.perf_counter() - started
    # Plain ndarray: openTSNE's TSNEEmbedding keeps the affinity matrix alive through its attributes.
    return np.array(points, dtype=np.float64), seconds
