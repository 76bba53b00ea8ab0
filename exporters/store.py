"""The artifact store: every artifact the toolkit makes for its own use (parity rows, bench rows, tune candidates,
the test suite's artifacts) exported once, kept in the user's cache, keyed by what determines its bytes.

The key is the checkpoint's weights (a hash of the state dict, with variant and refiner) and the checkpoint file the
artifact's metadata names, the format and precision, the options that shape the file (static size and ratio,
container kind, simplification, the calibration frames' content) and the versions of the packages that write it.
An entry is exported into a temporary folder and renamed into place whole, under a lock file per key, so concurrent
users (parallel tests, batch workers, a tune in another terminal) wait for one export instead of repeating it, and a
killed export leaves nothing that looks finished.

Export validation (`ExportOptions.validate`) runs once per entry and validation footage: an entry made without it, or
validated on other frames, is validated on the first request that asks for it, and the entry remembers on what.
"""
import fcntl
import hashlib
import json
import logging
import os
import shutil
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import asdict
from importlib import metadata
from pathlib import Path
from typing import Dict, Iterator, Optional

from rvm import formats
from rvm.formats import ExportJob, ExportOptions, calibration_sources
from rvm.media.samples import VALIDATION_RATIO
from rvm.version import __version__

from . import remove, run_job

log = logging.getLogger(__name__)

WORK_PREFIX = ".work-"  # an export in progress: its folder, renamed to the key when complete
STORE_ENV = "RVM_ARTIFACT_STORE"  # another folder for the store (the test suite points it at one of its own)
ENTRY_FILE = "entry.json"  # beside each artifact: what it is, when it was made, whether it was validated
LEDGER_FILE = "exports.log"  # one line per export the store ran, for counting them
# options that do not change the artifact's bytes: how it is checked after export
VALIDATION_FIELDS = ("validate", "validation_frames", "validation_clip")


def default_root() -> Path:
    if os.environ.get(STORE_ENV):
        return Path(os.environ[STORE_ENV])
    from rvm.checkpoints import cache_dir
    return cache_dir() / "artifacts"


def weights_digest(model) -> str:
    """A hash of the weights matting runs on, with variant and refiner: equal for the same checkpoint however it was
    loaded. The segmentation head is left out: no export contains it, and a checkpoint without it leaves it random."""
    digest = hashlib.sha256(f"{model.variant}/{model.refiner_name}".encode())
    for name, tensor in sorted(model.state_dict().items()):
        if name.startswith("project_seg."):
            continue
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _content_digest(path: Path) -> str:
    """A calibration source's identity: a clip's bytes, or a folder's frames (names, which order them, and bytes)."""
    from rvm.checkpoints import sha256_of
    if not path.is_dir():
        return sha256_of(path)
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(f"{file.relative_to(path)}:{sha256_of(file)}".encode())
    return digest.hexdigest()


def _package_versions(entry: formats.Format) -> Dict[str, str]:
    versions = {"rvm-toolkit": __version__, "torch": metadata.version("torch")}
    for module in entry.requires:
        try:
            versions[module] = metadata.version(module)
        except metadata.PackageNotFoundError:  # an import name that differs from its distribution's
            versions[module] = "?"
    return versions


def describe(model, job: ExportJob) -> dict:
    """Everything an entry's bytes depend on."""
    options = {k: v for k, v in asdict(job.options).items() if k not in VALIDATION_FIELDS}
    if not job.options.static:  # a dynamic graph takes the ratio at run time; only int8 calibration runs at one
        calibrated = job.precision in job.format.calibrated
        options["downsample_ratio"] = (job.options.downsample_ratio or VALIDATION_RATIO) if calibrated else None
    if job.options.calibration:
        options["calibration"] = [_content_digest(source) for source in calibration_sources(job.options.calibration)]
    info = getattr(model, "checkpoint_info", {}) or {}  # what the artifact's metadata names (rvm.metadata)
    return {"weights": weights_digest(model), "checkpoint": [info.get("name") or info.get("path", ""),
                                                             info.get("sha256", "")],
            "format": job.format.name, "precision": job.precision, "options": options,
            "versions": _package_versions(job.format)}


def validation_of(options: ExportOptions) -> dict:
    """What an export validation ran on: the clip's content (or the sample scene) and the number of frames."""
    from rvm.media.samples import default_clip
    clip = options.validation_clip or default_clip()
    return {"clip": _content_digest(Path(clip)) if clip else "sample scene", "frames": options.validation_frames}


class ArtifactStore:
    """`get(model, format, precision, options)` is the artifact's path, exported on first use."""

    def __init__(self, root=None):
        self.root = Path(root) if root is not None else default_root()

    def get(self, model, fmt: str, precision: Optional[str] = None, options: Optional[ExportOptions] = None) -> Path:
        (job,) = formats.plan(fmt, precision, options)
        facts = describe(model, job)
        key = hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:20]
        folder = self.root / key
        with self._locked(key):
            entry = self._read(folder)
            if entry is None:
                entry = self._export(model, job, facts, folder)
            elif job.options.validate and (validation := validation_of(job.options)) not in entry["validated"]:
                from .validate import validate_artifact
                validate_artifact(model, folder / entry["artifact"], job.format, job.precision, job.options)
                entry["validated"].append(validation)
                self._write_entry(folder, entry)
        return folder / entry["artifact"]

    def _export(self, model, job: ExportJob, facts: dict, folder: Path) -> dict:
        work = self.root / f"{WORK_PREFIX}{folder.name}-{os.getpid()}"
        remove(work)
        try:
            path = run_job(model, job, work)
            entry = {**facts, "artifact": path.name, "created": time.time(),
                     "validated": [validation_of(job.options)] if job.options.validate else []}
            self._write_entry(work, entry)
            remove(folder)
            os.replace(work, folder)
        finally:
            remove(work)
        with open(self.root / LEDGER_FILE, "a") as ledger:
            ledger.write(f"{job.format.name} {job.precision} {folder.name}\n")
        log.info("artifact store: exported %s %s into %s", job.format.name, job.precision, folder)
        return entry

    @staticmethod
    def _read(folder: Path) -> Optional[dict]:
        try:
            entry = json.loads((folder / ENTRY_FILE).read_text())
        except (OSError, ValueError):
            return None
        return entry if (folder / entry.get("artifact", "")).exists() else None

    @staticmethod
    def _write_entry(folder: Path, entry: dict) -> None:
        temporary = folder / f".{ENTRY_FILE}.tmp"
        temporary.write_text(json.dumps(entry, indent=1, sort_keys=True))
        os.replace(temporary, folder / ENTRY_FILE)

    @contextmanager
    def _locked(self, key: str) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / f".{key}.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def entries(self) -> Iterator[dict]:
        for folder in sorted(self.root.glob("*")) if self.root.is_dir() else []:
            entry = self._read(folder) if folder.is_dir() and not folder.name.startswith(".") else None
            if entry is not None:
                yield {**entry, "path": str(folder / entry["artifact"])}

    def size_bytes(self) -> int:
        if not self.root.is_dir():
            return 0
        return sum(p.stat().st_size for p in self.root.rglob("*") if p.is_file() and not p.is_symlink())

    def exported(self) -> Counter:
        """How many exports the store has run, by "format precision" (its ledger)."""
        try:
            lines = (self.root / LEDGER_FILE).read_text().splitlines()
        except OSError:
            return Counter()
        return Counter(" ".join(line.split()[:2]) for line in lines)

    def clear(self) -> None:
        """Remove every entry (and the ledger); artifacts a tuning record chose are kept in its own folder."""
        if self.root.is_dir():
            shutil.rmtree(self.root)

