"""The docs are tests: every shell block in README.md and docs/*.md runs here the way a reader runs it.

Each page is one session in a new temporary folder outside the repository, its `sh` blocks run in order by bash
(`set -euo pipefail`), with the installed `rvm` on PATH (the reader's activated environment) and none of the
project's environment variables (no RVM_VALIDATION_CLIP, no RVM_CHECKPOINT_DIR): checkpoints come from the user's
cache or are downloaded, exactly as the docs say. A comment right before a block may say, for that block:

    <!-- docs-test: needs clip.mp4 background.jpg; creates exports/rvm_mobilenetv3_fp32.onnx out/pha.mp4 -->
    <!-- docs-test: skip: why this block cannot run in a test (it installs, or serves until stopped) -->

`needs` names the reader's own files the page asks for (footage, a photo): the test puts real material there,
and nothing else is set up behind the reader's back. `creates` names what the block promises: asserted to exist
afterwards. A block without a comment must simply exit 0. A `skip` needs a reason, and the skipped blocks are few
and listed (test_skipped_blocks_are_few_and_say_why)."""
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import List

import pytest

from tests.conftest import BACKGROUND, CLIPS, need

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
PROJECT_VARIABLES = ("RVM_VALIDATION_CLIP", "RVM_CHECKPOINT_DIR")
BLOCK_TIMEOUT_S = 1800
# what a page may ask the reader to bring, and the real material the test brings in its place
READER_FILES = {
    "clip.mp4": CLIPS / "person_a.mp4",
    "clip2.mp4": CLIPS / "person_b.mp4",
    "calibration.mp4": CLIPS / "person_c.mp4",
    "frames": CLIPS / "person_a_png",
    "background.jpg": BACKGROUND,
}
MAX_SKIPPED = 4

_BLOCK = re.compile(r"(?:<!--\s*docs-test:(?P<directive>.*?)-->\s*\n)?^```(?P<lang>[\w-]*)[^\n]*\n(?P<body>.*?)^```",
                    re.S | re.M)


@dataclass
class Block:
    page: Path
    line: int
    body: str
    needs: List[str] = field(default_factory=list)
    creates: List[str] = field(default_factory=list)
    skip: str = ""

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(REPO)}:{self.line}"


def shell_blocks(page: Path) -> List[Block]:
    text = page.read_text()
    blocks = []
    for match in _BLOCK.finditer(text):
        if match["lang"] != "sh":
            continue
        block = Block(page, text.count("\n", 0, match.start("body")) + 1, match["body"])
        for part in (match["directive"] or "").split(";"):
            key, _, value = part.strip().partition(" ")
            if key == "skip:":
                block.skip = value.strip()
            elif key in ("needs", "creates"):
                setattr(block, key, value.split())
            elif key:
                raise AssertionError(f"{block.where}: unknown docs-test directive {part.strip()!r}")
        blocks.append(block)
    return blocks


def reader_environment() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in PROJECT_VARIABLES}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # the activated environment
    return env


def bring(name: str, folder: Path) -> None:
    """Put the reader's file `name` where the page says it is: real footage standing in for theirs."""
    assert name in READER_FILES, f"the docs ask the reader for {name!r}, which the docs test cannot provide"
    source, target = need(READER_FILES[name]), folder / name
    if target.exists():
        return
    if source.is_dir():
        shutil.copytree(source, target)
    else:
        shutil.copyfile(source, target)


def page_param(page: Path):
    return pytest.param(page, id=str(page.relative_to(REPO)), marks=pytest.mark.slow)


def test_pages_have_commands():
    assert any(shell_blocks(page) for page in PAGES)


def test_skipped_blocks_are_few_and_say_why():
    skipped = [block for page in PAGES for block in shell_blocks(page) if block.skip]
    assert all(len(block.skip) > 10 for block in skipped), [b.where for b in skipped]
    assert len(skipped) <= MAX_SKIPPED, [f"{b.where}: {b.skip}" for b in skipped]


@pytest.mark.parametrize("page", [page_param(p) for p in PAGES if any(not b.skip for b in shell_blocks(p))])
def test_page_commands_run_as_written(page, tmp_path):
    folder = tmp_path / "reader"  # the reader's own folder, outside the repository
    folder.mkdir()
    env = reader_environment()
    for block in shell_blocks(page):
        if block.skip:
            continue
        for name in block.needs:
            bring(name, folder)
        try:
            done = subprocess.run(["bash", "-euo", "pipefail", "-c", block.body], cwd=folder, env=env,
                                  capture_output=True, text=True, timeout=BLOCK_TIMEOUT_S, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as error:
            pytest.fail(f"{block.where}: still running after {BLOCK_TIMEOUT_S} s:\n{block.body}\n{error.stderr}")
        assert done.returncode == 0, (f"{block.where} exited {done.returncode}:\n{block.body}\n--- stdout\n"
                                      f"{done.stdout[-3000:]}\n--- stderr\n{done.stderr[-5000:]}")
        missing = [path for path in block.creates if not (folder / path).exists()]
        assert not missing, f"{block.where} did not create {missing}:\n{block.body}\n{done.stderr[-3000:]}"
