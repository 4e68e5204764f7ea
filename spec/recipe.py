"""Pydantic models of an xcompile recipe.

Defaults follow Gao et al. 2025, "Weight-sparse transformers have interpretable circuits"
(see method.md in the design notes); every number there is a field here. Models are strict:
unknown keys are errors, strings are never coerced to numbers, NaN and infinity are refused.
"""

from __future__ import annotations

import difflib
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from spec.corpora import corpus_exists
from spec.groundtruth import SHAPES, Shape
from spec.stages import Stage
from spec.tasks import TASK_ANSWERS
from spec.units import Count, Minutes

NAME_PATTERN = r"^[a-z0-9_-]+$"
# The stages whose jobs run as several cooperating processes (data-parallel training,
# runtime/training/distributed.py); every other job kind is one process that writes its
# folder alone.
MULTI_PROCESS_STAGES = frozenset({"train"})


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, frozen=True)


Loc = tuple[str | int, ...]


def field_errors(model: BaseModel, errors: list[tuple[Loc, str]]) -> ValidationError:
    """Errors of a cross-field check, each at the field it names, so the loader reports it at
    that field's line instead of the first key of the section."""
    return ValidationError.from_exception_data(type(model).__name__, [
        InitErrorDetails(type=PydanticCustomError("value_error", "{message}", {"message": text}),
                         loc=loc, input=None)
        for loc, text in errors
    ])


def field_error(model: BaseModel, message: str, *locs: Loc) -> ValidationError:
    """One cross-field error at the first of ``locs`` the recipe set (the value the user chose,
    hence the one to change), else at the first."""
    loc = next((loc for loc in locs if loc[0] in model.model_fields_set), locs[0])
    return field_errors(model, [(loc, message)])


class DataSpec(StrictModel):
    """The pretraining corpus and its tokenizer."""

    corpus: str = Field(
        "stdlib",
        description="'stdlib' (this Python's standard-library sources), 'synthetic' (generated "
        "simple Python programs), a folder or glob of .py files, or a .txt/.jsonl file.",
    )
    max_bytes: Count | None = Field(
        None, gt=0, description="Use at most this many bytes of the corpus (e.g. 8M); all if unset."
    )
    heldout_fraction: float = Field(0.05, gt=0, lt=0.5, description="Fraction of files held out.")
    vocab_size: int = Field(2048, ge=260, le=65535, description="BPE vocabulary size.")
    context: int = Field(256, ge=8, le=8192, description="Sequence length in tokens.")

    @field_validator("corpus")
    @classmethod
    def _corpus_exists(cls, corpus: str) -> str:
        if not corpus_exists(corpus):
            raise ValueError(f"corpus path not found: {corpus}")
        return corpus


class ModelSpec(StrictModel):
    """A GPT-2-style pre-norm decoder (method §1)."""

    n_layer: int = Field(8, ge=1, le=128)
    d_model: int = Field(256, ge=8)
    d_head: int = Field(16, ge=1)
    d_mlp: int | None = Field(None, ge=1, description="MLP width; 4·d_model when unset.")
    afrac: float = Field(
        0.25, gt=0, le=1, description="Fraction of activations AbsTopK keeps at each node site."
    )
    attention_sink: bool = False
    pos_emb: Literal["none", "learned"] = "none"
    bigram: bool = Field(False, description="Add a dense vocab×vocab bigram table to the logits.")
    final_topk: bool = Field(
        False, description="AbsTopK after the final norm too (the paper has none there)."
    )

    @model_validator(mode="after")
    def _heads_divide_width(self) -> ModelSpec:
        if self.d_model % self.d_head:
            raise field_error(
                self, f"d_model ({self.d_model}) must be a multiple of d_head ({self.d_head})",
                ("d_model",), ("d_head",),
            )
        return self

    @property
    def mlp_width(self) -> int:
        return self.d_mlp if self.d_mlp is not None else 4 * self.d_model


