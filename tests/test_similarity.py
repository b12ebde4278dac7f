"""Chunked cosine search gives what the full similarity matrix gives."""

from __future__ import annotations

import torch

from nnlab.tasks.autoencoder import cosine_top_k, precision_at_k


def test_chunked_search_matches_the_full_matrix():
    generator = torch.Generator().manual_seed(0)
    queries, gallery = (
        torch.randn(37, 6, generator=generator),
        torch.randn(200, 6, generator=generator),
    )
    scores, indices = cosine_top_k(queries, gallery, k=4, chunk=5)
    full = (
        torch.nn.functional.normalize(queries, dim=1)
        @ torch.nn.functional.normalize(gallery, dim=1).T
    )
    expected = full.topk(4, dim=1)
    assert torch.equal(indices, expected.indices)
    assert torch.allclose(scores, expected.values)


def test_precision_at_k_on_a_known_case():
    # Queries along x and y; the gallery: 3 points near x (label 0), 3 near y (label 1).
    gallery = torch.tensor(
        [[1.0, 0.1], [1.0, -0.1], [1.0, 0.2], [0.1, 1.0], [-0.1, 1.0], [0.2, 1.0]]
    )
    gallery_labels = torch.tensor([0, 0, 0, 1, 1, 1])
    queries, query_labels = torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 1])
    _, indices = cosine_top_k(queries, gallery, k=4)
    # each query's 4 neighbours: its own 3, then one of the other class
    assert precision_at_k(query_labels, gallery_labels, indices) == 0.75
    _, indices = cosine_top_k(queries, gallery, k=3)
    assert precision_at_k(query_labels, gallery_labels, indices) == 1.0
