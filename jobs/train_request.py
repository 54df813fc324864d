"""What a training run is asked for and what it gives back, and how its data can fail it.

Cheap to import: the `precompute train` command builds a `TrainRequest` before anything loads
scikit-learn (`jobs.fitting` does).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from jobs.model_kinds import ModelKind, Task
from precompute.errors import PrecomputeError
from precompute.names import CHALLENGER

if TYPE_CHECKING:
    from jobs.registry import ModelVersion


class TrainingDataError(PrecomputeError):
    """The training data does not meet the contract, or cannot train this model."""


@dataclass(frozen=True)
class TrainRequest:
    model: str
    dataset: str
    kind: ModelKind
    input_path: str | None = None
    table: str | None = None
    table_version: int | None = None
    contract_version: int | None = None
    task: Task | None = None
    params: dict[str, Any] = field(default_factory=dict)
    validation_share: float = 0.2
    seed: int = 42
    aliases: tuple[str, ...] = (CHALLENGER,)  # where a new version lands unless asked otherwise
    description: str = ""


@dataclass(frozen=True)
class TrainResult:
    version: ModelVersion
    rows_train: int
    rows_validation: int
    parity_max_diff: float

    def summary(self) -> str:
        metrics = ", ".join(
            f"{k} {v:.4f}" for k, v in self.version.metrics.items() if isinstance(v, float)
        )
        aliases = f" [{', '.join(self.version.aliases)}]" if self.version.aliases else ""
        return (
            f"registered {self.version.label}{aliases} ({self.version.model_kind}): "
            f"{self.rows_train} training rows, {self.rows_validation} validation rows; {metrics}; "
            f"runtime parity {self.parity_max_diff:.1e}; bundle {self.version.bundle_uri}"
        )
