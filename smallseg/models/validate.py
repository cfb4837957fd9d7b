"""Allow-list validation of model configs: a checkpoint's config is data, never code.

A ``.safetensors`` checkpoint carries its :class:`~smallseg.models.config.ModelConfig` as JSON, and the
model is rebuilt from it. Anything in that JSON that reaches a constructor is therefore attacker-chosen
when the file comes from elsewhere: an unchecked ``smp_kwargs`` flows through smp's ``**kwargs`` into
``timm.create_model`` (``checkpoint_path="evil.pt"`` unpickles a file; ``pretrained_cfg`` points at a URL),
and an encoder name such as ``tu-hf-hub:org/repo`` or ``tu-local-dir:/x`` makes timm reach the network or
read local files. So, before anything is built:

- encoder names must be in smp's own encoder registry, or ``tu-<name>`` with ``<name>`` in timm's
  ``list_models()`` (an optional ``.pretrained_tag`` allowed); no ``:``, ``/``, ``\\`` or ``..`` anywhere;
- ``smp_arch`` must be one of smp's model classes, and every ``smp_kwargs`` key must be both in
  :data:`SMP_KWARG_CHECKS` (typed and bounded) and a named parameter of that class's ``__init__`` (so
  nothing falls through smp's ``**kwargs`` to the encoder / timm); ``encoder_weights`` must be None;
- every other field is type- and range-checked, and ``training`` is plain bounded JSON.

Every failure is one :class:`~smallseg.errors.SmallsegError` line naming the field:
``"model config smp_kwargs.checkpoint_path: not an allowed smp keyword ..."``.
"""

from __future__ import annotations

import functools
import inspect
import json
import math
import numbers
import re
from typing import Any, Callable

import segmentation_models_pytorch as smp
import timm

from smallseg.decode.centroids import DecodeConfig
from smallseg.errors import SmallsegError

# Bounds. Generous for any real model, small enough that a hostile file cannot make the loader allocate
# or recurse without limit.
MAX_CONFIG_JSON_CHARS = 1_000_000  # the whole config JSON in a checkpoint's metadata
MAX_TRAINING_JSON_CHARS = 256_000  # ``training`` serialised
MAX_JSON_DEPTH = 8  # nesting of ``training`` (the shipped models use 3)
MAX_JSON_ITEMS = 10_000  # values in ``training`` in all
MAX_JSON_LIST = 4_096  # one list in ``training``
MAX_JSON_STRING = 4_096  # one string in ``training``
MAX_KEY_CHARS = 128  # one dict key in ``training``
MAX_NAME_CHARS = 128  # encoder / architecture names
MAX_CLASS_NAME_CHARS = 64
MAX_CLASSES = 256
MAX_IN_CHANNELS = 64
MAX_CHANNELS = 4_096  # any decoder / refinement channel count
MAX_TILE_PX = 16_384
MAX_DISTANCE_PX = 4_096.0
MAX_BAND_INDEX = 65_535

_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_TIMM_NAME_RE = re.compile(r"([a-z0-9_]+)(?:\.([a-z0-9_]+))?")
_FORBIDDEN_IN_NAMES = (":", "/", "\\", "..")

SMP_ACTIVATIONS = ("sigmoid", "softmax", "softmax2d", "logsoftmax", "tanh", "identity", "argmax", "argmax2d", "clamp")
SMP_NORMS = ("batchnorm", "identity", "layernorm", "instancenorm", "inplace")
SMP_INTERPOLATIONS = ("nearest", "nearest-exact", "bilinear", "bicubic", "area")


def config_error(field: str, what: str) -> SmallsegError:
    """The one error shape of this module: ``model config <field>: <what>``."""
    return SmallsegError(f"model config {field}: {what}")


# ---- scalars --------------------------------------------------------------------------------------------


def _show(value: Any) -> str:
    """A short repr for a message (a hostile value can be megabytes long, or an int too long to print)."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**18:
        return f"an integer of {value.bit_length()} bits"
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001 - any repr failure: say what type it was
        return f"a {type(value).__name__}"
    return text if len(text) <= 60 else text[:57] + "..."


def check_int(field: str, value: Any, lo: int, hi: int) -> int:
    """``value`` as a Python int in ``[lo, hi]``; bools and floats are refused (JSON ``true`` is not 1)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise config_error(field, f"{_show(value)} is not an integer")
    value = int(value)
    if not lo <= value <= hi:
        raise config_error(field, f"{_show(value)} is outside {lo}..{hi}")
    return value


