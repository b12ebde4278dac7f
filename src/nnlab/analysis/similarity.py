"""Cosine-similarity search over codes, in chunks so that memory stays bounded.

The notebook computed the full pairwise matrix of 1,000 codes and warned that 60,000 would
not fit (60,000^2 floats are 14 GB). Here queries go in chunks: a chunk of 512 against a
gallery of 60,000 is a 123 MB matrix, whatever the number of queries.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def cosine_top_k(
    queries: torch.Tensor, gallery: torch.Tensor, k: int, chunk: int = 512
) -> tuple[torch.Tensor, torch.Tensor]:
    """The `k` gallery rows most cosine-similar to each query: (scores, indices), both (n, k).

    Rows of zeros (a ReLU code that is all off) have similarity 0 to everything.
    """
    gallery = F.normalize(gallery, dim=1)
    scores, indices = [], []
    for start in range(0, len(queries), chunk):
        similarity = F.normalize(queries[start : start + chunk], dim=1) @ gallery.T
        top = similarity.topk(k, dim=1)
        scores.append(top.values)
        indices.append(top.indices)
    return torch.cat(scores), torch.cat(indices)


def precision_at_k(
    query_labels: torch.Tensor, gallery_labels: torch.Tensor, indices: torch.Tensor
) -> float:
    """The share of retrieved neighbours whose label is the query's, over all queries."""
    return float((gallery_labels[indices] == query_labels[:, None]).float().mean())
