"""Image classification: cross-entropy, accuracy, and the notebook's questions after training.

After testing it answers what the notebook left as TODOs: which classes are confused, which
test images are misclassified, and how accuracy holds up under rotations, shifts and noise.
It saves every test prediction, so `nnlab-compare` can test two runs against each other.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from nnlab.checks import BadValue, check_choice, check_float, check_int
from nnlab.data.images import ImageDataModule
from nnlab.data.perturb import KINDS, UNITS, perturb
from nnlab.tasks.base import Analysis, Batch, Task

PREDICTIONS = "test_predictions"  # test_predictions.npz in the run dir: index, target, predicted


class ImageClassifierTask(Task):
    """Logits out, cross-entropy loss, `acc` on every stage.

    `robustness` maps a perturbation (rotate, shift, noise; see nnlab.data.perturb) to the
    strengths to test; `misclassified` is how many wrong test predictions the grid shows.
    """

    def __init__(
        self,
        network: nn.Module | Mapping[str, Any],
        optimizer: Mapping[str, Any] | None = None,
        num_classes: int = 10,
        robustness: dict[str, list[float]] | None = None,
        misclassified: int = 32,
        lr_schedule: str = "cosine",
    ) -> None:
        num_classes = check_int("num_classes", num_classes, minimum=2)
        accuracy = MulticlassAccuracy(num_classes, average="micro", validate_args=False)
        super().__init__(network, optimizer, lr_schedule, {"acc": accuracy})
        self.num_classes = num_classes
        self.robustness = dict(robustness or {})
        for kind, strengths in self.robustness.items():
            check_choice("robustness", kind, KINDS)
            if not isinstance(strengths, list):
                raise BadValue(f"robustness.{kind}", strengths, "expected a list of strengths")
            for i, strength in enumerate(strengths):
                check_float(f"robustness.{kind}[{i}]", strength, above=0)
        # 32 rows of 8: a grid of thousands took minutes to draw, after training
        self.misclassified = check_int("misclassified", misclassified, minimum=0, maximum=256)

    def model_step(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        images, labels = batch
        logits = self.network(images)
        return F.cross_entropy(logits, labels), {"preds": logits.argmax(dim=-1), "target": labels}

    @torch.inference_mode()
    def analyse(self, datamodule: ImageDataModule) -> Analysis:
        from nnlab.plots import images as plots

        test = datamodule.images["test"]
        predicted = torch.cat(list(self._predict(datamodule, test.images))).cpu()
        targets = test.labels.cpu()
        confusion = torch.bincount(
            targets * self.num_classes + predicted, minlength=self.num_classes**2
        ).reshape(self.num_classes, self.num_classes)
        per_class = confusion.diag() / confusion.sum(dim=1).clamp(min=1)
        classes = datamodule.classes
        analysis = Analysis(
            breakdown={f"test/acc_class_{c}": float(a) for c, a in enumerate(per_class)},
            tables={
                "per_class": [
                    {"class": name, "test images": int(confusion[c].sum()), "accuracy": float(a)}
                    for c, (name, a) in enumerate(zip(classes, per_class, strict=True))
                ]
            },
            arrays={
                PREDICTIONS: {
                    "index": test.index.cpu().numpy(),
                    "target": targets.numpy(),
                    "predicted": predicted.numpy(),
                }
            },
        )
        analysis.figures["confusion_matrix"] = plots.confusion_matrix(confusion.numpy(), classes)
        wrong = (predicted != targets).nonzero().squeeze(1)[: self.misclassified]
        if len(wrong):
            analysis.figures["misclassified"] = plots.image_grid(
                test.images[wrong].numpy() / 255,
                [f"{classes[targets[i]]} -> {classes[predicted[i]]}" for i in wrong],
                f"Misclassified test images, true -> predicted ({len(wrong)} of "
                f"{int((predicted != targets).sum())})",
            )
        if self.robustness:
            clean = float((predicted == targets).float().mean())
            rows = self._robustness(datamodule, test.images, targets)
            analysis.tables["robustness"] = rows
            analysis.figures["robustness"] = plots.robustness(rows, clean)
            for row in rows:
                name = f"robustness/{row['perturbation']}_{row['strength']:g}"
                analysis.breakdown[name] = row["accuracy"]
        return analysis

    def _predict(
        self,
        datamodule: ImageDataModule,
        images: torch.Tensor,
        perturbation: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> Iterator[torch.Tensor]:
        """Predicted labels of uint8 images, batch by batch, optionally perturbed first."""
        self.network.eval()
        device = next(self.network.parameters()).device
        for start in range(0, len(images), datamodule.eval_batch_size):
            batch = datamodule.scale(images[start : start + datamodule.eval_batch_size].to(device))
            if perturbation is not None:
                batch = perturbation(batch)
            yield self.network(datamodule.standardize(batch)).argmax(dim=-1)

    def _robustness(
        self, datamodule: ImageDataModule, images: torch.Tensor, targets: torch.Tensor
    ) -> list[dict]:
        """Test accuracy with each perturbation at each strength."""
        rows = []
        for kind, strengths in self.robustness.items():
            for strength in strengths:
                generator = torch.Generator().manual_seed(0)  # the same noise for every run
                perturbed = partial(perturb, kind=kind, strength=strength, generator=generator)
                predicted = torch.cat(list(self._predict(datamodule, images, perturbed))).cpu()
                accuracy = float((predicted == targets).float().mean())
                rows.append(
                    {
                        "perturbation": kind,
                        "strength": float(strength),
                        "unit": UNITS[kind],
                        "accuracy": accuracy,
                    }
                )
        return rows
