"""Autoencoders: reconstruct the input, then search images by the cosine similarity of codes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nnlab.checks import BadValue, check_int
from nnlab.data.images import ImageDataModule, Split
from nnlab.tasks.base import Analysis, Batch, Task


class AutoencoderTask(Task):
    """MSE between the images and their reconstructions; labels are only used to score the search.

    After testing: test images beside their reconstructions; each test image's `top_k` nearest
    training images by the cosine similarity of their codes, scored as `test/precision_at_<k>`
    (the share of neighbours with the query's label); and a figure of one query's matches.
    """

    def __init__(
        self,
        network: nn.Module | Mapping[str, Any],
        optimizer: Mapping[str, Any] | None = None,
        top_k: int = 5,
        query: int = 0,
        lr_schedule: str = "cosine",
    ) -> None:
        super().__init__(network, optimizer, lr_schedule)  # the reconstruction loss is the metric
        self.top_k = check_int("top_k", top_k, minimum=1, maximum=100)  # one row of the figure
        self.query = check_int("query", query, minimum=0)

    def setup(self, stage: str) -> None:
        """The search ranks the training images: top_k of them must exist, known before
        training rather than after it."""
        images = getattr(self.trainer.datamodule, "images", {})
        if "train" in images and self.top_k > len(images["train"].labels):
            expected = f"at most the {len(images['train'].labels)} training images it ranks"
            raise BadValue("top_k", self.top_k, expected)

    def model_step(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        images = batch[0]  # the labels only score the search, after testing
        return F.mse_loss(self.network(images), images), {}

    @torch.inference_mode()
    def analyse(self, datamodule: ImageDataModule) -> Analysis:
        from nnlab.plots import images as plots

        self.network.eval()
        device = next(self.network.parameters()).device
        test, gallery = datamodule.images["test"], datamodule.images["train"]
        shown = test.images[:8]
        inputs = datamodule.prepare(shown.to(device))
        rebuilt = self.network(inputs).squeeze(1).clamp(0, 1).cpu().numpy()
        pairs = [*(shown.cpu().numpy() / 255), *rebuilt]
        figures = {
            "reconstructions": plots.image_grid(
                pairs,
                ["input"] * len(shown) + ["reconstruction"] * len(shown),
                "Test images and reconstructions",
            )
        }
        query_codes, gallery_codes = (
            self._encode(datamodule, test),
            self._encode(datamodule, gallery),
        )
        scores, neighbours = cosine_top_k(query_codes, gallery_codes, self.top_k)
        precision = precision_at_k(test.labels.to(device), gallery.labels.to(device), neighbours)
        scores, neighbours = scores.cpu(), neighbours.cpu()
        query = min(self.query, len(test.labels) - 1)
        found = neighbours[query]
        classes = datamodule.classes
        figures["search"] = plots.image_grid(
            torch.cat([test.images[query : query + 1], gallery.images[found]]).cpu().numpy() / 255,
            [f"query: {classes[test.labels[query]]}"]
            + [
                f"{classes[gallery.labels[i]]} {s:.3f}"
                for i, s in zip(found, scores[query], strict=True)
            ],
            f"Nearest training images by cosine similarity of codes; precision@{self.top_k} "
            f"{precision:.3f}",
            columns=self.top_k + 1,
        )
        return Analysis(figures=figures, metrics={f"test/precision_at_{self.top_k}": precision})

    def _encode(self, datamodule: ImageDataModule, split: Split) -> torch.Tensor:
        size, device = datamodule.eval_batch_size, next(self.network.parameters()).device
        return torch.cat(
            [
                self.network.encode(
                    datamodule.prepare(split.images[start : start + size].to(device))
                )
                for start in range(0, len(split.labels), size)
            ]
        )


def cosine_top_k(
    queries: torch.Tensor, gallery: torch.Tensor, k: int, chunk: int = 512
) -> tuple[torch.Tensor, torch.Tensor]:
    """The `k` gallery rows most cosine-similar to each query: (scores, indices), both (n, k).

    The notebook computed the full matrix of 1,000 codes and warned that 60,000 would not fit
    (60,000^2 floats are 14 GB); queries go in chunks, so a chunk of 512 against 60,000 codes
    is a 123 MB matrix, whatever the number of queries. Rows of zeros (a ReLU code that is all
    off) have similarity 0 to everything.
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