def check_number(field: str, value: Any, lo: float | None = None, hi: float | None = None, *,
                 positive: bool = False) -> int | float:
    """A finite real number (int or float, numpy scalars made Python ones) within the bounds.

    Ints stay ints, so a config's JSON (and the fingerprint made from it) does not change on a round trip.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise config_error(field, f"{_show(value)} is not a number")
    if not isinstance(value, (int, float)):
        value = value.item() if hasattr(value, "item") else float(value)
    if not math.isfinite(value):
        raise config_error(field, f"{value} is not finite")
    if positive and not value > 0:
        raise config_error(field, f"{_show(value)}; must be > 0")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise config_error(field, f"{_show(value)} is outside {lo}..{hi}")
    return value


def check_int_choice(field: str, value: Any, choices: tuple[int, ...]) -> int:
    """An int that is one of ``choices``."""
    value = check_int(field, value, min(choices), max(choices))
    if value not in choices:
        raise config_error(field, f"{value}; use one of {list(choices)}")
    return value


def check_str(field: str, value: Any, *, max_chars: int = MAX_NAME_CHARS,
              choices: tuple[str, ...] | None = None) -> str:
    """A non-empty printable string of at most ``max_chars``, one of ``choices`` if given."""
    if not isinstance(value, str):
        raise config_error(field, f"{_show(value)} is not a string")
    if choices is not None:
        if value not in choices:
            raise config_error(field, f"{_show(value)}; use one of {list(choices)}")
        return value
    if not value or len(value) > max_chars or not value.isprintable():
        raise config_error(field, f"{_show(value)}: need 1..{max_chars} printable characters")
    return value


def check_bool(field: str, value: Any) -> bool:
    """A JSON boolean (``true`` / ``false``); 0, 1 and strings are refused."""
    if not isinstance(value, bool):
        raise config_error(field, f"{_show(value)} is not true or false")
    return value


def check_int_list(field: str, value: Any, lo: int, hi: int, *, min_len: int = 1, max_len: int = 8) -> list[int]:
    """A list (or tuple) of ``min_len..max_len`` ints, each in ``[lo, hi]``."""
    if not isinstance(value, (list, tuple)):
        raise config_error(field, f"{_show(value)} is not a list of integers")
    if not min_len <= len(value) <= max_len:
        raise config_error(field, f"{len(value)} values; need {min_len}..{max_len}")
    return [check_int(f"{field}[{i}]", v, lo, hi) for i, v in enumerate(value)]


def check_number_list(field: str, value: Any, length: int, *, positive: bool = False,
                      what: str = "one per input band") -> list[int | float]:
    """A list of exactly ``length`` finite numbers (``positive``: each > 0); ``what`` says what they are."""
    if not isinstance(value, (list, tuple)):
        raise config_error(field, f"{_show(value)} is not a list of numbers")
    if len(value) != length:
        raise config_error(field, f"{len(value)} values; need {length} ({what})")
    return [check_number(f"{field}[{i}]", v, positive=positive) for i, v in enumerate(value)]


# ---- encoder names --------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _smp_encoder_names() -> frozenset[str]:
    return frozenset(smp.encoders.get_encoder_names())


@functools.lru_cache(maxsize=1)
def _timm_model_names() -> frozenset[str]:
    return frozenset(timm.list_models())


def check_encoder_name(field: str, name: Any) -> str:
    """An smp encoder name from smp's registry, or ``tu-<timm model>[.<tag>]`` with the model in timm's
    ``list_models()``. Names that could address a hub, a folder or a file (``hf-hub:``, ``local-dir:``,
    anything with ``:``, ``/``, ``\\`` or ``..``) are refused before timm or smp sees them."""
    name = check_str(field, name)
    if any(bad in name for bad in _FORBIDDEN_IN_NAMES) or not _NAME_RE.fullmatch(name):
        raise config_error(field, f"{_show(name)} is not an encoder name (hub, path and URL forms are not loaded; "
                                  "use an smp encoder name or 'tu-<timm model>')")
    if name.startswith("tu-"):
        match = _TIMM_NAME_RE.fullmatch(name[3:])
        if match is None or match.group(1) not in _timm_model_names():
            raise config_error(field, f"{_show(name)}: {name[3:]!r} is not a model in timm's registry "
                                      "(timm.list_models())")
        return name
    if name not in _smp_encoder_names():
        raise config_error(field, f"{_show(name)} is not an smp encoder "
                                  "(segmentation_models_pytorch.encoders.get_encoder_names()) or 'tu-<timm model>'")
    return name


# ---- smp architectures and their keyword arguments -------------------------------------------------------


def smp_architecture(field: str, arch: Any) -> type:
    """The smp model class named ``arch`` (case-insensitive, e.g. ``"Unet"``) from smp's own mapping."""
    arch = check_str(field, arch)
    cls = smp.MODEL_ARCHITECTURES_MAPPING.get(arch.lower())
    if cls is None:
        names = sorted(c.__name__ for c in smp.MODEL_ARCHITECTURES_MAPPING.values())
        raise config_error(field, f"{_show(arch)} is not an smp architecture; use one of {names}")
    return cls