class TrainSpec(StrictModel):
    """Next-token pretraining with Adam (method §2)."""

    tokens: Count = Field(2_000_000, gt=0, description="Training tokens, e.g. 2M or 1.5B.")
    batch_size: int = Field(16, ge=1, description="Sequences per optimizer step.")
    lr: float = Field(0.01, gt=0, le=10)
    warmup: float = Field(0.01, ge=0, lt=1, description="Linear warmup, fraction of training.")
    weight_decay: float = Field(0.1, ge=0)
    eps: float = Field(0.1, gt=0, description="Adam epsilon (the paper uses a large 0.1).")
    betas: list[float] = Field([0.9, 0.95], min_length=2, max_length=2)
    grad_rms_norm: bool = Field(True, description="Divide the gradient by its global RMS.")
    eval_every: int = Field(100, ge=1, description="Steps between held-out evaluations.")
    eval_tokens: Count = Field(65536, gt=0, description="Held-out tokens per evaluation.")
    checkpoint_every: int = Field(200, ge=1, description="Steps between checkpoints.")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    compile: bool = Field(
        False, description="torch.compile the training forward/backward (for GPUs; the first "
        "step pays a compile of a minute or more)."
    )

    @field_validator("betas")
    @classmethod
    def _betas_in_unit_interval(cls, betas: list[float]) -> list[float]:
        if not all(0 <= beta < 1 for beta in betas):
            raise ValueError(f"betas must lie in [0, 1), got {betas}")
        return betas


class AnnealSpec(StrictModel):
    """How the kept fraction goes from 1.0 (dense) to the target over training progress."""

    curve: Literal["linear", "cosine", "exponential", "step", "points"] = "linear"
    start: float = Field(0.01, ge=0, le=1, description="Progress at which annealing starts.")
    end: float = Field(0.5, ge=0, le=1, description="Progress at which the target is reached.")
    n_steps: int = Field(4, ge=1, description="Number of drops for the 'step' curve.")
    points: list[list[float]] | None = Field(
        None, description="For curve 'points': [[progress, kept_fraction], ...], piecewise linear."
    )

    @model_validator(mode="before")
    @classmethod
    def _points_imply_curve(cls, data: Any) -> Any:
        if isinstance(data, dict) and "points" in data and "curve" not in data:
            return {**data, "curve": "points"}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> AnnealSpec:
        if self.curve == "points":
            if not self.points:
                raise field_error(self, "curve 'points' needs a non-empty points list",
                                  ("points",), ("curve",))
            for index, point in enumerate(self.points):
                if len(point) != 2 or not (0 <= point[0] <= 1 and 0 < point[1] <= 1):
                    raise field_error(
                        self, f"each point is [progress in 0..1, kept fraction in (0, 1]], got "
                        f"{point}", ("points", index))
            for index in range(1, len(self.points)):
                if self.points[index][0] <= self.points[index - 1][0]:
                    raise field_error(self, "points must have strictly increasing progress",
                                      ("points", index))
        elif self.points is not None:
            raise field_error(self, f"points given but curve is {self.curve!r}; use curve: "
                              "points", ("curve",), ("points",))
        elif self.start >= self.end:
            raise field_error(self, f"anneal start ({self.start}) must be before end "
                              f"({self.end})", ("start",), ("end",))
        return self


class SparsitySpec(StrictModel):
    """Weight sparsity: the fraction of each tensor kept at the end of training (method §2)."""

    target: float = Field(0.05, gt=0, le=1, description="Kept fraction at the end; 1.0 is dense.")
    min_per_neuron: int = Field(
        4, ge=0, description="Never leave an MLP neuron or attention channel with fewer nonzero "
        "incoming or outgoing weights; capped per tensor so that it keeps its target."
    )
    anneal: AnnealSpec = AnnealSpec()

    @property
    def dense(self) -> bool:
        return self.target >= 1.0


