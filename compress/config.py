"""The pipeline file: a typed, validated description of one compression run.

    config = load_pipeline("pipelines/mnist.toml")   # raises ConfigError on any mistake
    config.train.epochs, config.prune.method, ...

Every section is a frozen pydantic model that rejects unknown keys; the whole file is
checked before any work starts. Values are literals only: nothing in the file is executed
(a user model `path` is imported, by design, when the run builds the model).
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    Field,
    SerializeAsAny,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from compress.bits import MAX_BITS, MIN_BITS, check_widths
from compress.errors import CompressError, ConfigError, closest
from compress.files import NAME_RULE, is_plain_name
from compress.sections import (  # the sections that stand alone, imported from here too
    BudgetConfig,
    DataCommon,
    DistillConfig,
    ExportConfig,
    FinetuneConfig,
    Fraction,
    GradualConfig,
    GroupKind,
    L1Config,
    ModelConfig,
    NonNegativeInt,
    OptimConfig,
    PositiveInt,
    Section,
    ShareConfig,
    TrainConfig,
    VerifyConfig,
)

__all__ = [
    "BudgetConfig",
    "DataCommon",
    "DistillConfig",
    "ExportConfig",
    "FinetuneConfig",
    "Fraction",
    "GradualConfig",
    "GroupKind",
    "L1Config",
    "LayerPrune",
    "ModelConfig",
    "NonNegativeInt",
    "OptimConfig",
    "AutoBitsConfig",
    "PackedConfig",
    "PipelineConfig",
    "PositiveInt",
    "PruneConfig",
    "QuantizeConfig",
    "Section",
    "ShareConfig",
    "TrainConfig",
    "VerifyConfig",
    "data_section",
    "ignored_by",
    "load_pipeline",
    "parse_pipeline",
    "prune_section",
]


DEFAULT_DATA_SOURCE = "mnist"


def data_source(name: Any):
    """The registered data source `name`. Sources live a floor above (compress.data), each
    with its [data] section beside its loader, and register there by name, as pruning
    methods do."""
    from compress.data.registry import get_source

    return get_source(name)


def data_section(data: Any) -> DataCommon:
    """[data] as a dict -> the named source's section (pydantic reports its errors in place)."""
    if isinstance(data, DataCommon):
        return data
    if not isinstance(data, dict):
        raise PydanticCustomError("dict_type", "Input should be a valid dictionary")
    name = data.get("name", DEFAULT_DATA_SOURCE)
    try:
        section = data_source(name).Config
    except CompressError as exc:  # reported at data.name
        error = PydanticCustomError(
            "unknown_data_source", str(exc).replace("{", "{{").replace("}", "}}")
        )
        raise ValidationError.from_exception_data(
            "DataCommon", [{"type": error, "loc": ("name",), "input": name}]
        ) from None
    return section.model_validate(data)


class LayerPrune(Section):
    amount: Fraction | None = None
    threshold: float | None = Field(None, ge=0.0)
    kl_weight: float | None = Field(None, gt=0.0)


DEFAULT_PRUNE_METHOD = "threshold"


def pruning_method(name: str):
    """The registered pruning method `name`. Methods live a floor above (compress.pruning)
    and register there by name, as models do; [prune] is validated by the method's section."""
    from compress.pruning.registry import get_method

    return get_method(name)


