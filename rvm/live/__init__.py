"""Live matting: a camera, a network stream or a paced video file in; the matte out to a virtual camera, a local
page (OBS Browser Source), a recording or raw RGBA on stdout, in real time.

Capture, inference and each sink run on their own threads joined by one-slot queues that keep only the newest
frame (`rvm.live.session`), so latency stays bounded when the model is slower than the source: stale frames are
dropped and counted, never queued.
"""
from rvm.live.page import PageSink
from rvm.live.preview import PreviewSink
from rvm.live.session import LiveSession, SourceLost, live
from rvm.live.sinks import LiveSink, RawSink, RecordingSink, VirtualCameraSink
from rvm.live.sources import CaptureSource, FileSource, LiveSource, open_live_source

__all__ = ["LiveSession", "SourceLost", "live", "LiveSink", "PageSink", "PreviewSink", "RawSink", "RecordingSink",
           "VirtualCameraSink",
           "CaptureSource", "FileSource", "LiveSource", "open_live_source"]