def _known_task(name: str) -> str:
    if name not in TASK_ANSWERS:
        close = difflib.get_close_matches(name, list(TASK_ANSWERS), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown task {name!r}{hint} (see `xcompile tasks`)")
    return name


TaskName = Annotated[str, AfterValidator(_known_task)]


def _unique_seeds(seeds: int | list[int] | None) -> int | list[int] | None:
    if isinstance(seeds, list) and len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds are listed more than once: {seeds}")
    return seeds


# `seeds: 3` (replicates from the base seed on) or `seeds: [0, 7, 42]` (exactly these).
Seeds = Annotated[
    Annotated[int, Field(ge=1, le=1000)] | Annotated[list[Annotated[int, Field(ge=0)]],
                                                     Field(min_length=1, max_length=1000)]
    | None,
    AfterValidator(_unique_seeds),
]


def seed_list(base: int, seeds: int | list[int] | None) -> list[int]:
    """The replicate seeds: just ``base`` when unset, ``base … base+n-1`` for a count."""
    if seeds is None:
        return [base]
    if isinstance(seeds, int):
        return list(range(base, base + seeds))
    return list(seeds)


# Controls (issue 12): extra jobs that show whether a circuit size means anything. See
# compiler/plan.py for the jobs each one adds and results/replicates.py for the flagging rule.
Control = Literal["random_init", "shuffled_task", "dense_baseline"]


def _log_range(bounds: list[float]) -> list[float]:
    if not 0 < bounds[0] < bounds[1]:
        raise ValueError(f"want [low, high] with 0 < low < high, got {bounds}")
    return bounds


LogRange = Annotated[list[float], Field(min_length=2, max_length=2), AfterValidator(_log_range)]


class SearchSpec(StrictModel):
    """Pruning hyperparameter search per model × task (the paper ran CARBS; method §4).

    Trial 0 uses the prune block's own ``k_coef``, ``lr`` and ``temperature``; the others are a
    seeded scrambled-Sobol sample of the ranges below, log-uniform. All trials are optimised
    together in one batched pass over the frozen model; the reported circuit is the one with the
    fewest edges among those that meet the threshold, and every trial lands in ``prune_trials``.
    """

    trials: int = Field(8, ge=1, le=256, description="Settings tried per task; 1 = no search.")
    k_coef: LogRange = Field([1e-5, 1e-2], description="Range of the per-node penalty.")
    lr: LogRange = Field([1e-3, 1e-2], description="Range of the mask learning rate.")
    temperature: LogRange = Field([0.5, 2.0], description="Range of the surrogate temperature.")


class PruneSpec(StrictModel):
    """Circuit pruning per task (method §4)."""

    tasks: list[TaskName] = Field(["single_double_quote", "bracket_counting"], min_length=1)
    loss_threshold: float = Field(0.15, gt=0, description="Target task loss of the circuit.")
    ablation: Literal["mean", "zero"] = "mean"
    k_coef: float = Field(1e-4, ge=0, description="Penalty per node left on.")
    temperature: float = Field(1.0, gt=0, description="Sigmoid temperature of the surrogate.")
    steps: int = Field(2000, ge=1)
    lr: float = Field(3e-3, gt=0)
    batch_size: int = Field(64, ge=1, description="Pairs per pruning step.")
    train_pairs: int = Field(2048, ge=1)
    heldout_pairs: int = Field(512, ge=1)
    test_pairs: int = Field(
        512, ge=1, description="Third split (never used to choose the circuit) on which "
        "sufficiency, necessity, the random-circuit baseline and KL are measured.")
    mean_tokens: Count = Field(262144, gt=0, description="Tokens for the mean-ablation means.")
    calibrate: bool = Field(
        True, description="Fit a scale and per-answer shift of the final logits (16 LBFGS steps, "
        "on training pairs) before judging each circuit's loss, as the paper does.")
    freeze_norms: bool = Field(
        False, description="Hold every RMSNorm's scale at the full model's value while pruning, "
        "so a circuit cannot change the loss by rescaling through the norm.")
    silent_zero: bool = Field(
        False, description="Ablate nodes that never fire on the task's prompts to zero, not to "
        "their pretraining mean (removes the mean-injection effect; not the paper's).")
    settle_steps: int = Field(
        100, ge=0, description="Stop a trial once no mask sign has changed for this many steps "
        "(after warmup); 0 runs every step.")
    search: SearchSpec = SearchSpec()
    seeds: Seeds = Field(
        None, description="Pruning replicates per model (mask init and pair sampling): a count, "
        "seeded from the model's seed on, or a list of seeds; one (the model's seed) if unset.",
    )

    @model_validator(mode="after")
    def _unique(self) -> PruneSpec:
        # At each repeat, not at the list: the line to delete.
        errors: list[tuple[Loc, str]] = [
            (("tasks", index), f"task {task!r} is listed more than once")
            for index, task in enumerate(self.tasks) if task in self.tasks[:index]
        ]
        if errors:
            raise field_errors(self, errors)
        return self


class GroundTruthSpec(StrictModel):
    """The ground-truth suite (issue 12): models with a planted circuit of known nodes
    (runtime/pruning/groundtruth.py), pruned with the recipe's ``prune`` block, so that node
    precision and recall say whether a pruning setting finds circuits that are there. One
    ``groundtruth`` job per shape, prune configuration (sweep point) and pruning seed; at
    ``prune.loss_threshold`` if the recipe sets it, else at the suite's threshold (0.1)."""

    shapes: list[Shape] = Field(list(SHAPES), min_length=1,
                                description="Planted shapes to prune; all by default.")
    only: bool = Field(
        False, description="Run only the suite: no tokenize, train, stats or prune jobs of real "
        "models (data, model, train and sparsity are then unused).")

    @field_validator("shapes")
    @classmethod
    def _unique_shapes(cls, shapes: list[str]) -> list[str]:
        if len(set(shapes)) != len(shapes):
            raise ValueError(f"shapes are listed more than once: {shapes}")
        return shapes


class SlurmStage(StrictModel):
    """SLURM options; any left unset fall back to the recipe-wide slurm block."""

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time: Minutes | None = Field(None, gt=0, description="Wall-time limit, e.g. 4h or 30min.")
    nodes: int | None = Field(
        None, ge=1, description="Nodes per job; more than one only for train (recipe-wide value: "
        "train only).",
    )
    gpus_per_node: int | None = Field(None, ge=0)
    tasks_per_node: int | None = Field(
        None, ge=1, description="Processes per node of a train job (data-parallel ranks); "
        "default: gpus_per_node when that is above 1, else 1. The recipe-wide value applies to "
        "the train stage only: other stages always run one process.",
    )
    cpus_per_task: int | None = Field(None, ge=1)
    mem: str | None = Field(None, pattern=r"^[0-9]+[KMGT]?$", description="e.g. 64G")
    constraint: str | None = None
    array_parallelism: int | None = Field(None, ge=1)
    setup: list[str] | None = Field(None, description="Shell lines run before each job.")
    additional: dict[str, str | int] | None = None


class SlurmSpec(SlurmStage):
    stages: dict[Stage, SlurmStage] = {}

    @model_validator(mode="after")
    def _one_process_outside_training(self) -> SlurmSpec:
        # A stats or prune job run as several tasks would be several copies of it racing on its
        # folder.
        errors: list[tuple[Loc, str]] = [
            (("stages", kind, name), f"only the train stage runs several processes; {kind} jobs "
             "run one (use 1 or leave it unset)")
            for kind, stage in self.stages.items() if kind not in MULTI_PROCESS_STAGES
            for name in ("nodes", "tasks_per_node")
            if (value := getattr(stage, name)) is not None and value > 1
        ]
        if errors:
            raise field_errors(self, errors)
        return self


class ResourcesSpec(StrictModel):
    backend: Literal["local", "slurm"] = "local"
    slurm: SlurmSpec | None = None


class Recipe(StrictModel):
    """One experiment: data, model, training, sparsity, pruning, sweeps and where to run."""

    name: str = Field(pattern=NAME_PATTERN, max_length=64)
    description: str = ""
    extends: str | None = Field(None, description="A base recipe, deep-merged under this one.")
    seed: int = Field(0, ge=0)
    seeds: Seeds = Field(
        None, description="Model replicates of every sweep point (each its own train, stats and "
        "prune jobs; the tokenizer shared): a count, seeded from `seed` on, or a list of seeds.",
    )
    controls: list[Control] = Field(
        [], description="Control jobs: random_init (the same architecture untrained, pruned the "
        "same way), shuffled_task (each task's answers assigned at random per pair, pruned on "
        "the trained model), dense_baseline (a dense model of each sparse point's shape).",
    )
    data: DataSpec = DataSpec()
    model: ModelSpec = ModelSpec()
    train: TrainSpec = TrainSpec()
    sparsity: SparsitySpec = SparsitySpec()
    prune: PruneSpec = PruneSpec()
    groundtruth: GroundTruthSpec | None = Field(
        None, description="The planted-circuit suite: checks the prune block on models whose "
        "circuit is known; `{}` for every shape.")
    sweep: dict[str, Any] = Field(
        {},
        description="Grid over dotted paths, e.g. {sparsity.target: [1.0, 0.05]}; "
        "'zip: [{a: [...], b: [...]}]' varies paths together.",
    )
    resources: ResourcesSpec = ResourcesSpec()

    @field_validator("controls")
    @classmethod
    def _unique_controls(cls, controls: list[str]) -> list[str]:
        if len(set(controls)) != len(controls):
            raise ValueError("controls are listed more than once")
        return controls

    @property
    def model_seeds(self) -> list[int]:
        return seed_list(self.seed, self.seeds)