class PruneConfig(Section):
    """[prune]: what every method shares. Each method (compress.pruning) adds its settings in
    a subclass keyed by `method`; `PruneConfig(method="magnitude", amount=0.9)` builds that
    method's section, and so does [prune] in a pipeline file."""

    enabled: bool = True
    # A registered pruning method (`compress methods`): threshold removes weights with
    # |w| <= threshold (the near-zero weights left by L1); magnitude removes the `amount`
    # fraction of smallest-magnitude weights.
    method: str = DEFAULT_PRUNE_METHOD
    layers: list[str] | None = None  # module names to prune; None: every Linear and Conv
    overrides: dict[str, LayerPrune] = Field(default_factory=dict)  # per-layer amount/threshold
    # After the method's masks, keep only the k inputs (features, pixels or channels) whose
    # first-layer weights have the largest L2 norm; mask the others' (compress.pruning.inputs).
    keep_inputs: PositiveInt | None = None
    # oneshot: prune once, then [finetune]. gradual: prune while training ([prune.gradual]).
    schedule: Literal["oneshot", "gradual"] = "oneshot"
    gradual: GradualConfig = GradualConfig()

    def __new__(cls, *args: Any, **data: Any) -> PruneConfig:
        if cls is PruneConfig:  # the base stands for the union: build the named method's section
            cls = pruning_method(data.get("method", DEFAULT_PRUNE_METHOD)).Config
        return super().__new__(cls)

    @model_validator(mode="after")
    def _rules(self) -> PruneConfig:
        method = pruning_method(self.method)
        if self.schedule == "gradual" and not method.fraction:
            gradual = [repr(n) for n, m in _methods().items() if m.fraction]
            raise ValueError(f"schedule = 'gradual' needs method = {' or '.join(gradual)}")
        for layer, override in self.overrides.items():
            if getattr(override, method.strength, None) is None:
                raise ValueError(
                    f"overrides.{layer} needs {method.strength} for method = {self.method!r}"
                )
        return self


def _methods() -> dict:
    from compress.pruning.registry import list_methods

    return list_methods()


def prune_section(data: Any) -> Any:
    """[prune] as a dict -> the named method's section (pydantic reports its errors in place)."""
    if not isinstance(data, dict):
        return data
    method = data.get("method", DEFAULT_PRUNE_METHOD)
    try:
        section = pruning_method(method).Config
    except CompressError as exc:  # reported at prune.method, like any wrong value
        error = PydanticCustomError(
            "unknown_method", str(exc).replace("{", "{{").replace("}", "}}")
        )
        raise ValidationError.from_exception_data(
            "PruneConfig", [{"type": error, "loc": ("method",), "input": method}]
        ) from None
    return section.model_validate(data)


def quantize_variant(name: str):
    """The registered variant `name`. Variants live a floor above (compress.variants) and
    register there by name, as pruning methods do."""
    from compress.variants.registry import get_variant

    return get_variant(name)


def _known_variant(name: str) -> str:
    try:
        quantize_variant(name)
    except CompressError as exc:  # reported at quantize.variants.<i>, like any wrong value
        raise PydanticCustomError(
            "unknown_variant", str(exc).replace("{", "{{").replace("}", "}}")
        ) from None
    return name


# A registered variant (compress.variants): dynamic | static | static-int4 | packed-int4 | codebook.
QuantVariant = Annotated[str, AfterValidator(_known_variant)]


class PackedConfig(Section):
    """How `packed-int4` stores and runs its weights (compress/encode/packed.py)."""

    # float32 keeps the QDQ model's exact scales; float16 halves them (a few hundred bytes).
    scales: Literal["float32", "float16"] = "float32"
    # float: drop activation quantize/dequantize pairs, so each call is the dense float
    # kernels (dense speed); int8: keep them, logits bit-identical to static-int4's (slower).
    activations: Literal["float", "int8"] = "float"
    # float: MatMul on the rebuilt float weight; matmulnbits: Linear layers run as
    # com.microsoft.MatMulNBits (4-bit blocks of 32, accuracy_level 4: int8 activations
    # inside the kernel), fed by the same packed codes. Needs activations = "float".
    linear: Literal["float", "matmulnbits"] = "float"


class AutoBitsConfig(Section):
    """How `bits = "auto"` chooses each layer's width (compress.analysis.allocate): the
    smallest file whose validation accuracy stays within `max_drop` points of the float
    model's."""

    max_drop: float = Field(0.1, ge=0.0)  # points of validation accuracy
    candidates: list[Annotated[int, Field(ge=MIN_BITS, le=MAX_BITS)]] = Field(
        default_factory=lambda: [2, 3, 4, 5, 6, 8], min_length=1
    )

    @field_validator("candidates")
    @classmethod
    def _sorted(cls, value: list[int]) -> list[int]:
        return sorted(set(value))


