"""The sections of a pipeline file that stand on their own: [model], the settings of every
stage that trains ([train], [finetune], [prune.gradual] and their l1, distill and share
tables), [export] and [verify].

    OptimConfig(epochs=3, lr=0.05, l1=L1Config(lambda_=1e-4))

Each is a frozen pydantic model that rejects unknown keys (`Section`). compress.config puts
them together into the pipeline (with [data], [prune] and [quantize], whose sections
depend on registered names) and is where they are imported from.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from compress.bits import check_widths

PositiveInt = Annotated[int, Field(gt=0)]
NonNegativeInt = Annotated[int, Field(ge=0)]
Fraction = Annotated[float, Field(ge=0.0, lt=1.0)]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, strict=True)


class ModelConfig(Section):
    name: str | None = None  # a registered model: see `compress models`
    path: str | None = None  # or a Python file ...
    class_name: str | None = Field(None, alias="class")  # ... and the nn.Module class in it
    kwargs: dict[str, Any] = Field(default_factory=dict)  # passed to the factory or class
    weights: str | None = None  # a state_dict file to start from (loaded weights_only)
    # true: load only the tensors of `weights` whose name and shape fit (a pretrained
    # backbone under a head of another class count); the rest keep their initialization.
    weights_partial: bool = False
    # true: [train] keeps the parameters loaded from `weights` fixed and trains only the
    # rest (the new head); BatchNorm statistics still follow the data, and the later
    # stages (gradual pruning, fine-tuning) train every parameter.
    freeze_loaded: bool = False

    @model_validator(mode="after")
    def _one_source(self) -> ModelConfig:
        if self.freeze_loaded and self.weights is None:
            raise ValueError("freeze_loaded freezes what `weights` loads: set weights too")
        if self.name is None and self.path is None:
            raise ValueError("set either name (a registered model) or path and class")
        if self.name is not None and (self.path is not None or self.class_name is not None):
            raise ValueError("set either name, or path and class, not both")
        if self.path is not None and self.class_name is None:
            raise ValueError("path needs class: the nn.Module class to build from that file")
        return self


GroupKind = Literal["neurons", "channels", "inputs"]


class L1Config(Section):
    lambda_: float = Field(0.0, alias="lambda", ge=0.0)  # strength of the L1 term
    # penalty: adds lambda * sum|w| to the loss. proximal: after each step, soft-threshold
    # every weight by lr * lambda, which drives small weights to exact zeros. reweighted:
    # proximal with a per-weight lambda_i = lambda / (|w_i| + eps), refreshed at the start of
    # each epoch (Candes, Wakin & Boyd's reweighted L1): small weights are cut hard, large
    # ones barely shrink, closer to counting non-zeros than plain L1.
    method: Literal["penalty", "proximal", "reweighted"] = "penalty"
    params: Literal["weights", "all"] = "weights"  # weights: skip biases
    eps: float = Field(1e-2, gt=0.0)  # reweighted: keeps lambda_i finite at w_i = 0
    # Group L1 (group lasso): instead of each weight, each structure's L2 norm, so whole
    # structures reach zero together. neurons: each Linear unit's incoming weights (a row);
    # channels: each Conv output channel's kernel; inputs: each input's outgoing weights (a
    # Linear column, a Conv input channel). One kind or a list; the output layer's units are
    # never grouped (its outputs are the classes). Proximal: zeroed groups stay zero.
    groups: GroupKind | list[GroupKind] | None = None

    @property
    def group_kinds(self) -> tuple[str, ...]:
        if self.groups is None:
            return ()
        return (self.groups,) if isinstance(self.groups, str) else tuple(dict.fromkeys(self.groups))

    @model_validator(mode="after")
    def _groups_of_weights(self) -> L1Config:
        if self.groups is not None and self.params == "all":
            raise ValueError("groups are made of weights: leave params = 'weights' with groups")
        if isinstance(self.groups, list) and not self.groups:
            raise ValueError("groups: name at least one of neurons, channels, inputs")
        if self.groups is not None and self.method == "reweighted":
            raise ValueError(
                "method = 'reweighted' weighs single weights: use penalty or proximal with groups"
            )
        return self


class DistillConfig(Section):
    """Knowledge distillation from the trained dense model (finetune and gradual prune)."""

    alpha: float = Field(0.0, ge=0.0, le=1.0)  # weight of the teacher term; 0: off
    temperature: float = Field(4.0, gt=0.0)  # softens both distributions


class OptimConfig(Section):
    """Settings shared by every stage that trains (train, finetune, gradual prune)."""

    epochs: NonNegativeInt = 0
    optimizer: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: float = Field(0.01, gt=0.0)
    momentum: float = Field(0.0, ge=0.0, lt=1.0)
    nesterov: bool = False
    weight_decay: float = Field(0.0, ge=0.0)  # L2; with l1 this is the elastic net
    schedule: Literal["constant", "cosine", "step"] = "constant"
    step_size: PositiveInt = 10  # epochs between lr drops, for schedule = "step"
    gamma: float = Field(0.1, gt=0.0, le=1.0)  # lr factor per drop, for schedule = "step"
    l1: L1Config = L1Config()
    distill: DistillConfig = DistillConfig()
    # Quantization-aware training: 0 off, or 4 / 8 to train against the per-channel
    # symmetric int4 / int8 weights that [quantize] static-int4 / static will store; 2 to 8
    # or a table by layer ({ default = 4, "fc1" = 2 }) for the packed variant's widths;
    # "quantize": each layer at the width [quantize] bits gives it.
    qat_bits: Literal["quantize"] | int | dict[str, int] = 0

    @field_validator("qat_bits")
    @classmethod
    def _qat_widths(cls, value):
        return value if value in (0, "quantize") else check_widths(value)

    @model_validator(mode="after")
    def _nesterov_needs_momentum(self) -> OptimConfig:
        if self.nesterov and (self.optimizer != "sgd" or self.momentum == 0):
            raise ValueError("nesterov needs optimizer = 'sgd' and momentum > 0")
        return self


class TrainConfig(OptimConfig):
    epochs: NonNegativeInt = 5  # 0: keep the model as built or loaded from [model] weights
    # With several training processes (compress.distributed): BatchNorm statistics over the
    # whole global batch in every training stage, not each rank's slice (CUDA only)
    sync_batchnorm: bool = False

    @model_validator(mode="after")
    def _no_teacher_yet(self) -> TrainConfig:
        if self.distill.alpha > 0:
            raise ValueError(
                "distill needs a teacher, the trained model: "
                "use it in [finetune] or [prune.gradual]"
            )
        return self


class ShareConfig(Section):
    """Trained weight sharing after fine-tuning: per layer, 2^bits - 1 k-means levels plus an
    exact zero, the assignments held and the levels trained for `epochs` at `lr` (the other
    [finetune] settings, without qat_bits)."""

    # 0: off; 2-4 is the useful range; or a table by layer: { default = 3, "fc1" = 2 }
    bits: int | dict[str, int] = 0
    epochs: NonNegativeInt = 2
    lr: float = Field(1e-4, gt=0.0)
    biases: bool = False  # biases get a codebook of their own too (small models: they weigh)

    @field_validator("bits")
    @classmethod
    def _share_widths(cls, value):
        return value if value == 0 else check_widths(value, low=1)


class FinetuneConfig(OptimConfig):
    epochs: NonNegativeInt = 2
    lr: float = Field(0.001, gt=0.0)
    share: ShareConfig = ShareConfig()


class GradualConfig(OptimConfig):
    """Training during gradual pruning: sparsity rises from `initial_amount` to the targets
    on Zhu & Gupta's cubic schedule, in `steps` pruning steps over the first `ramp` fraction
    of `epochs`; the rest of the epochs train at the final sparsity."""

    epochs: PositiveInt = 10
    lr: float = Field(0.001, gt=0.0)
    initial_amount: Fraction = 0.0
    steps: PositiveInt = 10
    ramp: float = Field(0.75, gt=0.0, le=1.0)


class ExportConfig(Section):
    # The ai.onnx opset: 17 is the lowest torch's exporter reaches (it exports at 18 and
    # converts down), and onnxruntime loads opset 17 from 1.12 on (18: 1.14, 21: 1.18).
    opset: Annotated[int, Field(ge=17, le=23)] = 17
    # The IR version each file declares. None: the lowest its opsets and tensor types allow
    # (IR 8 for opset 17 and 18; a file holding int4 weights needs 10). A number: that
    # version, or the lowest a file allows where that is higher.
    ir_version: Annotated[int, Field(ge=7, le=11)] | None = None
    # Remove the pruned model's dead units and channels before export (compress.pruning.shrink):
    # exact, so pruned.onnx is a smaller dense model that runs faster; verify still compares
    # it with the unshrunk fine-tuned model.
    shrink: bool = False
    # shrink leaves each layer a multiple of this many units, keeping (exactly) some dead
    # ones: onnxruntime's CPU convolutions run in blocks of 8 or 16 channels, so 8 suits a
    # CNN pruned by threshold or group L1 (1: every dead unit goes, the counts as they fall).
    round_to: PositiveInt = 1
    # Also export pruned-inputs.onnx, which takes only the inputs the pruned model still
    # reads (its metadata `inputs` lists them): fewer features to measure on the device.
    drop_unused_inputs: bool = False


class VerifyConfig(Section):
    threads: NonNegativeInt = 1  # intra-op threads for latency at batch 1 (0: onnxruntime's choice)
    repetitions: PositiveInt = 400  # timed runs at batch 1 per artifact (after warm-up)
    # Latency is timed for all artifacts interleaved: `rounds` rounds, each running every
    # artifact's repetitions / rounds calls in turn, so load on the machine hits them alike.
    # 40: on LeNet-5 under load, 30 reruns kept a file timed against itself within 0.99x to
    # 1.01x (20 rounds: 0.94x to 1.05x) with a 95% interval 0.05 wide (docs/methods.md).
    rounds: PositiveInt = 40
    # An artifact is flagged slower than dense when the low end of the 95% interval of its
    # latency over dense's (over the rounds, compress.latency) exceeds 1 + this margin: the
    # interval already holds the noise, so no margin is needed for that.
    slower_margin: float = Field(0.0, ge=0.0)
    throughput_batch: PositiveInt = 1000
    # measured_ram_bytes: one fresh process per artifact loads it and runs it once (about
    # 1-2 s each); false leaves it null (the estimate, ram_bytes, is always there).
    measure_ram: bool = True
    tolerance: float = Field(
        1e-4, gt=0.0
    )  # largest logit difference allowed for float exports (relative beyond |logit| 1)
    # sound: largest difference allowed between the artifact's in-graph features and the
    # PyTorch front end's, on the test clips (relative beyond |feature| 1)
    feature_tolerance: float = Field(1e-3, gt=0.0)


class BudgetConfig(Section):
    """[budget]: what a device allows; the report marks each artifact that fits (compress.budget).

    Sizes in KB of 1024 bytes, as device datasheets count them; an unset key is no limit."""

    flash_kb: float | None = Field(None, gt=0)  # the .onnx file (flash_bytes)
    ram_kb: float | None = Field(None, gt=0)  # weights held + activation peak (ram_bytes)
    activation_kb: float | None = Field(None, gt=0)  # activation peak (peak_activation_bytes)
    latency_ms: float | None = Field(None, gt=0)  # p50 at batch 1 on this machine
    latency_vs_dense: float | None = Field(None, gt=0)  # p50 / dense p50
    max_drop: float | None = Field(None, ge=0)  # validation accuracy points below dense

    @model_validator(mode="after")
    def _one_latency(self) -> BudgetConfig:
        if self.latency_ms is not None and self.latency_vs_dense is not None:
            raise ValueError("set latency_ms or latency_vs_dense, not both")
        return self


class DataCommon(Section):
    """[data]: the keys every data source has. Each source (compress.data) adds its own in a
    subclass whose `name` is a Literal of the names it reads; [data] in a pipeline file is
    validated by the named source's section."""

    # Folder the data is read from. IDX / torchvision sets: the folder holding their files
    # (None: ./data). imagefolder: the folder with train/ (and test/). csv: the folder the
    # train/test paths are taken from (None: the pipeline file's folder). Relative paths
    # are taken from the pipeline file's folder; --data-root replaces it.
    root: str | None = None
    # Missing files are downloaded into the root with torchvision; false: fail at once
    # (offline machines, tests).
    download: bool = True
    batch_size: PositiveInt = 64
    eval_batch_size: PositiveInt = 1000  # evaluation only; larger is faster, same result
    seed: int = 0
    # Fraction of the training split held out (seeded, stratified) as the validation split:
    # tune, sweep budgets and sensitivity decide on it; the test split is only reported.
    validation: Annotated[float, Field(gt=0.0, le=0.5)] = 0.1
