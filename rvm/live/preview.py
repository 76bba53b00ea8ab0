"""The preview sink: the composition in a window on this machine's display (tkinter, Pillow's ImageTk).

Tk is touched by one thread only, the window's own, which creates the root, shows each frame and handles the keys:
`q` or Escape (or closing the window) ends the session, `r` resets the recurrent state. The sink's delivering thread
only renders the composition into bytes and hands the newest over; the window shows the newest it finds at each
refresh, so a slow display never holds the session up. Where there is no display the sink fails in one line when it
is prepared, before capture starts.
"""
import gc
import logging
import os
import platform
import threading
from typing import Optional

from rvm.errors import UsageError
from rvm.live.sinks import BLUR, Backdrop, LiveSink, Matted, rendered
from rvm.media.pipeline import BackgroundSpec
from rvm.media.video import to_uint8_hwc

log = logging.getLogger(__name__)
REFRESH_MS = 5  # how often the window looks for a newer frame
CONNECT_TIMEOUT_S = 10.0
INSTEAD = "use --page (a browser shows it) or a recording (--output-composition) instead"


class PreviewSink(LiveSink):
    """The composition on `background` (a colour, image, video or `blur`), shown in a window titled `title`."""

    name = "preview"

    def __init__(self, background: BackgroundSpec = BLUR, title: str = "rvm live"):
        self.backdrop, self.title = Backdrop(background), title
        self._lock = threading.Lock()
        self._newest: Optional[bytes] = None
        self._shown = 0  # frames the window has shown (read by tests and the log)
        self._session = None
        self._ready, self._closing = threading.Event(), threading.Event()
        self._failure: Optional[str] = None
        self._thread: Optional[threading.Thread] = None

    def prepare(self) -> None:
        if platform.system() == "Darwin":  # Cocoa runs Tk windows on the main thread only, which the session keeps
            raise UsageError(f"no display for --preview: on macOS a Tk window cannot run beside the session; {INSTEAD}")
        self._thread = threading.Thread(target=self._window, name="rvm-live-preview", daemon=True)
        self._thread.start()
        if not self._ready.wait(CONNECT_TIMEOUT_S):  # a remote display that does not answer
            self._closing.set()
            raise UsageError(f"no display for --preview: {os.environ.get('DISPLAY', 'the display')} did not answer "
                             f"within {CONNECT_TIMEOUT_S:g} s; {INSTEAD}")
        if self._failure is not None:
            raise UsageError(f"no display for --preview: {self._failure}; {INSTEAD}")

    def open(self, size, fps, session) -> None:
        super().open(size, fps, session)
        self.backdrop.open(size)
        self._session = session

    def write(self, matted: Matted) -> None:
        frame = to_uint8_hwc(rendered("composition", self.backdrop.behind(matted.chunk), self.size))
        with self._lock:
            self._newest = frame.tobytes()

    def close(self) -> None:
        self._closing.set()
        if self._thread is not None:
            self._thread.join(5.0)  # the window notices within REFRESH_MS
            self._thread = None
        log.info("preview showed %d frames", self._shown)

    def release(self) -> None:
        self.close()

    def _take(self) -> Optional[bytes]:
        with self._lock:
            frame, self._newest = self._newest, None
        return frame

    def _window(self) -> None:
        """The window's thread: the only one that touches Tk."""
        try:
            import tkinter

            from PIL import Image, ImageTk
        except ImportError as error:
            self._failure = f"this Python has no Tk ({error})"
            self._ready.set()
            return
        try:
            root = tkinter.Tk(className="rvm-live")
        except tkinter.TclError as error:
            self._failure = str(error)
            self._ready.set()
            return
        self._ready.set()
        self._show(root, tkinter, Image, ImageTk)
        # Tcl aborts the process when its interpreter is freed by another thread; the widgets and the root refer to
        # each other (a cycle only the garbage collector frees, on whichever thread it runs), so free them here
        del root
        gc.collect()

    def _show(self, root, tkinter, Image, ImageTk) -> None:
        root.title(self.title)
        root.withdraw()  # shown with the first frame, at its size
        picture = tkinter.Label(root, borderwidth=0)
        picture.pack()

        def end(event=None):
            if self._session is not None:
                self._session.end()
            self._closing.set()

        def reset(event=None):
            if self._session is not None:
                self._session.reset()
                log.info("recurrent state reset (preview window)")

        root.protocol("WM_DELETE_WINDOW", end)
        for key in ("<KeyPress-q>", "<KeyPress-Q>", "<Escape>"):
            root.bind(key, end)
        for key in ("<KeyPress-r>", "<KeyPress-R>"):
            root.bind(key, reset)

        def refresh():
            if self._closing.is_set():
                root.destroy()
                return
            frame = self._take()
            if frame is not None:
                image = ImageTk.PhotoImage(Image.frombytes("RGB", tuple(self.size), frame), master=root)
                picture.configure(image=image)
                picture.image = image  # Tk keeps no reference of its own
                if not self._shown:
                    root.deiconify()
                    root.focus_force()
                self._shown += 1
            root.after(REFRESH_MS, refresh)

        root.after(REFRESH_MS, refresh)
        root.mainloop()