class QuantizeConfig(Section):
    # dynamic: int8 weights, activations quantized at run time (onnxruntime quantize_dynamic).
    # static: int8 weights and activations, QDQ, calibrated on training images.
    # static-int4: like static with 4-bit weights (QDQ, onnxruntime >= 1.20).
    # packed-int4: static-int4's codes and scales stored as non-zero positions + codes,
    # rebuilt into float weights when the session loads: the smallest file, at dense speed.
    # packed: the same at each layer's width ([quantize] bits), codes of 2-8 bits.
    # codebook: the weight-shared model ([finetune] share) stored as codes + codebook per
    # layer, rebuilt at load by ops onnxruntime folds (compress.encode.codebook).
    variants: list[QuantVariant] = Field(default_factory=lambda: ["dynamic", "static"])
    # Layer types the dynamic variant quantizes. onnxruntime's dynamic int8 convolution
    # (ConvInteger) is several times slower than its float Conv at small batch, so Conv
    # stays float unless asked for.
    dynamic_op_types: list[Literal["MatMul", "Gemm", "Conv"]] = Field(
        default_factory=lambda: ["MatMul", "Gemm"], min_length=1
    )
    packed: PackedConfig = PackedConfig()
    # packed: each layer's weight width, 2 to 8 bits: one for all, a table by the model's
    # module names ({ default = 4, "conv1" = 8, "fc1" = 2 }) or "auto" (chosen on the
    # validation split within [quantize] auto's budget). packed-int4 is 4 everywhere.
    bits: Literal["auto"] | int | dict[str, int] = 4
    auto: AutoBitsConfig = AutoBitsConfig()
    # which float model to quantize; "pruned-inputs": the pruned model on its used inputs
    # only ([export] drop_unused_inputs), so the int8 files take only those too
    source: Literal["pruned", "dense", "pruned-inputs"] = "pruned"
    per_channel: bool = True  # one scale per output channel (static variants)
    calibration_samples: PositiveInt = 512  # training images used to calibrate static
    calibration_method: Literal["minmax", "entropy", "percentile"] = "minmax"
    # Which layers static and static-int4 quantize. "all": every Conv, MatMul and Gemm.
    # "faster": each is first timed alone in float and in int8 on this machine ([verify]
    # threads) and only those whose int8 kernel is clearly faster (the 95% interval of
    # int8 / float below 1) are quantized; the others stay float. The whole file is then
    # timed against float and against int8 on all layers, and gives way to the faster when
    # clearly slower. The tables go into the file's int8_layers and int8_check metadata and
    # the quantize stage's JSON. onnxruntime's int8 kernels are often slower than float on
    # small convolutions at batch 1 (docs/methods.md, "int8 only where it is faster").
    static_layers: Literal["all", "faster"] = "all"

    @field_validator("bits")
    @classmethod
    def _widths(cls, value):
        return value if value == "auto" else check_widths(value)


