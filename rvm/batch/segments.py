"""One batch job through `convert_video`: whole, or, for a clip longer than its `segment_frames`, as segments.

A segment is `convert_video` over the next `segment_frames` frames of one open source, starting from the
recurrent state the previous segment ended with, into part outputs in the job's parts folder; its state is saved
beside them last, so a saved state marks a finished segment. A re-run (after a crash or a killed worker) decodes
past the finished segments, without inference, and goes on from the last saved state: a crash costs at most one
segment. When all segments are there they are joined: PNG frames are linked under their numbers in the whole clip,
video parts remuxed (packets copied, timestamps shifted, the source's audio added) under a temporary name and
renamed, as `convert_video` does. With the state carried, the frames equal those of one whole run (for intra-only
codecs, PNG and ProRes, bit for bit; H.264 and VP9 parts restart their GOP at each boundary).
"""
import itertools
import os
import shutil
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Callable, Dict, List, Optional

import av
import numpy as np

from rvm.media.convert import convert_video
from rvm.media.video import AudioCopy, FrameSource, open_source, replace_into_place, temporary_sibling

# 1800 frames (a minute at 30 fps; 3-4 minutes of CPU work at 1080p) bounds what a crash costs, and the boundary
# and join costs measured (docs/batch.md, "Measured here") stay under 1% of a segment's conversion
DEFAULT_SEGMENT_FRAMES = 1800
STATE_SUFFIX = ".state.npz"


class _Continuing(FrameSource):
    """One open source read in consecutive pieces: every `iter()` continues where the last one stopped."""

    def __init__(self, source: FrameSource):
        self.path, self.fps, self.size, self.frame_count = source.path, source.fps, source.size, source.frame_count
        self.audio = None  # segments carry no audio: the join copies the source's
        self._frames = iter(source)

    def __iter__(self):
        return self._frames

    def skip(self, count: int) -> None:
        for _ in itertools.islice(self._frames, count):
            pass


def frame_count(path, resize=None) -> Optional[int]:
    """How many frames the input has, from its header or folder; None where the container does not say."""
    with open_source(path, resize) as source:
        return source.frame_count


def convert_job(job, runtime, on_frames: Callable[[int], None]) -> dict:
    """Run `job` (a `rvm.batch.jobs.Job`) on `runtime`; returns frames, segments and how many were reused."""
    count = frame_count(job.input, job.request.input_resize) if job.segment_frames else None
    if not count or count <= job.segment_frames:
        summary = convert_video(job.request, runtime, on_frames)
        return {"frames": summary.frames, "segments": 1, "reused_segments": 0, "join_seconds": 0.0}
    return _convert_segments(job, runtime, on_frames, count)


def parts_folder(job) -> Path:
    return Path(job.work_dir) / "parts" / f"{job.id}-{job.segment_frames}"


def _part_outputs(folder: Path, index: int, outputs: Dict[str, str]) -> Dict[str, str]:
    """Segment `index`'s outputs: the final ones' kinds and suffixes (a PNG folder stays a folder)."""
    return {kind: str(folder / f"{index:05d}.{kind}{Path(path).suffix}") for kind, path in outputs.items()}