def _none(field: str, value: Any) -> None:
    if value is not None:
        raise config_error(field, f"{_show(value)}; must be null (weights travel in the checkpoint, never "
                                  "downloaded or read from another file)")
    return None


def _optional(check: Callable[[str, Any], Any]) -> Callable[[str, Any], Any]:
    return lambda field, value: None if value is None else check(field, value)


def _channels(field: str, value: Any) -> int:
    return check_int(field, value, 1, MAX_CHANNELS)


def _fraction(field: str, value: Any) -> float:
    return check_number(field, value, 0.0, 1.0)


def _int_or_int_list(field: str, value: Any) -> int | list[int]:
    if isinstance(value, (list, tuple)):
        return check_int_list(field, value, 1, MAX_CHANNELS)
    return _channels(field, value)


def _decoder_use_norm(field: str, value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        return check_str(field, value, choices=SMP_NORMS)
    if isinstance(value, dict):
        allowed = {
            "type": lambda f, v: check_str(f, v, choices=SMP_NORMS),
            "eps": lambda f, v: check_number(f, v, 0.0, 1.0),
            "momentum": _optional(_fraction),
            "affine": _bool,
            "elementwise_affine": _bool,
            "track_running_stats": _bool,
            "activation": lambda f, v: check_str(f, v, choices=("leaky_relu", "elu", "identity")),
            "activation_param": lambda f, v: check_number(f, v, 0.0, 10.0),
        }
        return _check_dict(field, value, allowed, required=("type",))
    raise config_error(field, f"{_show(value)}; use true, false, one of {list(SMP_NORMS)} or {{'type': ...}}")


def _bool(field: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise config_error(field, f"{_show(value)} is not true or false")
    return value


def _activation(field: str, value: Any) -> str | None:
    return None if value is None else check_str(field, value, choices=SMP_ACTIVATIONS)


def _aux_params(field: str, value: Any) -> dict | None:
    if value is None:
        return None
    allowed = {
        "classes": lambda f, v: check_int(f, v, 1, MAX_CLASSES),
        "pooling": lambda f, v: check_str(f, v, choices=("avg", "max")),
        "dropout": _optional(_fraction),
        "activation": _activation,
    }
    return _check_dict(field, value, allowed)


def _check_dict(field: str, value: Any, allowed: dict[str, Callable[[str, Any], Any]],
                required: tuple[str, ...] = ()) -> dict:
    if not isinstance(value, dict):
        raise config_error(field, f"{_show(value)} is not an object")
    for key in value:
        if key not in allowed:
            raise config_error(f"{field}.{key}" if isinstance(key, str) else field,
                               f"not an allowed key (allowed: {sorted(allowed)})")
    for key in required:
        if key not in value:
            raise config_error(f"{field}.{key}", "missing")
    return {key: allowed[key](f"{field}.{key}", v) for key, v in value.items()}


# Every keyword smallseg passes to an smp model's __init__, with its type and bounds. A key must also be a
# named parameter of the class (see check_smp_kwargs): what smp does not name goes to **kwargs, i.e. to the
# encoder and on to timm.create_model, which is exactly where file, URL and callable arguments live.
SMP_KWARG_CHECKS: dict[str, Callable[[str, Any], Any]] = {
    "encoder_name": check_encoder_name,
    "encoder_depth": lambda f, v: check_int(f, v, 3, 5),
    "encoder_weights": _none,
    "encoder_output_stride": lambda f, v: check_int_choice(f, v, (8, 16, 32)),
    "encoder_output_indices": _optional(lambda f, v: check_int_list(f, v, -32, 32)),
    "in_channels": lambda f, v: check_int(f, v, 1, MAX_IN_CHANNELS),
    "classes": lambda f, v: check_int(f, v, 1, MAX_CLASSES),
    "activation": _activation,
    "aux_params": _aux_params,
    "upsampling": _optional(lambda f, v: check_int(f, v, 1, 32)),
    "decoder_use_norm": _decoder_use_norm,
    "decoder_channels": _int_or_int_list,
    "decoder_attention_type": lambda f, v: None if v is None else check_str(f, v, choices=("scse",)),
    "decoder_interpolation": lambda f, v: check_str(f, v, choices=SMP_INTERPOLATIONS),
    "decoder_pab_channels": _channels,
    "decoder_pyramid_channels": _channels,
    "decoder_segmentation_channels": _channels,
    "decoder_merge_policy": lambda f, v: check_str(f, v, choices=("add", "cat")),
    "decoder_dropout": _fraction,
    "decoder_atrous_rates": lambda f, v: check_int_list(f, v, 1, 256),
    "decoder_aspp_separable": _bool,
    "decoder_aspp_dropout": _fraction,
    "decoder_readout": lambda f, v: check_str(f, v, choices=("ignore", "add", "cat")),
    "decoder_intermediate_channels": lambda f, v: check_int_list(f, v, 1, MAX_CHANNELS),
    "decoder_fusion_channels": _channels,
    "psp_out_channels": _channels,
    "psp_dropout": _fraction,
}


@functools.lru_cache(maxsize=None)
def _named_init_parameters(cls: type) -> frozenset[str]:
    params = inspect.signature(cls.__init__).parameters.values()
    return frozenset(p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "self")


def check_smp_kwargs(arch: Any, kwargs: Any, field: str = "smp_kwargs") -> dict[str, Any]:
    """``kwargs`` for smp model ``arch``, each key allowed and each value typed and bounded.

    Returns a checked copy; raises naming the first bad key (``smp_kwargs.checkpoint_path``).
    """
    cls = smp_architecture("smp_arch", arch)
    if not isinstance(kwargs, dict):
        raise config_error(field, f"{_show(kwargs)} is not an object of smp {cls.__name__} arguments")
    named = _named_init_parameters(cls)
    out = {}
    for key, value in kwargs.items():
        if not isinstance(key, str):
            raise config_error(field, f"key {_show(key)} is not a string")
        where = f"{field}.{key[:MAX_KEY_CHARS]}"
        if key not in SMP_KWARG_CHECKS or key not in named:
            raise config_error(where, f"not an allowed argument of smp {cls.__name__} (allowed: "
                                      f"{sorted(named & SMP_KWARG_CHECKS.keys())})")
        out[key] = SMP_KWARG_CHECKS[key](where, value)
    return out


# ---- free-form JSON (the ``training`` summary) ----------------------------------------------------------


def check_json(field: str, value: Any, *, max_depth: int = MAX_JSON_DEPTH, max_chars: int = MAX_TRAINING_JSON_CHARS) -> None:
    """``value`` is plain JSON data: dicts with short string keys (no ``__dunder__`` keys), lists, strings,
    finite numbers, booleans and null; nested at most ``max_depth`` deep, ``MAX_JSON_ITEMS`` values in all,
    ``max_chars`` serialised."""
    count = 0

    def walk(v: Any, where: str, depth: int) -> None:
        nonlocal count
        count += 1
        if count > MAX_JSON_ITEMS:
            raise config_error(field, f"more than {MAX_JSON_ITEMS} values")
        if v is None or isinstance(v, (bool, str)):
            if isinstance(v, str) and len(v) > MAX_JSON_STRING:
                raise config_error(where, f"a string of {len(v)} characters (at most {MAX_JSON_STRING})")
            return
        if isinstance(v, numbers.Real):
            if not isinstance(v, (int, float)):
                raise config_error(where, f"{type(v).__name__} is not a JSON number")
            if isinstance(v, float) and not math.isfinite(v):
                raise config_error(where, f"{v} is not finite")
            return
        if isinstance(v, (list, tuple, dict)):
            if depth >= max_depth:
                raise config_error(where, f"nested deeper than {max_depth} levels")
            if len(v) > MAX_JSON_LIST:
                raise config_error(where, f"{len(v)} entries (at most {MAX_JSON_LIST})")
            if isinstance(v, dict):
                for k, item in v.items():
                    if not isinstance(k, str) or not k or len(k) > MAX_KEY_CHARS or not k.isprintable() \
                            or k.startswith("__"):
                        raise config_error(where, f"key {_show(k)}: need a plain name of 1..{MAX_KEY_CHARS} "
                                                  "characters")
                    walk(item, f"{where}.{k}", depth + 1)
            else:
                for i, item in enumerate(v):
                    walk(item, f"{where}[{i}]", depth + 1)
            return
        raise config_error(where, f"a {type(v).__name__} is not JSON data")

    walk(value, field, 0)
    size = len(json.dumps(value))
    if size > max_chars:
        raise config_error(field, f"{size} characters of JSON (at most {max_chars})")


def _decode_settings(field: str, value: Any) -> None:
    """Decoding settings stored with a model: every key a :class:`~smallseg.decode.centroids.DecodeConfig`
    field (an unknown one would otherwise be dropped without a word when the model is used), every value a
    number."""
    if not isinstance(value, dict):
        raise config_error(field, f"{_show(value)} is not an object of decoding settings")
    known = sorted(DecodeConfig.__dataclass_fields__)
    unknown = [k for k in value if k not in known]
    if unknown:
        raise config_error(field, f"unknown decoding setting(s) {', '.join(_show(k) for k in unknown[:5])}; "
                                  f"known: {', '.join(known)}")
    for key, v in value.items():
        check_number(f"{field}.{key}", v)


def check_training(training: Any) -> dict[str, Any]:
    """The ``training`` summary: a JSON object (see :func:`check_json`) whose keys the pipelines read are
    typed: ``decode`` (name -> number), ``decode_by_modality`` (modality -> such a dict),
    ``train_pixel_size_m`` ([lo, hi] metres, 0 < lo <= hi), ``intensity_preset`` (a name or a preset dict),
    ``intensity_presets`` (modality -> name or preset dict), ``volume_min_slices`` (1..64: the shortest 3-D object
    ``predict_volume`` keeps by default)."""
    if not isinstance(training, dict):
        raise config_error("training", f"{_show(training)} is not a JSON object")
    check_json("training", training)
    if "decode" in training:
        _decode_settings("training.decode", training["decode"])
    for key in ("decode_by_modality", "intensity_presets"):
        if key in training and not isinstance(training[key], dict):
            raise config_error(f"training.{key}", f"{_show(training[key])} is not an object keyed by modality")
    for modality, settings in (training.get("decode_by_modality") or {}).items():
        _decode_settings(f"training.decode_by_modality.{modality}", settings)
    if "train_pixel_size_m" in training:
        where = "training.train_pixel_size_m"
        lo, hi = check_number_list(where, training["train_pixel_size_m"], 2, positive=True,
                                   what="[smallest, largest] metres")
        if lo > hi:
            raise config_error(where, f"[{lo}, {hi}]: smallest above largest")
    if "volume_min_slices" in training:
        check_int("training.volume_min_slices", training["volume_min_slices"], 1, 64)
    if "intensity_preset" in training:
        _intensity_preset("training.intensity_preset", training["intensity_preset"])
    for modality, preset in (training.get("intensity_presets") or {}).items():
        _intensity_preset(f"training.intensity_presets.{modality}", preset)
    return training


def _intensity_preset(field: str, value: Any) -> None:
    if isinstance(value, str):
        check_str(field, value, max_chars=64)
        return
    allowed = {
        "kind": lambda f, v: check_str(f, v, choices=("window", "percentile")),
        "low": _optional(check_number),
        "high": _optional(check_number),
        "p_low": _optional(lambda f, v: check_number(f, v, 0.0, 100.0)),
        "p_high": _optional(lambda f, v: check_number(f, v, 0.0, 100.0)),
        "name": lambda f, v: v if v == "" else check_str(f, v, max_chars=64),
    }
    _check_dict(field, value, allowed, required=("kind",))


__all__ = [
    "MAX_CONFIG_JSON_CHARS",
    "SMP_KWARG_CHECKS",
    "check_encoder_name",
    "check_int",
    "check_int_choice",
    "check_int_list",
    "check_json",
    "check_number",
    "check_number_list",
    "check_smp_kwargs",
    "check_str",
    "check_training",
    "config_error",
    "smp_architecture",
]