class PipelineConfig(Section):
    name: str = (
        "pipeline"  # the run folder's name, runs/<name>: a plain name (NAME_RULE), not a path
    )
    description: str = ""
    data: SerializeAsAny[DataCommon] = Field(default_factory=lambda: data_section({}))
    model: ModelConfig = ModelConfig(name="simplenet")
    train: TrainConfig = TrainConfig()
    prune: SerializeAsAny[PruneConfig] = Field(default_factory=lambda: PruneConfig())
    finetune: FinetuneConfig = FinetuneConfig()
    quantize: QuantizeConfig = QuantizeConfig()
    export: ExportConfig = ExportConfig()
    verify: VerifyConfig = VerifyConfig()
    budget: BudgetConfig = BudgetConfig()  # the device's limits (compress.budget); none: no check
    # `compress sweep` only (run ignores it): dotted key -> the values to try, e.g.
    # "prune.threshold" = [1e-3, 3e-3]; every combination is one variant.
    sweep: dict[str, Annotated[list[Any], Field(min_length=1)]] = Field(default_factory=dict)
    # `compress search` only (run ignores it): dotted key -> the space to search, e.g.
    # "train.l1.lambda" = "log(1e-5, 1e-3)", "prune.threshold" = "(0.005, 0.08)" or a list
    # of choices; checked by `compress search` (compress/analysis/search.py).
    search: dict[str, str | list[Any]] = Field(default_factory=dict)
    # Folder of the pipeline file: relative paths in it are taken from there.
    base_dir: str = Field(".", exclude=True)

    @field_validator("name")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        if not is_plain_name(value):
            raise ValueError(
                f"{value!r} is not a plain name ({NAME_RULE}): it names the run folder runs/<name>"
            )
        return value

    @model_validator(mode="after")
    def _codebook_needs_sharing(self) -> PipelineConfig:
        if "codebook" in self.quantize.variants:
            if self.finetune.share.bits == 0:
                raise ValueError(
                    "quantize variant 'codebook' needs [finetune] share.bits (2-4): "
                    "the levels it stores"
                )
            if self.quantize.source != "pruned":
                raise ValueError(
                    "quantize variant 'codebook' stores the weight-shared model: "
                    "it needs source = 'pruned'"
                )
        return self

    @model_validator(mode="before")
    @classmethod
    def _qat_at_the_quantize_widths(cls, data: Any) -> Any:
        # qat_bits = "quantize": the widths [quantize] bits gives each layer, written out.
        if not isinstance(data, dict):
            return data
        quantize = data.get("quantize")
        bits = quantize.get("bits", 4) if isinstance(quantize, dict) else 4
        for key in ("train", "finetune", "prune.gradual"):
            *parents, last = key.split(".")
            holder = data.get(parents[0]) if parents else data
            section = holder.get(last) if isinstance(holder, dict) else None
            if not isinstance(section, dict) or section.get("qat_bits") != "quantize":
                continue
            if bits == "auto":
                if key == "finetune":  # chosen by the finetune stage, before it trains
                    continue
                raise ValueError(
                    f"{key}.qat_bits = 'quantize' takes the widths of [quantize] bits, which "
                    "is 'auto' (chosen on the pruned model, before fine-tuning): only "
                    "[finetune] can train at them; give this qat_bits a width"
                )
            resolved = {**section, "qat_bits": bits}
            data = {
                **data,
                **({parents[0]: {**holder, last: resolved}} if parents else {last: resolved}),
            }
        return data

    @model_validator(mode="after")
    def _reduced_source_is_exported(self) -> PipelineConfig:
        if self.quantize.source == "pruned-inputs" and not self.export.drop_unused_inputs:
            raise ValueError(
                "quantize.source = 'pruned-inputs' needs [export] drop_unused_inputs = true"
            )
        return self

    @field_validator("data", mode="wrap")
    @classmethod
    def _data_source_section(cls, value: Any, handler: Any) -> DataCommon:
        return data_section(value)

    @field_validator("prune", mode="wrap")
    @classmethod
    def _prune_method_section(cls, value: Any, handler: Any) -> PruneConfig:
        return prune_section(value) if isinstance(value, dict) else handler(value)

    def resolve(self, relative: str | None) -> Path | None:
        if relative is None:
            return None
        path = Path(relative).expanduser()
        return path if path.is_absolute() else Path(self.base_dir) / path

    def with_overrides(self, overrides: dict[str, Any]) -> PipelineConfig:
        """A copy with dotted keys replaced, e.g. {"prune.threshold": 3e-3}; validated."""
        data = self.model_dump(by_alias=True, exclude_unset=True)
        for dotted, value in overrides.items():
            node = data
            *parents, last = dotted.split(".")
            for key in parents:
                node = node.setdefault(key, {})
                if not isinstance(node, dict):
                    raise ConfigError(f"{dotted}: {key} is not a section")
            node[last] = value
        return parse_pipeline(data, name=self.name, base_dir=self.base_dir)


