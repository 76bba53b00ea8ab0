"""The whole run's one artifact store: every test module, the parity suite and the processes they start (which
inherit the variable) take their artifacts from it, so each format, precision and option set is exported once per
run; the run ends by printing how many exports it made, in the store and directly (the tests of `export` itself)."""
import collections
import os
import shutil
import tempfile
from pathlib import Path

STORE_ENV = "RVM_ARTIFACT_STORE"  # rvm.exporters.store.STORE_ENV (not imported here: it would load torch first)
_direct_exports = collections.Counter()


def pytest_configure(config):
    if not os.environ.get(STORE_ENV):
        os.environ[STORE_ENV] = tempfile.mkdtemp(prefix="rvm-test-artifacts-")
        config.rvm_store_owned = os.environ[STORE_ENV]
    import rvm.exporters as exporters
    from rvm.exporters.store import WORK_PREFIX
    exported = exporters.run_job

    def counted(model, job, output_dir=".", *args, **kwargs):
        if not Path(output_dir).name.startswith(WORK_PREFIX):  # the store's own exports are in its ledger
            _direct_exports[f"{job.format.name} {job.precision}"] += 1
        return exported(model, job, output_dir, *args, **kwargs)
    exporters.run_job = counted


def pytest_terminal_summary(terminalreporter):
    from rvm.exporters.store import ArtifactStore
    stored = ArtifactStore(os.environ[STORE_ENV]).exported()
    terminalreporter.write_sep("-", f"exports: {sum(stored.values())} into the artifact store, "
                                    f"{sum(_direct_exports.values())} directly in this process")
    for title, counts in (("store", stored), ("direct", _direct_exports)):
        if counts:
            terminalreporter.write_line(f"{title}: " + ", ".join(f"{name} x{n}" for name, n in sorted(counts.items())))


def pytest_unconfigure(config):
    owned = getattr(config, "rvm_store_owned", None)
    if owned:
        shutil.rmtree(owned, ignore_errors=True)
