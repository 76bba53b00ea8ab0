"""Every error rvm-toolkit raises on purpose derives from `RVMError`.

`UsageError` and its subclasses are the user's to fix (bad input, a missing package, an existing output): the
message names the problem and the fix, and the CLI prints it as one line and exits 2. Any other `RVMError` is a
failure the toolkit detected (an artifact that disagrees with PyTorch, a backend that crashed): one line, exit 1.
Anything else is a bug: exit 1, and `-v` shows the traceback.

`UsageError` is also a `ValueError`, so callers that caught `ValueError` before the hierarchy existed still do.
"""
import shlex
from typing import Optional


class RVMError(Exception):
    """Base of every error raised on purpose by rvm-toolkit."""


class UsageError(RVMError, ValueError):
    """Bad input or a bad request; the message says what to change."""


class MissingDependency(UsageError):
    """An optional package is not installed; the message names the pip extra that brings it."""

    def __init__(self, what: str, extra: str, module: str):
        super().__init__(f"{what} needs the Python package {module!r}: pip install \"rvm-toolkit[{extra}]\"")
        self.extra, self.module = extra, module


class BackendUnavailable(UsageError):
    """The backend cannot run on this machine (wrong OS, no GPU, no Node.js); the message says why."""


class MissingNodePackages(BackendUnavailable):
    """A folder shipped with the package (the TF.js runner, the web page) lacks its npm packages, which no wheel
    carries; the message gives the one command that installs them where they are looked for."""

    def __init__(self, what: str, folder, missing=None):
        detail = f" ({missing} is missing)" if missing else ""
        super().__init__(f"{what} needs npm packages that are not installed{detail}: run "
                         f"`npm ci --prefix {shlex.quote(str(folder))}` (Node.js 18+ with npm)")
        self.folder = folder


class ArtifactError(UsageError):
    """A file or folder that is not a valid artifact of its kind (corrupt, truncated, empty, a folder without the
    model, another format behind the right suffix), or no artifact at all; the message names it and what was
    expected."""


class CheckpointError(UsageError):
    """A checkpoint cannot be found, read, verified or loaded."""


class VideoError(UsageError):
    """An input cannot be decoded or an output cannot be written."""


class ResolutionChangedError(UsageError):
    """Frames changed size (or a restored state belongs to another size) while the state was kept."""


class ExportError(RVMError):
    """An export failed after its request was accepted."""


class ValidationError(ExportError):
    """A freshly written artifact disagrees with PyTorch beyond its tolerance; it was removed."""


class BackendError(RVMError):
    """A backend failed while running frames (a crashed worker process, a framework error)."""


def brief(error: BaseException, limit: Optional[int] = 200, typed: bool = True) -> str:
    """`Type: message` on one line (newlines collapsed), cut to about `limit` characters (None: whole): a backend's
    reason inside an error of ours. `typed=False` leaves the type out of a message that says what failed on its
    own; an error without a message is its type's name either way."""
    text = " ".join(str(error).split())
    if typed or not text:
        text = f"{type(error).__name__}: {text}" if text else type(error).__name__
    return text if limit is None or len(text) <= limit else text[:limit - 3].rstrip() + "..."


def one_line(error: BaseException) -> str:
    """`Type: first line of the message`, for tables and logs that give each failure one line."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"


def last_line(what) -> str:
    """The last line of an error's message or of a tool's output, where the reason sits after a traceback or a
    tool's chatter. An error without a message gives its type's name, empty text ''."""
    text = str(what).strip().splitlines()
    if text:
        return text[-1]
    return type(what).__name__ if isinstance(what, BaseException) else ""