_TRAINING_SECTIONS = ("train", "finetune", "prune.gradual")


def ignored_by(config: PipelineConfig, dotted: str) -> str | None:
    """Why `config` makes no use of the setting `dotted` (e.g. prune.amount on a threshold
    pipeline), or None when it uses it. Sweeps and tunes refuse to vary such a setting:
    every variant would be the same run."""
    prune = config.prune
    section, _, key = dotted.rpartition(".")
    if dotted.startswith("prune.") and not prune.enabled:
        return "prune.enabled is false"
    if section == "prune" and key not in type(prune).model_fields:
        return f"prune.method is {prune.method!r}, whose settings have no {key}"
    if dotted.startswith("prune.gradual.") and prune.schedule != "gradual":
        return (
            f"prune.schedule is {prune.schedule!r}; "
            "[prune.gradual] is read by schedule = 'gradual' only"
        )
    base, _, sub = (
        section.rpartition(".") if section.endswith((".l1", ".distill")) else (section, "", "")
    )
    if base in _TRAINING_SECTIONS:
        optim = (
            config.train
            if base == "train"
            else config.finetune
            if base == "finetune"
            else prune.gradual
        )
        if key in ("momentum", "nesterov") and not sub and optim.optimizer != "sgd":
            return (
                f"{base}.optimizer is {optim.optimizer!r}; {key} is read by optimizer = 'sgd' only"
            )
        if key in ("step_size", "gamma") and not sub and optim.schedule != "step":
            return f"{base}.schedule is {optim.schedule!r}; {key} is read by schedule = 'step' only"
        if sub == "l1" and key != "lambda" and optim.l1.lambda_ == 0:
            return f"{base}.l1.lambda is 0 (no L1 term)"
        if sub == "distill" and key != "alpha" and optim.distill.alpha == 0:
            return f"{base}.distill.alpha is 0 (no distillation)"
    if dotted.startswith("quantize."):
        return _ignored_by_variants(config.quantize, dotted)
    return _ignored_by_widths(config, dotted)


def _ignored_by_widths(config: PipelineConfig, dotted: str) -> str | None:
    """Why the width settings of [prune] (channels) and [export] go unread, if they do."""
    widths = getattr(config.prune, "widths", None)
    if (
        dotted in ("prune.amount", "prune.scope")
        and getattr(config.prune, "latency_vs_dense", None) is not None
    ):
        return "prune.latency_vs_dense is set; each layer's amount comes from the latency target"
    if dotted in ("prune.widths_reach", "prune.widths_tolerance") and widths == "rounded":
        return "prune.widths is 'rounded'; the widths_ settings are read by 'measured' only"
    if dotted == "export.round_to" and not config.export.shrink:
        return "export.shrink is false; round_to is read by shrink only"
    return None


def _ignored_by_variants(quantize: QuantizeConfig, dotted: str) -> str | None:
    """Why no variant of `quantize` (nor one they need) reads the [quantize] setting `dotted`."""
    from compress.variants.registry import in_order, list_variants

    written = [quantize_variant(v) for v in in_order(quantize.variants)]
    if dotted in ("quantize.calibration_samples", "quantize.calibration_method") and not any(
        v.calibrated for v in written
    ):
        return (
            "quantize.variants has no static variant; calibration is read by static variants only"
        )
    if dotted == "quantize.static_layers" and not any(
        quantize_variant(v).calibrated for v in quantize.variants
    ):  # the static-int4 that packed-int4 is made from quantizes every layer
        return "quantize.variants has no static or static-int4; static_layers is read by them only"
    table = dotted.split(".")[1]
    if table in ("bits", "auto") and "packed" not in quantize.variants:
        return f"quantize.variants has no packed; [quantize] {table} is read by it only"
    readers = [name for name, v in list_variants().items() if v.section == table]
    if readers and not any(v.section == table for v in written):
        return (
            f"quantize.variants has no {' or '.join(readers)}; "
            f"[quantize] {table} is read by it only"
        )
    return None