def _convert_segments(job, runtime, on_frames, count: int) -> dict:
    folder = parts_folder(job)
    folder.mkdir(parents=True, exist_ok=True)
    for entry in folder.iterdir():  # a killed attempt's temporaries
        if ".partial-" in entry.name:
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    bounds = [(start, min(start + job.segment_frames, count)) for start in range(0, count, job.segment_frames)]
    parts = [_part_outputs(folder, index, job.outputs) for index in range(len(bounds))]
    finished = 0  # segments whose state was saved, counted from the first
    while finished < len(bounds) and (folder / f"{finished:05d}{STATE_SUFFIX}").exists() and \
            all(Path(p).exists() for p in parts[finished].values()):
        finished += 1
    state = _load_state(folder / f"{finished - 1:05d}{STATE_SUFFIX}") if finished else None
    if finished:
        on_frames(bounds[finished - 1][1])
    frames = bounds[finished - 1][1] if finished else 0
    with open_source(job.input, job.request.input_resize) as opened:
        source = _Continuing(opened)
        source.skip(frames)  # decoded, not inferred: linear, and exact where seeking by time may not be
        for index in range(finished, len(bounds)):
            segment = replace(job.request, input_source=source).with_outputs(parts[index])
            summary = convert_video(segment, runtime, on_frames, bounds[index], state)
            state = summary.state
            frames += summary.frames
            _save_state(folder / f"{index:05d}{STATE_SUFFIX}", state)
    if frames != count:
        raise ValueError(f"{job.input} gave {frames} frames where its header declares {count}: re-encode it")
    joining = time.perf_counter()
    has_audio = _has_audio(job.input)
    for kind, final in job.outputs.items():
        pieces = [Path(p[kind]) for p in parts]
        if pieces[0].is_dir():
            _join_png_folders(pieces, Path(final))
        else:
            _join_videos(pieces, Path(final), job.input if has_audio else None)
    shutil.rmtree(folder)
    return {"frames": frames, "segments": len(bounds), "reused_segments": finished,
            "join_seconds": round(time.perf_counter() - joining, 3)}


def _save_state(path: Path, state: List[np.ndarray]) -> None:
    temporary = path.with_name(f".{path.name}.partial-{uuid.uuid4().hex[:8]}.npz")
    np.savez(temporary, *state)
    os.replace(temporary, path)


def _load_state(path: Path) -> List[np.ndarray]:
    with np.load(path) as saved:
        return [saved[f"arr_{i}"] for i in range(len(saved.files))]


def _has_audio(path) -> bool:
    if Path(path).is_dir():
        return False
    with av.open(str(path)) as container:
        return bool(container.streams.audio)


def _join_png_folders(pieces: List[Path], final: Path) -> None:
    """Hard links (the parts are beside the outputs), numbered as one `PngSequenceSink` numbers a whole clip."""
    temporary = final.with_name(f".{final.name}.partial-{uuid.uuid4().hex[:8]}")
    temporary.mkdir()
    number = 0
    for piece in pieces:
        for png in sorted(piece.iterdir()):
            target = temporary / f"{number:04d}.png"
            try:
                os.link(png, target)
            except OSError:  # another filesystem
                shutil.copy2(png, target)
            number += 1
    replace_into_place(temporary, final)


def _join_videos(pieces: List[Path], final: Path, audio_from: Optional[str]) -> None:
    """Packets copied part after part, each part's timestamps shifted by the parts before it."""
    temporary = temporary_sibling(final)
    try:
        with av.open(str(pieces[0])) as first, av.open(str(temporary), "w") as output:
            template = first.streams.video[0]
            stream = output.add_stream_from_template(template)
            # the template keeps the codec parameters but not the tag: ProRes 4444 came out tagged 'apch' (422 HQ),
            # which FFmpeg decodes to 10 bits instead of 12, a difference of 1 in RGB
            stream.codec_context.codec_tag = template.codec_context.codec_tag
            audio = AudioCopy(Path(audio_from), output, final.suffix.lower()) if audio_from else None
            rate = template.average_rate
            offset_frames = 0
            for piece in pieces:
                with av.open(str(piece)) as part:
                    video = part.streams.video[0]
                    offset = int(round(offset_frames / rate / video.time_base))
                    for packet in part.demux(video):
                        if packet.dts is None:  # the demuxer's flush packet
                            continue
                        packet.pts += offset
                        packet.dts += offset
                        seconds = float(packet.pts * video.time_base)
                        packet.stream = stream
                        output.mux(packet)
                        if audio is not None:
                            audio.feed_until(seconds)
                    offset_frames += video.frames
            if audio is not None:
                audio.feed_until(None)
                audio.close()
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    replace_into_place(temporary, final)