def _field_names(model: type[BaseModel]) -> list[str]:
    return [f.alias or name for name, f in model.model_fields.items() if not f.exclude]


def _model_at(path: tuple, data: dict) -> type[BaseModel] | None:
    model: type[BaseModel] | None = PipelineConfig
    for i, part in enumerate(path):
        if model is None or not isinstance(part, str):
            return None
        field = next((f for n, f in model.model_fields.items() if part in (n, f.alias)), None)
        if field is None:
            return None
        annotation = field.annotation
        model = (
            annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel)
            else None
        )
        if i == 0 and model in (
            PruneConfig,
            DataCommon,
        ):  # a union: the named method's or source's section
            model = _named_section(model, data.get(part)) or model
    return model


def _named_section(base: type[BaseModel], section: Any) -> type[BaseModel] | None:
    try:
        if base is PruneConfig:
            return pruning_method(section.get("method", DEFAULT_PRUNE_METHOD)).Config
        return data_source(section.get("name", DEFAULT_DATA_SOURCE)).Config
    except (AttributeError, CompressError):
        return None


def _other_prune_method(key: str) -> str | None:
    """The methods whose sections have `key` (for a key given to the wrong method)."""
    owners = [repr(n) for n, m in _methods().items() if key in m.Config.model_fields]
    return " or ".join(owners) or None


def _format_error(error: dict, data: dict) -> str:
    loc = tuple(error["loc"])
    where = ".".join(str(p) for p in loc) or "pipeline"
    if error["type"] == "unknown_data_source":
        return f"{where}: {error['msg']}"
    if error["type"] == "extra_forbidden":
        parent = _model_at(loc[:-1], data)
        known = _field_names(parent) if parent else []
        close = closest(str(loc[-1]), known)
        hint = f"; did you mean {'.'.join([*map(str, loc[:-1]), close])!r}?" if close else ""
        if (
            not close
            and len(loc) == 2
            and loc[0] == "prune"
            and (owner := _other_prune_method(str(loc[-1])))
        ):
            hint = f"; it is a setting of method = {owner}"
        kind = "section" if len(loc) == 1 else "key"
        return f"{where}: unknown {kind}{hint} (known: {', '.join(known)})"
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] != "value_error" and "input" in error and not isinstance(error["input"], dict):
        message += f" (got {error['input']!r})"
    return f"{where}: {message}"


def parse_pipeline(data: dict[str, Any], name: str, base_dir: str | Path = ".") -> PipelineConfig:
    """Validate a pipeline's data; `name` is its name unless the data sets one (the file's stem)."""
    data = dict(data)
    if "name" not in data and not is_plain_name(name):
        raise ConfigError(
            f"the file's name makes the pipeline name {name!r}, which is not a plain name "
            f'({NAME_RULE}): rename the file, or set name = "..." in it'
        )
    data.setdefault("name", name)
    try:
        return PipelineConfig.model_validate({**data, "base_dir": str(base_dir)})
    except ValidationError as exc:
        errors = [_format_error(e, data) for e in exc.errors()]
        raise ConfigError("; ".join(errors)) from None


def load_pipeline(path: str | Path) -> PipelineConfig:
    """Read and validate a pipeline TOML file; the pipeline's name defaults to the file's stem."""
    path = Path(path)
    try:
        # utf-8-sig: a byte-order mark (as some Windows editors write) is read as nothing.
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ConfigError(f"pipeline file {path} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"pipeline file {path} is a folder, not a TOML file") from None
    except OSError as exc:
        raise ConfigError(f"cannot read pipeline file {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path} is not a UTF-8 text file (byte {exc.start}): is it a pipeline TOML file?"
        ) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: TOML syntax error: {exc}") from None
    try:
        return parse_pipeline(data, name=path.stem, base_dir=path.parent)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
